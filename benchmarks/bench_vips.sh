#!/bin/sh
# A plain stripped TIFF (not a slide: read through libvips, ingest/vips.c)
# to Deep Zoom, slidepipe against `vips dzsave` on the same file, in one
# run: same tile size 254, overlap 1, JPEG quality 75, depth onepixel,
# all cores. Prints wall, CPU and peak RSS (GNU time -v) side by side, the
# ratios, and the most space files in $TMPDIR held during each. slidepipe
# reads the strips through libtiff (ingest/strips.c) and needs none
# (before, libvips' random access decoded the image whole into $TMPDIR:
# run with SLIDEPIPE_BIN set to such a build to see it); `vips dzsave`
# reads the file once, in order, and needs none either.
# usage: benchmarks/bench_vips.sh [WIDTH HEIGHT]     (default 60000 60000)
#   SLIDEPIPE_BIN  slidepipe executable (default build/cli/slidepipe)
#   COMPRESSION    the TIFF's strips: none (default), lzw, deflate
# The image is made once and kept in benchmarks/out/ (gitignored): a
# 2000 x 2000 CMU crop replicated and saved by `vips tiffsave` without
# --tile (BigTIFF, libvips' 128-row strips), streamed: libvips' memory
# stays small. Sides that are multiples of 2000 (the default) go
# straight to the TIFF; others through one uncompressed .v of the
# replicated image, then cropped. 60000^2 RGB uncompressed is 10.8 GB,
# the outputs a few GB each.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
W=${1:-60000}; H=${2:-60000}
BIN=${SLIDEPIPE_BIN:-$root/build/cli/slidepipe}
DATA=${SLIDEPIPE_TESTDATA:-$root/../shared/testdata}
COMP=${COMPRESSION:-none}
out=$here/out
. "$here/common.sh"
mkdir -p "$out"
img=$out/plain-${W}x${H}-$COMP.tif
cores=$(nproc)
if [ ! -f "$img" ]; then
    echo "making $img ..." >&2
    t=$(mktemp -d "$out/make-XXXXXX")
    vips crop "$DATA/CMU-1-Small-Region.svs" "$t/c.v" 0 0 2000 2000
    vips flatten "$t/c.v" "$t/rgb.v" --background 255
    nx=$(( (W + 1999) / 2000 )); ny=$(( (H + 1999) / 2000 ))
    save="$t/img.tif[bigtiff,compression=$COMP]"
    if [ $((W % 2000)) -eq 0 ] && [ $((H % 2000)) -eq 0 ]; then
        vips replicate "$t/rgb.v" "$save" "$nx" "$ny"
    else
        vips replicate "$t/rgb.v" "$t/rep.v" "$nx" "$ny"
        vips crop "$t/rep.v" "$save" 0 0 "$W" "$H"
    fi
    mv "$t/img.tif" "$img"
    rm -rf "$t"
fi
dst=$out/vips
rm -rf "$dst"
mkdir -p "$dst/tmp"
res=$dst/results.txt
: >"$res"
drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true; }
# the most disk space files in $TMPDIR held at once while CMD ran, in kB:
# libvips unlinks its temporary file as soon as it has made it (du and ls
# cannot see it) but keeps it open, so the open files of every process
# are looked at, twice a second (df would count the outputs too, on the
# same file system)
watch_tmp() {
    _peak=0
    while [ -d "$dst/tmp" ]; do
        _s=$(find /proc/[0-9]*/fd -lname "$dst/tmp/*" 2>/dev/null |
            xargs -r stat -L -c '%b %B' 2>/dev/null |
            awk '{ s += $1 * $2 } END { printf "%d", s / 1024 }')
        [ "$_s" -gt "$_peak" ] && _peak=$_s && echo "$_peak" >"$dst/tmp.$1"
        sleep 0.5
    done
}
TMPDIR=$dst/tmp
export TMPDIR
drop
watch_tmp slidepipe & w=$!
sp_timed slidepipe "$res" "$BIN" tile "$img" -o "$dst/sp" \
    --tile-size 254 --overlap 1 --quality 75 --threads "$cores" --quiet
drop
rm -rf "$dst/tmp"; wait $w || true; mkdir -p "$dst/tmp"
watch_tmp vips & w=$!
sp_timed vips "$res" vips dzsave "$img" "$dst/vips" --tile-size 254 \
    --overlap 1 --depth onepixel --suffix .jpeg[Q=75]
rm -rf "$dst/tmp"; wait $w || true
tiles_sp=$(find "$dst/sp_files" -type f | wc -l)
tiles_v=$(find "$dst/vips_files" -type f | wc -l)
awk -v W="$W" -v H="$H" -v c="$cores" -v C="$COMP" -v ts="$tiles_sp" \
    -v tv="$tiles_v" -v ps="$(cat "$dst/tmp.slidepipe" 2>/dev/null || echo 0)" \
    -v pv="$(cat "$dst/tmp.vips" 2>/dev/null || echo 0)" '
{ wall[$1] = $2; cpu[$1] = $3; rss[$1] = $4 }
END {
    printf "%dx%d stripped TIFF (compression %s), %d cores, tile 254, JPEG Q75\n", W, H, C, c
    printf "%-10s %8s %8s %12s %12s %8s\n", "run", "wall s", "cpu s", "peak RSS MB", "peak tmp MB", "tiles"
    printf "%-10s %8.2f %8.2f %12.0f %12.0f %8d\n", "slidepipe", wall["slidepipe"], cpu["slidepipe"], rss["slidepipe"] / 1024, ps / 1024, ts
    printf "%-10s %8.2f %8.2f %12.0f %12.0f %8d\n", "vips", wall["vips"], cpu["vips"], rss["vips"] / 1024, pv / 1024, tv
    printf "slidepipe / vips dzsave: wall %.2fx, cpu %.2fx, peak RSS %.2fx\n",
        wall["slidepipe"] / wall["vips"], cpu["slidepipe"] / cpu["vips"], rss["slidepipe"] / rss["vips"]
}' "$res"
