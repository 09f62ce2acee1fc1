#!/bin/sh
# Seeds of fuzz_direct: small JPEG-tiled slides made at test time from
# $SLIDEPIPE_TESTDATA (nothing binary is committed), each under libFuzzer's
# 64 KiB input limit:
#   small.svs                 the 16x16 Aperio fixture, as it is
#   generic-*.tif             a crop of CMU-1-Small-Region.svs as a JPEG-tiled
#                             pyramidal TIFF (generic TIFF; YCbCr and RGB)
#   aperio-pyramid.svs        the same pyramid with an Aperio description
#                             (OpenSlide reads it as Aperio: every tiled
#                             directory a level)
# Needs vips and tiffset (libvips-tools, libtiff-tools); without them only
# small.svs is written.
set -eu
out=$1
mkdir -p "$out"
data=${SLIDEPIPE_TESTDATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/testdata}
[ -f "$data/small.svs" ] && cat "$data/small.svs" >"$out/small.svs"
cmu=$data/CMU-1-Small-Region.svs
if [ ! -f "$cmu" ] || ! command -v vips >/dev/null 2>&1; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vips crop "$cmu" "$tmp/crop.v" 900 1200 200 150 >/dev/null 2>&1
vips tiffsave "$tmp/crop.v" "$out/generic-ycbcr.tif" --tile --tile-width 64 \
    --tile-height 64 --pyramid --compression jpeg --Q 60 >/dev/null 2>&1
vips tiffsave "$tmp/crop.v" "$out/generic-rgb.tif" --tile --tile-width 32 \
    --tile-height 48 --compression jpeg --Q 50 --rgbjpeg >/dev/null 2>&1 ||
    rm -f "$out/generic-rgb.tif"
if command -v tiffset >/dev/null 2>&1; then
    cp "$out/generic-ycbcr.tif" "$out/aperio-pyramid.svs"
    tiffset -d 0 -s 270 "Aperio Image Library v10.0.50
200x150 [0,0 200x150] (64x64) JPEG/RGB Q=60|AppMag = 20|MPP = 0.4990" \
        "$out/aperio-pyramid.svs" >/dev/null 2>&1 || rm -f "$out/aperio-pyramid.svs"
fi
# anything over libFuzzer's -max_len would be cut: drop it
for f in "$out"/*; do
    [ "$(wc -c <"$f")" -le 65536 ] || rm -f "$f"
done
