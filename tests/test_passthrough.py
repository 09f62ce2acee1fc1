"""--passthrough: level 0's JPEG tiles copied from the slide as stored into
the TIFF, OME-TIFF and DICOM containers, checked by independent readers:

- OpenSlide reads our TIFF's level 0 equal, byte for byte, to its own read
  of the source slide; the levels below are made from level 0 decoded at
  half size (libjpeg's DCT scaling, the sidecar's "reduction"; the reader
  itself is checked in test_half_read.py): level 1 is as close to the 2x2
  box of OpenSlide's level-0 read as the re-encoded pyramid's (PSNR within
  0.5 dB), and every level within 38 dB of the re-encoded pyramid's;
- tifffile: level 0's tiles hold the source's tile bytes (after the
  JPEGTables the source keeps apart), with the source's photometric;
- DICOM: dciodvfy reports 0 errors, pydicom's decode of every level-0
  frame equals OpenSlide's read of the source byte for byte (RGB frames
  from an Aperio slide, YBR_FULL_422 from a YCbCr source), and a real
  Orthanc server plus OrthancWSIDicomToTiff turn the series back into a
  TIFF whose level 0 equals the source;
- a DICOM series is a source too: its frames copied into a TIFF (level 0
  as OpenSlide reads the original slide) and into DICOM (the same frame
  bytes, dciodvfy clean);
- refusals name the slide and the reason, exit non-zero and leave no
  output: a JPEG 2000 slide, a tile size that is not the source's (the
  message says which to use), Deep Zoom, a deflate TIFF, 4:4:4 YCbCr into
  DICOM; damaged tiles still fail the run (level 0 is still decoded)."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import openslide
import pydicom
import tifffile
from pydicom.encaps import generate_pixel_data_frame

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, check, finish  # noqa: E402
import test_dicom_write as dw  # noqa: E402

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")


def run(*args):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True,
                          timeout=600)


def level(slide, k):
    s = openslide.OpenSlide(slide)
    return np.asarray(s.read_region((0, 0), k, s.level_dimensions[k])
                      .convert("RGB"))


def psnr(a, b):
    m = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return 10 * np.log10(255 ** 2 / m) if m else 99.0


def box(a):
    """the 2x2 box of `a`, the last row and column paired with
    themselves when odd (as the pyramid does)"""
    a = a.astype(int)
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:]], 0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], 1)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] +
            2) >> 2


def frames_image(ds):
    """Level 0 from pydicom's frames, without any colour conversion of
    ours: pydicom labels them by PhotometricInterpretation."""
    return dw.assemble(ds)


def raw_tiles(path, page=0):
    with tifffile.TiffFile(path) as t:
        p = t.pages[page]
        fh = t.filehandle
        out = []
        for off, n in zip(p.dataoffsets, p.databytecounts):
            fh.seek(off)
            out.append(fh.read(n))
        return p, out


def test_tiff(tmp, src, what, tile):
    o = os.path.join(tmp, what + "-copy")
    r = run("tile", src, "-o", o, "--container", "tiff", "--tile-size",
            str(tile), "--passthrough", "--quiet", "--json")
    check(r.returncode == 0, f"{what}: tiff --passthrough: {r.stderr}")
    if r.returncode:
        return
    res = json.loads(r.stdout)
    s = openslide.OpenSlide(src)
    W, H = s.dimensions
    n0 = -(-W // tile) * -(-H // tile)
    check(res.get("tiles_copied") == n0,
          f"{what}: {res.get('tiles_copied')} tiles copied, level 0 has {n0}")
    a, b = level(src, 0), level(o + ".tiff", 0)
    check(a.shape == b.shape and (a == b).all(),
          f"{what}: level 0 equals OpenSlide's read of the source, byte for "
          f"byte (max diff {np.abs(a.astype(int) - b.astype(int)).max()})")
    # the same pyramid re-encoded: its levels below are the 2x2 box of
    # the full decode, ours come from level 0 decoded at half size
    e = os.path.join(tmp, what + "-enc")
    r = run("tile", src, "-o", e, "--container", "tiff", "--tile-size",
            str(tile), "--quiet")
    t, u = openslide.OpenSlide(o + ".tiff"), openslide.OpenSlide(e + ".tiff")
    check(t.level_dimensions == u.level_dimensions,
          f"{what}: the re-encoded pyramid's levels")
    ref = box(a)
    ours, theirs = level(o + ".tiff", 1), level(e + ".tiff", 1)
    p_ours, p_theirs = psnr(ours, ref), psnr(theirs, ref)
    check(p_ours >= p_theirs - 0.5,
          f"{what}: level 1 against the box of OpenSlide's level 0: "
          f"{p_ours:.2f} dB, the re-encoded pyramid's {p_theirs:.2f} dB")
    for k in range(1, t.level_count):
        p = psnr(level(o + ".tiff", k), level(e + ".tiff", k))
        check(p >= 38, f"{what}: level {k} within 38 dB of the re-encoded "
              f"pyramid's: {p:.2f} dB")
    # the source's own tile bytes, its photometric
    sp, stiles = raw_tiles(src)
    op, otiles = raw_tiles(o + ".tiff")
    check(op.photometric == sp.photometric,
          f"{what}: photometric {op.photometric} (source {sp.photometric})")
    check(all(ot.endswith(st[2:]) for ot, st in zip(otiles, stiles)),
          f"{what}: level 0 tiles hold the source's bytes")
    side = json.load(open(o + ".json"))
    check(side["parameters"]["passthrough"] is True and
          side["tiles_copied"] == n0, f"{what}: the sidecar says copied")
    check(side["parameters"].get("reduction") == "jpeg-dct-half",
          f"{what}: the sidecar says how the levels below were made")
    return o + ".tiff"


def test_dicom(tmp, src, what, tile, pi):
    o = os.path.join(tmp, what + "-dcm")
    r = run("tile", src, "-o", o, "--container", "dicom", "--tile-size",
            str(tile), "--passthrough", "--quiet")
    check(r.returncode == 0, f"{what}: dicom --passthrough: {r.stderr}")
    if r.returncode:
        return None
    out = o + ".dicom"
    for f in sorted(os.listdir(out)):
        e = dw.errors_of(os.path.join(out, f))
        check(e == [], f"{what}: dciodvfy {f}: {len(e)} errors {e[:3]}")
    ds = pydicom.dcmread(os.path.join(out, "level-0.dcm"))
    check(ds.PhotometricInterpretation == pi,
          f"{what}: level 0 is {ds.PhotometricInterpretation}, want {pi}")
    a = level(src, 0)
    if pi == "RGB":
        b = frames_image(ds)
        check((a == b).all(), f"{what}: pydicom's frames equal OpenSlide's "
              f"read (max diff {np.abs(a.astype(int) - b.astype(int)).max()})")
    # the series as a source: its frames copied on into a TIFF (level 0
    # as OpenSlide reads the original slide) and into DICOM (the same
    # frame bytes, as pydicom splits them)
    back = os.path.join(tmp, what + "-back")
    r = run("tile", out, "-o", back, "--container", "tiff", "--tile-size",
            str(tile), "--passthrough", "--quiet", "--json")
    check(r.returncode == 0, f"{what}: DICOM to TIFF, copied: {r.stderr}")
    if r.returncode == 0:
        n0 = len(list(generate_pixel_data_frame(ds.PixelData)))
        check(json.loads(r.stdout).get("tiles_copied") == n0,
              f"{what}: DICOM to TIFF: every frame copied")
        b = level(back + ".tiff", 0)
        check(a.shape == b.shape and (a == b).all(),
              f"{what}: DICOM to TIFF: level 0 equals OpenSlide's read of the "
              f"original slide")
    again = os.path.join(tmp, what + "-again")
    r = run("tile", out, "-o", again, "--container", "dicom", "--tile-size",
            str(tile), "--passthrough", "--quiet")
    check(r.returncode == 0, f"{what}: DICOM to DICOM, copied: {r.stderr}")
    if r.returncode == 0:
        ds2 = pydicom.dcmread(os.path.join(again + ".dicom", "level-0.dcm"))
        f1 = list(generate_pixel_data_frame(ds.PixelData))
        f2 = list(generate_pixel_data_frame(ds2.PixelData))
        check(len(f1) == len(f2) and all(
            x.rstrip(b"\0") == y.rstrip(b"\0") for x, y in zip(f1, f2)) and
            ds2.PhotometricInterpretation == pi,
            f"{what}: DICOM to DICOM: the same frame bytes, {pi}")
        for f in sorted(os.listdir(again + ".dicom")):
            e = dw.errors_of(os.path.join(again + ".dicom", f))
            check(e == [], f"{what}: DICOM to DICOM: dciodvfy {f}: {e[:3]}")
    return out


def test_ome(tmp):
    """The OME-TIFF container copies too: level 0 (the first directory)
    holds the source's tiles, the levels stay its SubIFDs."""
    o = os.path.join(tmp, "cmu-ome")
    r = run("tile", CMU, "-o", o, "--container", "ome-tiff", "--tile-size",
            "240", "--passthrough", "--quiet")
    check(r.returncode == 0, f"ome-tiff --passthrough: {r.stderr}")
    if r.returncode:
        return
    path = o + ".ome.tiff"
    with tifffile.TiffFile(path) as t:
        check(t.is_ome and t.pages[0].photometric == 2 and
              len(t.pages[0].subifds or []) > 0,
              "ome-tiff: OME, RGB level 0 as the source, SubIFD levels")
    a, b = level(CMU, 0), level(path, 0)
    check((a == b).all(), "ome-tiff: level 0 equals OpenSlide's read of the "
          "source")
    _, stiles = raw_tiles(CMU)
    _, otiles = raw_tiles(path)
    check(all(ot.endswith(st[2:]) for ot, st in zip(otiles, stiles)),
          "ome-tiff: level 0 tiles hold the source's bytes")


def test_refusals(tmp, yuv444):
    cases = [
        ("tcga-cr-7395-01a-01-ts1.svs", ["--container", "tiff"],
         "the slide's level 0 cannot be copied"),
        ("CMU-1-Small-Region.svs", ["--container", "tiff"],
         "use --tile-size 240"),
        ("CMU-1-Small-Region.svs", ["--tile-size", "240"],
         "--passthrough goes with --container tiff, ome-tiff or dicom"),
        ("boxes.tiff", ["--container", "tiff", "--tile-size", "64"],
         "cannot be copied"),
        (yuv444, ["--container", "dicom", "--tile-size", "256"],
         "4:4:4"),
    ]
    for i, (name, extra, want) in enumerate(cases):
        src = name if os.path.isabs(name) else os.path.join(DATA, name)
        o = os.path.join(tmp, f"refused{i}")
        r = run("tile", src, "-o", o, "--passthrough", "--quiet", *extra)
        lines = r.stderr.strip().splitlines()
        check(r.returncode != 0 and len(lines) == 1 and want in r.stderr,
              f"refused {name} {extra}: rc {r.returncode}: {r.stderr!r}")
        left = [f for f in os.listdir(tmp) if f.startswith(f"refused{i}") or
                f.startswith(f".refused{i}")]
        check(left == [], f"refused {name}: nothing left ({left})")
    # a damaged tile fails the run as it does without passthrough
    o = os.path.join(tmp, "damaged")
    r = run("tile", os.path.join(DATA, "unreadable.svs"), "-o", o,
            "--container", "tiff", "--tile-size", "64", "--passthrough",
            "--quiet")
    check(r.returncode != 0 and "unreadable.svs" in r.stderr and
          not os.path.exists(o + ".tiff"),
          f"damaged tile: rc {r.returncode}: {r.stderr!r}")


def test_batch(tmp):
    """batch --container and --passthrough: copied where the slide allows,
    encoded (with the reason in the log and summary) where not; resume
    knows the container."""
    src = os.path.join(tmp, "batch-in")
    os.makedirs(src)
    for n in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
        os.symlink(os.path.join(DATA, n), os.path.join(src, n))
    out = os.path.join(tmp, "batch-out")
    args = ["batch", src, "-o", out, "--container", "dicom", "--passthrough",
            "--tile-size", "240", "--threads", "2", "--log-json"]
    r = run(*args)
    check(r.returncode == 0, f"batch dicom passthrough: {r.stderr[-400:]}")
    summ = json.load(open(os.path.join(out, "batch-summary.json")))
    by = {s["slide"]: s for s in summ["slides"]}
    cmu, tcga = by.get("CMU-1-Small-Region", {}), by.get(
        "tcga-cr-7395-01a-01-ts1", {})
    check(cmu.get("status") == "done" and tcga.get("status") == "done",
          f"batch: both done ({cmu.get('status')}, {tcga.get('status')})")
    check("note" not in cmu and "cannot be copied" in tcga.get("note", ""),
          f"batch: the JPEG 2000 slide's note says why ({tcga.get('note')})")
    ev = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    check(any(e.get("note") and e.get("slide") == "tcga-cr-7395-01a-01-ts1"
              for e in ev), "batch: the log line carries the note")
    side = json.load(open(os.path.join(out, "CMU-1-Small-Region",
                                       "slide.json")))
    check(side["parameters"]["container"] == "dicom" and
          side["parameters"]["passthrough"] and side["tiles_copied"] > 0,
          "batch: CMU's level 0 copied into slide.dicom/")
    b = frames_image(pydicom.dcmread(os.path.join(
        out, "CMU-1-Small-Region", "slide.dicom", "level-0.dcm")))
    check((b == level(CMU, 0)).all(), "batch: CMU's frames equal OpenSlide's")
    r = run(*args)
    summ = json.load(open(os.path.join(out, "batch-summary.json")))
    check(all(s["status"] == "already-done" for s in summ["slides"]),
          "batch: a rerun finds the DICOM outputs done")
    # another container is another result: redone, into slide.tiff
    r = run("batch", src, "-o", out, "--container", "tiff", "--tile-size",
            "240", "--threads", "2", "--quiet")
    summ = json.load(open(os.path.join(out, "batch-summary.json")))
    check(r.returncode == 0 and all(s["status"] == "done"
                                    for s in summ["slides"]) and
          os.path.exists(os.path.join(out, "CMU-1-Small-Region",
                                      "slide.tiff")),
          f"batch: --container tiff redoes the slides: {r.stderr[-300:]}")
    r = run("batch", src, "-o", out + "-x", "--container", "tiff",
            "--overlap", "1")
    check(r.returncode == 2 and "never overlap" in r.stderr,
          f"batch: overlap with tiff refused: {r.stderr!r}")
    r = run("batch", src, "-o", out + "-x", "--passthrough")
    check(r.returncode == 2 and "passthrough" in r.stderr,
          f"batch: passthrough into Deep Zoom refused: {r.stderr!r}")


def main():
    with tempfile.TemporaryDirectory(prefix="sp-pass-") as tmp:
        # an Aperio slide: RGB JPEG tiles, 240 x 240
        cmu_tiff = test_tiff(tmp, CMU, "cmu", 240)
        # in column stripes (as wide slides are built): the same file
        o = os.path.join(tmp, "cmu-stripes")
        r = run("tile", CMU, "-o", o, "--container", "tiff", "--tile-size",
                "240", "--passthrough", "--stripe-width", "480", "--quiet",
                "--json")
        js = json.loads(r.stdout) if r.returncode == 0 else {}
        t = openslide.OpenSlide(o + ".tiff") if r.returncode == 0 else None
        check(js.get("stripes", 0) > 1 and cmu_tiff and t and all(
            (level(o + ".tiff", k) == level(cmu_tiff, k)).all()
            for k in range(t.level_count)),
            f"stripes: the same pyramid ({js.get('stripes')} stripes)")
        cmu_dcm = test_dicom(tmp, CMU, "cmu", 240, "RGB")
        # a YCbCr source: our own TIFF container (4:2:0 at Q75), whose
        # tiles OpenSlide reads as generic-tiff/aperio
        ycc = os.path.join(tmp, "ycc")
        r = run("tile", CMU, "-o", ycc, "--container", "tiff", "--quiet")
        check(r.returncode == 0, f"a YCbCr source: {r.stderr}")
        test_tiff(tmp, ycc + ".tiff", "ycc", 256)
        test_dicom(tmp, ycc + ".tiff", "ycc", 256, "YBR_FULL_422")
        # 4:4:4 YCbCr (quality >= 90): fine for TIFF, refused for DICOM
        q92 = os.path.join(tmp, "q92")
        r = run("tile", CMU, "-o", q92, "--container", "tiff", "--quality",
                "92", "--quiet")
        test_tiff(tmp, q92 + ".tiff", "q92", 256)
        test_ome(tmp)
        test_refusals(tmp, q92 + ".tiff")
        test_batch(tmp)
        if cmu_dcm:
            back = os.path.join(tmp, "orthanc-back")
            os.makedirs(back)
            dw.orthanc_round_trip(back, cmu_dcm, CMU, exact=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
