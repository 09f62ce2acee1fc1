#!/usr/bin/python3
"""The peer side of bench_query.sh: h5py + numpy doing what
`slidepipe query --where 'tissue_fraction > 0.5 and blur > 80 and not
pen_fraction > 0.01' --count` does, over every *.h5 file of a folder,
reading only the three columns it needs, one file at a time.
Prints per-slide counts and the total in the same TSV as slidepipe."""
import os
import sys

import h5py
import numpy as np


def main(folder):
    total = 0
    out = ["slide\tcount"]
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".h5") or name.startswith("."):
            continue
        with h5py.File(os.path.join(folder, name), "r") as f:
            if f.attrs.get("schema") != "slidepipe.slide":
                continue
            d = f["features"]
            cols = list(d.attrs["columns"])
            tf = d[:, cols.index("tissue_fraction")].astype(np.float64)
            blur = d[:, cols.index("blur")].astype(np.float64)
            pen = d[:, cols.index("pen_fraction")].astype(np.float64)
            n = int(np.count_nonzero((tf > 0.5) & (blur > 80) & ~(pen > 0.01)))
            out.append(f"{f.attrs['source_file']}\t{n}")
            total += n
    out.append(f"(total)\t{total}")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
