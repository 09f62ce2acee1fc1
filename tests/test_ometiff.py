"""OME-TIFF out (`--container ome-tiff`, tiler/tiff.c + tiler/ome.c),
checked by independent readers from Debian:

- tifffile (python3-tifffile): is_ome, the OME-XML parsed, one series with
  every level found (level 0 in IFD 0, the reduced levels as its SubIFDs,
  NewSubfileType 1), the shapes of a 2x pyramid down to one tile,
  PhysicalSizeX/Y == the slide's mpp (none when the slide has none);
  every tile of every level decoded by PIL (libjpeg: tifffile needs
  imagecodecs for JPEG, which Debian 12 does not package), level 0 equal
  to our TIFF container's level 0 (same encoder) and close to OpenSlide's
  read of the source;
- libvips (`vips rawsave file.ome.tiff[subifd=N]`): every SubIFD level
  loads with its size and the pixels PIL decoded;
- OpenSlide 3.4.1: opens it as generic-tiff with level 0 only (it does not
  follow SubIFDs); recorded, not required;
- the OME schema: no Debian 12 package ships the OME 2016-06 XSD (neither
  Bio-Formats, ome-xml nor ome-types is packaged), so no `xmllint
  --schema`: the XML is checked well-formed by xmllint and the fields the
  schema requires, their order and ID patterns are checked here one by
  one (the XML of both slides, an odd --source-name included, was
  validated once by hand with `xmllint --schema` against ome-model's
  released-schema/2016-06/ome.xsd: it validates);
- `run --container ome-tiff` end to end (the OME-XML names the final file
  though the run builds under a staged name), the sidecar's container,
  names escaped in the XML, clean one-line errors for bad combinations
  with no output left, and `serve` listing an .ome.tiff with its
  features X.h5."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import http.client
import xml.etree.ElementTree as ET

import numpy as np
import openslide
import tifffile
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, check, finish  # noqa: E402

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")  # mpp 0.499, 20x
TCGA = os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")  # no mpp
NS = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"
UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-"
                     r"[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=600, **kw)


def psnr(a, b):
    d = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 99.0 if d == 0 else 10 * np.log10(255.0 ** 2 / d)


def decode_page(path, page):
    """A tiled JPEG page's pixels: tifffile's tile offsets, each tile
    (self-contained JPEG) decoded by PIL."""
    H, W = page.imagelength, page.imagewidth
    T = page.tilewidth
    cols = -(-W // T)
    img = np.zeros((-(-H // T) * T, cols * T, 3), np.uint8)
    with open(path, "rb") as f:
        for i, (o, n) in enumerate(zip(page.dataoffsets,
                                       page.databytecounts)):
            f.seek(o)
            t = np.asarray(Image.open(io.BytesIO(f.read(n))).convert("RGB"))
            x, y = (i % cols) * T, (i // cols) * T
            img[y:y + T, x:x + T] = t
    return img[:H, :W]


def vips_level(path, subifd, tmp):
    """A level as libvips loads it (subifd -1: the main image)."""
    raw = os.path.join(tmp, "level.raw")
    r = run("vips", "rawsave", f"{path}[subifd={subifd}]", raw)
    if r.returncode != 0:
        return None, r.stderr
    r = run("vipsheader", "-f", "width", f"{path}[subifd={subifd}]")
    w = int(r.stdout)
    r = run("vipsheader", "-f", "height", f"{path}[subifd={subifd}]")
    h = int(r.stdout)
    a = np.fromfile(raw, np.uint8)
    os.remove(raw)
    return a.reshape(h, w, -1)[:, :, :3], ""


def check_xml(xml, path, what, mpp, objective):
    """The fields and order the OME 2016-06 schema asks for, one by one
    (no packaged XSD to validate against)."""
    r = subprocess.run(["xmllint", "--noout", "-"], input=xml,
                       capture_output=True, text=True)
    check(r.returncode == 0, f"{what}: xmllint: well-formed {r.stderr}")
    root = ET.fromstring(xml)
    check(root.tag == NS + "OME", f"{what}: root OME in the 2016-06 "
          f"namespace ({root.tag})")
    uuid = root.get("UUID", "")
    check(UUID_RE.match(uuid) is not None, f"{what}: UUID {uuid}")
    cr = root.get("Creator", "")
    check(re.match(r"slidepipe \d+\.\d+", cr) is not None,
          f"{what}: Creator {cr}")
    # OME's children in schema order: Instrument before Image
    kids = [c.tag[len(NS):] for c in root]
    check(kids in (["Image"], ["Instrument", "Image"]),
          f"{what}: OME children {kids}")
    images = root.findall(NS + "Image")
    check(len(images) == 1, f"{what}: one Image")
    im = images[0]
    check(re.match(r"Image:\S+$", im.get("ID", "")) is not None,
          f"{what}: Image ID")
    ik = [c.tag[len(NS):] for c in im]
    order = ["InstrumentRef", "ObjectiveSettings", "Pixels"]
    check(ik == order or ik == ["Pixels"], f"{what}: Image children {ik}")
    px = im.find(NS + "Pixels")
    a = px.attrib
    check(re.match(r"Pixels:\S+$", a.get("ID", "")) is not None and
          a.get("DimensionOrder") == "XYCZT" and a.get("Type") == "uint8" and
          a.get("SizeC") == "3" and a.get("SizeZ") == "1" and
          a.get("SizeT") == "1", f"{what}: Pixels attributes {a}")
    if mpp:
        check(abs(float(a.get("PhysicalSizeX", 0)) - mpp) < 1e-9 and
              abs(float(a.get("PhysicalSizeY", 0)) - mpp) < 1e-9 and
              a.get("PhysicalSizeXUnit") == "\u00b5m" and
              a.get("PhysicalSizeYUnit") == "\u00b5m",
              f"{what}: PhysicalSizeX/Y {mpp} \u00b5m ({a})")
    else:
        check("PhysicalSizeX" not in a and "PhysicalSizeY" not in a,
              f"{what}: no PhysicalSize without an mpp")
    pk = [c.tag[len(NS):] for c in px]
    check(pk == ["Channel", "TiffData"], f"{what}: Pixels children {pk}")
    ch = px.find(NS + "Channel")
    check(ch is not None and ch.get("SamplesPerPixel") == "3" and
          re.match(r"Channel:\S+$", ch.get("ID", "")) is not None,
          f"{what}: one Channel of 3 samples")
    td = px.find(NS + "TiffData")
    u = td.find(NS + "UUID") if td is not None else None
    check(td is not None and td.get("IFD") == "0" and
          td.get("PlaneCount") == "1" and u is not None and
          u.text == uuid and u.get("FileName") == os.path.basename(path),
          f"{what}: TiffData at IFD 0 naming this file by the document's "
          f"UUID ({None if u is None else u.attrib})")
    if objective:
        ins = root.find(NS + "Instrument")
        ob = ins.find(NS + "Objective") if ins is not None else None
        check(ob is not None and
              float(ob.get("NominalMagnification", 0)) == objective and
              im.find(NS + "ObjectiveSettings").get("ID") == ob.get("ID") and
              im.find(NS + "InstrumentRef").get("ID") == ins.get("ID"),
              f"{what}: objective {objective}x referenced by the Image")
    return im


def check_ome(path, src, what, tmp, mpp=None, objective=None):
    """Check OME-TIFF `path` made from slide `src`; level 0's pixels."""
    s = openslide.OpenSlide(src)
    W0, H0 = s.dimensions
    t = tifffile.TiffFile(path)
    check(t.is_ome, f"{what}: tifffile is_ome")
    xml = t.pages[0].description
    check_xml(xml, path, what, mpp, objective)
    d = tifffile.xml2dict(xml)
    check(int(d["OME"]["Image"]["Pixels"]["SizeX"]) == W0,
          f"{what}: xml2dict SizeX")
    check(len(t.pages) == 1, f"{what}: one top-level IFD ({len(t.pages)})")
    check(len(t.series) == 1, f"{what}: one series")
    ser = t.series[0]
    levels = ser.levels
    p0 = t.pages[0]
    subs = p0.tags.get("SubIFDs")
    nsub = len(subs.value) if subs else 0
    check(nsub == len(levels) - 1, f"{what}: {nsub} SubIFDs for "
          f"{len(levels)} levels")
    shapes = [lv.shape for lv in levels]
    want = []
    w, h = W0, H0
    while True:
        want.append((h, w, 3))
        if w <= p0.tilewidth and h <= p0.tilelength:
            break
        w, h = -(-w // 2), -(-h // 2)
    check(shapes == want, f"{what}: levels {shapes}, want {want}")
    check(ser.axes == "YXS" and ser.dtype == np.uint8,
          f"{what}: series axes {ser.axes} {ser.dtype}")
    pages = [lv.pages[0] for lv in levels]
    check(pages[0].subfiletype == 0 and
          all(p.subfiletype == 1 for p in pages[1:]),
          f"{what}: NewSubfileType 0, then reduced")
    check(all(p.compression == 7 and p.photometric == 6 and p.is_tiled
              for p in pages), f"{what}: tiled JPEG YCbCr at every level")
    lv0 = None
    for k, p in enumerate(pages):
        img = decode_page(path, p)
        check(img.shape == shapes[k], f"{what}: level {k} decodes (PIL)")
        v, e = vips_level(path, k - 1, tmp)
        check(v is not None and v.shape == img.shape,
              f"{what}: vips loads subifd={k - 1} with its size "
              f"({None if v is None else v.shape} {e})")
        if v is not None and v.shape == img.shape:
            dv = np.abs(v.astype(int) - img.astype(int)).max()
            check(dv <= 2, f"{what}: level {k}: vips and PIL agree "
                  f"(max diff {dv})")
        if k == 0:
            lv0 = img
    ref = np.asarray(s.read_region((0, 0), 0, (W0, H0)).convert("RGB"))
    q = psnr(lv0, ref)
    check(q > 30, f"{what}: level 0 {q:.1f} dB against OpenSlide's read")
    # OpenSlide 3.4.1 reads a plain TIFF as generic-tiff: for the record
    try:
        o = openslide.OpenSlide(path)
        print(f"{what}: OpenSlide opens it as "
              f"{o.properties.get('openslide.vendor')}, levels "
              f"{o.level_dimensions}, mpp "
              f"{o.properties.get('openslide.mpp-x')}", file=sys.stderr)
    except openslide.OpenSlideError as e:
        print(f"{what}: OpenSlide does not open it: {e}", file=sys.stderr)
    return lv0


def test_tile(tmp):
    o = os.path.join(tmp, "cmu")
    r = run(BIN, "tile", CMU, "-o", o, "--container", "ome-tiff", "--quiet")
    check(r.returncode == 0 and sorted(os.listdir(tmp)) ==
          ["cmu.json", "cmu.ome.tiff"], f"tile --container ome-tiff: "
          f"{r.stderr} {os.listdir(tmp)}")
    path = o + ".ome.tiff"
    lv0 = check_ome(path, CMU, "CMU", tmp, mpp=0.499, objective=20)
    with open(o + ".json") as f:
        side = json.load(f)
    check(side["parameters"]["container"] == "ome-tiff",
          f"sidecar container {side['parameters']['container']}")
    # the same encoder into our TIFF container: the same pixels
    r = run(BIN, "tile", CMU, "-o", os.path.join(tmp, "cmu-t"),
            "--container", "tiff", "--quiet")
    tt = tifffile.TiffFile(os.path.join(tmp, "cmu-t.tiff"))
    tref = decode_page(os.path.join(tmp, "cmu-t.tiff"), tt.pages[0])
    d = np.abs(lv0.astype(int) - tref.astype(int)).max()
    check(d <= 2, f"CMU: OME-TIFF level 0 vs our TIFF container: max diff "
          f"{d}")
    # OUT.ome.tif names the output as given
    o2 = os.path.join(tmp, "named.ome.tif")
    r = run(BIN, "tile", CMU, "-o", o2, "--container", "ome-tiff",
            "--quiet", "--quality", "92")
    check(r.returncode == 0 and os.path.exists(o2) and
          os.path.exists(os.path.join(tmp, "named.json")),
          f"-o X.ome.tif: {r.stderr}")
    if os.path.exists(o2):
        check_ome(o2, CMU, "CMU q92 .ome.tif", tmp, mpp=0.499, objective=20)
    # names from outside are escaped in the XML
    name = 'we&ird <"name\'>\u00e9.svs'
    o3 = os.path.join(tmp, "esc")
    r = run(BIN, "tile", CMU, "-o", o3, "--container", "ome-tiff",
            "--quiet", "--source-name", name)
    if check(r.returncode == 0, f"--source-name: {r.stderr}"):
        xml = tifffile.TiffFile(o3 + ".ome.tiff").pages[0].description
        im = ET.fromstring(xml).find(NS + "Image")
        check(im.get("Name") == name,
              f"an odd source name round-trips: {im.get('Name')!r}")
    # --force replaces; no --force refuses, leaving the old one
    r = run(BIN, "tile", CMU, "-o", o, "--container", "ome-tiff", "--quiet")
    check(r.returncode != 0 and "already exists" in r.stderr,
          f"existing output refused: {r.returncode} {r.stderr}")
    for f in ("cmu-t.tiff", "cmu-t.json", "named.ome.tif", "named.json",
              "esc.ome.tiff", "esc.json"):
        if os.path.exists(os.path.join(tmp, f)):
            os.remove(os.path.join(tmp, f))


def test_run(tmp):
    """`run`: pyramid and features, the slide without an mpp; background
    tiles skipped (every TIFF tile exists: skipped ones hold one solid
    background tile)."""
    o = os.path.join(tmp, "tcga")
    r = run(BIN, "run", TCGA, "-o", o, "--container", "ome-tiff", "--quiet",
            "--skip-background")
    check(r.returncode == 0 and os.path.exists(o + ".h5"),
          f"run --container ome-tiff: {r.stderr}")
    check(not [f for f in os.listdir(tmp) if f.startswith(".")],
          f"run: no staged names left {os.listdir(tmp)}")
    if os.path.exists(o + ".ome.tiff"):
        check_ome(o + ".ome.tiff", TCGA, "TCGA run", tmp)
    with open(o + ".json") as f:
        side = json.load(f)
    check(side["parameters"]["container"] == "ome-tiff" and
          side["tiles_skipped"] > 0 and side["source"]["mpp_x"] is None,
          f"run: sidecar {side['parameters']['container']}, "
          f"{side['tiles_skipped']} skipped, mpp {side['source']['mpp_x']}")
    return o


def test_errors(tmp):
    d = os.path.join(tmp, "err")
    os.makedirs(d)
    cases = (
        (["tile", "--format", "png"], "the OME-TIFF container holds jpeg"),
        (["tile", "--format", "webp"], "the OME-TIFF container holds jpeg"),
        (["run", "--format", "png"], "the OME-TIFF container holds jpeg"),
        (["tile", "--tile-size", "100"], "OME-TIFF needs a multiple of 16"),
        (["tile", "--overlap", "2"], "OME-TIFF tiles never overlap"),
        (["tile", "--dicom-attributes", "/dev/null"], "--container dicom"),
    )
    for extra, want in cases:
        r = run(BIN, extra[0], CMU, "-o", os.path.join(d, "x"),
                "--container", "ome-tiff", *extra[1:], "--quiet")
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 2 and len(lines) == 1 and want in lines[0],
              f"{extra}: exit {r.returncode} {lines}")
    r = run(BIN, "tile", CMU, "-o", os.path.join(d, "x"), "--container",
            "ome-tif")
    check(r.returncode == 0, "--container ome-tif is ome-tiff too")
    r = run(BIN, "tile", CMU, "-o", os.path.join(d, "y"), "--container",
            "omexml")
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 2 and len(lines) == 1 and "ome-tiff" in lines[0],
          f"an unknown container names ome-tiff: {lines}")
    help_ = run(BIN, "tile", "--help").stdout
    check("dzi|tiff|dicom|ome-tiff" in help_, "tile --help names ome-tiff")
    os.remove(os.path.join(d, "x.ome.tiff"))
    os.remove(os.path.join(d, "x.json"))
    check(os.listdir(d) == [], f"no output left on failure: {os.listdir(d)}")
    # an unreadable slide: no output either
    r = run(BIN, "tile", os.path.join(DATA, "unreadable.svs"), "-o",
            os.path.join(d, "u"), "--container", "ome-tiff", "--quiet")
    check(r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and
          os.listdir(d) == [], f"unreadable slide: exit {r.returncode} "
          f"{r.stderr!r} {os.listdir(d)}")
    ro = os.path.join(tmp, "ro")
    os.makedirs(ro)
    os.chmod(ro, 0o555)
    r = run(BIN, "tile", CMU, "-o", os.path.join(ro, "x"), "--container",
            "ome-tiff", "--quiet")
    if os.geteuid() != 0:  # root writes anywhere
        check(r.returncode == 3 and os.listdir(ro) == [],
              f"unwritable output: exit {r.returncode}, {os.listdir(ro)}")
    os.chmod(ro, 0o755)
    shutil.rmtree(d)
    shutil.rmtree(ro)


def test_serve_index(tmp, run_stem):
    """serve lists an .ome.tiff (as a slide, through OpenSlide) with the
    features X.h5 of `run` beside it; index takes the run's X.h5."""
    d = os.path.dirname(run_stem)
    p = subprocess.Popen([BIN, "serve", "--port", "0", d],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        check(m is not None, f"serve starts on a folder with OME-TIFFs: "
              f"{line!r}")
        if m:
            c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)),
                                           timeout=60)
            c.request("GET", "/api/slides")
            lst = json.loads(c.getresponse().read())["slides"]
            names = {s["name"]: s for s in lst}
            check("cmu.ome.tiff" in names and "tcga.ome.tiff" in names,
                  f"serve lists the OME-TIFFs: {sorted(names)}")
            t = names.get("tcga.ome.tiff", {})
            check(len(t.get("features", [])) > 0,
                  "serve pairs X.ome.tiff with the features X.h5")
            if t:
                n = t["dz_levels"] - 1
                c.request("GET", f"/dzi/{t['id']}_files/{n}/0_0.jpeg")
                rr = c.getresponse()
                body = rr.read()
                check(rr.status == 200 and body[:2] == b"\xff\xd8",
                      f"serve renders a tile of the OME-TIFF: {rr.status}")
            c.close()
    finally:
        p.terminate()
        p.wait(timeout=30)
    cohort = os.path.join(tmp, "cohort.h5")
    r = run(BIN, "index", d, "-o", cohort)
    check(r.returncode == 0, f"index beside OME-TIFFs: {r.stderr}")


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="sp-ome-")
    try:
        test_tile(tmp)
        stem = test_run(tmp)
        test_errors(tmp)
        test_serve_index(tmp, stem)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.time() - t0:.1f} s)")
    sys.exit(finish())


if __name__ == "__main__":
    main()
