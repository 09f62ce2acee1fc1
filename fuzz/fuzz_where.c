/* libFuzzer target: the --where expression language (store/expr.c).
 * Input: the expression text (up to the first NUL). A parsed expression
 * is evaluated over a few rows: columns named x or y are int64 (as
 * `query` hands the coordinates), the others float32 with NaN, infinities,
 * -0 and extremes. Checks: a parse failure sets a message; the mask is
 * 0/1; "not (E)" is the complement of E whenever it parses too. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ROWS = 9 };
static const float F32[ROWS] = {0.0f,  -0.0f,     0.5f, 1.0f,  -3.25f,
                                1e38f, -INFINITY, NAN,  255.0f};
static const int64_t I64[ROWS] = {
    0, 1, -1, 256, INT64_MAX, INT64_MIN, 1024, 4096, (int64_t)1 << 53};

static bool eval(const char *text, uint8_t *out, bool *parsed) {
    sp_expr *e = NULL;
    sp_error err = {0};
    *parsed = sp_expr_parse(text, &e, &err);
    if (!*parsed) {
        if (!sp_error_is_set(&err) || e)
            abort();
        return true;
    }
    size_t nc = sp_expr_column_count(e);
    sp_expr_input *in = calloc(nc ? nc : 1, sizeof *in);
    if (!in) {
        sp_expr_free(e);
        return false;
    }
    for (size_t i = 0; i < nc; i++) {
        const char *c = sp_expr_column(e, i);
        if (!c || !c[0])
            abort();
        if (strcmp(c, "x") == 0 || strcmp(c, "y") == 0)
            in[i].i64 = I64;
        else
            in[i].f32 = F32;
    }
    memset(out, 0xAA, ROWS);
    bool ok = sp_expr_eval(e, in, ROWS, out) &&
              sp_expr_eval(e, in, 0, out); /* n == 0 is a no-op */
    for (size_t r = 0; ok && r < ROWS; r++)
        if (out[r] > 1)
            abort();
    free(in);
    sp_expr_free(e);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    uint8_t a[ROWS], b[ROWS];
    bool pa, pb;
    if (eval(text, a, &pa) && pa) {
        size_t n = strlen(text);
        char *neg = malloc(n + 8);
        if (neg) {
            memcpy(neg, "not (", 5);
            memcpy(neg + 5, text, n);
            memcpy(neg + 5 + n, ")", 2);
            if (eval(neg, b, &pb) && pb)
                for (int r = 0; r < ROWS; r++)
                    if (a[r] == b[r])
                        abort();
            free(neg);
        }
    }
    free(text);
    return 0;
}
