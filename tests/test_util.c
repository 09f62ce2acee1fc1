/* util: error records, JSON writer, files, parsing. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

static void test_error_first_sticks(void) {
    sp_error e = {0};
    CU_ASSERT_FALSE(sp_error_is_set(&e));
    CU_ASSERT_FALSE(sp_error_set(&e, SP_ERR_INPUT, "a.svs", "bad %d\nline", 1));
    sp_error_set(&e, SP_ERR_OUTPUT, "b.svs", "second");
    CU_ASSERT_EQUAL(e.code, SP_ERR_INPUT);
    CU_ASSERT_STRING_EQUAL(e.msg, "a.svs: bad 1 line");
    sp_error_clear(&e);
    CU_ASSERT_FALSE(sp_error_is_set(&e));
    CU_ASSERT_FALSE(sp_error_set(NULL, SP_ERR_INPUT, NULL, "ignored"));
}

static void test_json_escaping(void) {
    sp_buf b;
    sp_buf_init(&b);
    sp_json j;
    sp_json_init(&j, &b, false);
    sp_json_begin_object(&j);
    sp_json_key(&j, "q\"k");
    sp_json_string(&j, "a\\b\n\x01\xff\xc3\xa9");
    sp_json_key(&j, "n");
    sp_json_number(&j, 0.1);
    sp_json_key(&j, "i");
    sp_json_number(&j, 20);
    sp_json_key(&j, "nan");
    sp_json_number(&j, NAN);
    sp_json_key(&j, "arr");
    sp_json_begin_array(&j);
    sp_json_int(&j, -3);
    sp_json_bool(&j, true);
    sp_json_null(&j);
    sp_json_string(&j, NULL);
    sp_json_end_array(&j);
    sp_json_key(&j, "empty");
    sp_json_begin_object(&j);
    sp_json_end_object(&j);
    sp_json_end_object(&j);
    CU_ASSERT_STRING_EQUAL(
        b.data,
        "{\"q\\\"k\":\"a\\\\b\\n\\u0001\\ufffd\xc3\xa9\",\"n\":0.1,\"i\":20,"
        "\"nan\":null,\"arr\":[-3,true,null,null],\"empty\":{}}");
    sp_buf_free(&b);
}

static void test_parse(void) {
    double d;
    int64_t i;
    CU_ASSERT_TRUE(sp_parse_double("0.499", &d));
    CU_ASSERT_DOUBLE_EQUAL(d, 0.499, 1e-12);
    CU_ASSERT_FALSE(sp_parse_double("", &d));
    CU_ASSERT_FALSE(sp_parse_double("1.5x", &d));
    CU_ASSERT_FALSE(sp_parse_double("inf", &d));
    CU_ASSERT_FALSE(sp_parse_double(NULL, &d));
    CU_ASSERT_TRUE(sp_parse_int64("-42", &i));
    CU_ASSERT_EQUAL(i, -42);
    CU_ASSERT_FALSE(sp_parse_int64("4.2", &i));
}

static void test_files(void) {
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/a/b/c", sp_test_tmpdir());
    sp_error e = {0};
    CU_ASSERT_TRUE(sp_mkdir_p(dir, &e));
    CU_ASSERT_TRUE(sp_mkdir_p(dir, &e)); /* exists: fine */
    snprintf(file, sizeof file, "%s/x.txt", dir);
    CU_ASSERT_TRUE(sp_write_file_atomic(file, "hello", 5, &e));
    struct stat st;
    CU_ASSERT_EQUAL(stat(file, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 5);
    size_t n = 0;
    sp_error re = {0}; /* the first error sticks: one per failure */
    char *text = sp_read_file(file, 5, &n, &re);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_STRING_EQUAL(text, "hello");
    free(text);
    CU_ASSERT_PTR_NULL(sp_read_file(file, 4, &n, &re)); /* over the limit */
    CU_ASSERT_EQUAL(re.code, SP_ERR_INPUT);
    re = (sp_error){0};
    CU_ASSERT_PTR_NULL(sp_read_file(dir, 1 << 20, &n, &re)); /* a folder */
    CU_ASSERT_EQUAL(re.code, SP_ERR_INPUT);
    char link[700];
    snprintf(link, sizeof link, "%s/link.txt", dir);
    CU_ASSERT_EQUAL(symlink(file, link), 0);
    re = (sp_error){0};
    CU_ASSERT_PTR_NULL(sp_read_file(link, 1 << 20, &n, &re)); /* a link */
    CU_ASSERT_EQUAL(re.code, SP_ERR_INPUT);
    char *tmp = sp_temp_sibling(file);
    CU_ASSERT_FALSE(sp_path_exists(tmp));
    CU_ASSERT_PTR_NOT_NULL(strstr(tmp, "/.x.txt.tmp-"));
    free(tmp);
    /* a file where a directory is wanted */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/sub", file);
    CU_ASSERT_FALSE(sp_mkdir_p(bad, &e));
    CU_ASSERT_EQUAL(e.code, SP_ERR_OUTPUT);
    snprintf(dir, sizeof dir, "%s/a", sp_test_tmpdir());
    sp_error e2 = {0};
    CU_ASSERT_TRUE(sp_remove_tree(dir, &e2));
    CU_ASSERT_FALSE(sp_path_exists(dir));
    CU_ASSERT_TRUE(sp_remove_tree(dir, &e2)); /* absent: fine */
    CU_ASSERT_STRING_EQUAL(sp_basename("/x/y/z.svs"), "z.svs");
    CU_ASSERT_STRING_EQUAL(sp_basename("z.svs"), "z.svs");
}

static void test_dir_names(void) {
    char *p = sp_path_join("a/b", "c");
    CU_ASSERT_STRING_EQUAL(p, "a/b/c");
    free(p);
    p = sp_path_join("a/b/", "c");
    CU_ASSERT_STRING_EQUAL(p, "a/b/c");
    free(p);

    char dir[512], f[600];
    snprintf(dir, sizeof dir, "%s/names", sp_test_tmpdir());
    sp_error e = {0};
    CU_ASSERT_TRUE_FATAL(sp_mkdir_p(dir, &e));
    static const char *const made[] = {"zeta", "Alpha", ".hidden", "beta",
                                       "sub"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(f, sizeof f, "%s/%s", dir, made[i]);
        bool ok = strcmp(made[i], "sub") == 0
                      ? sp_mkdir_p(f, &e)
                      : sp_write_file_atomic(f, "x", 1, &e);
        CU_ASSERT_TRUE(ok);
    }
    size_t n = 99;
    char **names = sp_dir_names(dir, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(names);
    CU_ASSERT_EQUAL_FATAL(n, 4); /* no ".", "..", ".hidden" */
    static const char *const want[] = {"Alpha", "beta", "sub", "zeta"};
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_STRING_EQUAL(names[i], want[i]);
    sp_dir_names_free(names, n);

    snprintf(f, sizeof f, "%s/absent", dir);
    errno = 0;
    CU_ASSERT_PTR_NULL(sp_dir_names(f, &n));
    CU_ASSERT_EQUAL(errno, ENOENT);
    CU_ASSERT_EQUAL(n, 0);
}

static void test_time_formats(void) {
    char t[32], d[32];
    sp_format_utc(0, t);
    CU_ASSERT_STRING_EQUAL(t, "1970-01-01T00:00:00Z");
    sp_format_utc(1795395723.9, t); /* 2026-11-23T01:02:03Z */
    CU_ASSERT_STRING_EQUAL(t, "2026-11-23T01:02:03Z");
    sp_format_duration(65, d, sizeof d);
    CU_ASSERT_STRING_EQUAL(d, "1:05");
    sp_format_duration(3725, d, sizeof d);
    CU_ASSERT_STRING_EQUAL(d, "1:02:05");
    sp_format_duration(-1, d, sizeof d);
    CU_ASSERT_STRING_EQUAL(d, "--:--");
    CU_ASSERT_TRUE(sp_wall_clock() > 1.7e9);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("util", NULL, NULL);
    CU_ADD_TEST(s, test_error_first_sticks);
    CU_ADD_TEST(s, test_json_escaping);
    CU_ADD_TEST(s, test_parse);
    CU_ADD_TEST(s, test_files);
    CU_ADD_TEST(s, test_dir_names);
    CU_ADD_TEST(s, test_time_formats);
    return sp_test_run();
}
