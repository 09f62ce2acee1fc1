#!/bin/sh
# Seeds of fuzz_h5schema: short edit programs (see fuzz_h5schema.c: a
# byte choosing the slide file (bit 0 clear) or the cohort (set), and
# whether to index the edited slide file (bit 1), then edits: object,
# operation, arguments), one per kind of edit.
set -eu
out=$1
mkdir -p "$out"
seed() { # NAME BYTE...
    name=$1
    shift
    for b in "$@"; do
        # shellcheck disable=SC2059
        printf "\\$(printf %03o "$b")"
    done >"$out/$name"
}
seed plain-slide 0
seed plain-cohort 1
seed del-coords 0 0 0
seed del-features 0 1 0
seed del-summary 0 2 0
seed del-slides-path 1 6 0
seed del-schema-attr 0 0 1 0 0
seed del-columns-attr 0 0 1 2 16
seed del-level-dim 0 0 1 1 15
seed attr-version-huge 0 0 2 0 1 0 2 10
seed attr-width-nan 0 0 2 0 4 3 1 12
seed attr-schema-int 0 0 3 0 0 0 1 5
seed attr-columns-fixed 0 0 2 2 16 8 3 3 3 1 2 0 0 0
seed attr-columns-null 0 0 2 2 16 6 0 
seed attr-downsample-2d 0 0 2 1 14 3 5 2 5 5 0 1 2 3
seed attr-source-vlen 0 0 2 0 2 6 1 255 0
seed attr-summary-str 0 0 2 3 17 7 1 0
seed feat-huge-chunk 0 0 4 1 4 2 10 2 1 9 3
seed feat-rank1 0 0 4 1 4 1 5 0
seed feat-int 0 0 4 1 0 2 5 2 8 0
seed coords-float 0 0 4 0 3 2 5 2 8 0
seed coords-huge 0 0 4 0 0 2 11 2 1 7 1
seed mask-huge 0 0 4 2 11 2 10 10 1 9 9
seed thumb-rank3 0 0 4 3 11 3 3 3 4 0
seed slide-id-str 1 7 4 4 6 1 5 0
seed slides-path-int 1 6 4 5 0 1 3 0
seed link-soft 0 0 5 2 0
seed link-dangling 0 1 5 0 1
seed link-hard 0 0 5 2 2
seed link-external 0 1 5 0 3
seed group-features 0 1 6
seed summary-many 0 0 7 40 12 13 14 15 16 1 2 3
# the same edits of the slide file, then `index` over it (first byte 2)
for s in plain-slide del-summary attr-source-vlen attr-width-nan feat-int \
    coords-huge link-hard summary-many; do
    { printf '\002'; tail -c +2 "$out/$s"; } >"$out/index-$s"
done
