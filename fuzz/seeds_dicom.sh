#!/bin/sh
# Seeds of fuzz_dicom: OpenSlide's DICOM fixture from the test data (a
# JPEG TILED_FULL level and a native-RGB thumbnail).
set -eu
out=$1
mkdir -p "$out"
data=${SLIDEPIPE_TESTDATA:-$(dirname "$0")/../../shared/testdata}
cp "$data/dicom-boxes/boxes_0.dcm" "$out/jpeg-level"
cp "$data/dicom-boxes/boxes_1.dcm" "$out/native-thumbnail"
