#!/bin/sh
# Install the Debian 12 packages of one or more groups; does nothing for
# what is already installed. Run as root (or with sudo).
#   scripts/install-deps.sh [runtime|build|test]...   (default: all three)
#   scripts/install-deps.sh --list GROUP...           print the packages
# runtime  the shared libraries the installed slidepipe links (the .deb's
#          Depends, computed by dpkg-shlibdeps, name the same packages)
# build    compiler, CMake, -dev packages (libopenmpi-dev: slidepipe-mpi,
#          which the .deb leaves out), clang-format, help2man (man
#          pages), dpkg-dev and file (CPack's .deb: dpkg-shlibdeps, ELF
#          detection), nodejs; then viewer/install-assets.sh puts
#          OpenSeadragon into viewer/node_modules with npm (it installs
#          Debian's npm package when there is no npm command: some nodejs
#          builds bundle npm)
# test     tests and benchmarks: reference tools and Python modules,
#          Chromium, the benchmark peers, strace, lintian, clang and its
#          libFuzzer runtime and libomp (the fuzz targets), mpirun and a
#          Slurm cluster the tests start on this machine (openmpi-bin,
#          slurm-wlm, munge), DICOM's independent writers and readers
#          (orthanc-wsi, its server orthanc, dicom3tools, python3-pydicom)
# scripts/demo.sh installs runtime + build, scripts/test.sh all three.
set -eu

RUNTIME="
libopenslide0 libglib2.0-0 libtiff6 libturbojpeg0 libjpeg62-turbo
libpng16-16 libwebp7 zlib1g libhdf5-103-1 libgomp1
libjson-c5 libmicrohttpd12 libdcmtk17 libopenjp2-7 liblcms2-2
libstdc++6 libgcc-s1 libvips42
"
BUILD="
build-essential cmake pkg-config git clang-format help2man dpkg-dev file
libopenslide-dev libglib2.0-dev libtiff-dev libturbojpeg0-dev libjpeg-dev
libpng-dev libwebp-dev zlib1g-dev libhdf5-dev libjson-c-dev
libmicrohttpd-dev libcunit1-dev libopenmpi-dev libdcmtk-dev libopenjp2-7-dev liblcms2-dev
libvips-dev
nodejs
"
TEST="
openslide-tools libtiff-tools libvips-tools hdf5-tools libjpeg-turbo-progs
python3 python3-openslide python3-numpy python3-skimage python3-h5py
python3-pandas python3-pil python3-websocket python3-tifffile libxml2-utils
chromium wrk iipimage-server lighttpd time strace lintian
clang libclang-rt-14-dev libomp-dev
openmpi-bin slurm-wlm munge orthanc-wsi orthanc dicom3tools python3-pydicom
"

list=false
if [ "${1:-}" = --list ]; then
    list=true
    shift
fi
[ $# -gt 0 ] || set -- runtime build test
pkgs=""
assets=false
for g in "$@"; do
    case $g in
    runtime) pkgs="$pkgs $RUNTIME" ;;
    build) pkgs="$pkgs $BUILD" assets=true ;;
    test) pkgs="$pkgs $TEST" ;;
    *)
        echo "install-deps: unknown group '$g' (runtime, build, test)" >&2
        exit 2
        ;;
    esac
done
if $list; then
    # shellcheck disable=SC2086
    printf '%s\n' $pkgs
    exit 0
fi

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if $assets; then
    "$(dirname "$0")/../viewer/install-assets.sh"
fi
