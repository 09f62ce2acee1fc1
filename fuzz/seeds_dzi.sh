#!/bin/sh
# Seeds of fuzz_dzi: descriptors in the form tiler/dzi.c writes (first
# byte '<' is even: no sidecar; a leading space makes it odd: with one),
# a vips-style one-line descriptor, and, when $SLIDEPIPE_BIN names a
# slidepipe executable, the real .dzi of a test slide.
set -eu
out=$1
mkdir -p "$out"
dzi() { # FORMAT OVERLAP TILESIZE HEIGHT WIDTH
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<Image xmlns="http://schemas.microsoft.com/deepzoom/2008"\n  Format="%s"\n  Overlap="%s"\n  TileSize="%s"\n  >\n  <Size \n    Height="%s"\n    Width="%s"\n  />\n</Image>\n' "$@"
}
dzi jpeg 1 254 250 300 >"$out/dzi-1"
{ printf ' '; dzi png 0 512 2967 2220; } >"$out/dzi-2"
{ printf ' '; dzi webp 2 256 1 2147483648; } >"$out/dzi-3"
printf '<Image TileSize="254" Overlap="1" Format="jpeg" xmlns="http://schemas.microsoft.com/deepzoom/2008"><Size Width="1000" Height="700"/></Image>' >"$out/dzi-4"
if [ -x "${SLIDEPIPE_BIN:-}" ] && [ -f "${SLIDEPIPE_TESTDATA:-}/boxes.tiff" ]; then
    tmp=$(mktemp -d)
    if "$SLIDEPIPE_BIN" tile "$SLIDEPIPE_TESTDATA/boxes.tiff" -o "$tmp/b" \
        --quiet >/dev/null 2>&1; then
        cp "$tmp/b.dzi" "$out/real-boxes.dzi"
    fi
    rm -rf "$tmp"
fi
