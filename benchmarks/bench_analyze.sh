#!/bin/sh
# Analysis and the fused pass, side by side in one run on one slide:
#   slidepipe analyze | slidepipe tile | slidepipe run | the Python reference
#   (openslide-python + numpy + scikit-image, one process per core, the same
#   features on the same grid: benchmarks/bench_analyze_ref.py)
# Prints wall, CPU and peak RSS of each, analysis throughput (level-0 pixels
# of the tissue tiles analysed per wall second, mask included) and the
# ratios the issue sets: analyze vs the reference (>= 40x), run vs tile
# (<= 1.15x), peak RSS (< 512 MB).
#
# usage: benchmarks/bench_analyze.sh [SLIDE]
#   default SLIDE: the 32768x24576 benchmark slide made by
#   ../shared/bench/make-bench-slide.sh (kept in benchmarks/out/)
#   REPEAT=N     rounds of analyze, tile and run (default 5): each figure is
#                the median round's, with the range of the rounds beside it
#   REF_TILES=K  time the reference on its first K tissue tiles only (default
#                0: all of them, ~40 s here). Its mask and process start-up
#                (~0.6 s) are paid once either way, so a small K makes the
#                reference look slower than it is on a whole slide.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BIN=${SLIDEPIPE_BIN:-$root/build/cli/slidepipe}
DUMP=${SLIDEPIPE_ANALYSIS_DUMP:-$root/build/tests/analysis_dump}
DATA=${SLIDEPIPE_TESTDATA:-$root/../shared/testdata}
out=$here/out
. "$here/common.sh"
mkdir -p "$out"
slide=${1:-$out/bench-32768x24576.svs}
if [ ! -f "$slide" ]; then
    echo "making $slide ..." >&2
    sh "$root/../shared/bench/make-bench-slide.sh" "$DATA/CMU-1-Small-Region.svs" \
        "$slide.part" 32768 24576
    mv "$slide.part" "$slide"
fi
cores=$(nproc)
REPEAT=${REPEAT:-5}
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$out/analyze.results"

timed() { # NAME CMD...
    name=$1; shift
    rm -rf "$out/b_$name"*
    sp_timed "$name" "$out/analyze.results" "$@"
}

# the three in turn, REPEAT rounds: a second-long run is at the mercy of
# whatever else the machine does, so each figure is the median round's
i=0
while [ "$i" -lt "$REPEAT" ]; do
    timed analyze "$BIN" analyze "$slide" -o "$out/b_analyze.h5" --quiet
    timed tile "$BIN" tile "$slide" -o "$out/b_tile" --quiet
    timed run "$BIN" run "$slide" -o "$out/b_run" --quiet
    i=$((i + 1))
done
# pixels of the tissue tiles analysed (edge tiles counted at their size)
mpx=$(/usr/bin/python3 -c "
import h5py, sys
f = h5py.File(sys.argv[1]); c = f['coords'][:]; T = f['coords'].attrs['patch_size']
W, H = f.attrs['width'], f.attrs['height']
print(sum(min(T, W - x) * min(T, H - y) for x, y in c) / 1e6)" "$out/b_analyze.h5")
ref=$(/usr/bin/python3 "$here/bench_analyze_ref.py" "$slide" --dump "$DUMP" \
      --procs "$cores" --max-tiles "${REF_TILES:-0}" | grep -i "reference" | head -1)
refmps=$(echo "$ref" | grep -o '[0-9.]* MP/s' | head -1 | cut -d' ' -f1)

awk -v mpx="$mpx" -v refmps="$refmps" -v cores="$cores" -v rounds="$REPEAT" '
    { k = ++cnt[$1]; ws[$1, k] = $2; cs[$1, k] = $3
      if ($4 > r[$1]) r[$1] = $4 }
    END {
        printf "slide tissue tiles: %.1f MP, %d cores, median of %d rounds\n", mpx, cores, rounds
        printf "%-10s %8s %8s %12s   %s\n", "tool", "wall s", "cpu s", "peak RSS MB", "wall range"
        split("analyze tile run", names, " ")
        for (i = 1; i <= 3; i++) { n = names[i]; m = cnt[n]
            for (a = 1; a <= m; a++) idx[a] = a
            for (a = 2; a <= m; a++)   # insertion sort of the rounds by wall
                for (b = a; b > 1 && ws[n, idx[b]] < ws[n, idx[b - 1]]; b--) {
                    t = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = t }
            med = idx[int((m + 1) / 2)]
            w[n] = ws[n, med]; c[n] = cs[n, med]
            printf "%-10s %8.2f %8.2f %12.0f   %.2f-%.2f\n", n, w[n], c[n], r[n] / 1024, ws[n, idx[1]], ws[n, idx[m]] }
        a = mpx / w["analyze"]
        printf "analyze: %.1f MP/s of tissue tiles; Python reference %.2f MP/s; ratio %.1fx (target >= 40x)\n", a, refmps, a / refmps
        printf "run / tile wall: %.2fx (target <= 1.15x)\n", w["run"] / w["tile"]
    }' "$out/analyze.results"
