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
#   dicom read   slidepipe tile (Deep Zoom) from the DICOM series it wrote
#                vs from the SVS: tiles/s either way
# Prints wall, CPU, peak RSS, the ratios.
# usage: benchmarks/bench_dicom.sh [WIDTH HEIGHT]     (default 32768 24576)
#   SLIDEPIPE_BIN  slidepipe executable (default build/cli/slidepipe)
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
mkdir -p "$dst/orthanc"
res=$dst/results.txt
: >"$res"
drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true; }

drop
sp_timed slidepipe "$res" "$BIN" tile "$slide" -o "$dst/sp" --container dicom \
    --tile-size 240 --quality 75 --threads "$cores" --quiet
drop
sp_timed orthanc "$res" OrthancWSIDicomizer --folder="$dst/orthanc" \
    --openslide=/usr/lib/x86_64-linux-gnu/libopenslide.so.0 \
    --threads="$cores" --pyramid=1 --tile-width=240 --tile-height=240 \
    --compression=jpeg --jpeg-quality=75 --max-size=0 --reencode=1 "$slide"
drop
sp_timed slidepipe-copy "$res" "$BIN" tile "$slide" -o "$dst/sp-copy" \
    --container dicom --tile-size 240 --quality 75 --threads "$cores" \
    --passthrough --quiet
drop
sp_timed tiff "$res" "$BIN" tile "$slide" -o "$dst/sp-tiff" --container tiff \
    --tile-size 240 --quality 75 --threads "$cores" --quiet
drop
sp_timed tiff-copy "$res" "$BIN" tile "$slide" -o "$dst/sp-tiff-copy" \
    --container tiff --tile-size 240 --quality 75 --threads "$cores" \
    --passthrough --quiet
# and its default: level 0's JPEG tiles copied, the other levels made
# from them
rm -rf "$dst/orthanc-copy"; mkdir -p "$dst/orthanc-copy"
drop
sp_timed orthanc-copy "$res" OrthancWSIDicomizer --folder="$dst/orthanc-copy" \
    --openslide=/usr/lib/x86_64-linux-gnu/libopenslide.so.0 \
    --threads="$cores" --pyramid=1 --tile-width=240 --tile-height=240 \
    --compression=jpeg --jpeg-quality=75 --max-size=0 "$slide"
drop
sp_timed read-svs "$res" "$BIN" tile "$slide" -o "$dst/from-svs" --quiet \
    --threads "$cores"
drop
sp_timed read-dicom "$res" "$BIN" tile "$dst/sp.dicom" -o "$dst/from-dicom" \
    --quiet --threads "$cores"
tiles=$(find "$dst/from-svs_files" -type f | wc -l)
lv_sp=$(ls "$dst/sp.dicom" | wc -l)
lv_or=$(ls "$dst/orthanc" | wc -l)
errs=0
if command -v dciodvfy >/dev/null; then
    errs=$(for f in "$dst"/sp.dicom/*.dcm; do dciodvfy "$f" 2>&1; done | grep -c '^Error' || true)
    oerrs=$(for f in "$dst"/orthanc/*.dcm; do dciodvfy "$f" 2>&1; done | grep -c '^Error' || true)
fi
awk -v W="$W" -v H="$H" -v c="$cores" -v t="$tiles" -v ls="$lv_sp" -v lo="$lv_or" \
    -v e="$errs" -v oe="${oerrs:-?}" '
{ wall[$1] = $2; cpu[$1] = $3; rss[$1] = $4 }
END {
    printf "%dx%d slide, %d cores, tile 240, JPEG Q75\n", W, H, c
    printf "%-11s %8s %8s %12s\n", "run", "wall s", "cpu s", "peak RSS MB"
    split("slidepipe slidepipe-copy tiff tiff-copy orthanc orthanc-copy read-svs read-dicom", n, " ")
    for (i = 1; i <= 8; i++)
        printf "%-11s %8.2f %8.2f %12.0f\n", n[i], wall[n[i]], cpu[n[i]], rss[n[i]] / 1024
    printf "DICOM write, Orthanc dicomizer / slidepipe (wall): %.2fx re-encoding, %.2fx copying level 0; instances %d vs %d; dciodvfy errors %d vs %s\n",
        wall["orthanc"] / wall["slidepipe"], wall["orthanc-copy"] / wall["slidepipe"], ls, lo, e, oe
    printf "passthrough (level 0 copied) vs re-encoding, CPU: DICOM %.2fx (%.2f vs %.2f s), TIFF %.2fx (%.2f vs %.2f s); wall %.2fx / %.2fx\n",
        cpu["slidepipe"] / cpu["slidepipe-copy"], cpu["slidepipe-copy"], cpu["slidepipe"],
        cpu["tiff"] / cpu["tiff-copy"], cpu["tiff-copy"], cpu["tiff"],
        wall["slidepipe"] / wall["slidepipe-copy"], wall["tiff"] / wall["tiff-copy"]
    printf "OrthancWSIDicomizer copying level 0 / slidepipe --passthrough (wall): %.2fx; CPU %.2fx\n",
        wall["orthanc-copy"] / wall["slidepipe-copy"], cpu["orthanc-copy"] / cpu["slidepipe-copy"]
    printf "Deep Zoom from the DICOM series: %.0f tiles/s; from the SVS: %.0f tiles/s (%.2fx)\n",
        t / wall["read-dicom"], t / wall["read-svs"], wall["read-svs"] / wall["read-dicom"]
}' "$res" | tee "$dst/report.txt"
rm -rf "$dst/from-svs_files" "$dst/from-dicom_files"
