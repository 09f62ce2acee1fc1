#!/usr/bin/python3
"""`slidepipe run`, the fused pass, against independent paths:

- run == `tile` + `analyze` run separately (same tile bytes, same sidecar,
  same HDF5 coords, features and summary);
- run's features == analysis/'s own per-tile reader (analysis_dump, which
  reads each tile through OpenSlide instead of taking the band);
- the HDF5 thumbnail == a numpy box average of OpenSlide's level 0;
- the mask-based --skip-background writes no tile in pure background and
  every tile under the tissue mask;
- every broken input, an existing output, SIGINT: exit codes, one line,
  nothing left behind."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import openslide
import skimage
from skimage.color import rgb2hsv
from sptest import (DATA, cached_ref, check, files_of, finish, leaks,
                    slide_secrets, synth_slide)

BIN = os.environ["SLIDEPIPE_BIN"]
DUMP = os.environ["SLIDEPIPE_ANALYSIS_DUMP"]
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
TCGA = os.path.join(DATA, "tcga-cr-7395-01a-01-ts1.svs")



def run(*args, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          timeout=300, **kw)


def dump_features(slide, threads=2):
    """analysis_dump's per-tile path: rows of x, y, w, h, coverage, feats."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        r = subprocess.run([DUMP, "analyze", slide, "--threads", str(threads),
                            "--out", f.name], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        meta = json.loads(r.stdout)
        raw = open(f.name, "rb").read()
    nf = len(meta["names"]) if "names" in meta else 16
    dt = np.dtype([("x", "<i8"), ("y", "<i8"), ("w", "<i4"), ("h", "<i4"),
                   ("cov", "<f4"), ("f", "<f4", (nf,))])
    return np.frombuffer(raw, dtype=dt)


def level0_rgb(slide):
    """OpenSlide's read of all of level 0 as RGB (once per slide and
    shared with the other build tree's run: sptest.cached_ref)"""
    def read():
        s = openslide.OpenSlide(slide)
        return np.asarray(s.read_region((0, 0), 0, s.dimensions)
                          .convert("RGB"))
    return cached_ref("level0 RGB", read, [slide], libs=(openslide, np))


def s_levels(slide):
    return openslide.OpenSlide(slide).level_dimensions


def test_run_equals_tile_plus_analyze(tmp):
    for slide in (CMU, TCGA):
        name = os.path.basename(slide)
        a = os.path.join(tmp, "run-" + name)
        r = run("run", slide, "-o", a, "--json", "--quiet")
        if not check(r.returncode == 0, f"run {name}: {r.stderr}"):
            continue
        st = json.loads(r.stdout)
        check(st["ok"] and st["fused"], f"{name}: fused pass")
        t = os.path.join(tmp, "tile-" + name)
        h = os.path.join(tmp, "analyze-" + name + ".h5")
        check(run("tile", slide, "-o", t, "--quiet").returncode == 0, "tile")
        check(run("analyze", slide, "-o", h, "--quiet").returncode == 0, "analyze")
        check(files_of(a + "_files") == files_of(t + "_files"),
              f"{name}: run's tiles are byte-identical to tile's")
        # column stripes (forced narrow here) change nothing in the output
        z = os.path.join(tmp, "stripes-" + name)
        r = run("run", slide, "-o", z, "--json", "--quiet",
                "--stripe-width", "256")
        if check(r.returncode == 0, f"run stripes {name}: {r.stderr}"):
            check(json.loads(r.stdout)["stripes"] >= 4,
                  f"{name}: built in stripes: {r.stdout}")
            check(files_of(z + "_files") == files_of(a + "_files"),
                  f"{name}: striped run's tiles == whole-width run's")
            with h5py.File(a + ".h5") as fa, h5py.File(z + ".h5") as fz:
                for k in ("coords", "features", "mask", "thumbnail"):
                    check(np.array_equal(fa[k][:], fz[k][:], equal_nan=True),
                          f"{name}: striped run's {k} == whole-width run's")
        if slide == CMU:  # the TIFF container too: every level, as OpenSlide reads it
            levels = []
            for sw in ("0", "256"):
                o = os.path.join(tmp, f"tiff-{sw}.tiff")
                r = run("tile", slide, "-o", o, "--container", "tiff", "--quiet",
                        "--stripe-width", sw)
                check(r.returncode == 0, f"tiff stripes {sw}: {r.stderr}")
                s = openslide.OpenSlide(o)
                levels.append([np.asarray(s.read_region((0, 0), i, d))
                               for i, d in enumerate(s.level_dimensions)])
            check(len(levels[0]) == len(levels[1]) and
                  all(np.array_equal(x, y) for x, y in zip(*levels)),
                  "striped TIFF == whole-width TIFF at every level")
        sa, sb = json.load(open(a + ".json")), json.load(open(t + ".json"))
        check(sa == sb, f"{name}: same sidecar")
        with h5py.File(a + ".h5") as fa, h5py.File(h) as fb:
            check(np.array_equal(fa["coords"][:], fb["coords"][:]), "coords")
            check(np.array_equal(fa["features"][:], fb["features"][:],
                                 equal_nan=True), f"{name}: features")
            check(dict(fa["summary"].attrs).keys() == dict(fb["summary"].attrs).keys(),
                  "summary keys")
            for k, v in fa["summary"].attrs.items():
                w = fb["summary"].attrs[k]
                check(v == w or (np.isnan(v) and np.isnan(w)), f"summary {k}")
            check(np.array_equal(fa["mask"][:], fb["mask"][:]), "mask")
            # independent path: analysis/'s own reader, tile by tile
            ref = dump_features(slide)
            xy = fa["coords"][:]
            check(len(ref) == len(xy), f"{name}: {len(ref)} vs {len(xy)} rows")
            check(np.array_equal(ref["x"], xy[:, 0]) and
                  np.array_equal(ref["y"], xy[:, 1]), f"{name}: dump coords")
            check(np.array_equal(ref["f"], fa["features"][:], equal_nan=True),
                  f"{name}: fused features == per-tile reads")
            check(list(fa["features"].attrs["columns"])[:2] ==
                  ["tissue_fraction", "mean_r"], "column names")
            # thumbnail: numpy box average of OpenSlide's level 0
            th = fa["thumbnail"]
            if len(s_levels(slide)) > 1:
                # made from a native level: its size and downsample
                ds = th.attrs["downsample"]
                W, H = openslide.OpenSlide(slide).dimensions
                check(abs(th.shape[1] * ds - W) <= ds and
                      abs(th.shape[0] * ds - H) <= ds,
                      f"{name}: thumbnail covers the slide")
                continue
            f = int(round(th.attrs["downsample"]))
            img = level0_rgb(slide).astype(np.float64)
            H, W = img.shape[:2]
            tw, thh = -(-W // f), -(-H // f)
            pad = np.zeros((thh * f, tw * f, 3))
            cnt = np.zeros((thh * f, tw * f, 1))
            pad[:H, :W] = img
            cnt[:H, :W] = 1
            box = pad.reshape(thh, f, tw, f, 3).sum((1, 3)) / \
                cnt.reshape(thh, f, tw, f, 1).sum((1, 3))
            diff = np.abs(np.floor(box + 0.5) - th[:].astype(np.float64))
            check(th.shape == (thh, tw, 3) and diff.max() <= 1,
                  f"{name}: thumbnail is the box average (max diff {diff.max()})")


def test_other_resolution_not_fused(tmp):
    out = os.path.join(tmp, "mpp")
    r = run("run", CMU, "-o", out, "--json", "--quiet", "--mpp", "1.0")
    if check(r.returncode == 0, f"run --mpp: {r.stderr}"):
        st = json.loads(r.stdout)
        check(not st["fused"], "features at 1 um/px are read separately")
        with h5py.File(out + ".h5") as f:
            check(abs(f["coords"].attrs["downsample"][0] - 1.0 / 0.499) < 1e-9,
                  "downsample attribute")
    r = run("analyze", TCGA, "-o", os.path.join(tmp, "x.h5"), "--mpp", "1")
    check(r.returncode == 2 and "no mpp" in r.stderr, "mpp on a slide without mpp")


def test_skip_background_by_mask(tmp):
    # a real slide on a wide white border: only the border is background
    src = os.path.join(tmp, "bordered.svs")
    synth_slide(src, "--width", "3000", "--height", "2400", "--tissue", "0.3",
                "--seed", "7", "--quiet", check=True)
    out = os.path.join(tmp, "skip")
    r = run("run", src, "-o", out, "--skip-background", "--json", "--quiet")
    if not check(r.returncode == 0, f"skip run: {r.stderr}"):
        return
    st = json.loads(r.stdout)
    check(st["tiles_skipped"] > 0, "background tiles skipped")
    with h5py.File(out + ".h5") as f:
        thr = f["summary"].attrs["mask_threshold"]
    meta = json.load(open(out + ".json"))
    top = meta["levels"][-1]["tiles"]
    T = 254
    img = level0_rgb(src)
    # the rule: a tile holds tissue when >= 0.1% of its pixels (at least
    # 16) have an 8-bit HSV saturation (skimage) above the slide's Otsu
    # threshold; tiles well clear of that line on either side must agree
    sat = cached_ref(
        "8-bit HSV saturation",
        lambda: np.floor(rgb2hsv(img)[..., 1] * 255 + 1e-6).astype(np.uint8),
        [src], libs=(openslide, skimage, np))
    missing = blank = 0
    for r_, row in enumerate(top):
        for c, ch in enumerate(row):
            x0, y0 = max(c * T - 1, 0), max(r_ * T - 1, 0)
            x1, y1 = min((c + 1) * T + 1, img.shape[1]), min((r_ + 1) * T + 1, img.shape[0])
            n = int((sat[y0:y1, x0:x1] > thr).sum())
            need = max(16, int((x1 - x0) * (y1 - y0) * 0.001))
            if n >= 2 * need and ch != "1":
                missing += 1
                print(f"missed tile {c},{r_}: {n} tissue px", file=sys.stderr)
            if n < need // 2 and ch == "1":
                blank += 1
                print(f"blank tile {c},{r_}: {n} tissue px", file=sys.stderr)
            px = img[y0:y1, x0:x1].astype(int)
            if ((px.max(2) - px.min(2)) >= 24).mean() > 0.05 and ch != "1":
                missing += 1
                print(f"missed coloured tile {c},{r_}", file=sys.stderr)
    check(missing == 0, f"{missing} tissue tiles not written")
    check(blank == 0, f"{blank} blank tiles written")
    present = {p for p in os.listdir(os.path.join(out + "_files", str(len(meta["levels"]) - 1)))}
    listed = {f"{c}_{r}.jpeg" for r, row in enumerate(top) for c, ch in enumerate(row) if ch == "1"}
    check(present == listed, "manifest lists the written tiles")


def test_bad_inputs(tmp):
    empty = os.path.join(tmp, "empty.svs")
    open(empty, "wb").close()
    cases = ["unopenable.tiff", "unreadable.svs", "MANIFEST.tsv",
             "no-such.svs"]
    paths = [os.path.join(DATA, c) for c in cases] + [empty]
    for i, p in enumerate(paths):
        d = os.path.join(tmp, f"bad{i}")
        os.mkdir(d)
        for cmd in ("run", "analyze", "tile"):
            out = os.path.join(d, "out.h5" if cmd == "analyze" else "out")
            r = run(cmd, p, "-o", out, "--json", "--quiet")
            err = r.stderr.splitlines()
            check(r.returncode == 1, f"{cmd} {p}: exit {r.returncode}")
            check(len(err) == 1 and p in err[0], f"{cmd} {p}: one line naming it: {err}")
            j = json.loads(r.stdout)
            check(j["ok"] is False and j["stage"] in ("open", "tiles", "features"),
                  f"{cmd} {p}: JSON failure record {j}")
            check(os.listdir(d) == [], f"{cmd} {p}: left {os.listdir(d)}")


def test_existing_output_and_force(tmp):
    out = os.path.join(tmp, "again")
    check(run("run", CMU, "-o", out, "--quiet").returncode == 0, "first run")
    r = run("run", CMU, "-o", out, "--quiet")
    check(r.returncode == 3 and len(r.stderr.splitlines()) == 1,
          f"refuses to overwrite: {r.returncode} {r.stderr}")
    check(run("run", CMU, "-o", out, "--quiet", "--force").returncode == 0, "--force")


def test_sigint_leaves_nothing(tmp):
    src = os.path.join(tmp, "big.svs")
    synth_slide(src, "--width", "12000", "--height", "9000", "--quiet",
                check=True)
    d = os.path.join(tmp, "int")
    os.mkdir(d)
    p = subprocess.Popen([BIN, "run", src, "-o", os.path.join(d, "x"),
                          "--quiet", "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not any(  # any hidden temporary
            n.startswith(".") for n in os.listdir(d)):
        time.sleep(0.02)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    check(p.returncode == 130, f"SIGINT: exit {p.returncode}")
    check("interrupted" in err, "says interrupted")
    check(os.listdir(d) == [], f"SIGINT left {os.listdir(d)}")


def test_all_or_nothing(tmp):
    """Every output of a run commits together or not at all: a mask PNG
    that cannot be written leaves no OUT.h5, no pyramid, no temporary."""
    for cmd, out in (("run", "x"), ("analyze", "y.h5")):
        d = os.path.join(tmp, "aon-" + cmd)
        os.mkdir(d)
        bad = os.path.join(d, "no-such-dir", "mask.png")
        r = run(cmd, CMU, "-o", os.path.join(d, out), "--quiet",
                "--mask-png", bad)
        err = r.stderr.splitlines()
        check(r.returncode == 3 and len(err) == 1 and bad in err[0],
              f"{cmd} --mask-png BADPATH: exit {r.returncode}, one line "
              f"naming it: {err}")
        check(os.listdir(d) == [], f"{cmd} --mask-png BADPATH left "
                                   f"{os.listdir(d)}")
        # and with a good one, all of them
        good = os.path.join(d, "mask.png")
        r = run(cmd, CMU, "-o", os.path.join(d, out), "--quiet",
                "--mask-png", good)
        want = ({"x.dzi", "x_files", "x.json", "x.h5", "mask.png"}
                if cmd == "run" else {"y.h5", "mask.png"})
        check(r.returncode == 0 and set(os.listdir(d)) == want,
              f"{cmd} with a mask PNG: {sorted(os.listdir(d))}")
    # a rename that fails when everything is complete (the HDF5 name is a
    # folder): the outputs renamed before it are taken back
    d = os.path.join(tmp, "aon-commit")
    os.makedirs(os.path.join(d, "x.h5", "in-the-way"))
    r = run("run", CMU, "-o", os.path.join(d, "x"), "--quiet", "--force")
    err = r.stderr.splitlines()
    check(r.returncode == 3 and len(err) == 1 and
          os.path.join(d, "x.h5") in err[0],
          f"commit failure: exit {r.returncode}, one line naming x.h5: {err}")
    check(os.listdir(d) == [], f"commit failure left {os.listdir(d)}")


def mount_tmpfs(d, size):
    os.makedirs(d, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                           "tmpfs", d], capture_output=True).returncode == 0


def test_disk_full(tmp):
    """On a full file system: one line naming the final file and "No space
    left on device" (never a temporary name); nothing left behind, also
    when the HDF5 file fails after the pyramid is complete."""
    if os.geteuid() != 0:
        print(f"disk full: SKIPPED, mounting a tmpfs needs root "
              f"(euid {os.geteuid()})", file=sys.stderr)
        return
    d = os.path.join(tmp, "full")
    if not mount_tmpfs(d, "2m"):
        print("disk full: SKIPPED, mount -t tmpfs failed", file=sys.stderr)
        return
    try:
        # 2 MB: the pyramid (1.3 MB) fits, the HDF5 file then does not
        for cmd, out, tiff in (("run", "r", False), ("run", "r", True),
                               ("tile", "t", False), ("analyze", "a.h5", False)):
            args = [cmd, CMU, "-o", os.path.join(d, out), "--quiet"]
            if tiff:
                args += ["--container", "tiff"]
            for filled in (False, True):
                if filled:
                    with open(os.path.join(d, "filler"), "wb", buffering=0) as f:
                        try:
                            while True:
                                f.write(b"\0" * 4096)
                                f.flush()
                        except OSError:
                            pass
                r = run(*args)
                err = r.stderr.splitlines()
                what = f"{' '.join(args[:1] + args[3:])} on a " + \
                    ("full" if filled else "small") + " disk"
                left = sorted(set(os.listdir(d)) - {"filler"})
                if not filled and r.returncode == 0 and \
                        not (cmd == "run" and not tiff):
                    # it fits: remove it for the next case (run's DZI
                    # pyramid fits and its HDF5 file must fail: checked)
                    for n in left:
                        q = os.path.join(d, n)
                        shutil.rmtree(q) if os.path.isdir(q) else os.remove(q)
                    continue
                check(r.returncode == 3 and len(err) == 1 and
                      "No space left on device" in err[0] and d in err[0] and
                      ".tmp-" not in err[0],
                      f"{what}: exit {r.returncode}, one line naming a final "
                      f"file and the cause: {err}")
                check(left == [], f"{what}: left {left}")
                if filled:
                    os.remove(os.path.join(d, "filler"))
    finally:
        subprocess.run(["umount", d])


def test_privacy(tmp):
    """run, tile (both containers) and analyze outputs carry the slide's
    file name, never its folder, no label or macro image, no property
    (every file, every HDF5 attribute and string); --full-paths and
    --source-name record what they say."""
    secret = os.path.join(tmp, "MRN-0042-ACC-7")
    os.mkdir(secret)
    slide = os.path.join(secret, "case.svs")
    shutil.copy(CMU, slide)
    outs = os.path.join(tmp, "priv")
    os.mkdir(outs)
    for args in (("run", "-o", os.path.join(outs, "r"), "--mask-png",
                  os.path.join(outs, "m.png")),
                 ("tile", "-o", os.path.join(outs, "t")),
                 ("tile", "-o", os.path.join(outs, "tt"), "--container", "tiff"),
                 ("analyze", "-o", os.path.join(outs, "a.h5"))):
        r = run(args[0], slide, *args[1:], "--quiet")
        check(r.returncode == 0, f"{args[0]}: {r.stderr}")
    found = leaks(outs, slide_secrets(CMU, slide))
    check(not found, f"run/tile/analyze outputs carry: {found[:12]}")
    with open(os.path.join(outs, "r.json")) as f:
        check(json.load(f)["source"]["path"] == "case.svs",
              "sidecar: the file name")
    r = run("tile", slide, "-o", os.path.join(outs, "f"), "--quiet",
            "--full-paths")
    with open(os.path.join(outs, "f.json")) as f:
        check(r.returncode == 0 and json.load(f)["source"]["path"] == slide,
              "--full-paths: the absolute path")
    r = run("tile", slide, "-o", os.path.join(outs, "n"), "--quiet",
            "--source-name", "site/case.svs")
    with open(os.path.join(outs, "n.json")) as f:
        check(r.returncode == 0 and
              json.load(f)["source"]["path"] == "site/case.svs",
              "--source-name: that name")


def test_usage(tmp):
    for cmd in ("run", "analyze", "tile"):
        r = run(cmd, "--help")
        check(r.returncode == 0 and "usage: slidepipe " + cmd in r.stdout, f"{cmd} --help")
        check(run(cmd, CMU).returncode == 2, f"{cmd} without -o")
    check(run("tile", CMU, "-o", "x", "--mpp", "1").returncode == 2,
          "tile takes no analysis option")
    check(run("analyze", CMU, "-o", "x.h5", "--overlap", "1").returncode == 2,
          "analyze takes no pyramid option")


def main():
    tmp = tempfile.mkdtemp(prefix="sp-run-")
    try:
        for t in (test_run_equals_tile_plus_analyze, test_other_resolution_not_fused,
                  test_skip_background_by_mask, test_bad_inputs,
                  test_existing_output_and_force, test_sigint_leaves_nothing,
                  test_all_or_nothing, test_disk_full, test_privacy,
                  test_usage):
            try:
                t(tmp)
            except Exception as e:  # a crash in a check is a failure
                check(False, f"{t.__name__}: {type(e).__name__}: {e}")
    finally:
        subprocess.run(["umount", os.path.join(tmp, "full")],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
