/* The slide job's contract (pipeline.h): one call, a result record whose
 * code says why it failed, no outputs unless it succeeded. Expected values
 * come from OpenSlide's own API (vendor detection, level 0 size,
 * quickhash) and json-c, not from slidepipe. */
#include <json-c/json.h>
#include <math.h>
#include <openslide.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pipeline.h"
#include "testutil.h"

/* Options for a small, quick job into tmpdir/name. */
static void opts_for(sp_run_opts *o, const char *name, char *stem, char *h5,
                     size_t n) {
    snprintf(stem, n, "%s/%s", sp_test_tmpdir(), name);
    snprintf(h5, n, "%s/%s.h5", sp_test_tmpdir(), name);
    sp_run_opts_default(o);
    o->tiles_out = stem;
    o->features_out = h5;
    o->threads = 2;
}

static bool exists_with(const char *stem, const char *ext) {
    char p[4200];
    snprintf(p, sizeof p, "%s%s", stem, ext);
    return access(p, F_OK) == 0;
}

static void expect_no_outputs(const char *stem) {
    CU_ASSERT_FALSE(exists_with(stem, ".dzi"));
    CU_ASSERT_FALSE(exists_with(stem, ".json"));
    CU_ASSERT_FALSE(exists_with(stem, "_files"));
    CU_ASSERT_FALSE(exists_with(stem, ".h5"));
}

static void test_ok_record(void) {
    char *slide = sp_test_path("CMU-1-Small-Region.svs");
    char stem[4096], h5[4096];
    sp_run_opts o;
    opts_for(&o, "ok", stem, h5, sizeof stem);
    sp_run_result r;
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_run_slide(slide, &o, &r, &e));
    CU_ASSERT_EQUAL(r.code, SP_OK);
    CU_ASSERT_STRING_EQUAL(r.error, "");
    CU_ASSERT_STRING_EQUAL(r.stage, "done");
    openslide_t *os = openslide_open(slide);
    CU_ASSERT_PTR_NOT_NULL_FATAL(os);
    int64_t w = 0, h = 0;
    openslide_get_level0_dimensions(os, &w, &h);
    CU_ASSERT_EQUAL(r.tiles.width, w);
    CU_ASSERT_EQUAL(r.tiles.height, h);
    CU_ASSERT_DOUBLE_EQUAL(r.megapixels, (double)w * (double)h / 1e6, 1e-9);
    const char *qh = openslide_get_property_value(os, "openslide.quickhash-1");
    CU_ASSERT_STRING_EQUAL(r.quickhash, qh ? qh : "");
    openslide_close(os);
    CU_ASSERT_TRUE(r.tiles.tiles_written > 0);
    CU_ASSERT_TRUE(r.seconds > 0);
    CU_ASSERT_TRUE(exists_with(stem, ".dzi") && exists_with(stem, ".h5"));

    /* the record as JSON, read back by json-c */
    sp_buf b;
    sp_buf_init(&b);
    CU_ASSERT_TRUE_FATAL(
        sp_run_result_json(&r, "CMU-1-Small-Region.svs", "out/slide.dzi", &b));
    json_object *j = json_tokener_parse(b.data);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_object *v;
    CU_ASSERT_TRUE(json_object_object_get_ex(j, "ok", &v) &&
                   json_object_get_boolean(v));
    CU_ASSERT_TRUE(json_object_object_get_ex(j, "output", &v) &&
                   strcmp(json_object_get_string(v), "out/slide.dzi") == 0);
    CU_ASSERT_TRUE(json_object_object_get_ex(j, "tiles_written", &v) &&
                   json_object_get_int64(v) == r.tiles.tiles_written);
    CU_ASSERT_TRUE(json_object_object_get_ex(j, "width", &v) &&
                   json_object_get_int64(v) == w);
    json_object_put(j);
    sp_buf_free(&b);

    /* the same slide again, outputs there, no force: an output failure
     * that leaves the outputs as they were */
    CU_ASSERT_FALSE(sp_run_slide(slide, &o, &r, NULL));
    CU_ASSERT_EQUAL(r.code, SP_ERR_OUTPUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.error, "already exists"));
    CU_ASSERT_TRUE(exists_with(stem, ".dzi") && exists_with(stem, ".h5"));
    free(slide);
}

/* Run a job on `path` into tmpdir/name that must fail: its message names
 * the file, the record and `err` agree, no output is left. `cancel`
 * preset when true. */
static void fail_job(const char *path, const char *name, bool cancel,
                     sp_run_result *r) {
    char stem[4096], h5[4096];
    sp_run_opts o;
    opts_for(&o, name, stem, h5, sizeof stem);
    volatile sig_atomic_t flag = cancel;
    o.cancel = &flag;
    sp_error e = {0};
    CU_ASSERT_FALSE(sp_run_slide(path, &o, r, &e));
    CU_ASSERT_EQUAL(e.code, r->code);
    CU_ASSERT_STRING_EQUAL(e.msg, r->error);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->error, path)); /* names the file */
    CU_ASSERT_STRING_NOT_EQUAL(r->stage, "done");
    expect_no_outputs(stem);
}

/* A file OpenSlide's vendor detection rejects is not a slide; one it
 * detects but cannot open is an unreadable slide. */
static void expect_open_failure(const char *path, const char *name) {
    sp_run_result r;
    fail_job(path, name, false, &r);
    const bool detected = openslide_detect_vendor(path) != NULL;
    CU_ASSERT_EQUAL(r.code, detected ? SP_ERR_INPUT : SP_ERR_NOT_SLIDE);
    CU_ASSERT_STRING_EQUAL(r.stage, "open");
}

static void test_not_a_slide(void) {
    char p[4096];
    snprintf(p, sizeof p, "%s/notes.txt", sp_test_tmpdir());
    FILE *f = fopen(p, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("not a slide\n", f);
    fclose(f);
    CU_ASSERT_PTR_NULL(openslide_detect_vendor(p));
    expect_open_failure(p, "notes");
    char *unopenable = sp_test_path("unopenable.tiff");
    expect_open_failure(unopenable, "unopenable");
    free(unopenable);
}

/* A slide that opens but whose pixels cannot be read. */
static void test_unreadable(void) {
    char *slide = sp_test_path("unreadable.svs");
    sp_run_result r;
    fail_job(slide, "unreadable", false, &r);
    CU_ASSERT_EQUAL(r.code, SP_ERR_INPUT);
    free(slide);
}

static void test_cancelled(void) {
    char *slide = sp_test_path("CMU-1-Small-Region.svs");
    sp_run_result r;
    fail_job(slide, "cancelled", true, &r);
    CU_ASSERT_EQUAL(r.code, SP_ERR_CANCELLED);
    CU_ASSERT_STRING_EQUAL(sp_errcode_name(r.code), "cancelled");
    free(slide);
}

/* The record has no pointers: sent as bytes from a forked child (as the
 * batch does), it reads the same in the parent. */
static void test_record_crosses_a_pipe(void) {
    char *slide = sp_test_path("small.svs");
    char stem[4096], h5[4096];
    sp_run_opts o;
    opts_for(&o, "piped", stem, h5, sizeof stem);
    int fds[2];
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        static sp_run_result cr;
        sp_run_slide(slide, &o, &cr, NULL);
        _exit(sp_write_all(fds[1], &cr, sizeof cr) ? 0 : 1);
    }
    close(fds[1]);
    static sp_run_result r;
    CU_ASSERT_EQUAL(sp_read_all(fds[0], &r, sizeof r), (ssize_t)sizeof r);
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(r.code, SP_OK);
    openslide_t *os = openslide_open(slide);
    CU_ASSERT_PTR_NOT_NULL_FATAL(os);
    int64_t w = 0, h = 0;
    openslide_get_level0_dimensions(os, &w, &h);
    openslide_close(os);
    CU_ASSERT_EQUAL(r.tiles.width, w);
    CU_ASSERT_EQUAL(r.tiles.height, h);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.tiles.output, "piped.dzi"));
    free(slide);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("pipeline", NULL, NULL);
    /* first: a process whose OpenMP threads exist cannot fork a job (see
     * pipeline.h) */
    CU_ADD_TEST(s, test_record_crosses_a_pipe);
    CU_ADD_TEST(s, test_ok_record);
    CU_ADD_TEST(s, test_not_a_slide);
    CU_ADD_TEST(s, test_unreadable);
    CU_ADD_TEST(s, test_cancelled);
    return sp_test_run();
}
