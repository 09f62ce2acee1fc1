#!/bin/sh
# Seeds of fuzz_sidecar: sidecars in the form tiler/pyramid.c writes, for
# the target's fixed 1000x700 pyramid (tile 254, overlap 1, 11 levels),
# and, when $SLIDEPIPE_BIN names a slidepipe executable, the real
# OUT.json of a test slide.
set -eu
out=$1
mkdir -p "$out"
sidecar() { # SKIP(0|1) QUALITY
    awk -v skip="$1" -v q="$2" 'BEGIN {
        printf "{\"slidepipe_version\":\"0.1.0\",\"source\":{\"path\":\"/s/x.svs\",\"vendor\":\"aperio\",\"width\":1000,\"height\":700,\"mpp_x\":0.499,\"mpp_y\":0.499,\"objective_power\":20,\"quickhash\":\"8f3c0e\"},"
        printf "\"parameters\":{\"container\":\"dzi\",\"format\":\"jpeg\",\"tile_size\":254,\"overlap\":1,\"quality\":%d,\"skip_background\":%s,\"background_rule\":null,\"background\":[255,255,255]},", q, skip ? "true" : "false"
        printf "\"tiles_written\":42,\"tiles_skipped\":3,\"levels\":["
        for (l = 0; l <= 10; l++) {
            d = 2 ^ (10 - l); w = int((1000 + d - 1) / d); h = int((700 + d - 1) / d)
            c = int((w + 253) / 254); r = int((h + 253) / 254)
            printf "%s{\"level\":%d,\"width\":%d,\"height\":%d,\"downsample\":%d,\"cols\":%d,\"rows\":%d,\"tiles\":[", l ? "," : "", l, w, h, d, c, r
            for (y = 0; y < r; y++) {
                s = ""
                for (x = 0; x < c; x++) s = s ((skip && (x + y) % 3 == 0) ? "0" : "1")
                printf "%s\"%s\"", y ? "," : "", s
            }
            printf "]}"
        }
        printf "]}\n"
    }'
}
sidecar 0 75 >"$out/sidecar-1"
sidecar 1 90 >"$out/sidecar-2"
printf '{"source":{"vendor":"<b>&\\"x\\u00e9\\ud83d","mpp_x":1e308,"mpp_y":-0.0},"parameters":{"background":[0,1e9,-5]},"levels":[{"level":10,"tiles":["1111","0000","1x1"]}]}' >"$out/sidecar-3"
printf '{}' >"$out/sidecar-4"
if [ -x "${SLIDEPIPE_BIN:-}" ] && [ -f "${SLIDEPIPE_TESTDATA:-}/boxes.tiff" ]; then
    tmp=$(mktemp -d)
    if "$SLIDEPIPE_BIN" tile "$SLIDEPIPE_TESTDATA/boxes.tiff" -o "$tmp/b" \
        --skip-background --quiet >/dev/null 2>&1; then
        cp "$tmp/b.json" "$out/real-boxes.json"
    fi
    rm -rf "$tmp"
fi
