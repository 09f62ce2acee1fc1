#!/usr/bin/python3
"""Reference checks for slidepipe-synth, the synthetic-slide generator.

Every check reads the generated slides back with tools independent of the
generator: openslide-python (OpenSlide's Aperio driver and its own libjpeg
decoding) and the vips command-line tools (libtiff's JPEG codec, and
openslideload). Expected sizes, level counts and resolutions are derived
here from the command line, never copied from the generator's output.

Environment: SLIDEPIPE_SYNTH (the executable; else
$SLIDEPIPE_BUILD/tools/slidepipe-synth). Prints "N passed, M failed" and
exits non-zero on any failure.
"""
import glob
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import openslide
from PIL import Image

BG = np.array([242, 242, 240])


def synth_path():
    exe = os.environ.get("SLIDEPIPE_SYNTH")
    if not exe and os.environ.get("SLIDEPIPE_BUILD"):
        exe = os.path.join(os.environ["SLIDEPIPE_BUILD"], "tools", "slidepipe-synth")
    if not exe or not os.access(exe, os.X_OK):
        sys.exit("test_synth: set SLIDEPIPE_SYNTH to the slidepipe-synth executable")
    return exe


SYNTH = synth_path()
TMP = tempfile.mkdtemp(prefix="sp-test-synth-")


def run_synth(*args, check=True):
    p = subprocess.run([SYNTH, *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError("slidepipe-synth %s failed (%d): %s"
                             % (" ".join(map(str, args)), p.returncode, p.stderr))
    return p


def run_tool(*args):
    p = subprocess.run(list(map(str, args)), capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(map(str, args)),
                                                     p.returncode, p.stderr))
    return p.stdout


def expected_levels(w, h, tile, levels=None):
    """Level sizes: each half the one above, rounded up; by default until
    the smallest level fits in one tile."""
    dims = [(w, h)]
    while (levels is None and max(dims[-1]) > tile) or \
            (levels is not None and len(dims) < levels):
        pw, ph = dims[-1]
        dims.append(((pw + 1) // 2, (ph + 1) // 2))
    return dims


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_level(slide, level):
    w, h = slide.level_dimensions[level]
    return np.asarray(slide.read_region((0, 0), level, (w, h)).convert("RGB")).astype(int)


def tissue_mask(rgb):
    """Pixels clearly different from the near-white glass."""
    return np.abs(rgb - BG).max(axis=2) > 20


def no_temp_left(out):
    d = os.path.dirname(out) or "."
    left = glob.glob(os.path.join(d, "." + os.path.basename(out) + ".tmp-*"))
    assert not left, "temporary files left behind: %s" % left


# Slides generated once and shared by the checks below.
CASES = {
    "a": dict(width=3000, height=2000, tile=256, mpp=0.25, seed=11, mag=40,
              args=[]),
    "b": dict(width=1000, height=777, tile=240, mpp=0.5, seed=5, mag=20,
              args=[]),
    "c": dict(width=1500, height=900, tile=256, mpp=0.2527, seed=11, mag=25,
              args=["--magnification", 25, "--levels", 3, "--quality", 90]),
}
SLIDES = {}


def slide(name):
    if name not in SLIDES:
        c = CASES[name]
        out = os.path.join(TMP, name + ".svs")
        run_synth("-o", out, "--width", c["width"], "--height", c["height"],
                  "--tile", c["tile"], "--mpp", c["mpp"], "--seed", c["seed"],
                  "--quiet", *c["args"])
        no_temp_left(out)
        SLIDES[name] = out
    return SLIDES[name]


def case_levels(name):
    c = CASES[name]
    lv = None
    if "--levels" in c["args"]:
        lv = c["args"][c["args"].index("--levels") + 1]
    return expected_levels(c["width"], c["height"], c["tile"], lv)


# ---- OpenSlide --------------------------------------------------------------

def test_openslide_geometry_and_resolution():
    for name, c in CASES.items():
        s = openslide.OpenSlide(slide(name))
        dims = case_levels(name)
        assert s.properties["openslide.vendor"] == "aperio", name
        assert s.dimensions == (c["width"], c["height"]), (name, s.dimensions)
        assert s.level_count == len(dims), (name, s.level_count, dims)
        assert list(s.level_dimensions) == dims, (name, s.level_dimensions, dims)
        for k in ("openslide.mpp-x", "openslide.mpp-y"):
            assert math.isclose(float(s.properties[k]), c["mpp"], rel_tol=1e-9), \
                (name, k, s.properties[k])
        assert int(s.properties["openslide.objective-power"]) == c["mag"], \
            (name, s.properties.get("openslide.objective-power"))
        for lv in range(s.level_count):
            assert int(s.properties["openslide.level[%d].tile-width" % lv]) == c["tile"]
            assert int(s.properties["openslide.level[%d].tile-height" % lv]) == c["tile"]
        s.close()


def test_content_background_and_tissue():
    for name in CASES:
        s = openslide.OpenSlide(slide(name))
        # The border is kept free of tissue: a corner is near-white glass.
        corner = np.asarray(s.read_region((0, 0), 0, (24, 24)).convert("RGB")).astype(int)
        assert np.abs(corner.reshape(-1, 3).mean(0) - BG).max() < 3, \
            (name, corner.reshape(-1, 3).mean(0))
        assert corner.min() >= 230, (name, corner.min())
        rgb = read_level(s, 0)
        mask = tissue_mask(rgb)
        frac = mask.mean()
        assert 0.25 < frac < 0.55, (name, "tissue share", frac)  # --tissue 0.4
        t = rgb[mask]
        mean = t.mean(0)
        # H&E-like: pink/purple, i.e. red and blue above green
        assert mean[0] > mean[1] + 25 and mean[2] > mean[1] + 20, (name, mean)
        # nuclei-like dots: a small share of dark purple pixels
        dark = (t.sum(1) < 360) & (t[:, 2] > t[:, 1] + 20)
        assert 0.005 < dark.mean() < 0.4, (name, "dark share", dark.mean())
        # a tissue area read on its own is pinkish/purplish
        ys, xs = np.nonzero(mask)
        k = len(ys) // 2
        x0 = int(min(max(xs[k] - 32, 0), rgb.shape[1] - 64))
        y0 = int(min(max(ys[k] - 32, 0), rgb.shape[0] - 64))
        patch = np.asarray(s.read_region((x0, y0), 0, (64, 64)).convert("RGB")).astype(int)
        pm = tissue_mask(patch)
        assert pm.mean() > 0.3, (name, pm.mean())
        pmean = patch[pm].mean(0)
        assert pmean[0] > pmean[1] and pmean[2] > pmean[1], (name, pmean)
        s.close()


def test_levels_are_box_downsamples():
    s = openslide.OpenSlide(slide("b"))
    for lv in range(1, s.level_count):
        up = read_level(s, lv - 1)
        down = read_level(s, lv)
        h, w = up.shape[:2]
        # pad odd sizes by repeating the last row/column, then 2x2 means
        up = np.pad(up, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        box = up.reshape(up.shape[0] // 2, 2, up.shape[1] // 2, 2, 3).mean(axis=(1, 3))
        assert box.shape == down.shape, (lv, box.shape, down.shape)
        err = np.abs(box - down).mean()
        assert err < 4, (lv, "mean abs difference to 2x2 box", err)
    s.close()


# ---- vips --------------------------------------------------------------------

def vips_header(path, field):
    return run_tool("vipsheader", "-f", field, path).strip()


def test_vips_header_and_every_level():
    for name, c in CASES.items():
        path = slide(name)
        dims = case_levels(name)
        # default loader for .svs is openslideload
        assert int(vips_header(path, "width")) == c["width"]
        assert int(vips_header(path, "height")) == c["height"]
        xres = float(vips_header(path, "xres"))  # pixels per mm
        assert math.isclose(xres, 1000.0 / c["mpp"], rel_tol=1e-4), (name, xres)
        s = openslide.OpenSlide(path)
        for lv, (w, h) in enumerate(dims):
            # libtiff's JPEG codec, one page per level
            png = os.path.join(TMP, "%s-page%d.png" % (name, lv))
            run_tool("vips", "tiffload", path, png, "--page", lv, "--fail-on", "warning")
            img = np.asarray(Image.open(png).convert("RGB")).astype(int)
            assert img.shape == (h, w, 3), (name, lv, img.shape, (w, h))
            v = os.path.join(TMP, "%s-page%d.v" % (name, lv))
            run_tool("vips", "tiffload", path, v, "--page", lv)
            ds = c["width"] / w
            px_mm = float(vips_header(v, "xres"))
            assert math.isclose(px_mm, 1000.0 / (c["mpp"] * ds), rel_tol=1e-3), \
                (name, lv, px_mm)
            # both decoders agree on every pixel's colour
            ref = read_level(s, lv)
            diff = np.abs(img - ref)
            assert diff.max() <= 2, (name, lv, "vips vs openslide", diff.max())
            # openslideload reads the level too
            png2 = os.path.join(TMP, "%s-osl%d.png" % (name, lv))
            run_tool("vips", "openslideload", path, png2, "--level", lv,
                     "--fail-on", "warning")
            img2 = Image.open(png2)
            assert img2.size == (w, h), (name, lv, img2.size)
        s.close()


# ---- determinism ---------------------------------------------------------------

def test_same_seed_same_bytes_any_thread_count():
    a = slide("a")
    c = CASES["a"]
    again = os.path.join(TMP, "a-again.svs")
    run_synth("-o", again, "--width", c["width"], "--height", c["height"],
              "--tile", c["tile"], "--mpp", c["mpp"], "--seed", c["seed"],
              "--threads", 1, "--quiet")
    assert sha256(a) == sha256(again), "same arguments gave different files"


def test_different_seed_different_content():
    c = CASES["a"]
    other = os.path.join(TMP, "a-seed.svs")
    run_synth("-o", other, "--width", c["width"], "--height", c["height"],
              "--tile", c["tile"], "--mpp", c["mpp"], "--seed", c["seed"] + 1,
              "--quiet")
    assert sha256(other) != sha256(slide("a"))
    s1, s2 = openslide.OpenSlide(slide("a")), openslide.OpenSlide(other)
    lv = s1.level_count - 1
    a, b = read_level(s1, lv), read_level(s2, lv)
    # different tissue layout, not just a few changed bytes
    assert (tissue_mask(a) != tissue_mask(b)).mean() > 0.1
    s1.close()
    s2.close()


def test_tissue_share_zero_is_blank():
    out = os.path.join(TMP, "blank.svs")
    run_synth("-o", out, "--width", 700, "--height", 500, "--tissue", 0, "--quiet")
    s = openslide.OpenSlide(out)
    rgb = read_level(s, 0)
    assert not tissue_mask(rgb).any()
    assert np.abs(rgb.reshape(-1, 3).mean(0) - BG).max() < 2
    s.close()


def test_bigtiff_reads_the_same():
    out = os.path.join(TMP, "big.svs")
    c = CASES["b"]
    run_synth("-o", out, "--width", c["width"], "--height", c["height"],
              "--tile", c["tile"], "--mpp", c["mpp"], "--seed", c["seed"],
              "--bigtiff", "--quiet")
    with open(out, "rb") as f:
        assert f.read(4) == b"II+\x00", "not a BigTIFF"
    with open(slide("b"), "rb") as f:
        assert f.read(4) == b"II*\x00", "small slide should be classic TIFF"
    s1, s2 = openslide.OpenSlide(out), openslide.OpenSlide(slide("b"))
    assert s1.level_dimensions == s2.level_dimensions
    for lv in range(s1.level_count):
        assert np.array_equal(read_level(s1, lv), read_level(s2, lv)), lv
    assert float(s1.properties["openslide.mpp-x"]) == c["mpp"]
    s1.close()
    s2.close()
    assert int(vips_header(out, "width")) == c["width"]


# ---- command line ------------------------------------------------------------

def test_help():
    p = run_synth("--help")
    assert p.returncode == 0 and "usage: slidepipe-synth" in p.stdout
    for opt in ("--width", "--height", "--tile", "--quality", "--mpp",
                "--magnification", "--seed", "--tissue", "--levels", "--threads",
                "--quiet"):
        assert opt in p.stdout, opt


def test_bad_usage_fails_cleanly():
    plain = os.path.join(TMP, "plain-file")
    open(plain, "w").close()
    out = os.path.join(TMP, "bad.svs")
    cases = [
        (["--width", "-5", "-o", out], 2),
        (["--height", "0", "-o", out], 2),
        (["--bogus", "-o", out], 2),
        (["--width", "100"], 2),                       # no output
        (["-o", out, "--tile", "100"], 2),             # not a multiple of 16
        (["-o", out, "--mpp", "abc"], 2),
        (["-o", out, "--tissue", "1.5"], 2),
        (["-o", out, "--width", "10", "--height", "10", "--levels", "9"], 2),
        (["-o", out, "--magnification", "12.5"], 2),
        (["-o", out, "stray"], 2),
        (["-o", os.path.join(TMP, "no", "such", "dir", "x.svs"),
          "--width", "64", "--height", "64"], 3),
        (["-o", os.path.join(plain, "x.svs"), "--width", "64", "--height", "64"], 3),
    ]
    for args, code in cases:
        p = run_synth(*args, check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("slidepipe-synth: "), \
            (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    assert not os.path.exists(out), "a failed run left its output behind"
    no_temp_left(out)
    # an output path that is a directory: fails at the rename, cleans up
    d = os.path.join(TMP, "dir.svs")
    os.mkdir(d)
    p = run_synth("-o", d, "--width", 64, "--height", 64, check=False)
    assert p.returncode == 3 and len(p.stderr.splitlines()) == 1, p.stderr
    assert os.path.isdir(d) and not os.listdir(d)
    no_temp_left(d)


def main():
    tests = sorted((n, f) for n, f in globals().items()
                   if n.startswith("test_") and callable(f))
    passed = failed = 0
    try:
        for name, fn in tests:
            try:
                fn()
                passed += 1
                print("ok   %s" % name)
            except Exception:
                failed += 1
                print("FAIL %s" % name)
                traceback.print_exc(file=sys.stdout)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
