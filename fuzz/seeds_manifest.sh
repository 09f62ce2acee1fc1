#!/bin/sh
# Seeds of fuzz_manifest: TSV manifests (`path [TAB id [TAB options]]`)
# in the forms batch.h documents, and the test slides' own MANIFEST.tsv
# when $SLIDEPIPE_TESTDATA has one.
set -eu
out=$1
mkdir -p "$out"
printf 'path\tid\toptions\n# a comment\n\nslides/a.svs\ta\ttile-size=512 quality=90\n/abs/b.ndpi\t\tformat=PNG skip-background\nc.tif\n' >"$out/manifest-1"
printf 'x.svs\tx-1\t--overlap=0,skip-background=no\r\ny.svs\ty.2\tquality=100\tformat=webp\n' >"$out/manifest-2"
printf 'bad.svs\t.hidden\n' >"$out/manifest-3"
printf 'a.svs\ta\tquality=0\n' >"$out/manifest-4"
printf 'tile-size=254 overlap=1 quality=75 format=jpeg skip-background=yes' >"$out/options-1"
printf 'skip-background=off format=Webp' >"$out/options-2"
if [ -f "${SLIDEPIPE_TESTDATA:-}/MANIFEST.tsv" ]; then
    head -c 16384 "$SLIDEPIPE_TESTDATA/MANIFEST.tsv" >"$out/testdata-manifest"
fi
