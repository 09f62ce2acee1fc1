#!/bin/sh
# Configure and build slidepipe into build/ (or $1), warnings as errors.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build}
[ $# -gt 0 ] && shift
cmake -S . -B "$dir" -DSP_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
