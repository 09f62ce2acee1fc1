#!/usr/bin/python3
"""Deterministic corrupt slides made from real ones, for tests/test_corrupt.py
(and by hand: `corrupt_slides.py OUTDIR [--count N] [--seed S]`).

Each mutant is a copy of a slide in $SLIDEPIPE_TESTDATA with one damage
aimed at a part of the TIFF structure the readers depend on: a bit flipped
in an IFD entry, in the TileOffsets or TileByteCounts arrays, in a JPEG
tile's data or in the JPEGTables; a byte count set to an absurd value; a
file truncated; a range zeroed. The same seed gives the same mutants."""
import argparse
import os
import random
import struct
import sys

# (file, weight): the JPEG-tiled Aperio slides carry most of the weight,
# they are what the direct path reads; the others go through OpenSlide.
SOURCES = (("CMU-1-Small-Region.svs", 6), ("small.svs", 4),
           ("boxes.tiff", 2), ("tcga-cr-7395-01a-01-ts1.svs", 1))

TILE_OFFSETS, TILE_BYTE_COUNTS, JPEG_TABLES = 324, 325, 347
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8,
              11: 4, 12: 8, 16: 8, 17: 8, 18: 8}


class Tiff:
    """Just enough of a TIFF/BigTIFF parser to find where things lie."""

    def __init__(self, data):
        self.data = data
        self.e = "<" if data[:2] == b"II" else ">"
        magic = struct.unpack(self.e + "H", data[2:4])[0]
        self.big = magic == 43
        self.ifds = []  # [(ifd offset, entry area (start, end), {tag: entry})]
        off = (struct.unpack(self.e + "Q", data[8:16])[0] if self.big else
               struct.unpack(self.e + "I", data[4:8])[0])
        seen = set()
        while off and off not in seen and off + 8 < len(data):
            seen.add(off)
            off = self._read_ifd(off)

    def _u(self, fmt, at):
        return struct.unpack_from(self.e + fmt, self.data, at)[0]

    def _read_ifd(self, off):
        cnt_fmt, ent, cnt_size = ("Q", 20, 8) if self.big else ("H", 12, 2)
        n = self._u(cnt_fmt, off)
        start = off + cnt_size
        tags = {}
        for i in range(n):
            p = start + i * ent
            if p + ent > len(self.data):
                break
            tag, typ = self._u("H", p), self._u("H", p + 2)
            count = self._u("Q" if self.big else "I", p + 4)
            vpos = p + (12 if self.big else 8)
            size = _TYPE_SIZE.get(typ, 1) * count
            inline = size <= (8 if self.big else 4)
            where = vpos if inline else self._u("Q" if self.big else "I", vpos)
            tags[tag] = {"type": typ, "count": count, "at": where,
                         "esize": _TYPE_SIZE.get(typ, 1), "entry": p}
        end = start + n * ent
        self.ifds.append((off, (start, end), tags))
        nxt = end
        if nxt + (8 if self.big else 4) > len(self.data):
            return 0
        return self._u("Q" if self.big else "I", nxt)

    def array(self, tags, tag):
        t = tags.get(tag)
        if not t or t["type"] not in (3, 4, 16):
            return None
        fmt = {3: "H", 4: "I", 16: "Q"}[t["type"]]
        vals = []
        for i in range(t["count"]):
            at = t["at"] + i * t["esize"]
            if at + t["esize"] > len(self.data):
                break
            vals.append(self._u(fmt, at))
        return vals

    def tiles(self):
        """[(ifd index, tile index, offset, count, array entries' positions)]"""
        out = []
        for k, (_, _, tags) in enumerate(self.ifds):
            offs = self.array(tags, TILE_OFFSETS)
            cnts = self.array(tags, TILE_BYTE_COUNTS)
            if not offs or not cnts:
                continue
            for i, (o, c) in enumerate(zip(offs, cnts)):
                if c and o + c <= len(self.data):
                    out.append((k, i, o, c))
        return out


def _flip(buf, pos, rng, bits=1):
    for _ in range(bits):
        buf[pos] ^= 1 << rng.randrange(8)


def _array_pos(tiff, rng, tag):
    cands = [t[tag] for _, _, t in tiff.ifds if tag in t]
    if not cands:
        return None
    t = rng.choice(cands)
    i = rng.randrange(max(1, t["count"]))
    return t, t["at"] + i * t["esize"]


def mutate(data, rng):
    """One mutant of `data` (bytes): (kind, new bytes). Kinds that do not
    apply to this file fall back to a flipped bit anywhere."""
    tiff = Tiff(data)
    buf = bytearray(data)
    kinds = ["ifd_bit", "offsets_bit", "counts_bit", "counts_value",
             "tile_bits", "tile_zero", "tile_tail", "tables_bit",
             "truncate", "zero_range"]
    kind = rng.choice(kinds)
    tiles = tiff.tiles()
    if kind == "ifd_bit" and tiff.ifds:
        _, (s, e), _ = rng.choice(tiff.ifds)
        if e > s:
            _flip(buf, rng.randrange(s, min(e, len(buf))), rng)
            return kind, bytes(buf)
    if kind in ("offsets_bit", "counts_bit", "counts_value"):
        tag = TILE_OFFSETS if kind == "offsets_bit" else TILE_BYTE_COUNTS
        hit = _array_pos(tiff, rng, tag)
        if hit and hit[1] + hit[0]["esize"] <= len(buf):
            t, pos = hit
            if kind == "counts_value":
                fmt = {3: "H", 4: "I", 16: "Q"}.get(t["type"], "I")
                full = (1 << (8 * t["esize"])) - 1
                old = struct.unpack_from(tiff.e + fmt, buf, pos)[0]
                new = rng.choice([0, full, full >> 1, 1, old + 1, old * 2,
                                  max(old - 7, 1), old + 100000])
                struct.pack_into(tiff.e + fmt, buf, pos, new & full)
            else:
                _flip(buf, pos + rng.randrange(t["esize"]), rng)
            return kind, bytes(buf)
    if kind in ("tile_bits", "tile_zero", "tile_tail") and tiles:
        _, _, o, c = rng.choice(tiles)
        if kind == "tile_bits":
            for _ in range(rng.randint(1, 8)):
                _flip(buf, o + rng.randrange(c), rng)
        elif kind == "tile_zero":
            a = o + rng.randrange(c)
            n = rng.randint(1, min(512, o + c - a))
            buf[a:a + n] = bytes(n)
        else:  # damage near the tile's end: EOI, last MCUs
            a = o + max(0, c - rng.randint(1, 16))
            _flip(buf, a, rng, bits=2)
        return kind, bytes(buf)
    if kind == "tables_bit":
        cands = [t[JPEG_TABLES] for _, _, t in tiff.ifds if JPEG_TABLES in t]
        if cands:
            t = rng.choice(cands)
            if t["count"] and t["at"] + t["count"] <= len(buf):
                _flip(buf, t["at"] + rng.randrange(t["count"]), rng)
                return kind, bytes(buf)
    if kind == "truncate":
        # inside the tile data (the common case of a cut copy) or anywhere
        if tiles and rng.random() < 0.7:
            _, _, o, c = rng.choice(tiles)
            cut = o + rng.randrange(c)
        else:
            cut = rng.randrange(8, len(buf))
        return kind, bytes(buf[:cut])
    if kind == "zero_range":
        a = rng.randrange(len(buf))
        n = rng.randint(1, 4096)
        buf[a:a + n] = bytes(min(n, len(buf) - a))
        return kind, bytes(buf)
    _flip(buf, rng.randrange(len(buf)), rng)
    return "any_bit", bytes(buf)


def make(datadir, outdir, count, seed=12, extra=()):
    """Write `count` mutants into outdir; [(path, source, kind)]. `extra`:
    more sources, [(path, weight)], beside SOURCES in datadir."""
    rng = random.Random(seed)
    srcs = [(os.path.join(datadir, f), w) for f, w in SOURCES
            if os.path.exists(os.path.join(datadir, f))] + list(extra)
    pool = [f for f, w in srcs for _ in range(w)]
    cache = {}
    out = []
    for i in range(count):
        src = pool[rng.randrange(len(pool))]
        if src not in cache:
            with open(src, "rb") as f:
                cache[src] = f.read()
        kind, data = mutate(cache[src], rng)
        name = os.path.basename(src)
        ext = os.path.splitext(name)[1]
        stem = os.path.splitext(name)[0][:12]
        path = os.path.join(outdir, f"m{i:04d}-{stem}-{kind}{ext}")
        with open(path, "wb") as f:
            f.write(data)
        out.append((path, name, kind))
    return out


def pyramids(datadir, outdir):
    """Multi-level JPEG-tiled slides made from a crop of CMU-1-Small-Region
    with vips (none when vips or tiffset is missing): a generic pyramidal
    TIFF and the same with an Aperio description (every tiled directory a
    level), 128 px tiles, downsamples 1, 2, 4, 8.02. [(path, weight)]"""
    import shutil
    import subprocess
    cmu = os.path.join(datadir, "CMU-1-Small-Region.svs")
    if not (os.path.exists(cmu) and shutil.which("vips") and
            shutil.which("tiffset")):
        return []
    crop = os.path.join(outdir, "crop.v")
    gen = os.path.join(outdir, "pyramid-generic.tif")
    ape = os.path.join(outdir, "pyramid-aperio.svs")
    try:
        subprocess.run(["vips", "crop", cmu, crop, "600", "900", "1000",
                        "700"], check=True, capture_output=True)
        subprocess.run(["vips", "tiffsave", crop, gen, "--tile",
                        "--tile-width", "128", "--tile-height", "128",
                        "--pyramid", "--compression", "jpeg", "--Q", "70"],
                       check=True, capture_output=True)
        shutil.copy(gen, ape)
        subprocess.run(["tiffset", "-d", "0", "-s", "270",
                        "Aperio Image Library v10.0.50\r\n1000x700 [0,0 "
                        "1000x700] (128x128) JPEG/RGB Q=70|AppMag = 20|"
                        "MPP = 0.4990", ape], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    finally:
        if os.path.exists(crop):
            os.remove(crop)
    return [(gen, 2), (ape, 3)]


def crafted(datadir, outdir, extra=()):
    """Mutants made by hand for one known reaction each: [(path, source,
    kind)]. 'desc_no_equals': an Aperio description field without '='
    (OpenSlide 3.4.1 passes NULL to g_strstrip, GLib prints a CRITICAL)."""
    out = []
    src = "CMU-1-Small-Region.svs"
    p = os.path.join(datadir, src)
    if os.path.exists(p):
        with open(p, "rb") as f:
            data = f.read()
        i = data.find(b"AppMag = ")
        if i >= 0:
            data = data[:i] + b"AppMag : " + data[i + 9:]
            path = os.path.join(outdir, "c0000-CMU-desc_no_equals.svs")
            with open(path, "wb") as f:
                f.write(data)
            out.append((path, src, "desc_no_equals"))
    # a tile without bytes: Aperio paints it from the level above (and
    # marks the tiles of the levels below that cover it), generic TIFF
    # fails to read it
    for src in extra:
        with open(src, "rb") as f:
            data = f.read()
        t = Tiff(data)
        tiled = [k for k, (_, _, tags) in enumerate(t.ifds)
                 if TILE_BYTE_COUNTS in tags]
        for ifd, tile in ((0, 5), (1, 2)):
            if ifd >= len(tiled):
                continue
            e = t.ifds[tiled[ifd]][2][TILE_BYTE_COUNTS]
            fmt = {3: "H", 4: "I", 16: "Q"}.get(e["type"], "I")
            buf = bytearray(data)
            struct.pack_into(t.e + fmt, buf, e["at"] + tile * e["esize"], 0)
            name = os.path.basename(src)
            stem, ext = os.path.splitext(name)
            path = os.path.join(outdir, f"c{len(out):04d}-{stem[:12]}-"
                                f"zero_count_level{ifd}{ext}")
            with open(path, "wb") as f:
                f.write(buf)
            out.append((path, name, "zero_count"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--data", default=os.environ.get("SLIDEPIPE_TESTDATA",
                                                     "../shared/testdata"))
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    extra = pyramids(a.data, a.outdir)
    for path, src, kind in make(a.data, a.outdir, a.count, a.seed, extra):
        print(f"{path}\t{src}\t{kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
