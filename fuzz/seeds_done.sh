#!/bin/sh
# Seeds of fuzz_done: done.json in the form pipeline/batch_resume.c writes it,
# with the target's quickhash and fingerprint (so the run figures are
# read), and variants.
set -eu
out=$1
mkdir -p "$out"
done_json() { # QUICKHASH RUN
    printf '{\n  "schema": "slidepipe.batch-done",\n  "slidepipe_version": "0.1.0",\n  "slide": "/data/x.svs",\n  "id": "s1",\n  "quickhash": "%s",\n  "fingerprint": "0123456789abcdef",\n  "paths": "relative",\n  "parameters": "slidepipe-batch/1 run tile-size=254",\n  "threads": 2,\n  "seconds": 12.5,\n  "completed": "2026-01-01T00:00:00Z",\n  "run": %s\n}\n' "$@"
}
done_json 8f3c0e6a1d2b4c5e '{"ok":true,"file":"x.svs","tiles_written":1234,"tissue_area_mm2":55.25,"stage":null}' >"$out/done-1"
done_json 8f3c0e6a1d2b4c5e '{"ok":true,"tiles_written":1e300,"tissue_area_mm2":"NaN","nested":{"a":[1,2,{"b":"\u00e9\\"}]}}' >"$out/done-2"
done_json 'other' '{}' >"$out/done-3"
printf '{"schema":"slidepipe.batch-done","quickhash":"8f3c\\u0030e6a1d2b4c5e","fingerprint":"0123456789abcdef","paths":"relative","threads":-1e19,"seconds":-0}' >"$out/done-4"
