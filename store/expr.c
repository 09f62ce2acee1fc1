/* The --where expression language: a recursive-descent parser into a small
 * tree, evaluated a block of rows at a time into a 0/1 mask. */
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 200
/* Nodes of one expression: a chain of and/or is as deep as it is long
 * (freeing and evaluating recurse), so its length is bounded too. */
#define MAX_NODES 10000

typedef enum { OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE } cmp_op;
static const char *const OP_TEXT[] = {"<", "<=", ">", ">=", "==", "!="};

typedef enum { N_CMP, N_CONST, N_AND, N_OR, N_NOT } node_kind;

typedef struct {
    int col; /* index into the column list, or -1 for a number */
    double num;
} operand;

typedef struct node {
    node_kind kind;
    cmp_op op;
    operand a, b;
    bool value; /* N_CONST */
    struct node *l, *r;
    uint8_t *tmp; /* scratch for the right side of and/or */
    size_t tmpcap;
} node;

struct sp_expr {
    node *root;
    char **cols;
    size_t ncol;
};

/* ---- tokens ------------------------------------------------------------ */

typedef enum {
    T_END,
    T_NUM,
    T_IDENT,
    T_AND,
    T_OR,
    T_NOT,
    T_OP,
    T_LP,
    T_RP,
    T_BAD
} tok_kind;

typedef struct {
    tok_kind kind;
    size_t pos, len; /* 0-based offset and length in the text */
    double num;
    cmp_op op;
} token;

typedef struct {
    const char *text;
    size_t at;
    token tok; /* current token */
    sp_expr *e;
    sp_error *err;
    int depth;
    int nodes;
} parser;

static bool ident_start(char c) {
    return isalpha((unsigned char)c) || c == '_';
}
static bool ident_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '.';
}

static void next(parser *p) {
    const char *s = p->text;
    size_t i = p->at;
    while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
        i++;
    token t = {.kind = T_END, .pos = i, .len = 0};
    char c = s[i];
    if (c == '\0') {
        t.kind = T_END;
    } else if (c == '(' || c == ')') {
        t.kind = c == '(' ? T_LP : T_RP;
        t.len = 1;
    } else if (c == '<' || c == '>' || c == '=' || c == '!') {
        char d = s[i + 1];
        t.kind = T_OP;
        t.len = 1;
        if (c == '<' && d == '=')
            t.op = OP_LE, t.len = 2;
        else if (c == '<' && d == '>')
            t.op = OP_NE, t.len = 2;
        else if (c == '<')
            t.op = OP_LT;
        else if (c == '>' && d == '=')
            t.op = OP_GE, t.len = 2;
        else if (c == '>')
            t.op = OP_GT;
        else if (c == '=' && d == '=')
            t.op = OP_EQ, t.len = 2;
        else if (c == '=')
            t.op = OP_EQ;
        else if (c == '!' && d == '=')
            t.op = OP_NE, t.len = 2;
        else
            t.kind = T_BAD;
    } else if (isdigit((unsigned char)c) || c == '.' ||
               ((c == '-' || c == '+') &&
                (isdigit((unsigned char)s[i + 1]) || s[i + 1] == '.'))) {
        char *end = NULL;
        errno = 0;
        double v = strtod(s + i, &end);
        if (end == s + i || errno == ERANGE || !isfinite(v) ||
            ident_char(*end)) {
            t.kind = T_BAD;
            t.len = end > s + i ? (size_t)(end - (s + i)) : 1;
            while (ident_char(s[i + t.len])) /* show "0.5and" whole */
                t.len++;
        } else {
            t.kind = T_NUM;
            t.num = v;
            t.len = (size_t)(end - (s + i));
        }
    } else if (ident_start(c)) {
        size_t j = i;
        while (ident_char(s[j]))
            j++;
        t.len = j - i;
        t.kind = T_IDENT;
        if (t.len == 3 && strncasecmp(s + i, "and", 3) == 0)
            t.kind = T_AND;
        else if (t.len == 2 && strncasecmp(s + i, "or", 2) == 0)
            t.kind = T_OR;
        else if (t.len == 3 && strncasecmp(s + i, "not", 3) == 0)
            t.kind = T_NOT;
    } else {
        t.kind = T_BAD;
        t.len = 1;
        /* a whole UTF-8 sequence */
        while ((unsigned char)s[i + t.len] >= 0x80 &&
               (unsigned char)s[i + t.len] < 0xc0)
            t.len++;
    }
    p->tok = t;
    p->at = i + t.len;
}

/* "found 'x'" / "found the end" for messages. */
static void describe(const parser *p, char *buf, size_t n) {
    if (p->tok.kind == T_END)
        snprintf(buf, n, "the end of the expression");
    else
        snprintf(buf, n, "'%.*s'", (int)(p->tok.len > 40 ? 40 : p->tok.len),
                 p->text + p->tok.pos);
}

static bool fail(parser *p, const char *expected) {
    char found[64];
    describe(p, found, sizeof found);
    return sp_error_set(p->err, SP_ERR_USAGE, NULL,
                        "position %zu: expected %s, found %s", p->tok.pos + 1,
                        expected, found);
}

/* ---- tree -------------------------------------------------------------- */

static void node_free(node *n) {
    if (!n)
        return;
    node_free(n->l);
    node_free(n->r);
    free(n->tmp);
    free(n);
}

static node *node_new(parser *p, node_kind k) {
    if (++p->nodes > MAX_NODES) {
        if (!sp_error_is_set(p->err))
            sp_error_set(p->err, SP_ERR_USAGE, NULL,
                         "position %zu: expression too long (over %d "
                         "comparisons and operators)",
                         p->tok.pos + 1, MAX_NODES);
        return NULL;
    }
    node *n = calloc(1, sizeof *n);
    if (!n)
        sp_error_set(p->err, SP_ERR_NOMEM, NULL, "out of memory");
    else
        n->kind = k;
    return n;
}

static int column_ref(parser *p, const char *name, size_t len) {
    sp_expr *e = p->e;
    for (size_t i = 0; i < e->ncol; i++)
        if (strlen(e->cols[i]) == len && strncmp(e->cols[i], name, len) == 0)
            return (int)i;
    char **c = realloc(e->cols, (e->ncol + 1) * sizeof *c);
    if (!c)
        return -1;
    e->cols = c;
    if (!(c[e->ncol] = strndup(name, len)))
        return -1;
    return (int)e->ncol++;
}

static bool parse_operand(parser *p, operand *o) {
    if (p->tok.kind == T_NUM) {
        o->col = -1;
        o->num = p->tok.num;
    } else if (p->tok.kind == T_IDENT) {
        o->col = column_ref(p, p->text + p->tok.pos, p->tok.len);
        if (o->col < 0)
            return sp_error_set(p->err, SP_ERR_NOMEM, NULL, "out of memory");
    } else {
        return false;
    }
    next(p);
    return true;
}

static node *parse_or(parser *p);

static node *parse_compare(parser *p) {
    node *n = node_new(p, N_CMP);
    if (!n)
        return NULL;
    if (!parse_operand(p, &n->a)) {
        if (!sp_error_is_set(p->err))
            fail(p, "a comparison, 'not' or '('");
        goto bad;
    }
    if (p->tok.kind != T_OP) {
        char what[128];
        /* name the operand just read */
        size_t end = p->tok.pos;
        while (end > 0 && isspace((unsigned char)p->text[end - 1]))
            end--;
        size_t start = end;
        while (start > 0 && !isspace((unsigned char)p->text[start - 1]) &&
               p->text[start - 1] != '(')
            start--;
        snprintf(what, sizeof what,
                 "a comparison operator (< <= > >= == !=) after '%.*s'",
                 (int)(end - start > 40 ? 40 : end - start), p->text + start);
        fail(p, what);
        goto bad;
    }
    n->op = p->tok.op;
    cmp_op op = p->tok.op;
    next(p);
    if (!parse_operand(p, &n->b)) {
        if (!sp_error_is_set(p->err)) {
            char what[64];
            snprintf(what, sizeof what, "a number or a column name after '%s'",
                     OP_TEXT[op]);
            fail(p, what);
        }
        goto bad;
    }
    if (n->a.col < 0 && n->b.col < 0) { /* fold number OP number */
        double a = n->a.num, b = n->b.num;
        bool v = false;
        switch (n->op) {
        case OP_LT: v = a < b; break;
        case OP_LE: v = a <= b; break;
        case OP_GT: v = a > b; break;
        case OP_GE: v = a >= b; break;
        case OP_EQ: v = a == b; break;
        case OP_NE: v = a != b; break;
        }
        n->kind = N_CONST;
        n->value = v;
    }
    return n;
bad:
    node_free(n);
    return NULL;
}

static node *parse_unary(parser *p) {
    if (++p->depth > MAX_DEPTH) {
        sp_error_set(p->err, SP_ERR_USAGE, NULL,
                     "position %zu: expression nested too deeply",
                     p->tok.pos + 1);
        return NULL;
    }
    node *n = NULL;
    if (p->tok.kind == T_NOT) {
        next(p);
        node *c = parse_unary(p);
        if (c && (n = node_new(p, N_NOT)))
            n->l = c;
        else
            node_free(c);
    } else if (p->tok.kind == T_LP) {
        next(p);
        n = parse_or(p);
        if (n && p->tok.kind != T_RP) {
            fail(p, "')' or 'and'/'or'");
            node_free(n);
            n = NULL;
        } else if (n) {
            next(p);
        }
    } else if (p->tok.kind == T_NUM || p->tok.kind == T_IDENT) {
        n = parse_compare(p);
    } else if (p->tok.kind == T_BAD) {
        char found[64];
        describe(p, found, sizeof found);
        sp_error_set(p->err, SP_ERR_USAGE, NULL, "position %zu: unexpected %s",
                     p->tok.pos + 1, found);
    } else {
        fail(p, "a comparison, 'not' or '('");
    }
    p->depth--;
    return n;
}

static node *parse_binary(parser *p, tok_kind kw, node_kind k,
                          node *(*sub)(parser *)) {
    node *l = sub(p);
    while (l && p->tok.kind == kw) {
        next(p);
        node *r = sub(p);
        node *n = r ? node_new(p, k) : NULL;
        if (!n) {
            node_free(l);
            node_free(r);
            return NULL;
        }
        n->l = l;
        n->r = r;
        l = n;
    }
    return l;
}

static node *parse_and(parser *p) {
    return parse_binary(p, T_AND, N_AND, parse_unary);
}

static node *parse_or(parser *p) {
    return parse_binary(p, T_OR, N_OR, parse_and);
}

bool sp_expr_parse(const char *text, sp_expr **out, sp_error *err) {
    *out = NULL;
    sp_expr *e = calloc(1, sizeof *e);
    if (!e)
        return sp_error_set(err, SP_ERR_NOMEM, NULL, "out of memory");
    parser p = {.text = text, .at = 0, .e = e, .err = err};
    next(&p);
    e->root = parse_or(&p);
    if (e->root && p.tok.kind != T_END) {
        if (p.tok.kind == T_RP)
            fail(&p, "'and', 'or' or the end (unbalanced ')')");
        else if (p.tok.kind == T_BAD) {
            char found[64];
            describe(&p, found, sizeof found);
            sp_error_set(err, SP_ERR_USAGE, NULL, "position %zu: unexpected %s",
                         p.tok.pos + 1, found);
        } else
            fail(&p, "'and', 'or' or the end");
        sp_expr_free(e);
        return false;
    }
    if (!e->root) {
        sp_expr_free(e);
        return false;
    }
    *out = e;
    return true;
}

void sp_expr_free(sp_expr *e) {
    if (!e)
        return;
    node_free(e->root);
    for (size_t i = 0; i < e->ncol; i++)
        free(e->cols[i]);
    free(e->cols);
    free(e);
}

size_t sp_expr_column_count(const sp_expr *e) { return e->ncol; }
const char *sp_expr_column(const sp_expr *e, size_t i) {
    return i < e->ncol ? e->cols[i] : NULL;
}

/* ---- evaluation -------------------------------------------------------- */

static cmp_op flip(cmp_op op) {
    switch (op) {
    case OP_LT: return OP_GT;
    case OP_LE: return OP_GE;
    case OP_GT: return OP_LT;
    case OP_GE: return OP_LE;
    default: return op;
    }
}

#define CMP_LOOP(EXPR)                                                         \
    do {                                                                       \
        for (size_t i = 0; i < n; i++)                                         \
            out[i] = (uint8_t)(EXPR);                                          \
    } while (0)

#define CMP_SWITCH(A, B)                                                       \
    switch (op) {                                                              \
    case OP_LT: CMP_LOOP((A) < (B)); break;                                    \
    case OP_LE: CMP_LOOP((A) <= (B)); break;                                   \
    case OP_GT: CMP_LOOP((A) > (B)); break;                                    \
    case OP_GE: CMP_LOOP((A) >= (B)); break;                                   \
    case OP_EQ: CMP_LOOP((A) == (B)); break;                                   \
    case OP_NE: CMP_LOOP((A) != (B)); break;                                   \
    }

static void cmp_col_num(const sp_expr_input *c, cmp_op op, double k, size_t n,
                        uint8_t *out) {
    if (c->f32) {
        const float *a = c->f32;
        CMP_SWITCH((double)a[i], k);
    } else {
        const int64_t *a = c->i64;
        CMP_SWITCH((double)a[i], k);
    }
}

static void cmp_col_col(const sp_expr_input *x, const sp_expr_input *y,
                        cmp_op op, size_t n, uint8_t *out) {
    if (x->f32 && y->f32) {
        const float *a = x->f32, *b = y->f32;
        CMP_SWITCH((double)a[i], (double)b[i]);
    } else if (x->f32) {
        const float *a = x->f32;
        const int64_t *b = y->i64;
        CMP_SWITCH((double)a[i], (double)b[i]);
    } else if (y->f32) {
        const int64_t *a = x->i64;
        const float *b = y->f32;
        CMP_SWITCH((double)a[i], (double)b[i]);
    } else {
        const int64_t *a = x->i64, *b = y->i64;
        CMP_SWITCH(a[i], b[i]);
    }
}

static bool any_set(const uint8_t *m, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (m[i])
            return true;
    return false;
}

static bool all_set(const uint8_t *m, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!m[i])
            return false;
    return true;
}

static bool eval_node(node *nd, const sp_expr_input *in, size_t n,
                      uint8_t *out) {
    switch (nd->kind) {
    case N_CONST: memset(out, nd->value ? 1 : 0, n); return true;
    case N_CMP:
        if (nd->a.col >= 0 && nd->b.col >= 0)
            cmp_col_col(&in[nd->a.col], &in[nd->b.col], nd->op, n, out);
        else if (nd->a.col >= 0)
            cmp_col_num(&in[nd->a.col], nd->op, nd->b.num, n, out);
        else
            cmp_col_num(&in[nd->b.col], flip(nd->op), nd->a.num, n, out);
        return true;
    case N_NOT:
        if (!eval_node(nd->l, in, n, out))
            return false;
        for (size_t i = 0; i < n; i++)
            out[i] ^= 1;
        return true;
    case N_AND:
    case N_OR:
        if (!eval_node(nd->l, in, n, out))
            return false;
        /* short cut: nothing left to decide */
        if (nd->kind == N_AND ? !any_set(out, n) : all_set(out, n))
            return true;
        if (nd->tmpcap < n) {
            uint8_t *t = realloc(nd->tmp, n);
            if (!t)
                return false;
            nd->tmp = t;
            nd->tmpcap = n;
        }
        if (!eval_node(nd->r, in, n, nd->tmp))
            return false;
        if (nd->kind == N_AND)
            for (size_t i = 0; i < n; i++)
                out[i] &= nd->tmp[i];
        else
            for (size_t i = 0; i < n; i++)
                out[i] |= nd->tmp[i];
        return true;
    }
    return false;
}

bool sp_expr_eval(sp_expr *e, const sp_expr_input *in, size_t n, uint8_t *out) {
    if (n == 0)
        return true;
    return eval_node(e->root, in, n, out);
}
