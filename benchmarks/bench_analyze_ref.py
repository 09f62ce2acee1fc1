#!/usr/bin/python3
"""Tissue mask + per-tile features: slidepipe's analysis library against a
typical researcher script (openslide-python + numpy + scikit-image, one
process per core), on the same slide, grid and feature definitions
(docs/FEATURES.md), timed side by side.

usage: bench_analyze_ref.py SLIDE [--dump PATH] [--procs N] [--max-tiles K]

  --dump       tests/analysis_dump of a build (default: $SLIDEPIPE_ANALYSIS_DUMP,
               else build/tests/analysis_dump)
  --procs      processes for the reference and threads for slidepipe
               (default: all cores)
  --max-tiles  time the reference on the first K tissue tiles only (it runs
               at a few MP/s); its MP/s is then over those tiles

Both sides count throughput as level-0 pixels of the tissue tiles analysed
per second of wall time, the tissue mask included. Prints one line per side
and the ratio.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from multiprocessing import Pool

import numpy as np
import openslide

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from test_features_ref import ref_features, ref_thumbnail, sat8  # noqa: E402
from skimage.filters import threshold_otsu  # noqa: E402
from skimage.morphology import (binary_closing, disk,  # noqa: E402
                                remove_small_holes, remove_small_objects)

_osr = None


def _init(path):
    global _osr
    _osr = openslide.OpenSlide(path)


def _tile(job):
    x, y, w, h, thr = job
    rgb = np.ascontiguousarray(
        np.asarray(_osr.read_region((x, y), 0, (w, h)))[..., :3])
    f = ref_features(rgb, thr, 0.4)
    return w * h, f["blur"]


def reference(path, procs, max_tiles, tile=256):
    t0 = time.time()
    osr = openslide.OpenSlide(path)
    _, _, mds, thumb = ref_thumbnail(osr)
    s8 = sat8(thumb).astype(np.uint8)
    thr = max(int(threshold_otsu(s8)), 8)
    m = binary_closing(s8 > thr, disk(2))
    mpp = float(osr.properties.get("openslide.mpp-x", 0) or 0)
    area = (mds * mpp) ** 2 if mpp else 0
    m = remove_small_holes(m, math.ceil(1e4 / area) if area else 32)
    m = remove_small_objects(m, math.ceil(1e4 / area) if area else 32)
    W, H = osr.level_dimensions[0]
    jobs = []
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            w, h = min(tile, W - x), min(tile, H - y)
            ax, bx = math.ceil(x / mds - 0.5), math.ceil((x + w) / mds - 0.5)
            ay, by = math.ceil(y / mds - 0.5), math.ceil((y + h) / mds - 0.5)
            if m[max(ay, 0):by, max(ax, 0):bx].any():
                jobs.append((x, y, w, h, thr))
    n_tissue = len(jobs)
    if max_tiles:
        jobs = jobs[:max_tiles]
    with Pool(procs, initializer=_init, initargs=(path,)) as pool:
        px = sum(p for p, _ in pool.imap(_tile, jobs, chunksize=8))
    dt = time.time() - t0
    return px, dt, len(jobs), n_tissue


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--dump", default=os.environ.get(
        "SLIDEPIPE_ANALYSIS_DUMP",
        os.path.join(HERE, "..", "build", "tests", "analysis_dump")))
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--max-tiles", type=int, default=0)
    a = ap.parse_args()

    out = subprocess.run([a.dump, "analyze", a.slide, "--threads", str(a.procs)],
                         check=True, capture_output=True, text=True).stdout
    sp = json.loads(out)
    sp_rate = sp["analysed_mpix"] / sp["seconds"]
    print("slidepipe: %d tissue tiles of %d, %.1f MP in %.2f s: %.1f MP/s "
          "(%d threads)" % (sp["tiles_analysed"], sp["tiles_total"],
                            sp["analysed_mpix"], sp["seconds"], sp_rate,
                            a.procs))
    bench = subprocess.run([a.dump, "bench", a.slide, "--threads", str(a.procs)],
                           check=True, capture_output=True, text=True).stdout
    print("slidepipe features only (tiles in memory): %.1f MP/s" %
          json.loads(bench)["features_mp_per_s"])

    px, dt, n, n_tissue = reference(a.slide, a.procs, a.max_tiles)
    ref_rate = px / 1e6 / dt
    print("reference (openslide-python + skimage, %d processes): %d of %d "
          "tissue tiles, %.1f MP in %.2f s: %.2f MP/s" %
          (a.procs, n, n_tissue, px / 1e6, dt, ref_rate))
    print("ratio slidepipe / reference: %.1fx" % (sp_rate / ref_rate))


if __name__ == "__main__":
    main()
