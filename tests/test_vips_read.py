"""Images that are not slides, read through libvips (ingest/vips.c),
checked against libvips' own command-line reads:

- inputs made here with `vips` from CMU-1-Small-Region.svs: a plain
  stripped TIFF, a tiled TIFF (OpenSlide's generic-tiff takes it), JPEG,
  PNG, WebP (lossless), a SubIFD pyramid with OME-XML (`vips tiffsave
  --subifd`, then `tiffset` writes the description), a multi-page TIFF
  (a thumbnail page, then the image), a BigTIFF and a PNG with alpha;
- every level slidepipe exposes, read whole and in odd-sized pieces
  through the public reader (read_dump), against `vips crop` of the same
  page or SubIFD dumped with `vips rawsave` and numpy: equal byte for
  byte (the alpha PNG: within 1 of `vips flatten` over white);
- `info --json`: vendor vips:<loader>, mpp from OME-XML or the TIFF
  resolution tags, absent when the file has none;
- broken and absurd inputs (a PNG whose header claims 10^6 x 10^6 px, a
  truncated JPEG, a truncated TIFF) under `prlimit --as` (ASan builds:
  peak RSS checked instead): one line naming the file, exit 1, no output
  at the final path, peak RSS under 2 GiB;
- `batch` converts a small image named on the command line;
- stripped TIFFs (RowsPerStrip 16 uncompressed, LZW, deflate; vips'
  128-row strips in grey, RGBA and YCbCr JPEG) are read strip by strip
  through libtiff (ingest/strips.c; property vips.strips), equal to vips'
  read of the same file; `tile` on them makes no temporary file (with
  VIPS_DISC_THRESHOLD=0 and an unwritable TMPDIR, where the same image as
  PNG fails); a stripped TIFF cut short after its directory, and ones
  with garbage in their deflate or JPEG strips, fail with one line naming
  the file, never grey pixels."""
import functools
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, DATA, cached_ref, check, finish  # noqa: E402

READ_DUMP = os.environ.get("SLIDEPIPE_READ_DUMP", "")
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
# 2 GiB of address space: far less than a 10^6 x 10^6 decode (not under
# ASan, whose shadow memory needs terabytes of it: there, peak RSS)
AS_LIMIT = str(2 << 30)


def asan():
    r = subprocess.run(["ldd", BIN], capture_output=True, text=True)
    return "libasan" in r.stdout


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=600, **kw)


def vips(*args):
    r = run("vips", *args)
    if not check(r.returncode == 0, f"vips {' '.join(args)}: {r.stderr}"):
        raise SystemExit(finish())


@functools.lru_cache(maxsize=None)
def vips_version():
    return run("vips", "--version").stdout.strip()


def vips_pixels(src, tmp, w, h):
    """src (a vips file name, options allowed) as an h x w x 3 array,
    through vips itself (16 bits and grey as libvips converts them); once
    per file's bytes, options and size, shared with the other build
    tree's run (sptest.cached_ref, keyed by the vips version too)"""
    def read():
        out = os.path.join(tmp, "ref.v")
        raw = os.path.join(tmp, "ref.raw")
        vips("crop", src, out, "0", "0", str(w), str(h))
        vips("colourspace", out, raw, "srgb")  # .raw: vips' rawsave
        px = np.fromfile(raw, dtype=np.uint8)
        return px.reshape(h, w, -1)
    path, _, opts = src.partition("[")
    return cached_ref("vips crop + colourspace srgb", read, [path],
                      params=(opts, w, h, vips_version()), libs=(np,))


def dump(path, tmp, piece=None):
    """level -> pixels through the public reader (read_dump)"""
    out = tempfile.mkdtemp(dir=tmp)
    args = [READ_DUMP, path, out, "--max-side", "4000"]
    if piece:
        args += ["--piece", str(piece[0]), str(piece[1])]
    r = run(*args)
    levels = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "level" and f[2] == "ok":
            lv, w, h = int(f[1]), int(f[3]), int(f[4])
            levels[lv] = np.fromfile(os.path.join(out, f"level-{lv}.rgb"),
                                     dtype=np.uint8).reshape(h, w, 3)
        elif len(f) >= 3 and f[0] == "level":
            check(False, f"{path} level {f[1]}: {line}")
    shutil.rmtree(out)
    return levels


def info(path):
    r = run(BIN, "info", path, "--json")
    check(r.returncode == 0, f"info {path}: {r.stderr}")
    return json.loads(r.stdout) if r.returncode == 0 else {}


def same(path, tmp, sources, vendor, mpp=None, tol=0, piece=None):
    """Every level of `path` equals vips' read of sources[level] (within
    tol); info's vendor and mpp as given (None: absent)."""
    name = os.path.basename(path)
    j = info(path)
    check(j.get("vendor") == vendor, f"{name}: vendor {j.get('vendor')}")
    if mpp is None:
        check(j.get("mpp_x") is None and j.get("mpp_y") is None,
              f"{name}: no mpp invented ({j.get('mpp_x')})")
    else:
        check(j.get("mpp_x") is not None and
              abs(j["mpp_x"] - mpp) < 1e-6 and abs(j["mpp_y"] - mpp) < 1e-6,
              f"{name}: mpp {j.get('mpp_x')} x {j.get('mpp_y')}, want {mpp}")
    levels = j.get("levels", [])
    check(len(levels) == len(sources),
          f"{name}: {len(levels)} levels, want {len(sources)}")
    refs = {}  # level -> vips' read: one for both ways of reading
    for piece_size in (None, piece or (333, 277)):
        got = dump(path, tmp, piece_size)
        for lv, src in enumerate(sources):
            if lv >= len(levels):
                break
            w, h = levels[lv]["width"], levels[lv]["height"]
            if lv not in refs:
                refs[lv] = vips_pixels(src, tmp, w, h)
            ref = refs[lv]
            g = got.get(lv)
            ok = g is not None and g.shape == ref.shape
            if ok and tol:
                d = np.abs(g.astype(int) - ref.astype(int)).max()
                ok = d <= tol
            elif ok:
                ok = np.array_equal(g, ref)
            check(ok, f"{name}: level {lv} ({w}x{h}, pieces {piece_size}) "
                      f"equals vips' read of {os.path.basename(src)}")
    return j


OME = ('<?xml version="1.0" encoding="UTF-8"?>'
       '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
       '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
       'Type="uint8" SizeX="{w}" SizeY="{h}" SizeC="3" SizeZ="1" SizeT="1" '
       'PhysicalSizeX="0.25" PhysicalSizeXUnit="\u00b5m" '
       'PhysicalSizeY="250" PhysicalSizeYUnit="nm">'
       '<Channel ID="Channel:0:0" SamplesPerPixel="3"/>'
       '</Pixels></Image></OME>')


def test_formats(tmp):
    base = os.path.join(tmp, "base.v")
    vips("flatten", CMU, base, "--background", "255")
    w, h = 2220, 2967
    p = lambda n: os.path.join(tmp, n)  # noqa: E731

    vips("tiffsave", base, p("strip.tif"))
    same(p("strip.tif"), tmp, [p("strip.tif")], "vips:tiffload", mpp=0.499)
    vips("tiffsave", base, p("bigtiff.tif"), "--bigtiff",
         "--compression", "deflate")
    same(p("bigtiff.tif"), tmp, [p("bigtiff.tif")], "vips:tiffload",
         mpp=0.499)
    vips("tiffsave", base, p("tiled.tif"), "--tile", "--tile-width", "256",
         "--tile-height", "256", "--compression", "lzw")
    # a plain tiled TIFF is OpenSlide's (generic-tiff): the same pixels
    same(p("tiled.tif"), tmp, [p("tiled.tif")], "generic-tiff", mpp=None)

    vips("jpegsave", base, p("c.jpg"), "--Q", "90")
    same(p("c.jpg"), tmp, [p("c.jpg")], "vips:jpegload")
    vips("pngsave", base, p("c.png"))
    same(p("c.png"), tmp, [p("c.png")], "vips:pngload")
    vips("webpsave", base, p("c.webp"), "--lossless")
    same(p("c.webp"), tmp, [p("c.webp")], "vips:webpload")

    # alpha: composited over white
    vips("bandjoin_const", base, p("rgba.v"), "100")
    vips("pngsave", p("rgba.v"), p("alpha.png"))
    vips("flatten", p("alpha.png"), p("alpha-flat.v"), "--background", "255")
    same(p("alpha.png"), tmp, [p("alpha-flat.v")], "vips:pngload", tol=1)

    # OME-TIFF: a SubIFD pyramid, mpp from OME-XML (0.25 um, 250 nm)
    ome = p("ome.tif")
    vips("tiffsave", base, ome, "--tile", "--pyramid", "--subifd",
         "--tile-width", "256", "--tile-height", "256",
         "--compression", "lzw")
    r = run("tiffset", "-s", "270", OME.format(w=w, h=h), ome)
    check(r.returncode == 0, f"tiffset: {r.stderr}")
    nsub = int(run("vipsheader", "-f", "n-subifds", ome).stdout.strip() or 0)
    check(nsub >= 3, f"vips wrote {nsub} SubIFDs")
    j = same(ome, tmp, [ome] + [f"{ome}[subifd={k}]" for k in range(nsub)],
             "vips:tiffload", mpp=0.25)
    ds = [lv["downsample"] for lv in j.get("levels", [])]
    check(all(abs(d / 2 ** i - 1) < 0.01 for i, d in enumerate(ds)),
          f"OME-TIFF downsamples {ds}")
    props = j.get("properties", {})
    check(props.get("vips.ome-xml") == "true" and
          props.get("vips.n-subifds") == str(nsub),
          f"OME-TIFF properties {props}")

    # multi-page: a thumbnail page first, then the image (level 0 is the
    # largest page); the thumbnail is no halving: not a level
    vips("resize", base, p("thumb.v"), "0.1")
    vips("tiffsave", p("thumb.v"), p("thumb.tif"))
    r = run("tiffcp", p("thumb.tif"), p("strip.tif"), p("multi.tif"))
    check(r.returncode == 0, f"tiffcp: {r.stderr}")
    j = same(p("multi.tif"), tmp, [f"{p('multi.tif')}[page=1]"],
             "vips:tiffload", mpp=0.499)
    check(j.get("properties", {}).get("vips.page") == "1",
          "multi-page: page 1 (the largest) is the image")

    # the whole pipeline on one: `tile` writes a Deep Zoom pyramid
    r = run(BIN, "tile", p("c.png"), "-o", p("c-out"), "--quiet")
    check(r.returncode == 0 and os.path.exists(p("c-out.dzi")),
          f"tile on a PNG: {r.stderr}")
    # batch: a small image named on the command line is a slide
    r = run(BIN, "batch", p("c.jpg"), "-o", p("batch"), "--threads", "2")
    summ = open(p("batch/batch-summary.tsv")).read() if os.path.exists(
        p("batch/batch-summary.tsv")) else ""
    check(r.returncode == 0 and "\tdone\t" in summ,
          f"batch with an image named: {r.returncode} {summ}")


def strips_path(path, want=True):
    j = info(path)
    got = j.get("properties", {}).get("vips.strips")
    check(got == ("true" if want else "false"),
          f"{os.path.basename(path)}: vips.strips {got}, want {want}")


def test_strips(tmp):
    p = lambda n: os.path.join(tmp, n)  # noqa: E731
    base = os.path.join(tmp, "base.v")
    vips("flatten", CMU, base, "--background", "255")
    vips("tiffsave", base, p("s128.tif"))
    for comp in ("none", "lzw", "zip"):
        f = p(f"s16-{comp}.tif")
        r = run("tiffcp", "-r", "16", "-c", comp, p("s128.tif"), f)
        check(r.returncode == 0, f"tiffcp {comp}: {r.stderr}")
        strips_path(f)
        same(f, tmp, [f], "vips:tiffload", mpp=0.499, piece=(300, 21))
    # grey 8-bit (MinIsBlack): replicated, as libvips' colourspace does
    vips("colourspace", base, p("grey.v"), "b-w")
    vips("tiffsave", p("grey.v"), p("grey.tif"), "--compression", "lzw",
         "--predictor", "horizontal")
    strips_path(p("grey.tif"))
    same(p("grey.tif"), tmp, [p("grey.tif")], "vips:tiffload", mpp=0.499)
    # RGBA (unassociated alpha): composited over white
    vips("bandjoin_const", base, p("rgba.v"), "100")
    vips("tiffsave", p("rgba.v"), p("rgba.tif"), "--compression", "deflate")
    strips_path(p("rgba.tif"))
    vips("flatten", p("rgba.tif"), p("rgba-flat.v"), "--background", "255")
    same(p("rgba.tif"), tmp, [p("rgba-flat.v")], "vips:tiffload",
         mpp=0.499, tol=1)
    # YCbCr JPEG strips, decoded to RGB by libtiff as libvips has it do
    vips("tiffsave", base, p("jpeg.tif"), "--compression", "jpeg")
    strips_path(p("jpeg.tif"))
    same(p("jpeg.tif"), tmp, [p("jpeg.tif")], "vips:tiffload", mpp=0.499)
    # multi-page: the stripped page 1 is level 0
    vips("resize", base, p("thumb.v"), "0.1")
    vips("tiffsave", p("thumb.v"), p("thumb.tif"))
    r = run("tiffcp", p("thumb.tif"), p("s16-lzw.tif"), p("multi16.tif"))
    check(r.returncode == 0, f"tiffcp: {r.stderr}")
    strips_path(p("multi16.tif"))
    same(p("multi16.tif"), tmp, [f"{p('multi16.tif')}[page=1]"],
         "vips:tiffload", mpp=0.499)
    # no temporary file: libvips would need one for every non-tiled image
    # here (VIPS_DISC_THRESHOLD=0) and cannot write one
    env = dict(os.environ, VIPS_DISC_THRESHOLD="0",
               TMPDIR=p("no-such-dir"))
    vips("pngsave", base, p("c.png"))
    for f, ok in (("s16-lzw.tif", True), ("rgba.tif", True),
                  ("c.png", False)):
        r = run(BIN, "tile", p(f), "-o", p(f"notmp-{f}"), "--quiet",
                env=env)
        check((r.returncode == 0) == ok,
              f"tile {f} with no TMPDIR: exit {r.returncode} {r.stderr}")
    # a single 2967-row strip of 2220 px is small: still read by strips;
    # one strip over the bound stays with libvips
    r = run("tiffcp", "-r", "4000", p("s128.tif"), p("one.tif"))
    check(r.returncode == 0, f"tiffcp: {r.stderr}")
    strips_path(p("one.tif"))
    vips("replicate", base, p("tall.v"), "1", "4")
    vips("tiffsave", p("tall.v"), p("tall.tif"))
    r = run("tiffcp", "-r", "20000", "-c", "lzw", p("tall.tif"),
            p("tall1.tif"))
    check(r.returncode == 0, f"tiffcp: {r.stderr}")
    strips_path(p("tall1.tif"), want=False)
    r = run(BIN, "tile", p("tall1.tif"), "-o", p("tall1-out"), "--quiet")
    check(r.returncode == 0, f"tile on one 79 MB strip: {r.stderr}")


def tiff_ifd_first(path, px, rps):
    """An uncompressed RGB TIFF with its directory before its strips (a
    cut file still opens); px: h x w x 3 uint8."""
    h, w, _ = px.shape
    n = (h + rps - 1) // rps
    ents = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, None),
            (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, n, None),
            (277, 3, 1, 3), (278, 4, 1, rps), (279, 4, n, None),
            (284, 3, 1, 1)]
    ifd = 8
    extra = ifd + 2 + 12 * len(ents) + 4
    bps_at, offs_at = extra, extra + 8
    cnts_at = offs_at + 4 * n
    data_at = cnts_at + 4 * n
    sizes = [min(rps, h - i * rps) * w * 3 for i in range(n)]
    offs = [data_at + sum(sizes[:i]) for i in range(n)]
    out = bytearray(b"II*\0" + struct.pack("<I", ifd))
    out += struct.pack("<H", len(ents))
    for tag, typ, cnt, val in ents:
        if tag == 258:
            val = bps_at
        elif tag == 273:
            val = offs_at if n > 1 else offs[0]
        elif tag == 279:
            val = cnts_at if n > 1 else sizes[0]
        if typ == 3 and cnt == 1:
            out += struct.pack("<HHIHH", tag, typ, cnt, val, 0)
        else:
            out += struct.pack("<HHII", tag, typ, cnt, val)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHHH", 8, 8, 8, 0)
    out += struct.pack(f"<{n}I", *offs) + struct.pack(f"<{n}I", *sizes)
    out += px.tobytes()
    with open(path, "wb") as f:
        f.write(out)


def spoil(src, dst, frac0, frac1):
    """dst: src with bytes [frac0, frac1) of its length replaced by junk
    (vips writes the directory last: it survives)"""
    data = bytearray(open(src, "rb").read())
    a, b = int(len(data) * frac0), int(len(data) * frac1)
    data[a:b] = bytes((i * 151 + 17) & 0xff for i in range(b - a))
    with open(dst, "wb") as f:
        f.write(data)


def test_broken_strips(tmp):
    p = lambda n: os.path.join(tmp, n)  # noqa: E731
    vips("crop", CMU, p("small.v"), "0", "0", "1000", "800")
    vips("flatten", p("small.v"), p("small-rgb.v"), "--background", "255")
    vips("rawsave", p("small-rgb.v"), p("small.raw"))
    px = np.fromfile(p("small.raw"), dtype=np.uint8).reshape(800, 1000, 3)
    tiff_ifd_first(p("first.tif"), px, 16)
    # the writer is right: whole, it reads as vips reads it
    strips_path(p("first.tif"))
    same(p("first.tif"), tmp, [p("first.tif")], "vips:tiffload")
    data = open(p("first.tif"), "rb").read()
    with open(p("cut-strips.tif"), "wb") as f:
        f.write(data[:len(data) // 2])
    expect_clean_failure(p("cut-strips.tif"), tmp, cmds=("tile", "run"))
    vips("tiffsave", p("small-rgb.v"), p("z.tif"), "--compression",
         "deflate")
    spoil(p("z.tif"), p("bad-deflate.tif"), 0.4, 0.6)
    expect_clean_failure(p("bad-deflate.tif"), tmp, cmds=("tile",))
    vips("tiffsave", p("small-rgb.v"), p("j.tif"), "--compression", "jpeg")
    spoil(p("j.tif"), p("bad-jpeg.tif"), 0.4, 0.6)
    expect_clean_failure(p("bad-jpeg.tif"), tmp, cmds=("tile",))


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


def expect_clean_failure(path, tmp, cmds=("info", "tile")):
    name = os.path.basename(path)
    for cmd in cmds:
        d = tempfile.mkdtemp(dir=tmp)
        out = os.path.join(d, "out")
        args = [BIN, cmd, path] + (["-o", out, "--quiet"] if cmd != "info"
                                   else [])
        if asan():
            r = run(*args)
        else:
            r = run("prlimit", f"--as={AS_LIMIT}", *args)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        check(rss < int(AS_LIMIT), f"{cmd} {name}: peak RSS {rss} bytes")
        err = r.stderr.splitlines()
        check(r.returncode == 1,
              f"{cmd} {name}: exit {r.returncode} ({r.stderr[-300:]})")
        check(len(err) == 1 and path in err[0],
              f"{cmd} {name}: one line naming the file: {err}")
        check(os.listdir(d) == [], f"{cmd} {name}: left {os.listdir(d)}")
        shutil.rmtree(d)


def test_broken(tmp):
    p = lambda n: os.path.join(tmp, n)  # noqa: E731
    # a PNG whose header claims 10^6 x 10^6 RGB pixels (valid CRCs)
    ihdr = struct.pack(">IIBBBBB", 1000000, 1000000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" + b"\x80" * 300)
    with open(p("huge.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
                png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    expect_clean_failure(p("huge.png"), tmp)
    # a truncated JPEG: the header opens, the pixels fail (no grey)
    vips("crop", CMU, p("small.v"), "0", "0", "1000", "800")
    vips("jpegsave", p("small.v"), p("full.jpg"))
    data = open(p("full.jpg"), "rb").read()
    with open(p("trunc.jpg"), "wb") as f:
        f.write(data[:len(data) // 2])
    expect_clean_failure(p("trunc.jpg"), tmp, cmds=("tile", "run"))
    # a truncated TIFF, strips cut
    vips("flatten", p("small.v"), p("small-rgb.v"), "--background", "255")
    vips("tiffsave", p("small-rgb.v"), p("full.tif"))
    data = open(p("full.tif"), "rb").read()
    with open(p("trunc.tif"), "wb") as f:
        f.write(data[:len(data) // 2])
    expect_clean_failure(p("trunc.tif"), tmp, cmds=("tile",))


def main():
    tmp = tempfile.mkdtemp(prefix="sp-vips-")
    try:
        test_formats(tmp)
        test_broken(tmp)
        test_strips(tmp)
        test_broken_strips(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
