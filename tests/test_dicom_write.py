"""DICOM whole-slide images out (`--container dicom`, tiler/dcmout.cpp),
checked by independent readers from Debian:

- dciodvfy (dicom3tools): 0 errors on every instance, for a slide with mpp
  and objective and for one without; the dicomizer's own output of the
  same slide is verified too, for the record (it has errors);
- pydicom: every frame decodes (PIL), frames = ceil(W/T) * ceil(H/T) per
  level, the pyramid's sizes, one study/series/frame of reference, UIDs
  of the 2.25 form, the Basic Offset Table pointing at every frame;
  the frames assembled equal our own TIFF container's pixels (same
  encoder) and OpenSlide's read of the source within JPEG tolerance;
- OrthancWSIDicomToTiff through a real Orthanc server started here
  (loopback, its own storage): the series back to a TIFF that OpenSlide
  opens with the same size and pixels;
- --dicom-attributes: given values appear (pydicom), unknown keywords and
  bad JSON fail cleanly; an unwritable output fails with no output left."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import openslide
import pydicom
from pydicom.pixel_data_handlers.util import convert_color_space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, check, finish  # noqa: E402

OPENSLIDE_LIB = "/usr/lib/x86_64-linux-gnu/libopenslide.so.0"


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=600, **kw)


def psnr(a, b):
    d = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 99.0 if d == 0 else 10 * np.log10(255.0 ** 2 / d)


def errors_of(path):
    r = run("dciodvfy", path)
    return [x for x in (r.stdout + r.stderr).splitlines()
            if x.startswith("Error")]


def instances(d):
    return [pydicom.dcmread(os.path.join(d, f))
            for f in sorted(os.listdir(d), key=lambda n: int(n[6:-4]))]


def assemble(ds):
    """A TILED_FULL level's pixel matrix from pydicom's frames."""
    W, H = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    T = int(ds.Columns)
    cols = -(-W // T)
    frames = ds.pixel_array
    if int(ds.NumberOfFrames) == 1:
        frames = frames[None]
    if ds.PhotometricInterpretation.startswith("YBR"):
        frames = convert_color_space(frames, "YBR_FULL", "RGB")
    img = np.zeros((-(-H // T) * T, cols * T, 3), np.uint8)
    for i, fr in enumerate(frames):
        x, y = (i % cols) * T, (i // cols) * T
        img[y:y + T, x:x + T] = fr
    return img[:H, :W]


def check_series(out, src, what):
    files = sorted(os.listdir(out))
    for f in files:
        e = errors_of(os.path.join(out, f))
        check(e == [], f"{what}: dciodvfy {f}: {len(e)} errors {e[:3]}")
    levels = instances(out)
    s = openslide.OpenSlide(src)
    W0, H0 = s.dimensions
    check(int(levels[0].TotalPixelMatrixColumns) == W0 and
          int(levels[0].TotalPixelMatrixRows) == H0, f"{what}: level 0 size")
    uids = {(d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID)
            for d in levels}
    check(len(uids) == 1, f"{what}: one study, series, frame of reference")
    check(len({d.SOPInstanceUID for d in levels}) == len(levels) and
          all(u.startswith("2.25.") for u in list(uids)[0]),
          f"{what}: UIDs unique and of the 2.25 form")
    for k, ds in enumerate(levels):
        W, H, T = (int(ds.TotalPixelMatrixColumns),
                   int(ds.TotalPixelMatrixRows), int(ds.Columns))
        check(W == -(-W0 // 2 ** k) and H == -(-H0 // 2 ** k),
              f"{what}: level {k} is {W}x{H}")
        check(int(ds.NumberOfFrames) == -(-W // T) * -(-H // T),
              f"{what}: level {k} frames = tiles")
        check(ds.DimensionOrganizationType == "TILED_FULL",
              f"{what}: TILED_FULL")
        # the offset table points at each frame's item
        with open(os.path.join(out, f"level-{k}.dcm"), "rb") as fh:
            raw = fh.read()
        pos = raw.rfind(b"\xe0\x7f\x10\x00")
        bot_len = int.from_bytes(raw[pos + 16:pos + 20], "little")
        table = np.frombuffer(raw[pos + 20:pos + 20 + bot_len], "<u4")
        first = pos + 20 + bot_len
        ok = len(table) == int(ds.NumberOfFrames) and all(
            raw[first + o:first + o + 4] == b"\xfe\xff\x00\xe0" and
            raw[first + o + 8:first + o + 10] == b"\xff\xd8" for o in table)
        check(ok, f"{what}: level {k} Basic Offset Table finds every frame")
    # pixels: every frame decodes; level 0 close to OpenSlide's read
    lv0 = assemble(levels[0])
    ref = np.asarray(s.read_region((0, 0), 0, (W0, H0)).convert("RGB"))
    q = psnr(lv0, ref)
    check(q > 30, f"{what}: level 0 {q:.1f} dB against OpenSlide's read")
    for k, ds in enumerate(levels[1:], 1):
        check(assemble(ds).shape[:2] ==
              (int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)),
              f"{what}: level {k} frames decode")
    return levels, lv0


def test_write(tmp):
    src = os.path.join(DATA, "CMU-1-Small-Region.svs")
    o = os.path.join(tmp, "cmu")
    r = run(BIN, "tile", src, "-o", o, "--container", "dicom", "--quiet")
    check(r.returncode == 0, f"tile --container dicom: {r.stderr}")
    out = o + ".dicom"
    levels, lv0 = check_series(out, src, "CMU")
    # the same encoder into our TIFF container: identical pixels
    r = run(BIN, "tile", src, "-o", os.path.join(tmp, "cmu-t"),
            "--container", "tiff", "--quiet")
    t = openslide.OpenSlide(os.path.join(tmp, "cmu-t.tiff"))
    tref = np.asarray(t.read_region((0, 0), 0, t.dimensions).convert("RGB"))
    d = np.abs(lv0.astype(int) - tref.astype(int)).max()
    check(d <= 2, f"CMU: DICOM level 0 vs our TIFF container: max diff {d}")
    ds = levels[0]
    check(ds.PatientName == "" and ds.PatientID == "",
          "CMU: patient attributes empty (de-identified)")
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    check(abs(float(pm.PixelSpacing[1]) * 1000 - 0.499) < 1e-6,
          f"CMU: PixelSpacing from the slide's mpp ({pm.PixelSpacing})")
    # our reader reads it back
    r = run(BIN, "info", out, "--json")
    info = json.loads(r.stdout) if r.returncode == 0 else {}
    check(info.get("vendor") == "dicom" and info.get("level_count") ==
          len(levels) and abs(info.get("mpp_x", 0) - 0.499) < 1e-6,
          f"CMU: slidepipe reads its own DICOM back ({r.stderr})")
    # the TCGA slide (JPEG 2000 level 0 in the SVS) with `run`
    src = os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")
    o = os.path.join(tmp, "tcga")
    r = run(BIN, "run", src, "-o", o, "--container", "dicom", "--quiet")
    check(r.returncode == 0 and os.path.exists(o + ".h5"),
          f"run --container dicom: {r.stderr}")
    check_series(o + ".dicom", src, "TCGA")
    # quality >= 90 (4:4:4 in the other containers) still 0 errors: the
    # WSM IOD has no YBR_FULL, so DICOM frames are 4:2:0 at every quality
    o = os.path.join(tmp, "q92")
    r = run(BIN, "tile", os.path.join(DATA, "CMU-1-Small-Region.svs"), "-o",
            o, "--container", "dicom", "--quality", "92", "--quiet")
    e = errors_of(os.path.join(o + ".dicom", "level-0.dcm"))
    check(r.returncode == 0 and e == [], f"quality 92: 0 errors {e[:3]}")
    # the dicomizer's own output of the same slide, for the record
    od = os.path.join(tmp, "orthanc")
    os.makedirs(od)
    run("OrthancWSIDicomizer", f"--folder={od}",
        f"--openslide={OPENSLIDE_LIB}",
        os.path.join(DATA, "CMU-1-Small-Region.svs"))
    n = sum(len(errors_of(os.path.join(od, f))) for f in os.listdir(od))
    print(f"dciodvfy on OrthancWSIDicomizer's output: {n} errors",
          file=sys.stderr)
    return out


def test_attributes(tmp):
    src = os.path.join(DATA, "CMU-1-Small-Region.svs")
    a = os.path.join(tmp, "attrs.json")
    with open(a, "w") as f:
        json.dump({"PatientName": "Doe^Jane", "PatientID": "MRN-42",
                   "AccessionNumber": "A1", "StudyID": "S7",
                   "StudyInstanceUID": "2.25.1234"}, f)
    o = os.path.join(tmp, "attr")
    r = run(BIN, "tile", src, "-o", o, "--container", "dicom",
            "--dicom-attributes", a, "--quiet")
    check(r.returncode == 0, f"--dicom-attributes: {r.stderr}")
    if r.returncode == 0:
        for ds in instances(o + ".dicom"):
            check(ds.PatientName == "Doe^Jane" and ds.PatientID == "MRN-42"
                  and ds.StudyInstanceUID == "2.25.1234" and
                  ds.AccessionNumber == "A1",
                  "--dicom-attributes: values in every instance")
        e = errors_of(os.path.join(o + ".dicom", "level-0.dcm"))
        check(e == [], f"--dicom-attributes: still 0 errors {e[:3]}")
    for name, text, want in (
            ("unknown", '{"NoSuchKeyword": "x"}', "not a DICOM keyword"),
            ("badjson", '{"PatientID": ', "not a JSON object"),
            ("fixed", '{"SOPClassUID": "1.2"}', "cannot be set")):
        p = os.path.join(tmp, name + ".json")
        with open(p, "w") as f:
            f.write(text)
        o = os.path.join(tmp, "bad-" + name)
        r = run(BIN, "tile", src, "-o", o, "--container", "dicom",
                "--dicom-attributes", p, "--quiet")
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 2 and len(lines) == 1 and want in lines[0] and
              not os.path.exists(o + ".dicom"),
              f"--dicom-attributes {name}: exit {r.returncode} {lines}")
    # an output folder that cannot be written
    ro = os.path.join(tmp, "ro")
    os.makedirs(ro)
    os.chmod(ro, 0o555)
    r = run(BIN, "tile", src, "-o", os.path.join(ro, "x"), "--container",
            "dicom", "--quiet")
    if os.geteuid() != 0:  # root writes anywhere
        check(r.returncode == 3 and os.listdir(ro) == [],
              f"unwritable output: exit {r.returncode}, {os.listdir(ro)}")
    os.chmod(ro, 0o755)


def orthanc_round_trip(tmp, series_dir, src, exact=False):
    """Our series through a real Orthanc and OrthancWSIDicomToTiff back
    to a TIFF, which OpenSlide opens; with `exact` (level 0 copied from
    the source by --passthrough) level 0 equals the source's."""
    if not shutil.which("Orthanc"):
        check(False, "Orthanc missing (scripts/install-deps.sh test)")
        return
    home = os.path.join(tmp, "orthanc-server")
    os.makedirs(home)
    port = 18042 + os.getpid() % 1000
    cfg = os.path.join(home, "orthanc.json")
    with open(cfg, "w") as f:
        json.dump({"Name": "sptest", "StorageDirectory": home + "/db",
                   "IndexDirectory": home + "/db", "HttpPort": port,
                   "DicomServerEnabled": False, "RemoteAccessAllowed": False,
                   "AuthenticationEnabled": False, "Plugins": []}, f)
    log = open(os.path.join(home, "log.txt"), "w")
    p = subprocess.Popen(["Orthanc", cfg], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/system", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        series = None
        for f in sorted(os.listdir(series_dir)):
            with open(os.path.join(series_dir, f), "rb") as fh:
                req = urllib.request.Request(url + "/instances",
                                             data=fh.read(), method="POST")
                js = json.loads(urllib.request.urlopen(req, timeout=60).read())
                series = js["ParentSeries"]
        tiff = os.path.join(tmp, "back.tif")
        r = run("OrthancWSIDicomToTiff", f"--orthanc={url}", series, tiff)
        check(r.returncode == 0 and os.path.exists(tiff),
              f"OrthancWSIDicomToTiff: {r.stderr[-500:]}")
        if os.path.exists(tiff):
            t = openslide.OpenSlide(tiff)
            s = openslide.OpenSlide(src)
            check(t.dimensions == s.dimensions,
                  f"back to TIFF: {t.dimensions} vs {s.dimensions}")
            w, h = s.dimensions
            a = np.asarray(t.read_region((0, 0), 0, (w, h)).convert("RGB"))
            b = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"))
            q = psnr(a, b)
            check(q > 30, f"back to TIFF: {q:.1f} dB against the source")
            if exact:
                d = np.abs(a.astype(int) - b.astype(int)).max()
                check(d == 0, f"back to TIFF: level 0 identical (max {d})")
    finally:
        p.terminate()
        p.wait(timeout=30)
        log.close()


def main():
    for tool in ("dciodvfy", "OrthancWSIDicomizer", "OrthancWSIDicomToTiff"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} missing (scripts/install-deps.sh test)",
                  file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="sp-dcmw-") as tmp:
        out = test_write(tmp)
        test_attributes(tmp)
        orthanc_round_trip(tmp, out,
                           os.path.join(DATA, "CMU-1-Small-Region.svs"))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
