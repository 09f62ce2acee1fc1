"""DICOM whole-slide images in (ingest/dicom.cpp, through DCMTK), checked
against independent writers and readers from Debian:

- OrthancWSIDicomizer (orthanc-wsi) converts CMU-1-Small-Region.svs
  (copying its JPEG tiles: our pixels equal OpenSlide's of the SVS, byte
  for byte; re-encoded as JPEG 2000 lossless, and split into a
  concatenation of instances: the same), and, with its own pyramid, the TCGA slide (levels it
  re-encodes: within JPEG tolerance of OpenSlide's at the same level);
- OpenSlide's own DICOM fixture (testdata/dicom-boxes, which OpenSlide
  3.4.1 rejects) against pydicom's decode of its frames;
- `info --json` against pydicom's attributes; `run` end to end; `batch`
  over a folder counts a series once;
- broken files made here with pydicom (truncated, wrong frame count,
  missing matrix size, absurd sizes, an unsupported transfer syntax):
  one line naming the file and the cause, exit 1, no outputs."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import openslide
import pydicom
from pydicom.pixel_data_handlers.util import convert_color_space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, check, finish  # noqa: E402

READ_DUMP = os.environ.get("SLIDEPIPE_READ_DUMP", "")
OPENSLIDE_LIB = "/usr/lib/x86_64-linux-gnu/libopenslide.so.0"


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=600, **kw)


def dicomize(src, out, *opts):
    os.makedirs(out)
    r = run("OrthancWSIDicomizer", f"--folder={out}",
            f"--openslide={OPENSLIDE_LIB}", *opts, src)
    check(r.returncode == 0, f"dicomizer {src}: {r.stderr[-500:]}")


def dump(slide, tmp, max_side=6000, piece=None):
    """level -> (w, h, pixels) through the public reader (read_dump), in
    one read or in pieces of piece = (w, h)"""
    out = tempfile.mkdtemp(dir=tmp)
    extra = ["--piece", str(piece[0]), str(piece[1])] if piece else []
    r = run(READ_DUMP, slide, out, "--max-side", str(max_side), *extra)
    levels = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "level" and f[2] == "ok":
            lv, w, h = int(f[1]), int(f[3]), int(f[4])
            px = np.fromfile(os.path.join(out, f"level-{lv}.rgb"),
                             dtype=np.uint8).reshape(h, w, 3)
            levels[lv] = px
        elif len(f) >= 3 and f[0] == "level":
            check(False, f"{slide} level {f[1]}: {line}")
    return levels


def openslide_level(path, level, w, h):
    s = openslide.OpenSlide(path)
    return np.asarray(s.read_region((0, 0), level, (w, h)).convert("RGB"))


def psnr(a, b):
    d = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 99.0 if d == 0 else 10 * np.log10(255.0 ** 2 / d)


def test_cmu(tmp):
    src = os.path.join(DATA, "CMU-1-Small-Region.svs")
    out = os.path.join(tmp, "cmu")
    dicomize(src, out)
    for what, path in (("folder", out),
                       ("a file", os.path.join(out, sorted(os.listdir(out))[0]))):
        r = run(BIN, "info", path, "--json")
        check(r.returncode == 0, f"info on the series ({what}): {r.stderr}")
        info = json.loads(r.stdout)
        ds = pydicom.dcmread(os.path.join(out, sorted(os.listdir(out))[0]),
                             stop_before_pixels=True)
        check(info["vendor"] == "dicom" and
              info["width"] == ds.TotalPixelMatrixColumns and
              info["height"] == ds.TotalPixelMatrixRows and
              info["levels"][0]["tile_width"] == ds.Columns,
              f"info ({what}): vendor and sizes as pydicom reads them")
    got = dump(out, tmp)
    w, h = openslide.OpenSlide(src).dimensions
    ref = openslide_level(src, 0, w, h)
    check(0 in got and got[0].shape == ref.shape and
          np.array_equal(got[0], ref),
          "CMU as DICOM (tiles copied): level 0 equals OpenSlide's of the "
          "SVS byte for byte")
    # in pieces that cut frames (cropped decodes): the same pixels
    got = dump(out, tmp, piece=(333, 277))
    check(0 in got and np.array_equal(got[0], ref),
          "CMU as DICOM read in 333x277 pieces: level 0 equals OpenSlide's")
    # YCbCr 4:2:0 frames (slidepipe's own DICOM): pieces equal one read
    own = os.path.join(tmp, "cmu-own")
    r = run(BIN, "tile", src, "-o", own, "--container", "dicom", "--quiet")
    whole = dump(own + ".dicom", tmp)
    parts = dump(own + ".dicom", tmp, piece=(333, 277))
    check(r.returncode == 0 and whole and all(
        k in parts and np.array_equal(whole[k], parts[k]) for k in whole),
        "4:2:0 frames read in pieces equal one read, at every level")
    # a concatenation: the dicomizer splits instances past --max-size MB
    cat = os.path.join(tmp, "cmu-concat")
    dicomize(src, cat, "--max-size=1")
    parts = [pydicom.dcmread(os.path.join(cat, f), stop_before_pixels=True)
             for f in sorted(os.listdir(cat))]
    check(len(parts) >= 2 and len({p.ConcatenationUID for p in parts}) == 1,
          f"the dicomizer wrote a concatenation ({len(parts)} instances)")
    got = dump(cat, tmp)
    check(0 in got and np.array_equal(got[0], ref),
          "CMU as a DICOM concatenation: level 0 equals OpenSlide's")
    # end to end
    o = os.path.join(tmp, "cmu-run")
    r = run(BIN, "run", out, "-o", o, "--quiet")
    check(r.returncode == 0 and os.path.exists(o + ".dzi") and
          os.path.exists(o + ".h5"), f"run on the series: {r.stderr}")


def test_j2k(tmp):
    """JPEG 2000 lossless frames (the dicomizer re-encodes every tile):
    level 0 equals OpenSlide's read of the SVS; every level reads."""
    src = os.path.join(DATA, "CMU-1-Small-Region.svs")
    out = os.path.join(tmp, "j2k")
    dicomize(src, out, "--compression=jpeg2000", "--reencode=1")
    ds = pydicom.dcmread(os.path.join(out, sorted(os.listdir(out))[0]),
                         stop_before_pixels=True)
    check(ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90",
          f"dicomizer wrote JPEG 2000 lossless ({ds.file_meta.TransferSyntaxUID})")
    got = dump(out, tmp)
    w, h = openslide.OpenSlide(src).dimensions
    ref = openslide_level(src, 0, w, h)
    check(0 in got and np.array_equal(got[0], ref),
          "JPEG 2000 lossless DICOM: level 0 equals OpenSlide's of the SVS")
    check(len(got) == len(os.listdir(out)),
          f"JPEG 2000 DICOM: every level reads ({len(got)})")


def test_tcga_pyramid(tmp):
    src = os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")
    out = os.path.join(tmp, "tcga")
    dicomize(src, out, "--pyramid=1", "--levels=3", "--threads=2")
    got = dump(out, tmp, max_side=2048)
    s = openslide.OpenSlide(src)
    check(len(got) >= 2, f"TCGA as DICOM: {len(got)} levels read")
    r = run(BIN, "info", out, "--json")
    info = json.loads(r.stdout)
    check(info["width"] == s.dimensions[0] and
          info["height"] == s.dimensions[1],
          f"TCGA as DICOM: level 0 {info['width']}x{info['height']}")
    # level 0 against OpenSlide's (JPEG 2000 in the SVS, JPEG here)
    full = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    h, w = got[0].shape[:2]
    q = psnr(got[0], full[:h, :w])
    check(q > 30, f"TCGA DICOM level 0: {q:.1f} dB vs OpenSlide's read of "
          "the SVS (re-encoded by the dicomizer)")
    # every level against pydicom's decode of the dicomizer's frames
    by_width = {}
    for name in sorted(os.listdir(out)):
        ds = pydicom.dcmread(os.path.join(out, name))
        by_width.setdefault(int(ds.TotalPixelMatrixColumns), []).append(ds)
    for lv, width in enumerate(sorted(by_width, reverse=True)):
        if lv not in got:
            continue
        ref = assemble(by_width[width])
        h, w = got[lv].shape[:2]
        diff = np.abs(got[lv].astype(int) - ref[:h, :w].astype(int))
        check(diff.max() <= 2, f"TCGA DICOM level {lv} ({w}x{h}): frames "
              f"as pydicom decodes them (max difference {diff.max()})")


def assemble(instances):
    """The total pixel matrix of one level from pydicom's frames, placed
    by their per-frame positions (or row-major: TILED_FULL)."""
    ds0 = instances[0]
    W, H = int(ds0.TotalPixelMatrixColumns), int(ds0.TotalPixelMatrixRows)
    tw, th = int(ds0.Columns), int(ds0.Rows)
    img = np.full((H + th, W + tw, 3), 255, np.uint8)
    for ds in instances:
        frames = ds.pixel_array
        if int(ds.NumberOfFrames) == 1:
            frames = frames[None]
        if ds.PhotometricInterpretation.startswith("YBR"):
            # pydicom hands JPEG's YCbCr back as it is
            frames = convert_color_space(frames, "YBR_FULL", "RGB")
        pf = ds.get("PerFrameFunctionalGroupsSequence")
        off = int(ds.get("ConcatenationFrameOffsetNumber", 0))
        for i, fr in enumerate(frames):
            if pf is not None:
                pos = pf[i].PlanePositionSlideSequence[0]
                x = int(pos.ColumnPositionInTotalImagePixelMatrix) - 1
                y = int(pos.RowPositionInTotalImagePixelMatrix) - 1
            else:
                t = off + i
                x, y = (t % -(-W // tw)) * tw, (t // -(-W // tw)) * th
            img[y:y + th, x:x + tw] = fr
    return img[:H, :W]


def test_boxes(tmp):
    d = os.path.join(DATA, "dicom-boxes")
    got = dump(d, tmp)
    ds = pydicom.dcmread(os.path.join(d, "boxes_0.dcm"))
    ref = ds.pixel_array  # one 64x64 frame; the matrix is its top 16x16
    w, h = ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows
    check(0 in got and got[0].shape == (h, w, 3), "boxes: level 0 size")
    if 0 in got:
        diff = np.abs(got[0].astype(int) - ref[:h, :w].astype(int)).max()
        check(diff <= 2, f"boxes: pixels as pydicom decodes them (max "
              f"difference {diff})")
    r = run(BIN, "info", d, "--json")
    info = json.loads(r.stdout)
    check([a["name"] for a in info["associated_images"]] == ["thumbnail"],
          f"boxes: the THUMBNAIL instance is an associated image "
          f"({info['associated_images']})")
    check(abs(info["mpp_x"] - float(ds.SharedFunctionalGroupsSequence[0]
                                    .PixelMeasuresSequence[0].PixelSpacing[1])
              * 1000) < 1e-6, "boxes: mpp from PixelSpacing")
    # a folder holding the series: one slide in a batch
    o = os.path.join(tmp, "boxes-batch")
    r = run(BIN, "batch", d, "-o", o, "--quiet")
    with open(os.path.join(o, "batch-summary.json")) as f:
        js = json.load(f)
    check(r.returncode == 0 and len(js["slides"]) == 1,
          f"batch: the series counts once ({len(js['slides'])})")


def test_many_series(tmp):
    """A folder exported from a PACS: 12 series of the boxes slide, each
    with its own series UID (pydicom), their files interleaved. Each
    series opens with its own instances only, and a batch counts 12."""
    src = os.path.join(DATA, "dicom-boxes")
    d = os.path.join(tmp, "pacs")
    os.makedirs(d)
    uids = []
    for k in range(12):
        uid = pydicom.uid.generate_uid()
        uids.append(uid)
        for f in sorted(os.listdir(src)):
            ds = pydicom.dcmread(os.path.join(src, f))
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(os.path.join(d, f"{f[:-4]}-{k:02d}.dcm"))
    ok = True
    for k in (0, 5, 11):
        r = run(BIN, "info", os.path.join(d, f"boxes_1-{k:02d}.dcm"), "--json")
        info = json.loads(r.stdout) if r.returncode == 0 else {}
        sid = info.get("properties", {}).get("dicom.SeriesInstanceUID")
        ok = ok and info.get("level_count") == 1 and len(
            info.get("associated_images", [])) == 1 and sid in (uids[k], None)
    check(ok, "many series in one folder: each opens with its own files")
    o = os.path.join(tmp, "pacs-batch")
    r = run(BIN, "batch", d, "-o", o, "--quiet")
    with open(os.path.join(o, "batch-summary.json")) as f:
        js = json.load(f)
    check(r.returncode == 0 and len(js["slides"]) == 12 and
          all(x["status"] == "done" for x in js["slides"]),
          f"batch: 12 series, 12 slides ({len(js['slides'])})")


def test_serve(tmp, series):
    """`serve` given a series' folder, and a folder holding one."""
    import socket
    import time
    import urllib.request
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    p = subprocess.Popen([BIN, "serve", series, os.path.join(DATA),
                          "--port", str(port)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        js = None
        for _ in range(100):
            try:
                js = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/slides", timeout=2).read())
                break
            except OSError:
                time.sleep(0.1)
        got = {s["id"]: s for s in (js or {}).get("slides", [])}
        name = os.path.basename(series)
        check(name in got and got[name]["vendor"] == "dicom" and
              "dicom-boxes" in got,
              f"serve: the series folder and the folder in testdata are "
              f"slides ({sorted(got)})")
        if name in got:
            dzi = got[name]["dzi"].split("?")[0]
            tile = dzi.replace(".dzi", "_files") + "/8/0_0.jpeg"
            r = urllib.request.urlopen(f"http://127.0.0.1:{port}{tile}",
                                       timeout=30)
            check(r.status == 200 and r.read(2) == b"\xff\xd8",
                  "serve: a tile of the series")
    finally:
        p.terminate()
        p.communicate(timeout=30)


def broken(tmp):
    """name -> (folder holding one broken file, what the error must say)"""
    src = os.path.join(DATA, "dicom-boxes", "boxes_0.dcm")
    cases = {}

    def case(name, want, edit=None, raw=None):
        d = os.path.join(tmp, "bad", name)
        os.makedirs(d)
        p = os.path.join(d, name + ".dcm")
        if raw is not None:
            with open(p, "wb") as f:
                f.write(raw)
        else:
            ds = pydicom.dcmread(src)
            edit(ds)
            ds.save_as(p)
        cases[name] = (p, want)

    with open(src, "rb") as f:
        data = f.read()
    case("truncated", "", raw=data[: len(data) * 2 // 3])
    case("frames", "frames",
         lambda ds: setattr(ds, "NumberOfFrames", 7))
    case("nomatrix", "TotalPixelMatrix",
         lambda ds: (delattr(ds, "TotalPixelMatrixColumns"),
                     setattr(ds, "NumberOfFrames", 2)))
    case("absurd", "out of range",
         lambda ds: setattr(ds, "TotalPixelMatrixColumns", 4000000000))
    case("syntax", "not supported",  # JPEG-LS
         lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                            "1.2.840.10008.1.2.4.80"))
    case("j2k-mislabelled", "frame 1",  # JPEG bytes said to be JPEG 2000
         lambda ds: setattr(ds.file_meta, "TransferSyntaxUID",
                            "1.2.840.10008.1.2.4.90"))
    return cases


def test_broken(tmp):
    for name, (p, want) in broken(tmp).items():
        r = run(BIN, "info", p)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        check(r.returncode == 1 and len(lines) == 1 and p in lines[0] and
              want in lines[0],
              f"broken DICOM {name}: exit {r.returncode}, {lines}")
        o = os.path.join(tmp, "bad-out-" + name)
        r = run(BIN, "run", p, "-o", o, "--quiet")
        check(r.returncode == 1 and not os.path.exists(o + ".dzi") and
              not os.path.exists(o + ".h5"),
              f"broken DICOM {name}: run fails with no outputs "
              f"({r.returncode})")


def main():
    if not shutil.which("OrthancWSIDicomizer") or not READ_DUMP:
        print("FAIL: OrthancWSIDicomizer or read_dump missing "
              "(scripts/install-deps.sh test)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sp-dicom-") as tmp:
        test_cmu(tmp)
        test_j2k(tmp)
        test_tcga_pyramid(tmp)
        test_boxes(tmp)
        test_many_series(tmp)
        test_serve(tmp, os.path.join(tmp, "cmu"))
        test_broken(tmp)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
