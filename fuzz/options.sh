# Sourced by fuzz/smoke.sh and scripts/fuzz.sh: the libFuzzer options and
# sanitizer settings of every run. Inputs up to 64 KiB, 10 s per input,
# at most 1 GiB resident, no single allocation over 256 MiB (a reader
# that believes a size in a file must not allocate it blindly); leaks
# and UB are failures.
SP_FUZZ_OPTS="-max_len=65536 -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256"
# (both callers live one folder below the repository root)
sp_fuzz_src=$(cd "$(dirname "$0")/.." && pwd)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export LSAN_OPTIONS="suppressions=$sp_fuzz_src/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
