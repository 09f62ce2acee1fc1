"""Level 0 read at half size (sp_reader_read_half, through tests/read_dump
--half), against independent decoders:

- every tile the image's edge does not cut after an odd row or column
  equals PIL's own decode of the tile's JPEG (the slide's bytes, its
  JPEGTables put in front) at half size (`Image.draft`, libjpeg's DCT
  scaling), byte for byte;
- the tiles it does cut so equal the 2x2 box (rounded, the last row or
  column paired with itself) of OpenSlide's full-size read of them;
- read whole and in 333 x 277 pieces, the same bytes;
- sources: an Aperio slide (RGB JPEG without colour markers, 240 px
  tiles, an odd height), libvips' tiled TIFFs at 2001 x 1777 (YCbCr
  4:2:0 in 256 px tiles, RGB JPEG in 128 px tiles), and DICOM series whose
  frames are the first two's tiles (RGB and YBR_FULL_422 frames; PIL
  decodes pydicom's frames, the edges come from OpenSlide's read of the
  slide they were copied from);
- tiles whose bytes repeat (a tissue crop on a wide flat background,
  so most tiles are the same JPEG) are copied by the reader rather than
  decoded again (read_dump's `repeats`), and still equal PIL's decode,
  at half size, at full size (against OpenSlide's read) and from a DICOM
  series of them;
- a damaged tile fails the read with its level and tile named, and
  `tile --passthrough` (which reads so) fails on it, leaving no output;
- slides it cannot read so (JPEG 2000, odd tile sizes) are refused."""
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import openslide
import pydicom
import tifffile
from PIL import Image
from pydicom.encaps import generate_pixel_data_frame

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import (BIN, DATA, READ_DUMP, check, finish,  # noqa: E402
                    have_read_dump)

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")


def read_half(path, outdir, *extra):
    """(pixels, None) or (None, the error line) of read_dump --half; the
    tiles the reader copied rather than decoded in read_half.repeats"""
    read_half.repeats = None
    for f in os.listdir(outdir):
        os.remove(os.path.join(outdir, f))
    r = subprocess.run([READ_DUMP, path, outdir, "--half", "--max-side",
                        "100000", *extra], capture_output=True, text=True,
                       timeout=300)
    line = [x for x in r.stdout.splitlines() if x.startswith("half ")]
    if r.returncode or not line:
        return None, f"rc {r.returncode}: {r.stdout} {r.stderr}"
    f = line[0].split()
    if f[1] != "ok":
        return None, line[0]
    rep = [x for x in r.stdout.splitlines() if x.startswith("repeats ")]
    read_half.repeats = int(rep[0].split()[1]) if rep else None
    w, h = int(f[2]), int(f[3])
    px = np.fromfile(os.path.join(outdir, "half.rgb"), np.uint8)
    return px.reshape(h, w, 3), None


def odd_edge(size, t, tile):
    left = size - t * tile
    return left < tile and left % 2 == 1


def tiff_tiles(path):
    """level 0's geometry and its tiles as self-contained JPEGs (the
    JPEGTables put in front), whether the data are RGB"""
    with tifffile.TiffFile(path) as tf:
        pg = tf.pages[0]
        fh = tf.filehandle
        tiles = []
        for off, n in zip(pg.dataoffsets, pg.databytecounts):
            fh.seek(off)
            data = fh.read(n)
            if pg.jpegtables:
                data = pg.jpegtables[:-2] + data[2:]
            tiles.append(data)
        return (pg.imagewidth, pg.imagelength, pg.tilewidth, pg.tilelength,
                tiles, pg.photometric == 2)


def dicom_tiles(series):
    """the same from level-0.dcm of a series of ours, as pydicom splits its
    frames"""
    ds = pydicom.dcmread(os.path.join(series, "level-0.dcm"))
    frames = list(generate_pixel_data_frame(ds.PixelData))
    return (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows),
            int(ds.Columns), int(ds.Rows), frames,
            ds.PhotometricInterpretation == "RGB")


def reference(geometry, pixels_of):
    """The half-size image tile by tile from PIL (DCT scaling) or, at odd
    edges, the 2x2 box of OpenSlide's read of `pixels_of` (a slide with the
    same level 0)."""
    W, H, tw, th, tiles, rgb = geometry
    osr = openslide.OpenSlide(pixels_of)
    out = np.zeros(((H + 1) // 2, (W + 1) // 2, 3), np.uint8)
    across = -(-W // tw)
    counts = {"draft": 0, "box": 0}
    for t, data in enumerate(tiles):
        tx, ty = t % across, t // across
        if ty * th >= H:
            break
        x0, y0 = tx * tw, ty * th
        lw, lh = min(tw, W - x0), min(th, H - y0)
        cw, ch = (x0 + lw + 1) // 2 - x0 // 2, (y0 + lh + 1) // 2 - y0 // 2
        if odd_edge(W, tx, tw) or odd_edge(H, ty, th):
            full = np.asarray(osr.read_region((x0, y0), 0, (lw, lh))
                              .convert("RGB")).astype(int)
            if lw % 2:
                full = np.concatenate([full, full[:, -1:]], 1)
            if lh % 2:
                full = np.concatenate([full, full[-1:]], 0)
            ref = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] +
                   full[1::2, 1::2] + 2) >> 2
            counts["box"] += 1
        else:
            im = Image.open(io.BytesIO(data))
            sof = data.index(b"\xff\xc0")
            ids = data[sof + 10:sof + 19:3]
            # RGB data that libjpeg would take for YCbCr (Aperio's:
            # component ids 0, 1, 2 and no Adobe marker), as OpenSlide
            # takes it from the TIFF photometric: no colour conversion
            raw = rgb and ids != b"RGB"
            im.draft("YCbCr" if raw else "RGB", (tw // 2, th // 2))
            ref = np.asarray(im)[:ch, :cw]
            counts["draft"] += 1
        out[y0 // 2:y0 // 2 + ch, x0 // 2:x0 // 2 + cw] = ref
    return out, counts


def check_source(path, what, tmp, geometry=None, pixels_of=None,
                 repeats=False):
    d = os.path.join(tmp, "dump")
    os.makedirs(d, exist_ok=True)
    ref, counts = reference(geometry or tiff_tiles(path), pixels_of or path)
    whole, e = read_half(path, d)
    check(whole is not None, f"{what}: read at half size: {e}")
    if whole is None:
        return
    check(whole.shape == ref.shape, f"{what}: {whole.shape} vs {ref.shape}")
    if whole.shape == ref.shape:
        diff = np.abs(whole.astype(int) - ref.astype(int))
        check(diff.max() == 0,
              f"{what}: equal to PIL's half-size decode ({counts['draft']} "
              f"tiles) and the box of OpenSlide's ({counts['box']} edge "
              f"tiles): max diff {diff.max()} at "
              f"{np.unravel_index(diff.argmax(), diff.shape)}")
    check(counts["draft"] > 0 and counts["box"] > 0,
          f"{what}: both kinds of tile seen {counts}")
    if repeats:
        check((read_half.repeats or 0) > 0,
              f"{what}: repeated tiles copied, not decoded again: "
              f"{read_half.repeats}")
    pieces, e = read_half(path, d, "--piece", "333", "277")
    check(pieces is not None and (pieces == whole).all(),
          f"{what}: in 333x277 pieces, the same bytes: {e}")


def repeated(tmp, crop):
    """a slide most of whose tiles are the same bytes: the crop on a flat
    background three times its size"""
    wide = os.path.join(tmp, "wide.v")
    subprocess.run(["vips", "embed", crop, wide, "1280", "768", "5001", "3777",
                    "--extend", "background", "--background", "242 242 240 255"],
                   check=True)
    path = os.path.join(tmp, "repeats.tif")
    subprocess.run(["vips", "tiffsave", wide, path, "--tile", "--tile-width",
                    "256", "--tile-height", "256", "--compression", "jpeg",
                    "--Q", "85"], check=True)
    check_source(path, "repeats", tmp, repeats=True)
    # full size: equal to OpenSlide's read
    d = os.path.join(tmp, "dump-full")
    os.makedirs(d, exist_ok=True)
    r = subprocess.run([READ_DUMP, path, d, "--max-side", "100000"],
                       capture_output=True, text=True, timeout=300)
    lines = r.stdout.splitlines()
    ok = [x.split() for x in lines if x.startswith("level 0 ok ")]
    rep = [int(x.split()[1]) for x in lines if x.startswith("repeats ")]
    if not check(r.returncode == 0 and ok and rep,
                 f"repeats: full-size read: {r.stdout} {r.stderr}"):
        return
    w, h = int(ok[0][3]), int(ok[0][4])
    px = np.fromfile(os.path.join(d, "level-0.rgb"), np.uint8).reshape(h, w, 3)
    with openslide.OpenSlide(path) as osr:
        ref = np.asarray(osr.read_region((0, 0), 0, (w, h)).convert("RGB"))
    check(rep[0] > 0 and (px == ref).all(),
          f"repeats: full size, {rep[0]} tiles copied, equal to OpenSlide's "
          f"read: max diff {np.abs(px.astype(int) - ref).max()}")
    # a DICOM series of those tiles (its frames repeat likewise)
    o = os.path.join(tmp, "repeats-dicom")
    r = subprocess.run([BIN, "tile", path, "-o", o, "--container", "dicom",
                        "--tile-size", "256", "--passthrough", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    if check(r.returncode == 0, f"repeats: DICOM made: {r.stderr}"):
        check_source(o + ".dicom", "repeats dicom", tmp,
                     dicom_tiles(o + ".dicom"), path, repeats=True)


def damaged(tmp):
    """CMU with an EOI marker in the middle of one tile's data"""
    bad = os.path.join(tmp, "damaged.svs")
    shutil.copy(CMU, bad)
    with tifffile.TiffFile(CMU) as tf:
        pg = tf.pages[0]
        k = 1 * (-(-pg.imagewidth // pg.tilewidth)) + 8  # tile (8, 1)
        off, n = pg.dataoffsets[k], pg.databytecounts[k]
    with open(bad, "r+b") as f:
        f.seek(off + n // 2)
        f.write(b"\xff\xd9")
    d = os.path.join(tmp, "dump")
    os.makedirs(d, exist_ok=True)
    px, e = read_half(bad, d)
    check(px is None and e.startswith("half error") and "damaged.svs" in e
          and "tile (8, 1)" in e, f"damaged: the half read fails: {e}")
    o = os.path.join(tmp, "damaged-out")
    r = subprocess.run([BIN, "tile", bad, "-o", o, "--container", "tiff",
                        "--tile-size", "240", "--passthrough", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    check(r.returncode != 0 and len(lines) == 1 and "damaged.svs" in r.stderr
          and "tile (8, 1)" in r.stderr and not os.path.exists(o + ".tiff"),
          f"damaged: tile --passthrough fails in one line, no output: "
          f"rc {r.returncode} {r.stderr!r}")


def refused(tmp):
    d = os.path.join(tmp, "dump")
    os.makedirs(d, exist_ok=True)
    for name in ("tcga-cr-7395-01a-01-ts1.svs", "boxes.tiff"):
        px, e = read_half(os.path.join(DATA, name), d)
        check(px is None and "cannot be read at half size" in e,
              f"{name}: refused: {e}")


def main():
    if not have_read_dump():
        return finish()
    with tempfile.TemporaryDirectory(prefix="sp-half-") as tmp:
        check_source(CMU, "aperio", tmp)
        crop = os.path.join(tmp, "crop.v")
        subprocess.run(["vips", "crop", CMU, crop, "3", "5", "2001", "1777"],
                       check=True)
        ycc = os.path.join(tmp, "ycc.tif")
        subprocess.run(["vips", "tiffsave", crop, ycc, "--tile",
                        "--tile-width", "256", "--tile-height", "256",
                        "--compression", "jpeg", "--Q", "85"], check=True)
        check_source(ycc, "ycbcr 4:2:0", tmp)
        rgb = os.path.join(tmp, "rgb.tif")
        subprocess.run(["vips", "tiffsave", crop, rgb, "--tile",
                        "--tile-width", "128", "--tile-height", "128",
                        "--compression", "jpeg", "--Q", "85", "--rgbjpeg"],
                       check=True)
        check_source(rgb, "rgb jpeg", tmp)
        # DICOM series of ours whose frames are those slides' tiles: RGB
        # frames (the Aperio slide's) and YBR_FULL_422 ones
        for src, tile, what in ((CMU, 240, "dicom rgb"),
                                (ycc, 256, "dicom ybr")):
            o = os.path.join(tmp, what.replace(" ", "-"))
            r = subprocess.run([BIN, "tile", src, "-o", o, "--container",
                                "dicom", "--tile-size", str(tile),
                                "--passthrough", "--quiet"],
                               capture_output=True, text=True, timeout=300)
            check(r.returncode == 0, f"{what}: made: {r.stderr}")
            if r.returncode == 0:
                check_source(o + ".dicom", what, tmp,
                             dicom_tiles(o + ".dicom"), src)
        repeated(tmp, crop)
        damaged(tmp)
        refused(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
