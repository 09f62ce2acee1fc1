/* libFuzzer target: the messages between the ranks of a batch over
 * several processes (pipeline/batch_wire.c, json-c). Input: one message's
 * bytes. Checks: a message that parses re-encodes to text our reader
 * takes, and from there the writer and the reader agree (encoding what
 * was read from our own text gives that text again; the first encoding
 * may differ from the input, e.g. invalid UTF-8 becomes U+FFFD). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool encode(const sp__msg *m, sp_buf *out) {
    switch (m->kind) {
    case SP__MSG_HELLO: return sp__wire_hello(out, m->threads, m->host);
    case SP__MSG_RUN: return sp__wire_run(out, m->slide);
    case SP__MSG_RESULT: return sp__wire_result(out, m->slide);
    default: return sp__wire_simple(out, m->kind);
    }
}

/* Parse `in` (ours: must parse) and encode it into `out`. */
static bool again(const sp_buf *in, sp_buf *out) {
    sp__msg m;
    sp_error err = {0};
    if (!sp__wire_parse(in->data, in->len, &m, &err))
        abort(); /* our own writing refused by our reader */
    bool ok = encode(&m, out);
    sp__msg_clear(&m);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sp__msg m;
    sp_error err = {0};
    if (sp__wire_parse(text, size, &m, &err)) {
        sp_buf a, b, c;
        sp_buf_init(&a);
        sp_buf_init(&b);
        sp_buf_init(&c);
        if (encode(&m, &a) && again(&a, &b) && again(&b, &c) &&
            (b.len != c.len || memcmp(b.data, c.data, b.len) != 0))
            abort();
        sp_buf_free(&a);
        sp_buf_free(&b);
        sp_buf_free(&c);
        sp__msg_clear(&m);
    }
    free(text);
    return 0;
}
