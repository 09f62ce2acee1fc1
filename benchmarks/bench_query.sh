#!/bin/sh
# Query benchmark: a generated cohort of FILES x ROWS tile rows (default
# 100 x 100000 = 10 million), `slidepipe query` with a three-clause filter
# and --count against h5py + numpy doing the same, in the same run.
# Prints wall time, peak RSS (GNU time) and the ratio; checks both agree.
#
#   benchmarks/bench_query.sh [BUILD_DIR]     (default: build)
#   FILES=100 ROWS=100000 REPEAT=3 benchmarks/bench_query.sh build-store
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
FILES=${FILES:-100}
ROWS=${ROWS:-100000}
REPEAT=${REPEAT:-3}
BIN=$BUILD/cli/slidepipe
FIXTURE=$BUILD/tests/store_fixture
OUT=benchmarks/out
DATA=$OUT/cohort-${FILES}x${ROWS}
WHERE='tissue_fraction > 0.5 and blur > 80 and not pen_fraction > 0.01'
for f in "$BIN" "$FIXTURE" /usr/bin/time; do
    [ -x "$f" ] || { echo "bench_query.sh: $f missing (build first)" >&2; exit 1; }
done
if [ ! -f "$DATA/.complete" ]; then
    echo "== generating $FILES files x $ROWS rows in $DATA"
    rm -rf "$DATA"
    "$FIXTURE" --cohort "$DATA" --files "$FILES" --rows "$ROWS" --seed 7
    touch "$DATA/.complete"
fi
du -sh "$DATA" | sed 's/^/data size: /'
# warm the page cache so both sides read from memory
cat "$DATA"/*.h5 > /dev/null

# run VAR LABEL OUTFILE CMD...: best wall time of REPEAT runs (into $VAR),
# max RSS
run() {
    var=$1; label=$2; outfile=$3; shift 3
    best=""; rss=0
    i=0
    while [ $i -lt "$REPEAT" ]; do
        /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > "$outfile"
        read -r t m < "$OUT/time.txt"
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
        [ "$m" -gt "$rss" ] && rss=$m
        i=$((i + 1))
    done
    printf '%-22s %8.2f s  %8d KiB peak RSS\n' "$label" "$best" "$rss"
    eval "$var=$best"
}
echo "== query --count over $((FILES * ROWS)) rows in $FILES files (best of $REPEAT)"
run sp_t "slidepipe" "$OUT/sp.tsv" "$BIN" query --where "$WHERE" --count --format tsv "$DATA"
run ref_t "h5py+numpy" "$OUT/ref.tsv" /usr/bin/python3 benchmarks/bench_query_ref.py "$DATA"
if cmp -s "$OUT/sp.tsv" "$OUT/ref.tsv"; then
    echo "counts agree: $(tail -n 1 "$OUT/sp.tsv" | cut -f 2) matching rows"
else
    echo "bench_query.sh: counts differ (see $OUT/sp.tsv, $OUT/ref.tsv)" >&2
    exit 1
fi
echo "slidepipe speed-up over h5py+numpy: $(echo "scale=2; $ref_t / $sp_t" | bc)x"
