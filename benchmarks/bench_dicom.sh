#!/bin/sh
# DICOM whole-slide images, slidepipe against the Orthanc dicomizer, in
# one run on the benchmark slide (same tile size 240, the source's: the dicomizer
# only divides tiles, and JPEG quality 75):
#   dicom write  slidepipe tile --container dicom (a full pyramid)
#                vs OrthancWSIDicomizer --threads N --pyramid 1
#                --reencode 1 (the same levels, every tile decoded and
#                re-encoded, as slidepipe does)
#   passthrough  slidepipe tile --container dicom|tiff --passthrough
#                (level 0's JPEG tiles copied, not re-encoded) vs the
#                same without: wall and CPU; against the dicomizer's own
#                copy mode (its default)
#   dicom read   slidepipe tile (a pyramidal TIFF: one output file, so
#                that the file system's cost of creating Deep Zoom's
#                19,000 files, which swings by seconds when the last
#                run's were just deleted, does not hide the reading) from
#                the DICOM series it wrote vs from the SVS: tiles/s
#                either way
# Every command runs ROUNDS times (default 5), the rounds interleaved (one
# of each per round, in the same order), so a drift of the machine's speed
# falls on both sides; prints each run's median wall, CPU and peak RSS
# over the rounds (and the fastest and slowest wall), and the ratios of
# the medians.
# usage: benchmarks/bench_dicom.sh [WIDTH HEIGHT]     (default 32768 24576)
#   SLIDEPIPE_BIN  slidepipe executable (default build/cli/slidepipe)
#   ROUNDS         rounds (default 5)
#   SETTLE         seconds of idling before each run (default 3; 0: none)
# The slide is made once by ../shared/bench/make-bench-slide.sh and kept
# in benchmarks/out/ (gitignored).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
W=${1:-32768}; H=${2:-24576}
BIN=${SLIDEPIPE_BIN:-$root/build/cli/slidepipe}
DATA=${SLIDEPIPE_TESTDATA:-$root/../shared/testdata}
out=$here/out
. "$here/common.sh"
mkdir -p "$out"
slide=$out/bench-${W}x${H}.svs
cores=$(nproc)
if [ ! -f "$slide" ]; then
    echo "making $slide ..." >&2
    sh "$root/../shared/bench/make-bench-slide.sh" "$DATA/CMU-1-Small-Region.svs" \
        "$slide.part" "$W" "$H"
    mv "$slide.part" "$slide"
fi
dst=$out/dicom
rm -rf "$dst"
mkdir -p "$dst"
res=$dst/results.txt
: >"$res"
ROUNDS=${ROUNDS:-5}
# before each run the page cache is dropped, so the slide is read from
# disk as in an overnight batch, and then both programs are started once
# (--version), so neither run pays for loading its shared libraries from
# disk (~0.1 s each here: a batch loads them once); then the machine
# idles SETTLE seconds (default 3), so that no run starts in the wake of
# the one before: a 1-second slidepipe run straight after the
# dicomizer's 6-second one took 1.3 s, 0.9 s after a pause (user time
# 2.1 s against 1.6 s: the same instructions at a lower clock)
SETTLE=${SETTLE:-3}
drop() {
    sync
    [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true
    "$BIN" --version >/dev/null 2>&1 || true
    OrthancWSIDicomizer --version >/dev/null 2>&1 || true
    sleep "$SETTLE"
}
# run NAME CMD...: one timed run into $res, its outputs removed first
run() {
    _n=$1; shift
    rm -rf "$dst/$_n".* "$dst/${_n}_files"
    drop
    sp_timed "$_n" "$res" "$@"
}
orthanc() {
    _n=$1; shift
    rm -rf "$dst/$_n"; mkdir -p "$dst/$_n"
    run "$_n" OrthancWSIDicomizer --folder="$dst/$_n" \
        --openslide=/usr/lib/x86_64-linux-gnu/libopenslide.so.0 \
        --threads="$cores" --pyramid=1 --tile-width=240 --tile-height=240 \
        --compression=jpeg --jpeg-quality=75 --max-size=0 "$@" "$slide"
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "round $r of $ROUNDS ..." >&2
    run slidepipe "$BIN" tile "$slide" -o "$dst/slidepipe" --container dicom \
        --tile-size 240 --quality 75 --threads "$cores" --quiet
    # the dicomizer re-encoding every tile, as slidepipe does
    orthanc orthanc --reencode=1
    run slidepipe-copy "$BIN" tile "$slide" -o "$dst/slidepipe-copy" \
        --container dicom --tile-size 240 --quality 75 --threads "$cores" \
        --passthrough --quiet
    run tiff "$BIN" tile "$slide" -o "$dst/tiff" --container tiff \
        --tile-size 240 --quality 75 --threads "$cores" --quiet
    run tiff-copy "$BIN" tile "$slide" -o "$dst/tiff-copy" --container tiff \
        --tile-size 240 --quality 75 --threads "$cores" --passthrough --quiet
    # and its default: level 0's JPEG tiles copied, the other levels made
    # from them
    orthanc orthanc-copy
    run read-svs "$BIN" tile "$slide" -o "$dst/read-svs" --quiet \
        --container tiff --json \
        --threads "$cores"
    run read-dicom "$BIN" tile "$dst/slidepipe.dicom" -o "$dst/read-dicom" \
        --container tiff --json \
        --quiet --threads "$cores"
    r=$((r + 1))
done
tiles=$(sed -n 's/.*"tiles_written":\([0-9]*\).*/\1/p' "$out/read-svs.log")
lv_sp=$(ls "$dst/slidepipe.dicom" | wc -l)
lv_or=$(ls "$dst/orthanc" | wc -l)
errs=0
if command -v dciodvfy >/dev/null; then
    errs=$(for f in "$dst"/slidepipe.dicom/*.dcm; do dciodvfy "$f" 2>&1; done | grep -c '^Error' || true)
    oerrs=$(for f in "$dst"/orthanc/*.dcm; do dciodvfy "$f" 2>&1; done | grep -c '^Error' || true)
fi
# the median of each column per run name (sort -n by name, then value)
med() { # COLUMN: "name median min max" per name
    sort -k1,1 -k"$1","$1"n "$res" | awk -v c="$1" '
    { v[$1, ++n[$1]] = $c }
    END {
        for (k in n) {
            m = n[k]
            if (m % 2) md = v[k, (m + 1) / 2]
            else md = (v[k, m / 2] + v[k, m / 2 + 1]) / 2
            printf "%s %s %s %s\n", k, md, v[k, 1], v[k, m]
        }
    }'
}
{ med 2 | sed 's/^/wall /'; med 3 | sed 's/^/cpu /'; med 4 | sed 's/^/rss /'; } >"$dst/medians.txt"
awk -v W="$W" -v H="$H" -v c="$cores" -v t="$tiles" -v ls="$lv_sp" -v lo="$lv_or" \
    -v e="$errs" -v oe="${oerrs:-?}" -v R="$ROUNDS" '
$1 == "wall" { wall[$2] = $3; lo_[$2] = $4; hi_[$2] = $5 }
$1 == "cpu" { cpu[$2] = $3 }
$1 == "rss" { rss[$2] = $3 }
END {
    printf "%dx%d slide, %d cores, tile 240, JPEG Q75; medians of %d interleaved rounds\n", W, H, c, R
    printf "%-14s %8s %14s %8s %12s\n", "run", "wall s", "(min-max)", "cpu s", "peak RSS MB"
    split("slidepipe slidepipe-copy tiff tiff-copy orthanc orthanc-copy read-svs read-dicom", n, " ")
    for (i = 1; i <= 8; i++)
        printf "%-14s %8.2f %6.2f-%-7.2f %8.2f %12.0f\n", n[i], wall[n[i]], lo_[n[i]], hi_[n[i]], cpu[n[i]], rss[n[i]] / 1024
    printf "DICOM write, Orthanc dicomizer / slidepipe (wall): %.2fx re-encoding, %.2fx copying level 0; instances %d vs %d; dciodvfy errors %d vs %s\n",
        wall["orthanc"] / wall["slidepipe"], wall["orthanc-copy"] / wall["slidepipe"], ls, lo, e, oe
    printf "passthrough (level 0 copied) vs re-encoding, CPU: DICOM %.2fx (%.2f vs %.2f s), TIFF %.2fx (%.2f vs %.2f s); wall %.2fx / %.2fx\n",
        cpu["slidepipe"] / cpu["slidepipe-copy"], cpu["slidepipe-copy"], cpu["slidepipe"],
        cpu["tiff"] / cpu["tiff-copy"], cpu["tiff-copy"], cpu["tiff"],
        wall["slidepipe"] / wall["slidepipe-copy"], wall["tiff"] / wall["tiff-copy"]
    printf "OrthancWSIDicomizer copying level 0 / slidepipe --passthrough (wall): %.2fx; CPU %.2fx\n",
        wall["orthanc-copy"] / wall["slidepipe-copy"], cpu["orthanc-copy"] / cpu["slidepipe-copy"]
    printf "Pyramidal TIFF from the DICOM series: %.0f tiles/s; from the SVS: %.0f tiles/s (%.2fx)\n",
        t / wall["read-dicom"], t / wall["read-svs"], wall["read-svs"] / wall["read-dicom"]
}' "$dst/medians.txt" | tee "$dst/report.txt"
rm -f "$dst/read-svs.tiff" "$dst/read-dicom.tiff"
