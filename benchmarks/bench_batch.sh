#!/bin/sh
# `slidepipe batch` over twenty generated slides of mixed sizes, against
# `vips dzsave` run on each slide in a loop, in one run:
#   batch N   slidepipe batch --threads N (N = all cores): pyramid AND
#             features + HDF5 per slide, cohort.h5 at the end
#   vips      vips dzsave on each slide, one after the other, each with all
#             cores (libvips' default concurrency): pyramid only
#   batch 1   slidepipe batch --threads 1, for the scaling from 1 to N
# Same tile settings everywhere: Deep Zoom, tile 254, overlap 1, JPEG Q75,
# levels down to 1x1 (vips --depth onepixel). Prints total wall time, CPU
# time, peak RSS (largest process), the tiles written, the ratio vips /
# batch, and the 1 -> N thread speed-up.
#
# usage: benchmarks/bench_batch.sh
#   SLIDEPIPE_BIN    slidepipe executable (default build/cli/slidepipe)
#   SLIDEPIPE_SYNTH  slidepipe-synth (default build/tools/slidepipe-synth)
#   BENCH_SCALE=F    multiply every slide edge by F (default 1)
# Slides are generated once into benchmarks/out/batch-slides (gitignored).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BIN=${SLIDEPIPE_BIN:-$root/build/cli/slidepipe}
SYNTH=${SLIDEPIPE_SYNTH:-$root/build/tools/slidepipe-synth}
SCALE=${BENCH_SCALE:-1}
out=$here/out/batch
. "$here/common.sh"
src=$here/out/batch-slides
cores=$(nproc)
mkdir -p "$out" "$src"

mp=$(sp_batch_slides "$src" "$SYNTH" "$SCALE")

# timed NAME CMD...: wall, user+sys, max RSS (largest process, kB)
timed() {
    name=$1; shift
    sp_timed "$name" "$out/results.txt" "$@"
}

# the peer: one vips dzsave per slide, each with all cores
vips_loop='for f in "$1"/*.svs; do
    vips dzsave "$f" "$2/$(basename "$f" .svs)" --tile-size 254 --overlap 1 \
        --depth onepixel --suffix ".jpeg[Q=75]" || exit 1
done'

: >"$out/results.txt"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$out/batchN" "$out/batch1"
timed "batch$cores" "$BIN" batch "$src" -o "$out/batchN" --threads "$cores" \
    --tile-size 254 --overlap 1 --format jpeg --quality 75 --quiet
rm -rf "$out/vips"; mkdir -p "$out/vips"
timed vips sh -c "$vips_loop" sh "$src" "$out/vips"
timed batch1 "$BIN" batch "$src" -o "$out/batch1" --threads 1 \
    --tile-size 254 --overlap 1 --format jpeg --quality 75 --quiet
t_batch=$(find "$out/batchN" -path '*slide_files*' -name '*.jpeg' | wc -l)
t_vips=$(find "$out/vips" -name '*.jpeg' | wc -l)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
# keep the summaries, drop the bulk
cp "$out/batchN/batch-summary.tsv" "$out/summary-batchN.tsv"
rm -rf "$out/batchN" "$out/batch1" "$out/vips"

awk -v cores="$cores" -v mp="$mp" -v tb="$t_batch" -v tv="$t_vips" \
    -v l0="$load0" -v l1="$load1" '
{ name[NR] = $1; wall[$1] = $2; cpu[$1] = $3; rss[$1] = $4; order[NR] = $1 }
END {
    printf "load average before / after: %s / %s\n", l0, l1
    printf "20 slides, %d megapixels in all, %d cores; tile 254, overlap 1, JPEG Q75\n",
        mp, cores
    printf "%-10s %9s %9s %6s %12s\n", "run", "wall s", "cpu s", "cpu%", "peak RSS MB"
    for (i = 1; i <= NR; i++) {
        n = order[i]
        printf "%-10s %9.2f %9.2f %5.0f%% %12.0f\n", n, wall[n], cpu[n],
            100 * cpu[n] / wall[n], rss[n] / 1024
    }
    bn = "batch" cores
    printf "tiles written: batch %d, vips %d%s\n", tb, tv,
        tb == tv ? " (same)" : " (DIFFERENT)"
    printf "vips dzsave loop / slidepipe batch (wall): %.2fx", wall["vips"] / wall[bn]
    printf "  (batch also computes features and writes HDF5 + cohort)\n"
    printf "batch scaling 1 -> %d threads: %.2fx (%.0f%% of linear)\n", cores,
        wall["batch1"] / wall[bn], 100 * wall["batch1"] / wall[bn] / cores
}' "$out/results.txt" | tee "$out/report.txt"
