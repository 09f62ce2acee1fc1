# Sourced by fuzz/smoke.sh and scripts/fuzz.sh: the libFuzzer options and
# sanitizer settings of every run. Inputs up to 64 KiB, 10 s per input,
# at most 2 GiB resident, no single allocation over 256 MiB (a reader
# that believes a size in a file must not allocate it blindly); leaks
# and UB are failures. ASan keeps 64 MiB of freed memory in quarantine
# (not 256): the HDF5 target frees large read buffers at every input.
SP_FUZZ_OPTS="-max_len=65536 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256"
# The repository root: both scripts live one folder below it; sourced by
# hand, the current folder.
if [ -z "${SP_FUZZ_ROOT:-}" ]; then
    SP_FUZZ_ROOT=$(cd "$(dirname "$0")/.." && pwd)
    [ -f "$SP_FUZZ_ROOT/tests/lsan.supp" ] || SP_FUZZ_ROOT=$PWD
fi
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:quarantine_size_mb=64"
export LSAN_OPTIONS="suppressions=$SP_FUZZ_ROOT/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
