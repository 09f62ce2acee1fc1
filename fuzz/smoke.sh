#!/bin/sh
# Smoke run of one libFuzzer target (the ctest entries fuzz_<name>):
#   fuzz/smoke.sh TARGET_BINARY WORKDIR SECONDS
# Writes the target's seeds (fuzz/seeds_<name>.sh) into a fresh folder,
# runs the target over them and then fuzzes for SECONDS from them. Exits
# non-zero on any crash, leak, UB report, timeout or oversized allocation
# (the input is kept under WORKDIR/<name>/ and its path printed).
set -eu
bin=$1
work=$2
secs=$3
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$bin")
name=${name#fuzz_}
dir="$work/$name"
rm -rf "$dir"
mkdir -p "$dir/seeds" "$dir/new"
if [ -f "$here/seeds_$name.sh" ]; then
    sh "$here/seeds_$name.sh" "$dir/seeds"
fi
. "$here/options.sh"
echo "fuzz_$name: $(ls "$dir/seeds" | wc -l) seeds, $secs s"
# shellcheck disable=SC2086
if ! "$bin" $SP_FUZZ_OPTS -seed=1 -max_total_time="$secs" \
    -print_final_stats=1 -artifact_prefix="$dir/" "$dir/new" "$dir/seeds" \
    >"$dir/log" 2>&1; then
    tail -n 60 "$dir/log"
    echo "fuzz_$name: FAILED; reproduce with: $bin $dir/crash-* (or leak-*, timeout-*, oom-*)" >&2
    exit 1
fi
grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done' "$dir/log" || true
