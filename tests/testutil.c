#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *sp_test_datadir(void) {
    const char *d = getenv("SLIDEPIPE_TESTDATA");
    return d && *d ? d : "../shared/testdata";
}

char *sp_test_path(const char *name) {
    const char *d = sp_test_datadir();
    size_t n = strlen(d) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", d, name);
    return p;
}

static char tmpdir[256];

static void remove_tmpdir(void) {
    if (tmpdir[0])
        sp_remove_tree(tmpdir, NULL);
}

const char *sp_test_tmpdir(void) {
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/sp-test-XXXXXX",
                 base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

int sp_test_run(void) {
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed =
        CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (run == 0) {
        fprintf(stderr, "no test ran\n");
        return 1;
    }
    return failed ? 1 : 0;
}
