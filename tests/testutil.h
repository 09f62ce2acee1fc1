/* Helpers shared by the CUnit suites. */
#ifndef SP_TESTUTIL_H
#define SP_TESTUTIL_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdbool.h>

/* Directory of the shared test slides ($SLIDEPIPE_TESTDATA, else
 * ../shared/testdata next to the source tree). */
const char *sp_test_datadir(void);
/* Path of a file in the test data directory (static buffer per call site is
 * not safe: returns a malloc'd string that the test frees). */
char *sp_test_path(const char *name);
/* A fresh temporary directory for this test process (removed at exit). */
const char *sp_test_tmpdir(void);
/* Run all registered suites with the basic runner; returns the process exit
 * code (0 when every test passed, 1 otherwise). */
int sp_test_run(void);

#endif
