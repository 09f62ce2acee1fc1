#!/bin/sh
# Seeds of fuzz_route: one request line per file ("METHOD TARGET"), the
# URL forms of viewer.h and a few near misses.
set -eu
out=$1
mkdir -p "$out"
i=0
while IFS= read -r line; do
    i=$((i + 1))
    printf '%s' "$line" >"$out/route-$i"
done <<'LIST'
GET /
GET /slide/CMU-1
HEAD /api/slides
GET /api/slide/s_1
GET /api/slide/s_1/features?x=0&y=0&w=1024&h=768&feature=mean_r&v=0123abcd
GET /api/slide/s_1/features?feature=od_h.max
GET /dzi/CMU-1.dzi?v=deadbeef
GET /dzi/CMU-1_files/12/3_4.jpeg
GET /dzi/a_files/0/0_0.png
GET /dzi/a_files/62/2147483648_0.webp
GET /static/viewer.js
GET /static/openseadragon.min.js
GET /assoc/CMU-1/thumbnail.png
GET /assoc/x/label.png?v=1
POST /
GET /dzi/../etc/passwd
GET /slide/%2e%2e
GET /api//slides
GET /api/slide/x/features?x=1&x=2
GET /api/slide/x/features?x=01&y=0&w=0&h=1
LIST
