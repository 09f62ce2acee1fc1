#!/bin/sh
# Longer fuzzing runs than the smoke runs of scripts/test.sh
# (docs/FUZZING.md).
#   scripts/fuzz.sh [TARGET|all] [SECONDS] [extra libFuzzer options...]
# Builds build-fuzz/ (clang, -DSP_FUZZ=ON) when needed, then runs
# fuzz_TARGET (every target for `all`, the default, one after the other)
# for SECONDS each (default 300) on one core. The corpus persists in
# fuzz/corpus/TARGET/ (git-ignored), fed from the target's seeds on every
# run; crashes, leaks and timeouts go to fuzz/artifacts/TARGET/. Exits
# non-zero when a target found something.
set -eu
cd "$(dirname "$0")/.."
target=${1:-all}
secs=${2:-300}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
export SLIDEPIPE_TESTDATA="${SLIDEPIPE_TESTDATA:-$(cd .. && pwd)/shared/testdata}"
if [ -z "${SLIDEPIPE_BIN:-}" ] && [ -x build/cli/slidepipe ]; then
    export SLIDEPIPE_BIN="$PWD/build/cli/slidepipe"
fi
scripts/build.sh build-fuzz -DSP_FUZZ=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ >/dev/null
. fuzz/options.sh
if [ "$target" = all ]; then
    targets=$(cd fuzz && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
else
    targets=$target
fi
status=0
for t in $targets; do
    bin=build-fuzz/fuzz/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: no target fuzz_$t (fuzz/fuzz_$t.c)" >&2
        exit 2
    fi
    corpus=fuzz/corpus/$t
    art=fuzz/artifacts/$t
    seeds=$(mktemp -d)
    mkdir -p "$corpus" "$art"
    if [ -f "fuzz/seeds_$t.sh" ]; then
        sh "fuzz/seeds_$t.sh" "$seeds"
    fi
    echo "== fuzz_$t: ${secs}s, corpus $corpus ($(ls "$corpus" | wc -l) inputs)"
    # shellcheck disable=SC2086
    if ! "$bin" $SP_FUZZ_OPTS -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$art/" "$@" "$corpus" "$seeds" 2>"$art/log"; then
        status=1
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$art/log" >&2 || true
        echo "fuzz_$t: found a failure; reproduce with: $bin $art/<file>" >&2
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$art/log" || true
    rm -rf "$seeds"
done
exit $status
