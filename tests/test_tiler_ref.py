#!/usr/bin/python3
"""`slidepipe tile` against independent references: the geometry of
`vips dzsave`, OpenSlide's own read_region, a numpy box-filter pyramid,
OpenSlide and vips reading the TIFF container back, SIGKILL then rerun,
--skip-background, and the one-line error of an unreadable slide."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import openslide
from PIL import Image
from sptest import DATA, cached_ref, check, failures, finish

BIN = os.environ["SLIDEPIPE_BIN"]
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
TCGA = os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")
BOXES = os.path.join(DATA, "boxes.tiff")
SMALL = os.path.join(DATA, "small.svs")



def run(*args, timeout=300):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          errors="replace", timeout=timeout)


def tile(src, out, *args):
    r = run("tile", src, "-o", out, "--quiet", "--json", *args)
    if not check(r.returncode == 0, f"tile {src} {args}: rc {r.returncode} {r.stderr}"):
        return None
    return json.loads(r.stdout)


def tile_sizes(files_dir, pattern="*.jpeg"):
    """{level: {name: (w, h)}} from the image headers."""
    out = {}
    for d in sorted(os.listdir(files_dir)):
        p = os.path.join(files_dir, d)
        if not os.path.isdir(p):
            continue
        lv = {}
        for f in glob.glob(os.path.join(p, pattern)):
            with Image.open(f) as im:
                lv[os.path.basename(f)] = im.size
        out[int(d)] = lv
    return out


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def flat_rgb(img, bg=(255, 255, 255)):
    """OpenSlide RGBA (premultiplied by PIL? no: straight) over bg."""
    a = np.asarray(img).astype(np.float64)
    alpha = a[..., 3:4] / 255.0
    rgb = a[..., :3] * alpha + np.array(bg, np.float64) * (1 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def level0(path):
    """OpenSlide's read of all of level 0 over white (once per slide and
    shared with the other build tree's run: sptest.cached_ref)"""
    def read():
        s = openslide.OpenSlide(path)
        return flat_rgb(s.read_region((0, 0), 0, s.dimensions))
    return cached_ref("level0 over white", read, [path],
                      libs=(openslide, np))


def shrink(a):
    """2x2 box filter in float, odd edges repeated (as libvips dzsave)."""
    h, w = a.shape[:2]
    if h % 2:
        a = np.concatenate([a, a[-1:]], axis=0)
    if w % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4


def dz_levels(w, h):
    n = 0
    while (1 << n) < max(w, h):
        n += 1
    return n + 1


def crop(img, col, row, T, O):
    h, w = img.shape[:2]
    x0 = col * T - (O if col else 0)
    y0 = row * T - (O if row else 0)
    return img[y0:min(h, (row + 1) * T + O), x0:min(w, (col + 1) * T + O)]


# ---------------------------------------------------------------------------

def test_geometry_vs_vips(tmp):
    cases = [(CMU, 254, 1), (TCGA, 254, 1), (CMU, 510, 3), (BOXES, 64, 0),
             (SMALL, 254, 1)]
    for src, T, O in cases:
        name = f"{os.path.basename(src)}-{T}-{O}"
        ours = os.path.join(tmp, "g-" + name)
        vref = os.path.join(tmp, "v-" + name)
        if tile(src, ours, "--tile-size", str(T), "--overlap", str(O)) is None:
            continue
        r = subprocess.run(["vips", "dzsave", src, vref, "--tile-size", str(T),
                            "--overlap", str(O), "--depth", "onepixel"],
                           capture_output=True, text=True)
        if not check(r.returncode == 0, f"vips dzsave {name}: {r.stderr}"):
            continue
        a = tile_sizes(ours + "_files")
        b = tile_sizes(vref + "_files")
        check(sorted(a) == sorted(b), f"{name}: level count {len(a)} vs {len(b)}")
        for lv in b:
            check(sorted(a.get(lv, {})) == sorted(b[lv]),
                  f"{name}: level {lv} file names")
            bad = [k for k in b[lv] if a.get(lv, {}).get(k) != b[lv][k]]
            check(not bad, f"{name}: level {lv} tile sizes differ: {bad[:3]}")
        with open(ours + ".dzi") as f:
            dzi = f.read()
        w, h = openslide.OpenSlide(src).dimensions
        check(f'Width="{w}"' in dzi and f'Height="{h}"' in dzi and
              f'TileSize="{T}"' in dzi and f'Overlap="{O}"' in dzi,
              f"{name}: .dzi header")


def level_psnrs(files, ext, ref, T=254, O=1):
    """{dz level: (worst tile PSNR, aggregate PSNR, max abs diff)} against
    `ref` (level-0 RGB) shrunk by the numpy box filter."""
    H, W = ref.shape[:2]
    n = dz_levels(W, H)
    img = ref.astype(np.float64)
    out = {}
    for k in range(n - 1, -1, -1):
        if k < n - 1:
            img = shrink(img)
        lvimg = ref if k == n - 1 else np.clip(np.rint(img), 0, 255).astype(np.uint8)
        d = os.path.join(files, str(k))
        worst, se, cnt, mad = 99.0, 0.0, 0, 0
        for f in os.listdir(d):
            col, row = map(int, f.split(".")[0].split("_"))
            got = np.asarray(Image.open(os.path.join(d, f)).convert("RGB"))
            want = crop(lvimg, col, row, T, O)
            if not check(got.shape == want.shape, f"level {k} {f} shape"):
                continue
            diff = got.astype(np.float64) - want
            worst = min(worst, psnr(got, want))
            se += (diff ** 2).sum()
            cnt += diff.size
            mad = max(mad, int(np.abs(diff).max()))
        agg = 99.0 if se == 0 else 10 * np.log10(255.0 ** 2 / (se / cnt))
        out[k] = (worst, agg, mad)
    return out


def test_pixels(tmp):
    ref = level0(CMU)  # OpenSlide's read_region of all of level 0
    H, W = ref.shape[:2]
    n = dz_levels(W, H)
    # Lossless tiles isolate our geometry and shrinking from the codec: the
    # top level equals read_region (within 1), every lower level the numpy
    # box filter.
    out = os.path.join(tmp, "png")
    if tile(CMU, out, "--format", "png") is not None:
        res = level_psnrs(out + "_files", "png", ref)
        check(res[n - 1][2] <= 1, f"png top level max diff {res[n - 1][2]}")
        for k, (worst, agg, mad) in res.items():
            check(worst >= 40, f"png level {k}: worst PSNR {worst:.1f} < 40")
        print("png: worst tile PSNR per level " +
              " ".join(f"{k}:{res[k][0]:.0f}" for k in sorted(res)))
    # JPEG Q90: the thresholds of the issue, and libvips' own Q90 pyramid of
    # the same slide against the same references as the yardstick.
    out = os.path.join(tmp, "q90")
    vref = os.path.join(tmp, "vq90")
    if tile(CMU, out, "--quality", "90") is None:
        return
    subprocess.run(["vips", "dzsave", CMU, vref, "--suffix", ".jpeg[Q=90]"],
                   check=True, capture_output=True)
    ours = level_psnrs(out + "_files", "jpeg", ref)
    vips = level_psnrs(vref + "_files", "jpeg", ref)
    for k in sorted(ours):
        (ow, oa, _), (vw, va, _) = ours[k], vips[k]
        need = 40 if k == n - 1 else 35
        # The fixed thresholds hold for the aggregate where Q90 JPEG itself
        # allows it; per tile, CMU's dense tissue stays near 32 dB at Q90
        # for any encoder (libvips too), so tiles are held to libvips.
        check(ow >= vw - 0.5, f"q90 level {k}: worst tile {ow:.1f} dB vs vips {vw:.1f}")
        check(oa >= va - 0.3, f"q90 level {k}: aggregate {oa:.1f} dB vs vips {va:.1f}")
        if va >= need:
            check(oa >= need, f"q90 level {k}: aggregate {oa:.1f} dB < {need}")
    # Why per-tile 40 dB is out of reach above: CMU is itself JPEG, and
    # re-encoding loses little only where our 8x8 blocks sit on the
    # source's (tiles at multiples of 8). 254 + overlap 1 puts every tile
    # off that grid; tiles of 256 without overlap sit on it, and there the
    # issue's 40 dB holds for the level (and 35 dB for every tile).
    al = os.path.join(tmp, "q90al")
    if tile(CMU, al, "--quality", "90", "--tile-size", "256",
            "--overlap", "0") is not None:
        res = level_psnrs(al + "_files", "jpeg", ref, T=256, O=0)
        worst, agg, _ = res[n - 1]
        check(agg >= 40, f"q90 aligned top level: aggregate {agg:.1f} dB < 40")
        check(worst >= 35, f"q90 aligned top level: worst tile {worst:.1f} dB")
        print(f"q90 aligned (256/0) top level: worst {worst:.1f}, "
              f"aggregate {agg:.1f} dB")
    print("q90 worst/aggregate PSNR, ours (vips): " + "  ".join(
        f"{k}:{ours[k][0]:.1f}/{ours[k][1]:.1f}({vips[k][0]:.1f}/{vips[k][1]:.1f})"
        for k in (n - 1, n - 2, n - 3, n - 5, 0)))
    # sidecar metadata
    s = openslide.OpenSlide(CMU)
    with open(out + ".json") as f:
        meta = json.load(f)
    p = s.properties
    check(meta["source"]["vendor"] == p["openslide.vendor"], "sidecar vendor")
    check(abs(meta["source"]["mpp_x"] - float(p["openslide.mpp-x"])) < 1e-9,
          "sidecar mpp")
    check(meta["source"]["quickhash"] == p["openslide.quickhash-1"],
          "sidecar quickhash")
    check([meta["source"]["width"], meta["source"]["height"]] == [W, H],
          "sidecar size")
    check(meta["parameters"]["quality"] == 90, "sidecar parameters")
    check(len(meta["levels"]) == n, "sidecar levels")


def test_odd_downsample_slide(tmp):
    """TCGA: JPEG 2000, downsample 2.0005, no mpp: only level 0 is read."""
    out = os.path.join(tmp, "tcga")
    st = tile(TCGA, out, "--format", "png")
    if st is None:
        return
    s = openslide.OpenSlide(TCGA)
    W, H = s.dimensions
    n = dz_levels(W, H)
    top = os.path.join(out + "_files", str(n - 1))
    worst = 99.0
    for f in ["0_0.png", "9_7.png", "17_14.png"]:
        col, row = map(int, f.split(".")[0].split("_"))
        got = np.asarray(Image.open(os.path.join(top, f)).convert("RGB"))
        h, w = got.shape[:2]
        want = flat_rgb(s.read_region((col * 254 - (1 if col else 0),
                                       row * 254 - (1 if row else 0)), 0, (w, h)))
        worst = min(worst, psnr(got, want))
    check(worst >= 50, f"tcga top-level PSNR {worst:.1f} (lossless tiles)")
    with open(out + ".json") as f:
        meta = json.load(f)
    check(meta["source"]["mpp_x"] is None, "tcga: absent mpp is null")


def test_tiff_container(tmp):
    out = os.path.join(tmp, "pyr.tiff")
    st = tile(CMU, out, "--container", "tiff", "--quality", "90")
    if st is None:
        return
    src = openslide.OpenSlide(CMU)
    try:
        t = openslide.OpenSlide(out)
    except Exception as e:  # noqa: BLE001
        check(False, f"OpenSlide cannot open the TIFF: {e}")
        return
    W, H = src.dimensions
    check(t.dimensions == (W, H), "tiff: level 0 size")
    dims = [(W, H)]
    while max(dims[-1]) > 256:
        w, h = dims[-1]
        dims.append(((w + 1) // 2, (h + 1) // 2))
    check(list(t.level_dimensions) == dims,
          f"tiff levels {t.level_dimensions} vs {dims}")
    check(abs(float(t.properties.get("openslide.mpp-x", "nan")) -
              float(src.properties["openslide.mpp-x"])) < 1e-6, "tiff: mpp-x")
    check(t.properties.get("openslide.objective-power") ==
          src.properties.get("openslide.objective-power"), "tiff: objective")
    got = flat_rgb(t.read_region((0, 0), 0, (W, H)))
    p = psnr(got, level0(CMU))
    check(p >= 40, f"tiff level 0 PSNR {p:.1f}")
    print(f"tiff level 0 PSNR {p:.1f} dB")
    for k in range(len(dims)):
        # vips would pick openslideload for an Aperio-style TIFF: ask for
        # its TIFF reader, page by page, and decode every pixel
        v = os.path.join(tmp, f"page{k}.v")
        r = subprocess.run(["vips", "tiffload", out, v, "--page", str(k)],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"vips reads page {k}: {r.stderr.strip()}")
        r = subprocess.run(["vipsheader", "-f", "width", v],
                           capture_output=True, text=True)
        check(r.stdout.strip() == str(dims[k][0]), f"vips page {k} width")
        if k == 0:
            r = subprocess.run(["vips", "avg", v], capture_output=True, text=True)
            check(r.returncode == 0 and abs(float(r.stdout) - level0(CMU).mean()) < 1.0,
                  f"vips page 0 mean {r.stdout.strip()}")


def bordered_slide(tmp):
    """CMU's tissue embedded at (1300, 1100) in a white 5000x4400 canvas."""
    path = os.path.join(tmp, "bordered.tiff")
    v = os.path.join(tmp, "l0.v")
    subprocess.run(["vips", "openslideload", CMU, v], check=True)
    subprocess.run(["vips", "flatten", v, v + "f.v", "--background",
                    "255 255 255"], check=True)
    subprocess.run(["vips", "embed", v + "f.v", v + "e.v", "1300", "1100",
                    "5000", "4400", "--extend", "white"], check=True)
    subprocess.run(["vips", "tiffsave", v + "e.v", path, "--tile",
                    "--tile-width", "256", "--tile-height", "256", "--pyramid",
                    "--compression", "jpeg", "--Q", "90"], check=True)
    return path


def tissue_px(a):
    a = a.astype(np.int16)
    return ((a.max(axis=2) - a.min(axis=2)) >= 24) | (a.min(axis=2) < 180)


def test_skip_background(tmp):
    src = bordered_slide(tmp)
    out = os.path.join(tmp, "skip")
    st = tile(src, out, "--skip-background", "--background-rule", "colour")
    if st is None:
        return
    check(st["tiles_skipped"] > 0, "some tiles skipped")
    ref = level0(src)
    H, W = ref.shape[:2]
    n = dz_levels(W, H)
    T, O = 254, 1
    top = os.path.join(out + "_files", str(n - 1))
    present = set(os.listdir(top))
    cols, rows = (W + T - 1) // T, (H + T - 1) // T
    missing_tissue = wrote_blank = 0
    for r in range(rows):
        for c in range(cols):
            region = crop(ref, c, r, T, O)
            x0, y0 = c * T - (O if c else 0), r * T - (O if r else 0)
            x1, y1 = x0 + region.shape[1], y0 + region.shape[0]
            outside = x1 <= 1300 or y1 <= 1100 or x0 >= 1300 + 2220 or y0 >= 1100 + 2967
            name = f"{c}_{r}.jpeg"
            if outside and name in present:
                wrote_blank += 1
            if tissue_px(region).sum() >= 10 and name not in present:
                missing_tissue += 1
    check(wrote_blank == 0, f"{wrote_blank} all-background tiles written")
    check(missing_tissue == 0, f"{missing_tissue} tissue tiles not written")
    with open(out + ".json") as f:
        meta = json.load(f)
    man = meta["levels"][n - 1]["tiles"]
    listed = {f"{c}_{r}.jpeg" for r, s in enumerate(man)
              for c, ch in enumerate(s) if ch == "1"}
    check(listed == present, "manifest lists exactly the written tiles")
    total = sum(len(os.listdir(os.path.join(out + "_files", d)))
                for d in os.listdir(out + "_files"))
    check(total == st["tiles_written"], "tiles_written counts the files")


def test_kill_and_rerun(tmp):
    out = os.path.join(tmp, "killed")
    p = subprocess.Popen([BIN, "tile", TCGA, "-o", out, "--quiet",
                          "--threads", "1", "--format", "png"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the run stages its outputs under hidden names; the tiles folder is a
    # hidden temporary whose name holds "killed" and the pid
    tmpdir = os.path.join(tmp, f".*killed*.tmp-{p.pid}*")
    deadline = time.time() + 60
    seen = False
    while time.time() < deadline and p.poll() is None:
        files = glob.glob(os.path.join(tmpdir, "*", "*.png"))
        if len(files) >= 20:
            seen = True
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    check(seen, "the run was killed part-way (tiles seen in the temp dir)")
    check(not os.path.exists(out + ".dzi"), "no .dzi after SIGKILL")
    check(not os.path.exists(out + "_files"), "no _files after SIGKILL")
    st = tile(TCGA, out, "--format", "png")
    if st is None:
        return
    check(os.path.exists(out + ".dzi"), "rerun completes")
    check(not glob.glob(os.path.join(tmp, ".*killed*")), "stale temporaries removed")
    ref = os.path.join(tmp, "killref")
    subprocess.run(["vips", "dzsave", TCGA, ref, "--suffix", ".png"],
                   check=True, capture_output=True)
    a, b = tile_sizes(out + "_files", "*.png"), tile_sizes(ref + "_files", "*.png")
    check(a == b, "rerun pyramid has the full geometry")
    # PNG is lossless: top-level tiles equal read_region exactly (within 1)
    s = openslide.OpenSlide(TCGA)
    n = dz_levels(*s.dimensions)
    got = np.asarray(Image.open(os.path.join(out + "_files", str(n - 1), "3_2.png")))
    want = flat_rgb(s.read_region((3 * 254 - 1, 2 * 254 - 1), 0, got.shape[1::-1]))
    check(np.abs(got.astype(int) - want.astype(int)).max() <= 1,
          "rerun top tile equals read_region")


def test_overwrite_and_errors(tmp):
    out = os.path.join(tmp, "ow")
    if tile(SMALL, out) is None:
        return
    r = run("tile", SMALL, "-o", out, "--quiet")
    check(r.returncode == 3 and "already exists" in r.stderr,
          f"refuses to overwrite: {r.returncode} {r.stderr}")
    r = run("tile", SMALL, "-o", out, "--quiet", "--force")
    check(r.returncode == 0, f"--force replaces: {r.stderr}")
    for name, cause in [("unreadable.svs", "Bogus marker length"),
                        ("unopenable.tiff", "Unsupported TIFF compression")]:
        src = os.path.join(DATA, name)
        o = os.path.join(tmp, "bad-" + name)
        r = run("tile", src, "-o", o)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 1, f"{name}: exit 1, got {r.returncode}")
        check(len(lines) == 1 and lines[0].startswith(f"slidepipe tile: {src}: ")
              and cause in lines[0], f"{name}: one-line error: {r.stderr!r}")
        check(not glob.glob(o + "*") and
              not glob.glob(os.path.join(tmp, ".bad-" + name + "*")),
              f"{name}: nothing left behind")
    # a truncated copy of a real slide
    trunc = os.path.join(tmp, "trunc.svs")
    with open(CMU, "rb") as f:
        data = f.read()
    with open(trunc, "wb") as f:
        f.write(data[:len(data) * 2 // 3])
    r = run("tile", trunc, "-o", os.path.join(tmp, "trunc"))
    check(r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1,
          f"truncated slide: exit 1, one line: {r.returncode} {r.stderr!r}")
    check(not glob.glob(os.path.join(tmp, "trunc_files*")) and
          not glob.glob(os.path.join(tmp, ".trunc*")), "truncated: nothing left")
    r = run("tile", CMU)
    check(r.returncode == 2, "no -o: usage error")
    r = run("tile", CMU, "-o", out, "--container", "tiff", "--tile-size", "100")
    check(r.returncode == 2, "tiff tile size not a multiple of 16: usage error")


def main():
    tmp = tempfile.mkdtemp(prefix="sp-tiler-")
    try:
        for t in [test_geometry_vs_vips, test_pixels, test_odd_downsample_slide,
                  test_tiff_container, test_skip_background, test_kill_and_rerun,
                  test_overwrite_and_errors]:
            t0 = time.time()
            before = failures()
            t(tmp)
            print(f"{t.__name__}: {'ok' if failures() == before else 'FAILED'} "
                  f"({time.time() - t0:.1f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(finish())


if __name__ == "__main__":
    main()
