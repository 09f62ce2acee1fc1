#!/bin/sh
# Install what is missing, build, make a default input (a synthetic
# 8192x6144 slide from the project's own generator) and run the main job
# on it: the fused pass (Deep Zoom pyramid + per-tile features in HDF5),
# then a query over the features. Outputs go to demo-out/ (gitignored).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh runtime build
scripts/build.sh build >/dev/null
sp=build/cli/slidepipe
mkdir -p demo-out
slide=demo-out/synthetic.svs
[ -f "$slide" ] || build/tools/slidepipe-synth -o "$slide" --width 8192 --height 6144 --quiet
$sp info "$slide"
$sp run "$slide" -o demo-out/synthetic --skip-background --force --json
echo "tiles with tissue_fraction > 0.5 and blur > 50:"
$sp query demo-out/synthetic.h5 --where 'tissue_fraction > 0.5 and blur > 50' --count
echo "pyramid: demo-out/synthetic.dzi   features: demo-out/synthetic.h5"
