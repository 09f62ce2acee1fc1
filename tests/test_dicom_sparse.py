"""DICOM TILED_SPARSE series with absent frames (ingest/dicom.cpp), made
here with pydicom from a copy of CMU-1-Small-Region.svs's JPEG tiles:

- level 0 of `tile --container dicom --passthrough` (the SVS's own tiles,
  TILED_FULL) is rewritten by pydicom as TILED_SPARSE: every third frame
  dropped, the others listed in an order of their own with their
  positions in the per-frame functional groups;
- read through the public reader (read_dump), at full size whole and in
  333 x 277 pieces, and at half size: the frames that are there equal
  OpenSlide's read of the SVS (full size) and PIL's half-size decode of
  the frame (half size; the 2x2 box of OpenSlide's read at the odd
  bottom edge), byte for byte; the boxes of absent frames are the white
  background, in every read;
- the same level, TILED_FULL, its frames encapsulated by pydicom in two
  fragments each with a Basic Offset Table that says where each frame
  starts: equal to OpenSlide's read; and again with the Pixel Data's VR
  written as OW (not the OB encapsulation asks for, but seen): the
  reader cannot find the items in the file then and reads every frame
  through DCMTK, which must give the same pixels."""
import io
import os
import subprocess
import sys
import tempfile

import numpy as np
import openslide
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.sequence import Sequence
from pydicom.dataset import Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import (BIN, DATA, READ_DUMP, check, finish,  # noqa: E402
                    have_read_dump)

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")


def sparse_series(src_dir, out_dir):
    """level-0.dcm of src_dir as TILED_SPARSE in out_dir: the kept frames'
    grid positions (tx, ty), and the level's geometry"""
    ds = pydicom.dcmread(os.path.join(src_dir, "level-0.dcm"))
    W, H = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    tw, th = int(ds.Columns), int(ds.Rows)
    across = -(-W // tw)
    frames = list(generate_pixel_data_frame(ds.PixelData))
    kept = [i for i in range(len(frames)) if i % 3 != 1]
    kept = kept[::2] + kept[1::2]  # not in row-major order
    groups = Sequence()
    for i in kept:
        pos = Dataset()
        pos.ColumnPositionInTotalImagePixelMatrix = (i % across) * tw + 1
        pos.RowPositionInTotalImagePixelMatrix = (i // across) * th + 1
        pos.XOffsetInSlideCoordinateSystem = "0"
        pos.YOffsetInSlideCoordinateSystem = "0"
        pos.ZOffsetInSlideCoordinateSystem = "0"
        g = Dataset()
        g.PlanePositionSlideSequence = Sequence([pos])
        groups.append(g)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.NumberOfFrames = len(kept)
    ds.PixelData = encapsulate([frames[i] for i in kept])
    os.makedirs(out_dir)
    ds.save_as(os.path.join(out_dir, "level-0.dcm"))
    present = {(i % across, i // across) for i in kept}
    return present, frames, (W, H, tw, th, across)


def fragmented_series(src_dir, out_dir, vr="OB"):
    """level-0.dcm of src_dir with every frame in two fragments (and a
    Basic Offset Table) in out_dir, the Pixel Data's VR `vr`"""
    ds = pydicom.dcmread(os.path.join(src_dir, "level-0.dcm"))
    frames = list(generate_pixel_data_frame(ds.PixelData))
    ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    ds["PixelData"].VR = vr
    os.makedirs(out_dir)
    ds.save_as(os.path.join(out_dir, "level-0.dcm"))


def dump(path, d, *extra):
    """read_dump's image: level 0 (or half size with --half) as an
    array, and the output line"""
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    r = subprocess.run([READ_DUMP, path, d, "--max-side", "100000", *extra],
                       capture_output=True, text=True, timeout=300)
    ok = [x.split() for x in r.stdout.splitlines()
          if x.startswith(("level 0 ok ", "half ok "))]
    if r.returncode or not ok:
        return None, r.stdout + r.stderr
    w, h = int(ok[0][-2]), int(ok[0][-1])
    name = "half.rgb" if "--half" in extra else "level-0.rgb"
    return np.fromfile(os.path.join(d, name), np.uint8).reshape(h, w, 3), ""


def same(px, ref, e, what):
    """read_dump's image `px` (None: the read failed with `e`) equals `ref`
    byte for byte"""
    if check(px is not None and px.shape == ref.shape, f"{what}: read: {e}"):
        diff = np.abs(px.astype(int) - ref.astype(int))
        check(diff.max() == 0,
              f"{what}: present frames equal the reference, absent ones "
              f"background: max diff {diff.max()} at "
              f"{np.unravel_index(diff.argmax(), diff.shape)}")


def main():
    if not have_read_dump():
        return finish()
    with tempfile.TemporaryDirectory(prefix="sp-sparse-") as tmp:
        full = os.path.join(tmp, "full")
        r = subprocess.run([BIN, "tile", CMU, "-o", full, "--container",
                            "dicom", "--tile-size", "240", "--passthrough",
                            "--quiet"], capture_output=True, text=True,
                           timeout=300)
        if not check(r.returncode == 0, f"series made: {r.stderr}"):
            return finish()
        series = os.path.join(tmp, "sparse")
        present, frames, (W, H, tw, th, across) = sparse_series(
            full + ".dicom", series)
        absent = {(tx, ty) for tx in range(across)
                  for ty in range(-(-H // th))} - present
        check(len(absent) > 10, f"{len(absent)} frames absent")
        with openslide.OpenSlide(CMU) as osr:
            ref = np.asarray(osr.read_region((0, 0), 0, (W, H)).convert("RGB"))
        ref = ref.copy()
        for tx, ty in absent:
            ref[ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw] = 255
        d = os.path.join(tmp, "dump")
        os.makedirs(d)
        for extra in ((), ("--piece", "333", "277")):
            px, e = dump(series, d, *extra)
            same(px, ref, e, f"full size {extra}, against OpenSlide's read")
        # half size: PIL's DCT-scaled decode of each present frame (the
        # SVS's tiles are RGB JPEG without colour markers: no conversion),
        # the box of OpenSlide's read at the odd bottom edge
        half = np.full(((H + 1) // 2, (W + 1) // 2, 3), 255, np.uint8)
        for tx, ty in present:
            x0, y0 = tx * tw, ty * th
            cw = (min(x0 + tw, W) + 1) // 2 - x0 // 2
            ch = (min(y0 + th, H) + 1) // 2 - y0 // 2
            if H - y0 < th and (H - y0) % 2:
                full_px = ref[y0:H, x0:x0 + tw].astype(int)
                full_px = np.concatenate([full_px, full_px[-1:]], 0)
                if full_px.shape[1] % 2:
                    full_px = np.concatenate([full_px, full_px[:, -1:]], 1)
                box = (full_px[0::2, 0::2] + full_px[1::2, 0::2] +
                       full_px[0::2, 1::2] + full_px[1::2, 1::2] + 2) >> 2
                half[y0 // 2:y0 // 2 + ch, x0 // 2:x0 // 2 + cw] = box[:ch, :cw]
                continue
            im = Image.open(io.BytesIO(frames[ty * across + tx]))
            im.draft("YCbCr", (tw // 2, th // 2))
            half[y0 // 2:y0 // 2 + ch, x0 // 2:x0 // 2 + cw] = \
                np.asarray(im)[:ch, :cw]
        px, e = dump(series, d, "--half")
        same(px, half, e, "half size, against PIL's half-size decode")
        # every frame, each in two fragments
        frag = os.path.join(tmp, "fragments")
        fragmented_series(full + ".dicom", frag)
        with openslide.OpenSlide(CMU) as osr:
            whole = np.asarray(osr.read_region((0, 0), 0, (W, H))
                               .convert("RGB"))
        px, e = dump(frag, d)
        same(px, whole, e, "two fragments a frame, against OpenSlide's read")
        ow = os.path.join(tmp, "ow")
        fragmented_series(full + ".dicom", ow, "OW")
        with open(os.path.join(ow, "level-0.dcm"), "rb") as f:
            check(b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\xff" in f.read(),
                  "the OW series' Pixel Data is OW, of undefined length")
        for extra in ((), ("--piece", "333", "277")):
            px, e = dump(ow, d, *extra)
            same(px, whole, e, f"OW Pixel Data (DCMTK's reads) {extra}, "
                 "against OpenSlide's read")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
