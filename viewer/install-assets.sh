#!/bin/sh
# Install the viewer's browser assets into viewer/node_modules from the
# npm registry: OpenSeadragon, pinned in package.json / package-lock.json
# (`npm ci`). `slidepipe serve` reads them from there at startup, so the
# pages work with no internet access; the CMake build never needs the
# network. Does nothing when the pinned version is already installed.
# Called by scripts/install-deps.sh (its build group) and scripts/package.sh.
set -eu
cd "$(dirname "$0")"
want=$(sed -n 's/.*"openseadragon": *"\([^"]*\)".*/\1/p' package.json | head -n 1)
have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
    node_modules/openseadragon/package.json 2>/dev/null | head -n 1 || true)
if [ -n "$want" ] && [ "$want" = "$have" ] &&
    [ -f node_modules/openseadragon/build/openseadragon/openseadragon.min.js ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
echo "install-assets: npm ci in viewer/ (openseadragon $want)" >&2
npm ci --no-audit --no-fund --loglevel=error >&2
