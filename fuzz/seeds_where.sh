#!/bin/sh
# Seeds of fuzz_where: --where expressions of the README and the tests.
set -eu
out=$1
mkdir -p "$out"
i=0
while IFS= read -r line; do
    i=$((i + 1))
    printf '%s' "$line" >"$out/where-$i"
done <<'LIST'
tissue_fraction > 0.5
tissue_fraction >= 0.5 and blur < 100
not (pen_fraction > 0) or x < 1024
(mean_r <> mean_g) AND NOT (od_h == .5e-1)
x = y or y != -3 and x <= +7
1 < 2
std_r > 1e308 or od_e < -1.5E+10
entropy >= 0x1p3
((((a<1))))
a<1 and b>2 and c==3 or d!=4 and not e<=5
LIST
