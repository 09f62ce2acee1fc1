#!/bin/sh
# Seeds of fuzz_vips: small images made with `vips` (libvips-tools) from
# a corner of CMU-1-Small-Region.svs: a stripped TIFF (one strip, and
# 16-row strips in LZW and in JPEG, which ingest/strips.c reads), a tiled
# SubIFD pyramid, a 16-bit grey TIFF, JPEG, PNG with alpha, lossless WebP.
set -eu
out=$1
mkdir -p "$out"
data=${SLIDEPIPE_TESTDATA:-$(dirname "$0")/../../shared/testdata}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vips crop "$data/CMU-1-Small-Region.svs" "$tmp/c.v" 0 0 96 80
vips flatten "$tmp/c.v" "$tmp/rgb.v" --background 255
vips tiffsave "$tmp/rgb.v" "$out/strip-tiff" --compression lzw
tiffcp -r 16 -c lzw "$out/strip-tiff" "$out/strips16-lzw-tiff"
tiffcp -r 16 -c jpeg:75 -p contig "$out/strip-tiff" "$out/strips16-jpeg-tiff"
vips tiffsave "$tmp/rgb.v" "$out/subifd-pyramid" --tile --pyramid \
    --subifd --tile-width 16 --tile-height 16 --compression deflate
vips colourspace "$tmp/rgb.v" "$tmp/g.v" grey16
vips tiffsave "$tmp/g.v" "$out/grey16-tiff"
vips jpegsave "$tmp/rgb.v" "$out/jpeg" --Q 75
vips pngsave "$tmp/c.v" "$out/png-alpha"
vips webpsave "$tmp/rgb.v" "$out/webp" --lossless
