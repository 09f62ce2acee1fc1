#!/usr/bin/python3
"""The OpenSlide peer: openslide-python's DeepZoomGenerator driven by one
process per core, as in its deepzoom_tile example (each worker opens the
slide itself, tiles come from a shared queue, written as JPEG).

usage: deepzoom_peer.py SLIDE OUT [--tile-size 254] [--overlap 1]
                        [--quality 75] [--workers N]
Writes OUT.dzi and OUT_files/<level>/<col>_<row>.jpeg."""
import argparse
import multiprocessing as mp
import os

import openslide
from openslide.deepzoom import DeepZoomGenerator


def worker(q, slide, out, size, overlap, quality):
    s = openslide.OpenSlide(slide)
    dz = DeepZoomGenerator(s, tile_size=size, overlap=overlap,
                           limit_bounds=False)
    while True:
        job = q.get()
        if job is None:
            q.task_done()
            break
        level, col, row = job
        t = dz.get_tile(level, (col, row))
        t.save(os.path.join(out, str(level), f"{col}_{row}.jpeg"),
               quality=quality)
        q.task_done()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("out")
    ap.add_argument("--tile-size", type=int, default=254)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    files = a.out + "_files"
    dz = DeepZoomGenerator(openslide.OpenSlide(a.slide), tile_size=a.tile_size,
                           overlap=a.overlap, limit_bounds=False)
    for level in range(dz.level_count):
        os.makedirs(os.path.join(files, str(level)), exist_ok=True)
    q = mp.JoinableQueue(4 * a.workers)
    procs = [mp.Process(target=worker, args=(q, a.slide, files, a.tile_size,
                                             a.overlap, a.quality))
             for _ in range(a.workers)]
    for p in procs:
        p.start()
    for level in range(dz.level_count):
        cols, rows = dz.level_tiles[level]
        for row in range(rows):
            for col in range(cols):
                q.put((level, col, row))
    for _ in procs:
        q.put(None)
    q.join()
    for p in procs:
        p.join()
    with open(a.out + ".dzi", "w") as f:
        f.write(dz.get_dzi("jpeg"))


if __name__ == "__main__":
    main()
