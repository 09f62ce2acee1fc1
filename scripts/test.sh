#!/bin/sh
# Install what is missing, build, and run every test: the normal build (the
# Release build of scripts/package.sh) and the ASan/UBSan build run the
# same ctest suites, then the libFuzzer build
# (build-fuzz, clang) runs each fuzz target for a few seconds from its
# seeds (docs/FUZZING.md), and as root the Debian package is built,
# installed, run and removed (tests/test_deb.sh). Exits non-zero on any
# failure. Test slides come from $SLIDEPIPE_TESTDATA (default
# ../shared/testdata beside the checkout).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh runtime build test
export SLIDEPIPE_TESTDATA="${SLIDEPIPE_TESTDATA:-$(cd .. && pwd)/shared/testdata}"
if [ ! -f "$SLIDEPIPE_TESTDATA/MANIFEST.tsv" ]; then
    echo "test.sh: no test slides at $SLIDEPIPE_TESTDATA (set SLIDEPIPE_TESTDATA)" >&2
    exit 1
fi
jobs=$(nproc)
status=0
for variant in build build-asan; do
    if [ "$variant" = build-asan ]; then
        scripts/build.sh "$variant" -DSP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    else
        # the hardened Release build that scripts/package.sh makes: the
        # suites test the binaries the .deb ships, and tests/test_deb.sh
        # packages this same tree instead of compiling everything again
        scripts/package.sh "$variant" >/dev/null
    fi
    echo "== ctest ($variant)"
    (cd "$variant" && ctest --output-on-failure -j"$jobs") || status=1
done
# fuzz smoke runs: the seeds of some targets include real outputs of the
# normal build's slidepipe
scripts/build.sh build-fuzz -DSP_FUZZ=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++
echo "== ctest (build-fuzz)"
(cd build-fuzz && SLIDEPIPE_BIN="$PWD/../build/cli/slidepipe" \
    ctest --output-on-failure -j"$jobs") || status=1
# the Debian package: built, checked by lintian, installed, run from
# /usr/bin, removed (it installs into the system, so it runs alone, last)
echo "== .deb (tests/test_deb.sh)"
if [ "$(id -u)" -eq 0 ]; then
    tests/test_deb.sh build || status=1
else
    echo "test.sh: tests/test_deb.sh skipped: it installs the package and needs root" >&2
fi
exit $status
