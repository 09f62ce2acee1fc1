"""A lab's folder with every kind of image in it, through `batch` and
`serve`: Aperio slides (JPEG and JPEG 2000 tiles, read by OpenSlide), a
DICOM series (DCMTK), and images OpenSlide does not read, made here by
libvips from the real CMU slide: a plain stripped TIFF, a JPEG and an
OME-TIFF pyramid (SubIFDs, OME-XML written by tiffset), each 10240 px
wide (the slide size rule), a small OME-TIFF pyramid (a slide at any
size), plus a small JPEG thumbnail and a text file that are not slides.

Checked: every slide is done, with the vendor its library reports and
its level-0 size as vipsheader/OpenSlide read it; the thumbnail is
skipped by the size rule with the reason; the text file is not a slide;
a rerun finds everything done. `serve` over the same folder lists the
same slides (not the thumbnail) and serves each one's descriptor and a
full-resolution tile that decodes to the slide's pixels as libvips reads
them (within JPEG tolerance).

No NDPI file is among the test slides (../shared/testdata has none, and
no Debian tool writes NDPI): OpenSlide's other vendors take the same
path as the Aperio ones."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import openslide
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, check, finish  # noqa: E402
from test_viewer_tiles import Server  # noqa: E402

CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
OME = ('<?xml version="1.0" encoding="UTF-8"?>'
       '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
       '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
       'Type="uint8" SizeX="{w}" SizeY="{h}" SizeC="3" SizeZ="1" SizeT="1" '
       'PhysicalSizeX="0.5" PhysicalSizeXUnit="\u00b5m" PhysicalSizeY="0.5" '
       'PhysicalSizeYUnit="\u00b5m"><Channel ID="Channel:0:0" '
       'SamplesPerPixel="3"/></Pixels></Image></OME>')


def sh(*args):
    r = subprocess.run(list(args), capture_output=True, text=True,
                       timeout=600)
    check(r.returncode == 0, f"{' '.join(args[:3])}: {r.stderr[-300:]}")
    return r


def vips_rgb(src, x, y, w, h, tmp):
    """libvips' own pixels of a region, as numpy."""
    out = os.path.join(tmp, "crop.png")
    sh("vips", "crop", src, out, str(x), str(y), str(w), str(h))
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def make_folder(tmp):
    d = os.path.join(tmp, "lab")
    os.makedirs(d)
    for n in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
        shutil.copy(os.path.join(DATA, n), d)  # serve follows no links
    shutil.copytree(os.path.join(DATA, "dicom-boxes"),
                    os.path.join(d, "dicom-boxes"))
    base = os.path.join(tmp, "base.v")
    sh("vips", "flatten", CMU, os.path.join(tmp, "flat.v"),
       "--background", "255")
    sh("vips", "crop", os.path.join(tmp, "flat.v"),
       os.path.join(tmp, "crop.v"), "0", "0", "2048", "1536")
    sh("vips", "replicate", os.path.join(tmp, "crop.v"), base, "5", "1")
    w, h = 10240, 1536
    sh("vips", "tiffsave", base, os.path.join(d, "plain.tif"))
    sh("vips", "jpegsave", base, os.path.join(d, "scan.jpg"), "--Q", "92")
    ome = os.path.join(d, "export.ome.tif")
    sh("vips", "tiffsave", base, ome, "--tile", "--pyramid", "--subifd",
       "--tile-width", "256", "--tile-height", "256", "--compression",
       "jpeg", "--Q", "90")
    sh("tiffset", "-s", "270", OME.format(w=w, h=h), ome)
    # a small OME-TIFF pyramid: a slide whatever its size (made to be
    # viewed at many scales), unlike the thumbnail
    small = os.path.join(d, "small.ome.tif")
    sh("vips", "tiffsave", os.path.join(tmp, "crop.v"), small, "--tile",
       "--pyramid", "--subifd", "--tile-width", "256", "--tile-height",
       "256", "--compression", "jpeg")
    sh("tiffset", "-s", "270", OME.format(w=2048, h=1536), small)
    sh("vips", "thumbnail", CMU, os.path.join(d, "thumb.jpg"), "300")
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("scanned 2026-12-01\n")
    return d, base, (w, h)


def main():
    with tempfile.TemporaryDirectory(prefix="sp-mixed-") as tmp:
        d, base, (w, h) = make_folder(tmp)
        want = {
            "CMU-1-Small-Region": ("aperio", openslide.OpenSlide(
                CMU).dimensions),
            "tcga-cr-7395-01a-01-ts1": ("aperio", openslide.OpenSlide(
                os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")).dimensions),
            "boxes_0": ("dicom", None),  # the series, by its first file
            "plain": ("vips:tiffload", (w, h)),
            "scan": ("vips:jpegload", (w, h)),
            "export.ome": ("vips:tiffload", (w, h)),
            "small.ome": ("vips:tiffload", (2048, 1536)),
        }
        out = os.path.join(tmp, "out")
        r = subprocess.run([BIN, "batch", d, "-o", out, "--threads", "2",
                            "--quiet"], capture_output=True, text=True,
                           timeout=900)
        check(r.returncode == 0, f"batch: rc {r.returncode}: {r.stderr}")
        summ = json.load(open(os.path.join(out, "batch-summary.json")))
        rows = summ["slides"]
        by = {s["slide"]: s for s in rows if s.get("slide")}
        for sid, (vendor, dims) in want.items():
            s = by.get(sid, {})
            check(s.get("status") == "done" and s.get("vendor") == vendor,
                  f"batch {sid}: {s.get('status')} {s.get('vendor')} "
                  f"(want done {vendor}) {s.get('error')}")
            if dims and s:
                check((s.get("width"), s.get("height")) == tuple(dims),
                      f"batch {sid}: {s.get('width')}x{s.get('height')} "
                      f"vs {dims}")
        skipped = {os.path.basename(s["path"]): s for s in rows
                   if s["status"] == "not-a-slide"}
        check("below the slide size rule" in
              (skipped.get("thumb.jpg", {}).get("error") or ""),
              f"thumb.jpg skipped by the size rule: {skipped.get('thumb.jpg')}")
        check("notes.txt" in skipped, "notes.txt is not a slide")
        check(len(rows) == len(want) + 2,
              f"batch: {len(rows)} entries, want {len(want) + 2}")
        side = json.load(open(os.path.join(out, "export.ome", "slide.json")))
        check(abs((side["source"]["mpp_x"] or 0) - 0.5) < 1e-9,
              f"OME-TIFF mpp from its OME-XML: {side['source']['mpp_x']}")
        r = subprocess.run([BIN, "batch", d, "-o", out, "--threads", "2",
                            "--quiet"], capture_output=True, text=True,
                           timeout=900)
        summ = json.load(open(os.path.join(out, "batch-summary.json")))
        check(all(s["status"] in ("already-done", "not-a-slide")
                  for s in summ["slides"]), "batch rerun: everything done")

        # serve over the same folder
        srv = Server(d)
        try:
            st, _, body = srv.get("/api/slides")
            check(st == 200, f"/api/slides: {st}")
            listed = json.loads(body) if st == 200 else []
            if isinstance(listed, dict):
                listed = listed.get("slides", [])
            names = {s.get("name") for s in listed}
            check(len(listed) == len(want) and "thumb.jpg" not in names,
                  f"serve lists {sorted(names)}")
            for s in listed:
                sid = s.get("id")
                st, _, dzi = srv.get(f"/dzi/{sid}.dzi")
                check(st == 200 and b"<Image" in dzi,
                      f"serve {s.get('name')}: descriptor {st}")
            for s in listed:
                if s.get("name") not in ("plain.tif", "scan.jpg",
                                         "export.ome.tif"):
                    continue
                # full-resolution tile (1, 2): level-0 pixels 253..507 x
                # 507..761 (overlap 1), as libvips reads them
                lvl = int(np.ceil(np.log2(max(w, h))))
                st, _, jpg = srv.get(
                    f"/dzi/{s['id']}_files/{lvl}/1_2.jpeg")
                check(st == 200, f"serve {s['name']}: tile {st}")
                if st != 200:
                    continue
                got = np.asarray(Image.open(io.BytesIO(jpg)).convert(
                    "RGB")).astype(int)
                ref = vips_rgb(base, 253, 507, got.shape[1], got.shape[0],
                               tmp)
                err = np.abs(got - ref).mean()
                check(err < 4, f"serve {s['name']}: tile mean error {err:.2f}")
        finally:
            srv.stop()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
