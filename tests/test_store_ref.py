#!/usr/bin/python3
"""The HDF5 store and `slidepipe query`/`index`, checked with h5py, pandas
and numpy (independent readers): file contents against what slidepipe
reports, CLAM attributes, the documented pandas snippet verbatim, the
docs/SCHEMA.md tables against real files both ways, random --where
expressions against numpy, ordering and stats, rejected files, the cohort
index, and atomic writes."""
import csv
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from sptest import check, finish

BIN = os.environ["SLIDEPIPE_BIN"]
FIXTURE = os.environ["SLIDEPIPE_STORE_FIXTURE"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCHEMA_MD = os.path.join(ROOT, "docs", "SCHEMA.md")



def run(*args, cwd=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          errors="replace", timeout=300, cwd=cwd)


def fixture(path, *args):
    subprocess.run([FIXTURE, path, *args], check=True, timeout=300)


def load(path):
    with h5py.File(path, "r") as f:
        d = f["features"]
        return (list(d.attrs["columns"]), d[:], f["coords"][:],
                f.attrs["source_file"])


def parse_tsv(text):
    lines = text.splitlines()
    return lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]


# ---- file contents --------------------------------------------------------

def check_contents(full, bare):
    with h5py.File(full, "r") as f:
        a = f.attrs
        check(a["schema"] == "slidepipe.slide" and a["schema_version"] == 1,
              "schema attributes")
        check(isinstance(a["source_file"], str) and a["source_file"] == "fixture.svs",
              "source_file is a str")
        check(a["vendor"] == "aperio", "vendor")
        check(abs(a["mpp_x"] - 0.499) < 1e-12 and abs(a["mpp_y"] - 0.4991) < 1e-12,
              "mpp")
        check(a["objective_power"] == 20.0, "objective power")
        check(json.loads(a["parameters"])["tile_size"] == 256, "parameters JSON")
        check(a["start_time"] == "2024-05-01T12:00:00Z", f"start_time {a['start_time']}")
        check(a["end_time"] == "2024-05-01T12:01:00Z", f"end_time {a['end_time']}")
        c = f["coords"]
        check(c.dtype == np.int64 and c.ndim == 2 and c.shape[1] == 2, "coords int64 (N,2)")
        ca = c.attrs
        check(ca["patch_size"] == 256 and ca["patch_level"] == 0, "CLAM patch attrs")
        check(list(ca["downsample"]) == [1.0, 1.0], "CLAM downsample")
        check(list(ca["level_dim"]) == [a["width"], a["height"]], "CLAM level_dim")
        check(list(ca["downsampled_level_dim"]) == [a["width"], a["height"]],
              "CLAM downsampled_level_dim")
        check(ca["name"] == "fixture", f"CLAM name {ca['name']!r}")
        d = f["features"]
        check(d.dtype == np.float32 and d.shape[0] == c.shape[0], "features float32 (N,F)")
        check(d.compression == "gzip" and d.shuffle and d.chunks is not None,
              "features chunked, shuffle+deflate")
        check(c.compression == "gzip" and c.shuffle, "coords shuffle+deflate")
        check(d.chunks[1] == 1, f"features chunked by column {d.chunks}")
        cols = list(d.attrs["columns"])
        check(all(isinstance(x, str) for x in cols) and len(cols) == d.shape[1],
              "column names are str")
        check(f["mask"].dtype == np.uint8 and f["mask"].ndim == 2, "mask image")
        check(f["thumbnail"].shape[2] == 3, "thumbnail RGB")
        check(f["thumbnail"].attrs["CLASS"] == "IMAGE", "image CLASS")
        s = dict(f["summary"].attrs)
        check(s.get("tissue_area_mm2") == 12.5 and s.get("tiles_tissue") == d.shape[0],
              f"summary {s}")
        # features: columns, types and values equal what query reports
        feats, coords = d[:], c[:]
    r = run("query", "--format", "csv", full)
    check(r.returncode == 0, f"query csv: {r.stderr}")
    rows = list(csv.reader(io.StringIO(r.stdout)))
    check(rows[0] == ["slide", "x", "y"] + cols, "query header = columns")
    body = rows[1:]
    check(len(body) == feats.shape[0], "query returns every row")
    # text -> float32 must give back the stored float32 exactly
    got = np.array([row[3:] for row in body], dtype=np.float32)
    want = feats
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    check(same.all(), "query values equal h5py values bit for bit")
    check(np.isnan(want).any(), "fixture has NaNs")
    xy = np.array([[int(row[1]), int(row[2])] for row in body])
    check((xy == coords).all(), "query x,y equal coords")
    check(all(row[0] == "fixture.svs" for row in body), "slide column")

    with h5py.File(bare, "r") as f:
        for k in ("mpp_x", "mpp_y", "objective_power", "quickhash"):
            check(k not in f.attrs, f"absent {k} must be absent, not 0")
        check("mask" not in f and "thumbnail" not in f, "no images when not given")


def check_snippet(full, tmp):
    text = open(SCHEMA_MD).read()
    m = re.search(r"## Reading it\s+```python\n(.*?)```", text, re.S)
    check(m is not None, "SCHEMA.md has the pandas snippet")
    if not m:
        return
    code = m.group(1)
    check(len(code.strip().splitlines()) == 2, "the snippet is two lines")
    d = os.path.join(tmp, "snippet")
    os.makedirs(d)
    shutil.copy(full, os.path.join(d, "slide.h5"))
    env = {}
    old = os.getcwd()
    os.chdir(d)
    try:
        exec(code, env)
    finally:
        os.chdir(old)
    df = env.get("df")
    cols, feats, _, _ = load(full)
    check(df is not None and list(df.columns) == cols, "snippet: column names")
    check(df is not None and df.shape == feats.shape, "snippet: shape")
    if df is not None:
        v = df.to_numpy()
        check(((v == feats) | (np.isnan(v) & np.isnan(feats))).all(), "snippet: values")
        check(all(df[c].dtype == np.float32 for c in cols), "snippet: float32 columns")


# ---- SCHEMA.md drift -------------------------------------------------------

def doc_tables(section):
    """(objects, attributes) documented under '## <section>'."""
    text = open(SCHEMA_MD).read()
    start = text.index("## " + section)
    nxt = text.find("\n## ", start + 3)
    part = text[start:nxt if nxt > 0 else len(text)]
    objs, attrs = {}, {}
    mode = None
    for line in part.splitlines():
        if line.startswith("### Datasets"):
            mode = "obj"
        elif line.startswith("### Attributes"):
            mode = "attr"
        if not line.startswith("| `"):
            continue
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if mode == "obj":
            path, kind, typ, shape = cells[:4]
            objs[path] = (kind, typ, shape)
        elif mode == "attr":
            obj, name, typ, req = cells[:4]
            attrs[(obj, name)] = (typ, req == "yes")
    return objs, attrs


def type_ok(value_or_ds, typ):
    dt = value_or_ds.dtype if hasattr(value_or_ds, "dtype") else np.asarray(value_or_ds).dtype
    shape = np.shape(value_or_ds) if not hasattr(value_or_ds, "shape") else value_or_ds.shape
    base = typ.split("[")[0]
    if base == "string":
        ok = h5py.check_string_dtype(dt) is not None or dt.kind in ("O", "U")
    else:
        ok = dt == np.dtype(base)
    if "[" in typ:
        n = typ[typ.index("[") + 1:-1]
        ok = ok and len(shape) == 1 and (not n.isdigit() or shape[0] == int(n))
    elif base != "string" or not hasattr(value_or_ds, "shape"):
        ok = ok and len(shape) == 0
    return ok


def check_drift(path, section):
    objs, attrs = doc_tables(section)
    check(len(objs) >= 3 and len(attrs) >= 5, f"{section}: tables parsed")
    seen = {"/": None}
    f = h5py.File(path, "r")
    f.visititems(lambda name, obj: seen.__setitem__("/" + name, obj))
    # every object in the file is documented, with its kind and type
    for p, obj in seen.items():
        if p == "/":
            continue
        check(p in objs, f"{section}: {p} is in the file but not in SCHEMA.md")
        if p not in objs:
            continue
        kind, typ, shape = objs[p]
        if isinstance(obj, h5py.Group):
            check(kind == "group", f"{section}: {p} documented as {kind}")
        else:
            check(kind.endswith("dataset"), f"{section}: {p} documented as {kind}")
            check(obj.is_virtual == (kind == "virtual dataset"),
                  f"{section}: {p} virtual flag")
            check(type_ok(obj, typ) if typ == "string" else obj.dtype == np.dtype(typ),
                  f"{section}: {p} type {obj.dtype} vs {typ}")
            rank = len([x for x in shape.strip("()").split(",") if x.strip()])
            check(obj.ndim == rank, f"{section}: {p} rank {obj.ndim} vs {shape}")
    # every documented object exists (optional images aside)
    for p, (kind, typ, shape) in objs.items():
        optional = p in ("/mask", "/thumbnail")
        check(p in seen or optional, f"{section}: documented {p} missing from file")
    # attributes, both ways
    for p, obj in seen.items():
        target = f if p == "/" else obj
        for name, value in target.attrs.items():
            key = (p, name) if (p, name) in attrs else (p, "*")
            check(key in attrs, f"{section}: attribute {p}:{name} not in SCHEMA.md")
            if key in attrs:
                check(type_ok(value, attrs[key][0]),
                      f"{section}: attribute {p}:{name} type vs {attrs[key][0]}")
    for (p, name), (typ, req) in attrs.items():
        if name == "*" or not req or p not in seen:
            continue
        target = f if p == "/" else seen[p]
        check(name in target.attrs, f"{section}: required {p}:{name} missing")
    f.close()


# ---- random expressions against numpy ---------------------------------------

OPS = ["<", "<=", ">", ">=", "==", "!="]
NP_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
          "==": np.equal, "!=": np.not_equal}


def random_expr(rng, data, depth=0):
    names = list(data)
    if depth < 3 and rng.random() < 0.5:
        k = rng.random()
        if k < 0.2:
            text, mask = random_expr(rng, data, depth + 1)
            return f"not {text}", ~mask
        a, ma = random_expr(rng, data, depth + 1)
        b, mb = random_expr(rng, data, depth + 1)
        if rng.random() < 0.5:
            return f"({a} and {b})", ma & mb
        return f"({a} OR {b})", ma | mb
    col = rng.choice(names)
    v = data[col]
    op = rng.choice(OPS)
    finite = v[np.isfinite(v)]
    r = rng.random()
    if r < 0.1:
        const = float(finite.max()) + 1000  # nothing above
    elif r < 0.3 and len(finite):
        const = float(rng.choice(finite))  # an exact stored value
    else:
        const = float(np.quantile(finite, rng.random())) if len(finite) else 0.5
    const_txt = repr(const)
    if rng.random() < 0.15:
        other = rng.choice(names)
        return f"{col} {op} {other}", NP_OPS[op](v, data[other])
    if rng.random() < 0.2:
        flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        return f"{const_txt} {flipped} {col}", NP_OPS[op](v, const)
    return f"{col} {op} {const_txt}", NP_OPS[op](v, const)


def check_random_expressions(full, n_expr):
    cols, feats, coords, _ = load(full)
    data = {c: feats[:, i].astype(np.float64) for i, c in enumerate(cols)}
    data["x"] = coords[:, 0].astype(np.float64)
    data["y"] = coords[:, 1].astype(np.float64)
    rng = random.Random(1234)
    empties = 0
    for k in range(n_expr):
        text, mask = random_expr(rng, data)
        want = int(mask.sum())
        empties += want == 0
        if k % 5 == 0:  # full rows for some: the same tiles, in order
            r = run("query", "--where", text, "--select", "x,y", "--format", "tsv", full)
            ok = r.returncode == 0
            if ok:
                _, rows = parse_tsv(r.stdout)
                got = np.array([[int(a), int(b)] for a, b in rows]).reshape(-1, 2)
                ok = got.shape[0] == want and (got == coords[mask]).all()
            check(ok, f"rows of --where {text!r}: {r.stderr.strip()}")
        else:
            r = run("query", "--where", text, "--count", "--format", "json", full)
            ok = r.returncode == 0
            if ok:
                last = json.loads(r.stdout.splitlines()[-1])
                ok = last["slide"] is None and last["count"] == want
            check(ok, f"count of --where {text!r}: want {want}, got {r.stdout[-60:]!r} {r.stderr}")
    check(empties > 0, "some random expressions match nothing")


def check_order_stats(full):
    cols, feats, coords, _ = load(full)
    blur = feats[:, cols.index("blur")].astype(np.float64)
    od_h = feats[:, cols.index("od_h")].astype(np.float64)
    tf = feats[:, cols.index("tissue_fraction")].astype(np.float64)
    # top 25 by blur desc, NaN last
    r = run("query", "--order-by", "blur desc", "--limit", "25", "--select",
            "x,y,blur", "--format", "tsv", full)
    _, rows = parse_tsv(r.stdout)
    want = np.sort(blur[~np.isnan(blur)])[::-1][:25]
    check(r.returncode == 0 and (np.array([v[2] for v in rows], dtype=np.float32) ==
                                 want.astype(np.float32)).all(),
          "order-by blur desc limit 25")
    # all matches ordered ascending by od_h with NaN last, stable on ties
    m = tf > 0.9
    r = run("query", "--where", "tissue_fraction > 0.9", "--order-by", "od_h",
            "--select", "x,y,od_h", "--format", "tsv", full)
    _, rows = parse_tsv(r.stdout)
    idx = np.nonzero(m)[0]
    key = od_h[idx]
    order = idx[np.lexsort((np.arange(len(idx)), np.nan_to_num(key, nan=0), np.isnan(key)))]
    got = np.array([[int(a), int(b)] for a, b, _ in rows]).reshape(-1, 2)
    check(r.returncode == 0 and got.shape[0] == len(order) and (got == coords[order]).all(),
          "order-by od_h without limit (NaN last, stable)")
    # stats against numpy
    r = run("query", "--where", "tissue_fraction > 0.3", "--stats", "--select",
            "blur,od_h,entropy", "--format", "json", full)
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    sel = tf > 0.3
    ok = r.returncode == 0 and len(objs) == 6
    for o in objs[:3]:
        v = feats[sel, cols.index(o["column"])].astype(np.float64)
        v = v[~np.isnan(v)]
        ok = ok and o["count"] == len(v) and abs(o["mean"] - v.mean()) <= 1e-9 * abs(v.mean()) \
            and np.float32(o["min"]) == np.float32(v.min()) \
            and np.float32(o["max"]) == np.float32(v.max())
    check(ok and objs[3]["slide"] is None and objs[0]["slide"] == "fixture.svs",
          f"stats equal numpy: {r.stdout[:200]} {r.stderr}")
    # limit without order stops early; json NaN is null
    r = run("query", "--where", "od_h != od_h", "--format", "json", "--limit", "3",
            "--select", "slide,x,od_h", full)
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    check(len(objs) == 3 and all(o["od_h"] is None for o in objs), "json NaN as null, limit")
    # table format when asked
    r = run("query", "--format", "table", "--limit", "2", "--select", "slide,x,blur", full)
    lines = r.stdout.splitlines()
    check(len(lines) == 3 and lines[0].split() == ["slide", "x", "blur"], "table format")


# ---- rejected files ------------------------------------------------------------

def check_rejections(full, tmp):
    bad = {}
    trunc = os.path.join(tmp, "truncated.h5")
    blob = open(full, "rb").read()
    open(trunc, "wb").write(blob[:len(blob) // 2])
    bad[trunc] = "truncated or damaged"
    empty = os.path.join(tmp, "empty.h5")
    open(empty, "wb").close()
    bad[empty] = "empty file"
    foreign = os.path.join(tmp, "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(10)
        f.attrs["creator"] = "someone else"
    bad[foreign] = "not a slidepipe file"
    other = os.path.join(tmp, "otherschema.h5")
    with h5py.File(other, "w") as f:
        f.attrs["schema"] = "somebody.else"
    bad[other] = "not a slidepipe file"
    newer = os.path.join(tmp, "newer.h5")
    shutil.copy(full, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = np.int64(2)
    bad[newer] = "schema_version 2 is newer than this slidepipe reads (1)"
    text = os.path.join(tmp, "text.h5")
    open(text, "w").write("hello, not hdf5\n" * 10)
    bad[text] = "not an HDF5 file"
    bad[os.path.join(tmp, "missing.h5")] = "No such file"
    for path, words in bad.items():
        r = run("query", "--count", path)
        err = r.stderr.splitlines()
        check(r.returncode == 1, f"{path}: exit {r.returncode}, want 1")
        check(len(err) == 1 and path in err[0] and words in err[0],
              f"{path}: message {err!r} should name the file and say '{words}'")
        check("HDF5-DIAG" not in r.stderr, f"{path}: HDF5's printer silenced")
    # one bad file among good ones: the good ones are still reported
    r = run("query", "--count", "--format", "tsv", full, trunc, full)
    _, rows = parse_tsv(r.stdout)
    check(r.returncode == 1 and len(rows) == 3 and len(r.stderr.splitlines()) == 1,
          f"mixed: exit {r.returncode}, rows {rows}")


def check_usage(full):
    r = run("query", "--where", "tissue_fraction > 0.5 and blur >", full)
    check(r.returncode == 2 and "--where: position 33: expected a number or a column name after '>'"
          in r.stderr, f"bad expression: {r.stderr!r}")
    r = run("query", "--where", "(blur > 1", full)
    check(r.returncode == 2 and "position 10: expected ')'" in r.stderr, f"unbalanced: {r.stderr!r}")
    r = run("query", "--where", "blur > 1 @", full)
    check(r.returncode == 2 and "position 10: unexpected '@'" in r.stderr, f"bad char: {r.stderr!r}")
    r = run("query", "--where", "blurr > 80", full)
    check(r.returncode == 2 and "unknown column 'blurr'" in r.stderr and "tissue_fraction" in r.stderr,
          f"unknown column: {r.stderr!r}")
    r = run("query", "--select", "x,nope", full)
    check(r.returncode == 2 and "unknown column 'nope'" in r.stderr, "unknown select column")
    r = run("query", "--count", "--stats", full)
    check(r.returncode == 2, "conflicting options")
    r = run("query")
    check(r.returncode == 2, "no input")
    r = run("query", "--help")
    check(r.returncode == 0 and "--where" in r.stdout, "query --help")
    r = run("index", "--help")
    check(r.returncode == 0 and "-o" in r.stdout, "index --help")


# ---- cohorts ---------------------------------------------------------------

def check_cohort(tmp, full):
    d = os.path.join(tmp, "cohort")
    os.makedirs(d)
    files = []
    for i, rows in enumerate([4000, 0, 7000, 1234]):
        p = os.path.join(d, f"s{i}.h5")
        fixture(p, "--rows", str(rows), "--seed", str(10 + i), "--name", f"slide {i}.svs")
        files.append(p)
    out_dir = os.path.join(tmp, "elsewhere")
    os.makedirs(out_dir)
    cohort = os.path.join(out_dir, "cohort.h5")
    r = run("index", d, "-o", cohort)
    check(r.returncode == 0 and os.path.exists(cohort), f"index: {r.stderr}")
    r2 = run("index", d, "-o", os.path.join(d, "cohort.h5"))
    check(r2.returncode == 0, f"index inside the folder: {r2.stderr}")
    parts = [load(p) for p in files]
    with h5py.File(cohort, "r") as f:
        feats = f["features"][:]
        want = np.concatenate([p[1] for p in parts])
        check(feats.shape == want.shape and ((feats == want) | (np.isnan(feats) & np.isnan(want))).all(),
              "cohort /features equals the slides concatenated")
        check((f["coords"][:] == np.concatenate([p[2] for p in parts])).all(), "cohort /coords")
        sid = f["slide_id"][:]
        check(list(np.bincount(sid, minlength=4)) == [4000, 0, 7000, 1234], "cohort /slide_id")
        check(list(f["slides/name"].asstr()[:]) == [p[3] for p in parts], "cohort /slides/name")
        check(f["slide/s2"].attrs["source_file"] == "slide 2.svs", "cohort external link")
    check_drift(cohort, "Cohort file")
    # h5py from another working directory still resolves the members
    code = ("import h5py,sys; f=h5py.File(sys.argv[1]); "
            "print(int(f['features'].shape[0]), float(f['features'][11233, 0]))")
    p = subprocess.run([sys.executable, "-c", code, cohort], capture_output=True, text=True,
                       cwd="/")
    check(p.returncode == 0 and p.stdout.split()[0] == "12234", f"cohort from / : {p.stdout} {p.stderr}")
    # query on the cohort = query on the folder (the cohort inside it skipped)
    w = "tissue_fraction > 0.5 and blur > 80 and not pen_fraction > 0.01"
    a = run("query", "--where", w, "--count", "--format", "tsv", cohort)
    b = run("query", "--where", w, "--count", "--format", "tsv", d)
    check(a.returncode == 0 and a.stdout == b.stdout and b.returncode == 0,
          f"cohort query = folder query: {a.stdout!r} {b.stdout!r} {a.stderr}{b.stderr}")
    _, rows = parse_tsv(b.stdout)
    check([r[0] for r in rows] == ["slide 0.svs", "slide 1.svs", "slide 2.svs", "slide 3.svs", "(total)"],
          f"folder: one line per slide and a total: {rows}")
    # stats over a cohort: overall = numpy over the concatenation
    r = run("query", "--stats", "--select", "blur", "--format", "json", cohort)
    last = json.loads(r.stdout.splitlines()[-1])
    v = want[:, parts[0][0].index("blur")].astype(np.float64)
    v = v[~np.isnan(v)]
    check(last["slide"] is None and last["count"] == len(v) and
          abs(last["mean"] - v.mean()) < 1e-9 * v.mean(), "cohort overall stats")


def check_atomic(tmp):
    p = os.path.join(tmp, "killed.h5")
    proc = subprocess.run([FIXTURE, p, "--rows", "300000", "--die-after", "270000"],
                          capture_output=True)
    check(proc.returncode != 0, "the killed writer died")
    check(not os.path.exists(p), "an interrupted write leaves nothing at the final path")
    p2 = os.path.join(tmp, "odd.h5")
    fixture(p2, "--rows", "10", "--name", 'odd, "quoted"\tname.svs')
    r = run("query", "--format", "csv", "--select", "slide,x", p2)
    rows = list(csv.reader(io.StringIO(r.stdout)))
    check(rows[1][0] == 'odd, "quoted"\tname.svs', f"csv quoting: {rows[1]!r}")
    r = run("query", "--format", "tsv", "--select", "slide,x", p2)
    check(r.stdout.splitlines()[1].count("\t") == 1, "tsv: tabs in values folded")


def main():
    # one query process per expression (about 0.2 s each under ASan);
    # fuzz/fuzz_where covers the parser itself. SP_STORE_EXPRS=1000 for a
    # deeper run by hand.
    n_expr = int(os.environ.get("SP_STORE_EXPRS", "150"))
    tmp = tempfile.mkdtemp(prefix="sp-store-")
    try:
        full = os.path.join(tmp, "full.h5")
        bare = os.path.join(tmp, "bare.h5")
        fixture(full, "--rows", "30000", "--seed", "3")
        fixture(bare, "--rows", "3000", "--seed", "4", "--no-optional")
        zero = os.path.join(tmp, "zero.h5")
        fixture(zero, "--rows", "0")
        check_contents(full, bare)
        check_snippet(full, tmp)
        check_drift(full, "Slide file")
        check_drift(bare, "Slide file")
        check_drift(zero, "Slide file")
        r = run("query", "--count", "--format", "tsv", zero)
        check(r.returncode == 0 and r.stdout.splitlines()[1] == "fixture.svs\t0", "empty table")
        check_random_expressions(full, n_expr)
        check_order_stats(full)
        check_rejections(full, tmp)
        check_usage(full)
        check_cohort(tmp, full)
        check_atomic(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
