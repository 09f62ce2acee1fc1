#!/usr/bin/python3
"""Independent reference for the analysis library (docs/FEATURES.md).

The same pixels are read through openslide-python and measured with
scikit-image (rgb2hed, rgb2hsv, laplace, threshold_otsu, shannon_entropy,
morphology), Pillow (luma) and numpy (Macenko), then compared with what
tests/analysis_dump prints:
  * per-region features, to float32 precision (counts exactly);
  * Macenko stain vectors of the regions' lattice samples;
  * the tissue mask: the same Otsu threshold, Dice >= 0.9 against the
    scikit-image mask, glass excluded and stained tissue covered, PNG = raw;
  * tiles of the whole-slide driver (level-0 and resampled grids) and the
    slide summary.
Prints "N passed, M failed"; exits 1 on any failure.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import openslide
from PIL import Image
from skimage.color import rgb2hed, rgb2hsv
from skimage.filters import laplace, threshold_otsu
from skimage.measure import shannon_entropy
from skimage.morphology import (binary_closing, disk, remove_small_holes,
                                remove_small_objects)
from sptest import DATA, check, finish

DUMP = os.environ.get("SLIDEPIPE_ANALYSIS_DUMP")
NAMES = ["tissue_fraction", "mean_r", "mean_g", "mean_b", "std_r", "std_g",
         "std_b", "saturation", "brightness", "contrast", "od_h", "od_e",
         "blur", "pen_fraction", "cellularity", "entropy"]
# |ours - ref| <= ABS + REL * |ref|; ours are float32. Fractions are counts
# of pixels and must agree exactly (one pixel of a 256x256 tile is 1.5e-5).
TOL = {n: (1e-6, 1e-6) for n in NAMES}
TOL.update(entropy=(1e-5, 1e-6), blur=(1e-4, 1e-6))



def run_dump(*args):
    p = subprocess.run([DUMP] + [str(a) for a in args], capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise RuntimeError("analysis_dump %s: %s" % (args[0], p.stderr))
    return json.loads(p.stdout)


def read_rgb(osr, level, x, y, w, h):
    a = np.asarray(osr.read_region((x, y), level, (w, h)))
    assert (a[..., 3] == 255).all(), "region must lie inside the slide"
    return np.ascontiguousarray(a[..., :3])


def sat8(rgb):
    """floor(255 * HSV saturation), exact (the true value is k/max)."""
    return np.floor(rgb2hsv(rgb)[..., 1] * 255 + 1e-9)


def ref_features(rgb, thr, cell):
    f = {}
    s = rgb2hsv(rgb)[..., 1]
    f["tissue_fraction"] = (np.floor(s * 255 + 1e-9) > thr).mean()
    for c, n in enumerate("rgb"):
        ch = rgb[..., c].astype(np.float64)
        f["mean_" + n] = ch.mean()
        f["std_" + n] = ch.std()
    f["saturation"] = s.mean()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    g = grey.astype(np.float64)
    f["brightness"] = g.mean() / 255
    f["contrast"] = g.std() / 255
    hed = rgb2hed(np.maximum(rgb, 1)) * 6.0  # skimage's OD is log10 / 6
    f["od_h"] = hed[..., 0].mean()
    f["od_e"] = hed[..., 1].mean()
    f["blur"] = laplace(g, ksize=3).var()
    R, G, B = (rgb[..., c].astype(int) for c in range(3))
    mx, mn = rgb.max(-1).astype(int), rgb.min(-1).astype(int)
    pen = (((mn <= 200) & ((G - R >= 30) | (G - B >= 30))) |
           ((B - R >= 60) & (B - G >= 60) & (G + 5 >= R)) |
           ((mx < 40) & (mx - mn < 25)))
    f["pen_fraction"] = pen.mean()
    f["cellularity"] = (hed[..., 0] > cell).mean()
    f["entropy"] = shannon_entropy(grey, base=2)
    return f


def compare(ours, ref, label):
    bad = []
    for i, n in enumerate(NAMES):
        a, r = ours[i], ref[n]
        ab, rel = TOL[n]
        if not abs(a - r) <= ab + rel * abs(r):
            bad.append("%s ours %.9g ref %.9g" % (n, a, r))
    check(not bad, "%s: %s" % (label, "; ".join(bad)))


def lattice(rgb):
    h, w = rgb.shape[:2]
    ys = [((2 * j + 1) * h) // 32 for j in range(16)]
    xs = [((2 * i + 1) * w) // 32 for i in range(16)]
    return rgb[np.ix_(ys, xs)].reshape(-1, 3)


def macenko(px, beta=0.15, alpha=1.0):
    od = -np.log10(np.maximum(px, 1) / 255.0)
    od = od[~np.any(od < beta, axis=1)]
    if len(od) < 100:
        return None, len(od)
    _, vecs = np.linalg.eigh(np.cov(od.T))
    e1, e2 = vecs[:, 1], vecs[:, 2]
    if e2.sum() < 0:
        e2 = -e2
    t = od @ np.stack([e1, e2], axis=1)
    phi = np.arctan2(t[:, 1], t[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    vmin = e1 * math.cos(lo) + e2 * math.sin(lo)
    vmax = e1 * math.cos(hi) + e2 * math.sin(hi)
    h, e = (vmin, vmax) if vmin[0] > vmax[0] else (vmax, vmin)
    out = []
    for v in (h, e):
        v = v / np.linalg.norm(v)
        out.append(-v if v.sum() < 0 else v)
    return np.array(out), len(od)


# ---- per-region features ------------------------------------------------

def regions_for(osr, level, n_tiles):
    """Tiles spread over the level (tissue and glass alike), plus odd
    shapes, all inside the slide."""
    W, H = osr.level_dimensions[level]
    ds = osr.level_downsamples[level]
    regs = []
    rng = np.random.default_rng(level * 1000 + W)
    t = min(256, W // 2, H // 2)
    for _ in range(n_tiles):
        x = int(rng.integers(0, W - t))
        y = int(rng.integers(0, H - t))
        regs.append((x, y, t, t))
    regs += [(W // 2, H // 2, min(100, W // 2), min(37, H // 2)),
             (W // 3, H // 4, 1, 1), (W // 5, H // 3, 3, min(300, H // 2)),
             (0, 0, min(64, W), min(64, H))]
    # level-0 origin for the read
    return [(int(round(x * ds)), int(round(y * ds)), w, h) for x, y, w, h in regs]


def check_regions(name, level, n_tiles, thr, cell):
    osr = openslide.OpenSlide(os.path.join(DATA, name))
    regs = regions_for(osr, level, n_tiles)
    args = ["features", os.path.join(DATA, name), level, thr, cell]
    for r in regs:
        args += list(r)
    got = run_dump(*args)
    check(got["names"] == NAMES, "feature names")
    samples = []
    for k, (x, y, w, h) in enumerate(regs):
        rgb = read_rgb(osr, level, x, y, w, h)
        compare(got["features"][k], ref_features(rgb, thr, cell),
                "%s level %d region %s" % (name, level, (x, y, w, h)))
        samples.append(lattice(rgb))
    ref, used = macenko(np.concatenate(samples))
    check(got["macenko_used"] == used,
          "%s macenko pixels %d vs %d" % (name, got["macenko_used"], used))
    if ref is None:
        check(got["macenko"] is None, "%s macenko should fail" % name)
    else:
        diff = np.abs(np.array(got["macenko"]) - ref).max()
        check(diff < 1e-6, "%s level %d macenko differs by %g: %s vs %s" %
              (name, level, diff, got["macenko"], ref.tolist()))
    osr.close()


# ---- tissue mask -----------------------------------------------------------

def ref_thumbnail(osr, target=32.0):
    level = max(i for i, d in enumerate(osr.level_downsamples)
                if d <= target + 1e-6) if osr.level_downsamples[0] <= target else 0
    ds = osr.level_downsamples[level]
    f = max(1, int(math.floor(target / ds + 0.5)))
    W, H = osr.level_dimensions[level]
    mw, mh = -(-W // f), -(-H // f)
    thumb = np.zeros((mh, mw, 3), np.uint8)
    starts = np.arange(0, W, f)
    for my in range(mh):
        y0 = my * f
        n = min(f, H - y0)
        a = np.asarray(osr.read_region((0, int(math.floor(y0 * ds + 0.5))),
                                       level, (W, n))).astype(np.int64)
        # A fractional level origin (downsample 2.0005) can leave the last
        # row partly transparent: composite over white as the reader does.
        al = a[..., 3:4]
        rgb = (a[..., :3] * al + 127) // 255 + (255 * (255 - al) + 127) // 255
        band = np.minimum(rgb, 255).sum(axis=0)  # (W, 3)
        sums = np.add.reduceat(band, starts, axis=0)
        cnt = (np.minimum(starts + f, W) - starts) * n
        thumb[my] = (sums + cnt[:, None] // 2) // cnt[:, None]
    return level, f, ds * f, thumb


def check_mask(name, tmp):
    path = os.path.join(DATA, name)
    raw, png = os.path.join(tmp, "m.raw"), os.path.join(tmp, "m.png")
    got = run_dump("mask", path, raw, png)
    osr = openslide.OpenSlide(path)
    level, f, mds, thumb = ref_thumbnail(osr)
    check((got["level"], got["factor"]) == (level, f),
          "%s mask level/factor %s vs %s" % (name, (got["level"], got["factor"]),
                                            (level, f)))
    check(abs(got["downsample"] - mds) < 1e-9, "%s mask downsample" % name)
    ours = np.fromfile(raw, np.uint8).reshape(got["height"], got["width"])
    check(ours.shape == thumb.shape[:2], "%s mask shape" % name)
    check(set(np.unique(ours)) <= {0, 255}, "%s mask values" % name)
    s8 = sat8(thumb).astype(np.uint8)
    otsu = int(threshold_otsu(s8))
    check(got["otsu"] == otsu, "%s Otsu %d vs skimage %d" % (name, got["otsu"], otsu))
    prm = got["params"]
    thr = max(otsu, prm["min_threshold"])
    check(got["threshold"] == thr, "%s threshold" % name)
    m = s8 > thr
    m = binary_closing(m, disk(prm["close_radius"]))
    px_um2 = got["mask_um2_per_px"]
    if px_um2 > 0:
        hole = math.ceil(prm["max_hole_um2"] / px_um2)
        obj = math.ceil(prm["min_object_um2"] / px_um2)
    else:
        hole, obj = prm["max_hole_px"], prm["min_object_px"]
    m = remove_small_holes(m, area_threshold=hole)
    m = remove_small_objects(m, min_size=obj)
    o = ours > 0
    dice = 2 * (o & m).sum() / max(1, o.sum() + m.sum())
    print("%s: mask %dx%d, Otsu %d, tissue %.1f%%, Dice %.4f" %
          (name, o.shape[1], o.shape[0], otsu, 100 * o.mean(), dice))
    check(dice >= 0.9, "%s Dice %.4f < 0.9" % (name, dice))
    # glass (bright, unsaturated) left out; strongly stained pixels kept
    glass = (thumb.min(-1) >= 215) & (s8 <= 8)
    stained = s8 > 2 * thr
    check(glass.sum() > 0 and (o & glass).sum() <= 0.02 * glass.sum(),
          "%s glass in the mask: %d of %d" % (name, (o & glass).sum(), glass.sum()))
    check(stained.sum() > 0 and (o & stained).sum() >= 0.95 * stained.sum(),
          "%s stained px outside the mask: %d of %d" %
          (name, (stained & ~o).sum(), stained.sum()))
    check(0.05 < o.mean() < 0.95, "%s tissue share %.3f" % (name, o.mean()))
    p = np.asarray(Image.open(png))
    check(p.dtype == np.uint8 and p.shape == ours.shape and (p == ours).all(),
          "%s PNG differs from the raw mask" % name)
    osr.close()
    return ours


# ---- whole-slide driver ----------------------------------------------------

def shrink_ref(src, r, w, h):
    out = np.zeros((h, w, 3), np.uint8)
    sh, sw = src.shape[:2]

    def span(o, n):
        a, b = int(math.floor(o * r)), int(math.floor((o + 1) * r))
        b = max(b, a + 1)
        b = min(b, n)
        a = min(a, b - 1)
        return a, b
    for oy in range(h):
        ya, yb = span(oy, sh)
        for ox in range(w):
            xa, xb = span(ox, sw)
            blk = src[ya:yb, xa:xb].reshape(-1, 3).astype(np.int64)
            n = len(blk)
            out[oy, ox] = (blk.sum(0) + n // 2) // n
    return out


def check_driver(name, tmp, mask, extra, n_check):
    path = os.path.join(DATA, name)
    out = os.path.join(tmp, "tiles.bin")
    got = run_dump("analyze", path, "--threads", 2, "--out", out, *extra)
    rec = np.dtype([("x", "<i8"), ("y", "<i8"), ("w", "<i4"), ("h", "<i4"),
                    ("cov", "<f4"), ("f", "<f4", (len(NAMES),))])
    tiles = np.fromfile(out, rec)
    check(len(tiles) == got["tiles_analysed"] > 0, "%s tile count" % name)
    check(got["tiles_tissue"] <= got["tiles_total"] == got["cols"] * got["rows"],
          "%s grid counts" % name)
    osr = openslide.OpenSlide(path)
    thr, D, lvl = got["mask_threshold"], got["downsample"], got["read_level"]
    r = D / osr.level_downsamples[lvl]
    picks = sorted(set(np.linspace(0, len(tiles) - 1, n_check).astype(int)))
    for k in picks:
        t = tiles[k]
        w, h = int(t["w"]), int(t["h"])
        if abs(r - 1) < 1e-6:
            rgb = read_rgb(osr, lvl, int(t["x"]), int(t["y"]), w, h)
        else:
            sw, sh = max(1, math.ceil(w * r)), max(1, math.ceil(h * r))
            src = read_rgb(osr, lvl, int(t["x"]), int(t["y"]), sw, sh)
            rgb = shrink_ref(src, r, w, h)
        compare(t["f"], ref_features(rgb, thr, 0.4),
                "%s %s tile %d at %d,%d" % (name, extra, k, t["x"], t["y"]))
    tissue = tiles["cov"] > 0
    f = tiles["f"][tissue]
    if len(f):
        blurry = (f[:, NAMES.index("blur")] < 50).mean()
        pen = (f[:, NAMES.index("pen_fraction")] > 0.10).mean()
        check(abs(got["blurry_fraction"] - blurry) < 1e-12, "%s blurry share" % name)
        check(abs(got["pen_fraction"] - pen) < 1e-12, "%s pen share" % name)
    # tissue area from the mask, edge pixels clipped to the slide
    W0, H0 = osr.level_dimensions[0]
    mds = got["mask_downsample"]
    xs = np.minimum((np.arange(mask.shape[1]) + 1) * mds, W0) - np.arange(mask.shape[1]) * mds
    ys = np.minimum((np.arange(mask.shape[0]) + 1) * mds, H0) - np.arange(mask.shape[0]) * mds
    area = float(((mask > 0) * np.outer(ys, xs)).sum())
    check(abs(got["tissue_area_px"] - area) <= 1e-9 * area, "%s tissue area px" % name)
    mpp = osr.properties.get("openslide.mpp-x")
    if mpp:
        mm2 = area * float(mpp) * float(osr.properties["openslide.mpp-y"]) / 1e6
        check(abs(got["tissue_area_mm2"] - mm2) <= 1e-9 * mm2, "%s mm2" % name)
    else:
        check(got["tissue_area_mm2"] is None, "%s mm2 without mpp" % name)
    # H is the vector with the larger red component, near Ruifrok's H
    if got["stain_ok"]:
        he = np.array(got["stain_he"])
        check(he[0][0] > he[1][0], "%s stain order" % name)
        rj_h = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
        print("%s: Macenko H %s E %s (cos to Ruifrok H %.3f)" %
              (name, np.round(he[0], 3), np.round(he[1], 3), he[0] @ rj_h))
    osr.close()


def main():
    if not DUMP:
        print("SLIDEPIPE_ANALYSIS_DUMP is not set")
        print("0 passed, 1 failed")
        return 1
    check_regions("CMU-1-Small-Region.svs", 0, 12, 20, 0.4)
    check_regions("CMU-1-Small-Region.svs", 0, 4, 60, 0.25)
    check_regions("tcga-cr-7395-01a-01-ts1.svs", 0, 8, 72, 0.1)
    check_regions("tcga-cr-7395-01a-01-ts1.svs", 1, 6, 20, 0.4)
    check_regions("boxes.tiff", 0, 2, 20, 0.4)
    with tempfile.TemporaryDirectory() as tmp:
        masks = {}
        for name in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
            masks[name] = check_mask(name, tmp)
        check_driver("CMU-1-Small-Region.svs", tmp, masks["CMU-1-Small-Region.svs"], [], 12)
        check_driver("CMU-1-Small-Region.svs", tmp, masks["CMU-1-Small-Region.svs"],
                     ["--mpp", "1.0", "--tile-size", "128"], 4)
        check_driver("tcga-cr-7395-01a-01-ts1.svs", tmp,
                     masks["tcga-cr-7395-01a-01-ts1.svs"], ["--all"], 8)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
