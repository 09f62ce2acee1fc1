"""Shared scaffolding of the Python reference tests (run by ctest through
Debian's /usr/bin/python3): the paths ctest passes in the environment, a
check counter, and the closing line 'N passed, M failed'."""
import os
import subprocess
import sys

BIN = os.environ.get("SLIDEPIPE_BIN", "")
SYNTH = os.environ.get("SLIDEPIPE_SYNTH", "")
# tests/read_dump: a slide's reads through the public reader, to files
READ_DUMP = os.environ.get("SLIDEPIPE_READ_DUMP", "")
DATA = os.environ.get("SLIDEPIPE_TESTDATA") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
    "testdata")

# Inputs made by slidepipe-synth are the same for the normal and the ASan
# build: kept here (tests/CMakeLists.txt sets it to tests/.cache in the
# source tree, shared by the build trees) so the second build's tests
# copy them instead of making them again.
CACHE = os.environ.get("SLIDEPIPE_TEST_CACHE", "")
_SYNTH_SOURCES = ("tools", "util")  # what slidepipe-synth is built from

_counts = {"passed": 0, "failed": 0}


def check(cond, what):
    """Count one check; report a failure on stderr. Returns `cond`."""
    if cond:
        _counts["passed"] += 1
    else:
        _counts["failed"] += 1
        print("FAIL:", what, file=sys.stderr, flush=True)
    return cond


def have_read_dump():
    """READ_DUMP is there; a failed check when it is not"""
    return check(bool(READ_DUMP) and os.path.exists(READ_DUMP),
                 f"SLIDEPIPE_READ_DUMP not set or missing: {READ_DUMP!r}")


def failures():
    return _counts["failed"]


def finish():
    """Print the closing line; the exit status for sys.exit."""
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    return 1 if _counts["failed"] else 0


def stats_of(d):
    """relative path -> (inode, mtime_ns) of every file under d"""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            st = os.stat(os.path.join(root, f))
            out[os.path.relpath(os.path.join(root, f), d)] = (st.st_ino,
                                                              st.st_mtime_ns)
    return out


def files_of(d):
    """relative path -> bytes of every file under d"""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


# ---- what a shared output must not carry (docs/OUTPUTS.md) ----------------

def tiff_associated_bytes(path, words=(b"label", b"macro")):
    """Raw strip/tile bytes of the TIFF directories whose ImageDescription
    names one of `words` (Aperio's label and macro images), read with a
    few lines of struct instead of our code or OpenSlide: word -> bytes
    of the directory's first strip."""
    import struct
    out = {}
    with open(path, "rb") as f:
        data = f.read()
    bo = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(bo + "H", data[2:4])[0] == 43
    if big:
        off = struct.unpack(bo + "Q", data[8:16])[0]
    else:
        off = struct.unpack(bo + "I", data[4:8])[0]
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1, 16: 8}
    seen = set()
    while off and off not in seen and off < len(data):
        seen.add(off)
        if big:
            n = struct.unpack(bo + "Q", data[off:off + 8])[0]
            ent, esz, p = 20, 8, off + 8
        else:
            n = struct.unpack(bo + "H", data[off:off + 2])[0]
            ent, esz, p = 12, 4, off + 2
        tags = {}
        for i in range(n):
            e = data[p + i * ent:p + (i + 1) * ent]
            tag, typ = struct.unpack(bo + "HH", e[:4])
            cnt = struct.unpack(bo + ("Q" if big else "I"),
                                e[4:4 + esz])[0]
            sz = sizes.get(typ, 1) * cnt
            val = e[4 + esz:]
            if sz > esz:
                vo = struct.unpack(bo + ("Q" if big else "I"), val)[0]
                val = data[vo:vo + sz]
            else:
                val = val[:sz]
            if typ in (3, 4, 16):
                fmt = {3: "H", 4: "I", 16: "Q"}[typ]
                tags[tag] = struct.unpack(bo + fmt * cnt, val)
            else:
                tags[tag] = val
        p += n * ent
        nxt = data[p:p + esz]
        off = struct.unpack(bo + ("Q" if big else "I"), nxt)[0] if nxt else 0
        desc = tags.get(270, b"")
        for w in words:
            if w in desc and 273 in tags and 279 in tags:
                o, c = tags[273][0], tags[279][0]
                out[w.decode()] = data[o:o + c]
    return out


def distinct_windows(buf, size=64, count=4, min_distinct=24):
    """Up to `count` windows of `size` bytes of `buf` with at least
    `min_distinct` different byte values (never a run of background that
    could occur anywhere by chance)."""
    out, i = [], len(buf) // 8  # past any header
    step = max(size, len(buf) // (count * 8) or 1)
    while i + size <= len(buf) and len(out) < count:
        w = bytes(buf[i:i + size])
        if len(set(w)) >= min_distinct:
            out.append(w)
            i += step
        else:
            i += size // 2
    return out


def leaks(folder, needles):
    """Where any needle (name -> bytes) occurs in the output `folder`: in
    file names, in every file's bytes, and inside each HDF5 file through
    h5py (every attribute, string datasets element by element, numeric
    datasets as decoded bytes, virtual sources and link targets, which
    compression or the global heap could hide from the raw scan).
    Returns a list of 'file: where: needle name'."""
    import h5py
    import numpy as np
    found = []

    def look(blob, where):
        if isinstance(blob, str):
            blob = blob.encode("utf-8", "surrogateescape")
        for name, nd in needles.items():
            if nd and nd in blob:
                found.append(f"{where}: {name}")

    def attr_bytes(v):
        if isinstance(v, (bytes, str)):
            return v if isinstance(v, bytes) else v.encode()
        a = np.asarray(v)
        if a.dtype.kind in "OSU":
            return b"\0".join(x if isinstance(x, bytes) else str(x).encode()
                              for x in a.ravel())
        return a.tobytes()

    for root, dirs, files in os.walk(folder):
        for n in dirs + files:
            look(os.path.relpath(os.path.join(root, n), folder),
                 f"name {os.path.join(root, n)}")
        for n in files:
            p = os.path.join(root, n)
            with open(p, "rb") as fh:
                look(fh.read(), p)
            if not n.endswith(".h5"):
                continue
            with h5py.File(p, "r") as f:
                objs = [("/", f)]
                f.visititems(lambda k, o: objs.append((k, o)))
                for k, o in objs:
                    for an, av in o.attrs.items():
                        look(attr_bytes(av), f"{p}:{k}@{an}")
                    if isinstance(o, h5py.Dataset):
                        if o.is_virtual:
                            for vs in o.virtual_sources():
                                look(vs.file_name, f"{p}:{k} virtual source")
                        try:
                            look(attr_bytes(o[()]), f"{p}:{k}")
                        except (OSError, ValueError):
                            pass  # a virtual dataset whose member is absent
                    if isinstance(o, h5py.Group):
                        for ln in o:
                            lk = o.get(ln, getlink=True)
                            if isinstance(lk, h5py.ExternalLink):
                                look(lk.filename, f"{p}:{k}/{ln} link")
    return found


def slide_secrets(slide, path):
    """The needles for `path`, a copy of `slide` (under another name, so
    that the file name recorded on purpose holds none of its properties):
    its absolute path, its folder's path and name, the label and macro
    image bytes (raw from the file and decoded by OpenSlide) and the
    property values a shared output must not carry."""
    import numpy as np
    import openslide
    secret_dir = os.path.dirname(path)
    needles = {"absolute path": path.encode(),
               "input folder": secret_dir.encode(),
               "folder name": os.path.basename(secret_dir).encode()}
    for word, raw in tiff_associated_bytes(slide).items():
        for i, w in enumerate(distinct_windows(raw)):
            needles[f"{word} image file bytes #{i}"] = w
    s = openslide.OpenSlide(slide)
    for word in ("label", "macro"):
        if word in s.associated_images:
            px = np.asarray(s.associated_images[word].convert("RGB"))
            for i, w in enumerate(distinct_windows(px.tobytes(), 96, 4, 40)):
                needles[f"{word} image pixels #{i}"] = w
    skip = {"openslide.vendor", "openslide.quickhash-1", "aperio.Time"}
    for k, v in s.properties.items():
        try:
            float(v)
            continue  # numbers (mpp, sizes) are recorded on purpose
        except ValueError:
            pass
        if k not in skip and len(v) >= 5:
            needles[f"property {k}"] = v.encode()
    return needles


def _synth_key(args):
    """sha256 of the arguments and of every source slidepipe-synth is
    built from: another generator or other arguments, another slide"""
    import hashlib
    h = hashlib.sha256("\0".join(args).encode())
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    for d in _SYNTH_SOURCES:
        for base, _, files in sorted(os.walk(os.path.join(root, d))):
            for f in sorted(files):
                if f.endswith((".c", ".h", ".txt")):
                    h.update(f"{os.path.relpath(os.path.join(base, f), root)}"
                             .encode())
                    with open(os.path.join(base, f), "rb") as fh:
                        h.update(fh.read())
    return h.hexdigest()[:32]


def synth_slide(path, *args, **kw):
    """`slidepipe-synth -o path ARGS` (kw as for subprocess.run): with
    $SLIDEPIPE_TEST_CACHE set, the slide made once for these arguments and
    this generator's sources, then copied to `path` (slidepipe-synth
    writes a temporary and renames it: ctest -j safe). Returns the
    CompletedProcess of the run (a hit: returncode 0, no output)."""
    import shutil
    if not CACHE:
        return subprocess.run([SYNTH, "-o", path, *args], **kw)
    os.makedirs(CACHE, exist_ok=True)
    cached = os.path.join(CACHE, "synth-" + _synth_key(args) + ".svs")
    if not os.path.exists(cached):
        # slidepipe-synth writes under a temporary name and renames
        r = subprocess.run([SYNTH, "-o", cached, *args], **kw)
        if r.returncode != 0:
            return r
    shutil.copyfile(cached, path)
    return subprocess.CompletedProcess([SYNTH, "-o", path, *args], 0,
                                       "" if kw.get("text") else b"",
                                       "" if kw.get("text") else b"")


# ---- reference values shared by the build trees -----------------------------

_refs = {}


def _file_digest(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_ref(what, fn, paths=(), params=(), libs=()):
    """fn() (a numpy array an independent library computes from the files
    `paths`: OpenSlide's read, scikit-image's HSV, vips' decode), computed
    once and reused: within this process, and through
    $SLIDEPIPE_TEST_CACHE by the other build tree's run of the same suite.
    Never for anything slidepipe wrote: the key holds the bytes of every
    file in `paths` (sha256), `params`, the versions of the modules in
    `libs` (and the openslide C library's) and the bytes of this file and
    of the running test script, so another input, reference code or
    library computes it again. One cache file per (script, what, paths,
    params), overwritten when its key changes."""
    import hashlib
    import numpy as np
    # the slot is named by the files' names (a test's temporary folder
    # differs from run to run), the key by their bytes
    ident = repr((what, tuple(os.path.basename(p) for p in paths),
                  tuple(params)))
    h = hashlib.sha256(ident.encode())
    for p in paths:
        h.update(_file_digest(p).encode())
    for m in libs:
        h.update(f"{m.__name__} {getattr(m, '__version__', '')} "
                 f"{getattr(m, '__library_version__', '')}".encode())
    main = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    for f in (os.path.abspath(__file__), main):
        if f:
            h.update(_file_digest(f).encode())
    key = h.hexdigest()
    if key in _refs:
        return _refs[key]
    slot = None
    if CACHE:
        name = hashlib.sha256((os.path.basename(main) + ident).encode())
        slot = os.path.join(CACHE, "ref-" + name.hexdigest()[:32] + ".npz")
        try:
            with np.load(slot, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    value = z["value"]
                    value.setflags(write=False)
                    _refs[key] = value
                    return value
        except (OSError, KeyError, ValueError):
            pass  # absent, from another key, or a torn write: compute
    value = np.asarray(fn())
    value.setflags(write=False)  # shared: a caller must not change it
    if slot:
        os.makedirs(CACHE, exist_ok=True)
        tmp = f"{slot}.tmp-{os.getpid()}.npz"
        np.savez(tmp, key=np.array(key), value=value)
        os.replace(tmp, slot)  # whole or not at all (ctest -j, two trees)
    _refs[key] = value
    return value
