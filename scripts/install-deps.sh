#!/bin/sh
# Install every Debian 12 package slidepipe's build, tests and benchmarks
# need. Does nothing when all are present. Run as root (or with sudo).
#   scripts/install-deps.sh          build + tests + benchmarks
# (clang, its libFuzzer runtime and libomp build the fuzz targets.)
set -eu

PKGS="
build-essential cmake pkg-config clang-format git help2man
libopenslide-dev openslide-tools libglib2.0-dev
libtiff-dev libtiff-tools
libvips-dev libvips-tools
libhdf5-dev hdf5-tools zlib1g-dev
libcunit1-dev
clang libclang-rt-14-dev libomp-dev
libturbojpeg0-dev libjpeg-turbo-progs libjpeg-dev libpng-dev libwebp-dev
libmicrohttpd-dev libjson-c-dev
chromium wrk iipimage-server lighttpd nodejs
python3 python3-openslide python3-numpy python3-skimage python3-h5py python3-pandas python3-websocket
time strace
"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exec "$(dirname "$0")/../viewer/install-assets.sh"
fi

echo "install-deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
"$(dirname "$0")/../viewer/install-assets.sh"
