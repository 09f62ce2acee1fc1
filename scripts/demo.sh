#!/bin/sh
# Install what is missing, build, make a default input (a synthetic
# 8192x6144 slide from the project's own generator) and run the main job on
# it. Outputs go to demo-out/ (gitignored).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
mkdir -p demo-out
slide=demo-out/synthetic.svs
[ -f "$slide" ] || build/tools/slidepipe-synth -o "$slide" --width 8192 --height 6144 --quiet
build/cli/slidepipe info "$slide"
