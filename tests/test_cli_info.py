#!/usr/bin/python3
"""`slidepipe info`: every field against openslide-python, every broken input
of the test data, usage errors, and JSON that stays valid for odd values."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import openslide
from sptest import DATA, check, finish

BIN = os.environ["SLIDEPIPE_BIN"]

READABLE = ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs",
            "boxes.tiff", "small.svs"]
# file -> words the one-line error must contain (OpenSlide's own cause)
BROKEN = {
    "unopenable.tiff": "Unsupported TIFF compression: 52479",
    "unreadable.svs": "Bogus marker length",
    "MANIFEST.tsv": "not a slide format",
}



def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          errors="replace", timeout=120)


def close(a, b):
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1, abs(b))


def expect_fields(obj, path):
    s = openslide.OpenSlide(path)
    p = s.properties
    check(obj["ok"] is True, f"{path}: ok")
    check(obj["vendor"] == p["openslide.vendor"], f"{path}: vendor")
    check([obj["width"], obj["height"]] == list(s.dimensions), f"{path}: size")
    check(obj["level_count"] == s.level_count, f"{path}: level count")
    for i, lv in enumerate(obj["levels"]):
        check([lv["width"], lv["height"]] == list(s.level_dimensions[i]),
              f"{path}: level {i} size")
        check(close(lv["downsample"], s.level_downsamples[i]),
              f"{path}: level {i} downsample")
        tw = p.get(f"openslide.level[{i}].tile-width")
        check(lv["tile_width"] == (int(tw) if tw else None),
              f"{path}: level {i} tile width")
    for key, prop in (("mpp_x", openslide.PROPERTY_NAME_MPP_X),
                      ("mpp_y", openslide.PROPERTY_NAME_MPP_Y),
                      ("objective_power", openslide.PROPERTY_NAME_OBJECTIVE_POWER)):
        if prop in p:
            check(close(obj[key], float(p[prop])), f"{path}: {key}")
        else:
            check(obj[key] is None, f"{path}: absent {key} must be null")
    check(obj["quickhash"] == p.get("openslide.quickhash-1"), f"{path}: quickhash")
    check(obj["properties"] == dict(p), f"{path}: all properties")
    assoc = {a["name"]: (a["width"], a["height"]) for a in obj["associated_images"]}
    check(assoc == {k: v.size for k, v in s.associated_images.items()},
          f"{path}: associated images")
    s.close()


# --version's libraries -> the soname each is loaded as (ldd), whose Debian
# package gives an independent version (dpkg); compile-time ones are
# checked against pkg-config (the headers built against)
SONAMES = {"OpenSlide": "libopenslide.so", "libtiff": "libtiff.so",
           "libjpeg-turbo": "libjpeg.so", "GLib": "libglib-2.0.so",
           "libpng": "libpng16.so", "libwebp": "libwebp.so",
           "json-c": "libjson-c.so", "HDF5": "libhdf5", "zlib": "libz.so",
           "libmicrohttpd": "libmicrohttpd.so", "DCMTK": "libdcmdata.so",
           "libvips": "libvips.so"}
PKGCONFIG = {"libjpeg-turbo": "libjpeg"}
# compile-time versions without a working .pc (Debian's dcmtk.pc names a
# libsndfile .pc that is not installed): the package of a header
HEADER = {"DCMTK": "/usr/include/dcmtk/dcmdata/dcuid.h"}


def dpkg_upstream(path):
    """Upstream version of the Debian package holding `path`: 1:1.2.13.dfsg-1
    -> 1.2.13, 1.10.8+repack1-1 -> 1.10.8."""
    for p in (path, "/usr" + path if not path.startswith("/usr/") else path[4:]):
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            pkg = r.stdout.splitlines()[0].rsplit(": ", 1)[0]  # zlib1g:amd64
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                               capture_output=True, text=True).stdout
            v = v.split(":", 1)[-1].split("-")[0]
            for cut in ("+", "~", ".dfsg"):
                v = v.split(cut)[0]
            return v
    return None


def check_versions():
    r = run("--version")
    check(r.returncode == 0 and r.stderr == "", f"--version: exit {r.returncode}")
    lines = r.stdout.splitlines()
    check(lines and lines[0].startswith("slidepipe "), "--version: first line")
    r = run("--version", "--json")
    check(r.returncode == 0, "--version --json")
    obj = json.loads(r.stdout)
    libs = {lib["name"]: lib for lib in obj["libraries"]}
    check(obj["slidepipe"] == lines[0].split()[1], "--version --json: slidepipe")
    check(set(libs) == set(SONAMES), f"--version libraries: {sorted(libs)}")
    # the human lines say the same, one line per library
    for line, lib in zip(lines[1:], obj["libraries"]):
        check(line.split()[:2] == [lib["name"], lib["version"]],
              f"--version line {line!r}")
    check(len(lines) == 1 + len(libs), "--version: one line per library")
    ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
    loaded = {}
    for line in ldd.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            loaded[parts[0]] = parts[2]
    for name, lib in libs.items():
        if lib["read"] == "compile time" and name in HEADER:
            want = dpkg_upstream(HEADER[name])
        elif lib["read"] == "compile time":
            want = subprocess.run(["pkg-config", "--modversion", PKGCONFIG[name]],
                                  capture_output=True, text=True).stdout.strip()
        else:
            check(lib["read"] == "run time", f"{name}: read {lib['read']}")
            path = next((p for so, p in loaded.items()
                         if so.startswith(SONAMES[name])), None)
            want = dpkg_upstream(path) if path else None
        check(lib["version"] == want,
              f"--version {name} {lib['version']}, its package says {want}")
    # and the Python bindings' own view of the same libraries
    import h5py
    check(libs["OpenSlide"]["version"] == openslide.__library_version__,
          "OpenSlide version against openslide-python")
    check(libs["HDF5"]["version"] == h5py.version.hdf5_version,
          "HDF5 version against h5py")
    r = run("--version", "--bogus")
    check(r.returncode == 2, "--version --bogus: usage error")
    # OpenMP's idle threads sleep: the spin count libgomp itself reports
    # (OMP_DISPLAY_ENV=verbose; 'PASSIVE' alone is also what it shows when
    # the variable is unset) is 0 in the process that runs a parallel
    # command, unless the environment says otherwise; a quick command
    # (info) is not started again
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_DISPLAY_ENV"] = "verbose"
    slide = os.path.join(DATA, READABLE[0])
    # nor one under a tool that preloads a library (valgrind's core does,
    # and refuses the exec): a harmless library stands in for it here
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    for args, given, want, spin, starts, pre in (
            (("tile", "--help"), None, "PASSIVE", "0", 2, None),
            (("tile", "--help"), "ACTIVE", "ACTIVE", "30000000000", 1, None),
            (("info", slide), None, "PASSIVE", "300000", 1, None),
            (("tile", "--help"), None, "PASSIVE", "300000", 1, libm)):
        e = dict(env, OMP_WAIT_POLICY=given) if given else dict(env)
        e.pop("LD_PRELOAD", None)
        if pre:
            e["LD_PRELOAD"] = pre
            # an ASan build would refuse a library loaded before its
            # runtime; this one is harmless
            e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") +
                                 ":verify_asan_link_order=0").lstrip(":")
        r = subprocess.run([BIN, *args], env=e, capture_output=True,
                           text=True, timeout=60)
        pol = re.findall(r"OMP_WAIT_POLICY = '(\w+)'", r.stderr)
        spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", r.stderr)
        what = f"{args[0]}, OMP_WAIT_POLICY {given}, LD_PRELOAD {pre}"
        check(r.returncode == 0, f"{what}: exit {r.returncode}")
        check(len(pol) == starts and len(spins) == starts,
              f"{what}: libgomp started {len(pol)} times, want {starts}")
        check(pol[-1:] == [want] and spins[-1:] == [spin],
              f"{what}: policy {pol}, spin count {spins}; want {want}, {spin}")


def main():
    tmp = tempfile.mkdtemp(prefix="sp-info-")
    try:
        # every readable slide, one at a time, against openslide-python
        for name in READABLE:
            path = os.path.join(DATA, name)
            r = run("info", "--json", path)
            check(r.returncode == 0, f"{name}: exit {r.returncode}: {r.stderr}")
            check(r.stderr == "", f"{name}: stderr must be empty: {r.stderr!r}")
            lines = r.stdout.splitlines()
            check(len(lines) == 1, f"{name}: one JSON line")
            expect_fields(json.loads(lines[0]), path)
            # human output names the file and the size
            h = run("info", path)
            w, hh = openslide.OpenSlide(path).dimensions
            check(h.returncode == 0 and f"{w} x {hh} px" in h.stdout,
                  f"{name}: human output")

        # broken inputs: one line naming the file and the cause, exit 1
        empty = os.path.join(tmp, "empty.svs")
        open(empty, "wb").close()
        trunc = os.path.join(tmp, "truncated.svs")
        with open(os.path.join(DATA, "CMU-1-Small-Region.svs"), "rb") as f:
            blob = f.read()
        with open(trunc, "wb") as f:
            f.write(blob[:len(blob) // 3])
        cases = {os.path.join(DATA, k): v for k, v in BROKEN.items()}
        cases[os.path.join(DATA, "no-such-slide.svs")] = "No such file or directory"
        # a folder without a DICOM series in it (test_dicom_read.py has
        # the folders that are slides)
        cases[DATA] = "is a directory"
        cases[empty] = "empty file"
        cases[trunc] = ""  # OpenSlide's cause varies with the cut
        for path, cause in cases.items():
            r = run("info", path)
            err = r.stderr.splitlines()
            check(r.returncode == 1, f"{path}: exit {r.returncode}, want 1")
            check(len(err) == 1, f"{path}: one stderr line, got {err!r}")
            check(err and path in err[0] and cause in err[0],
                  f"{path}: message {err!r} should name file and '{cause}'")
            check(r.stdout == "", f"{path}: nothing on stdout")

        # several slides: the good ones still reported, exit 1
        good = [os.path.join(DATA, n) for n in ("CMU-1-Small-Region.svs", "boxes.tiff")]
        bad = os.path.join(DATA, "unopenable.tiff")
        r = run("info", "--json", good[0], bad, good[1])
        check(r.returncode == 1, "mixed: exit 1")
        objs = [json.loads(line) for line in r.stdout.splitlines()]
        check([o["ok"] for o in objs] == [True, False, True], "mixed: three records")
        check(objs[1]["file"] == bad and "52479" in objs[1]["error"], "mixed: error record")
        check(len(r.stderr.splitlines()) == 1, "mixed: one stderr line")

        # odd property values stay valid JSON: quotes, backslashes, control
        # characters, invalid UTF-8 in an Aperio description
        odd = os.path.join(tmp, "odd.svs")
        shutil.copy(os.path.join(DATA, "small.svs"), odd)
        desc = b"Aperio Image Library v12 \"q\"\x01\x7f\\x\xff\xfe|AppMag = 20|Odd = tab\there \xc3\xa9|MPP = 0.499"
        # tiffset takes the value as an argv string: pass raw bytes
        subprocess.run([b"tiffset", b"-s", b"270", desc, odd.encode()], check=True,
                       capture_output=True)
        r = subprocess.run([BIN, "info", "--json", odd], capture_output=True)
        check(r.returncode == 0, f"odd: exit {r.returncode} {r.stderr!r}")
        try:
            obj = json.loads(r.stdout.decode("utf-8"))
            check(obj["properties"].get("aperio.Odd", "").startswith("tab\there"),
                  "odd: property value round-trips")
            check('"q"' in obj["properties"]["openslide.comment"], "odd: quotes kept")
        except (ValueError, UnicodeDecodeError) as e:
            check(False, f"odd: invalid JSON: {e}")

        # usage
        r = run("--help")
        check(r.returncode == 0 and "info" in r.stdout, "top-level --help")
        r = run("info", "--help")
        check(r.returncode == 0 and "--json" in r.stdout, "info --help")
        check_versions()
        for args in (["info"], ["info", "--bogus", good[0]], ["nosuchcommand"], []):
            r = run(*args)
            check(r.returncode == 2 and len(r.stderr.splitlines()) >= 1,
                  f"usage error {args}: exit {r.returncode}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
