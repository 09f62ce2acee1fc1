#!/bin/sh
# Seeds of fuzz_dzi: descriptors in the form tiler/dzi.c writes, alone or
# followed by a NUL and a sidecar, a vips-style one-line descriptor, and,
# when $SLIDEPIPE_BIN names a slidepipe executable, the real .dzi and
# .json of a test slide.
set -eu
out=$1
mkdir -p "$out"
dzi() { # FORMAT OVERLAP TILESIZE HEIGHT WIDTH
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns="http://schemas.microsoft.com/deepzoom/2008"\n  Format="%s"\n  Overlap="%s"\n  TileSize="%s"\n  >\n  <Size \n    Height="%s"\n    Width="%s"\n  />\n</Image>\n' "$@"
}
nul() { printf '\000'; }
dzi jpeg 1 254 250 300 >"$out/dzi-1"
{
    dzi png 0 512 2967 2220
    nul
    printf '{"source":{"vendor":"aperio","mpp_x":0.499,"mpp_y":0.499,"objective_power":20,"quickhash":"ab"},"parameters":{"quality":80,"background":[255,255,255]},"levels":[{"level":0,"tiles":["1"]},{"level":11,"tiles":["11","10"]},{"level":12,"tiles":["1111","1111","1111"]}]}'
} >"$out/dzi-2"
# a 2^31 px wide, 1 px high pyramid of 1 px tiles: its last level has one
# row of 2^31 tiles, and a sidecar that lists one short row for it
{
    dzi webp 0 1 1 2147483648
    nul
    printf '{"levels":[{"level":31,"tiles":["1"]},{"level":30,"tiles":["10"]}]}'
} >"$out/dzi-3"
printf '<Image TileSize="254" Overlap="1" Format="jpeg" xmlns="http://schemas.microsoft.com/deepzoom/2008"><Size Width="1000" Height="700"/></Image>' >"$out/dzi-4"
if [ -x "${SLIDEPIPE_BIN:-}" ] && [ -f "${SLIDEPIPE_TESTDATA:-}/boxes.tiff" ]; then
    tmp=$(mktemp -d)
    if "$SLIDEPIPE_BIN" tile "$SLIDEPIPE_TESTDATA/boxes.tiff" -o "$tmp/b" \
        --skip-background --quiet >/dev/null 2>&1; then
        cp "$tmp/b.dzi" "$out/real-boxes"
        { cat "$tmp/b.dzi"; nul; cat "$tmp/b.json"; } >"$out/real-boxes-sidecar"
    fi
    rm -rf "$tmp"
fi
