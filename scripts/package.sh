#!/bin/sh
# Build the Debian package: a Release build in build-release/ (or $1) with
# Debian's hardening flags (dpkg-buildflags), then CPack
# (cmake/Packaging.cmake). Prints the path of slidepipe_<version>_amd64.deb.
# Needs the build group of scripts/install-deps.sh.
#   scripts/package.sh [BUILD_DIR]
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build-release}
viewer/install-assets.sh
# dates in the man pages and the Debian changelog: the last commit's
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cmake -S . -B "$dir" -DSP_WERROR=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" \
    -DCMAKE_EXE_LINKER_FLAGS="$(dpkg-buildflags --get LDFLAGS)" >/dev/null
cmake --build "$dir" -j"$(nproc)" >&2
rm -f "$dir"/slidepipe_*.deb
(cd "$dir" && cpack -G DEB) >&2
ls "$dir"/slidepipe_*_amd64.deb
