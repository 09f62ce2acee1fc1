#!/usr/bin/python3
"""Corrupt slides: slidepipe's readers against OpenSlide's on damaged
copies of the real test slides (tests/corrupt_slides.py makes them, the
same ones for the same seed).

For every mutant and every level, OpenSlide (openslide-python, a fresh
handle per level, premultiplied ARGB composited over white as ingest
does) and tests/read_dump (sp_reader with default flags: the direct JPEG
path where the slide has one) read the whole level. Per level:
  both succeed with identical bytes, or both fail      -> agreement;
  slidepipe succeeds with other bytes                  -> silent difference;
  slidepipe succeeds where OpenSlide fails             -> silent success;
  slidepipe fails where OpenSlide succeeds             -> stricter;
all but agreement fail the test. slidepipe's error must be one line naming
the file; a crash or a sanitizer report fails too. `slidepipe run` on a
subset: exit 0, or non-zero with one line naming the file on stderr, never
a signal, and no OUT.dzi / OUT.h5 left on failure. The broken slides of
the test data (unreadable.svs, unopenable.tiff) go through the same checks.

  test_corrupt.py [--count N] [--seed S] [--runs K] [--keep DIR] [-v]"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corrupt_slides import crafted, make, pyramids  # noqa: E402
from sptest import DATA, check, finish  # noqa: E402

MAX_SIDE = 8192  # levels are read whole up to this size (all the real ones)
# but the TCGA slide's JPEG 2000 levels (read through OpenSlide on both
# sides) only in their top-left corner: whole, they take 13 s a mutant
SIDE = {"tcga-cr-7395-01a-01-ts1.svs": 1024}


def unstable(src, level):
    """OpenSlide 3.4.1 with Debian's libtiff 4.5 returns unstable pixels
    for boxes.tiff levels 2-3 (deflate tiles reaching past a small level,
    see test_ingest.c): two fresh handles give different bytes, so there
    is no reference. Both sides read them through OpenSlide."""
    return src == "boxes.tiff" and level >= 2


# ---- the OpenSlide side, in a worker process (a crash inside OpenSlide
# ---- must not take the test down with it)

def reference_level(path, level, outfile, max_side=MAX_SIDE):
    """'ok W H' after writing RGB to outfile, or 'error MSG'."""
    import openslide
    import openslide.lowlevel as low
    try:
        s = openslide.OpenSlide(path)
    except Exception as e:  # noqa: BLE001 (any open failure is a failure)
        return f"error open: {e}"
    try:
        if level >= s.level_count:
            return "error no such level"
        lw, lh = s.level_dimensions[level]
        w, h = min(lw, max_side), min(lh, max_side)
        argb = np.zeros((h, w), dtype=np.uint32)
        low._read_region(s._osr, argb.ctypes.data_as(
            ctypes.POINTER(ctypes.c_uint32)), 0, 0, level, w, h)
        bgra = argb.view(np.uint8).reshape(h, w, 4)  # little-endian ARGB
        rgb = np.ascontiguousarray(bgra[..., 2::-1])
        a = bgra[..., 3]
        if (a != 255).any():
            # ingest's compositing of premultiplied ARGB over white
            t = (255 * (255 - a.astype(np.uint32)) + 127) // 255
            rgb = np.minimum(rgb + t[..., None], 255).astype(np.uint8)
        with open(outfile, "wb") as f:
            f.write(rgb.tobytes())
        return f"ok {w} {h}"
    except Exception as e:  # noqa: BLE001
        return f"error {e}"
    finally:
        s.close()


def worker():
    """Requests on stdin: 'PATH\\tOUTDIR\\tMAX_SIDE'; one JSON line each."""
    import openslide
    for line in sys.stdin:
        path, outdir, side = line.rstrip("\n").split("\t")
        res = {}
        try:
            n = openslide.OpenSlide(path).level_count
        except Exception as e:  # noqa: BLE001
            res["open"] = str(e)
            n = 0
        for lv in range(n):
            res[str(lv)] = reference_level(
                path, lv, os.path.join(outdir, f"os-{lv}.rgb"), int(side))
        print(json.dumps(res), flush=True)


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class Reference:
    """The worker process; restarted when OpenSlide kills it."""

    def __init__(self):
        self.p = None

    def ask(self, path, outdir, side):
        if self.p is None or self.p.poll() is not None:
            self.p = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.p.stdin.write(f"{path}\t{outdir}\t{side}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            return {"crash": f"OpenSlide worker died ({self.p.returncode})"}
        return json.loads(line)

    def close(self):
        if self.p and self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait()


# ---- slidepipe's side

def slidepipe_levels(dump, path, outdir, side, piece=None):
    cmd = [dump, path, outdir, "--max-side", str(side)]
    if piece:
        cmd += ["--piece", str(piece[0]), str(piece[1])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    res = {"rc": r.returncode, "stderr": r.stderr}
    for line in r.stdout.splitlines():
        f = line.split(" ", 2)
        if f[0] == "open":
            res["open"] = line[len("open error "):]
        elif f[0] == "level":
            res[f[1]] = f[2]
        elif f[0] == "levels":
            res["direct"] = line.endswith("direct 1")
    return res


def sanitizer_report(text):
    return any(k in text for k in ("Sanitizer", "runtime error:",
                                   "LeakSanitizer"))


class Counts:
    def __init__(self):
        self.mutants = self.levels = self.clean_errors = self.agree = 0
        self.silent_diff = self.silent_success = self.stricter = 0
        self.unstable = self.crashes = self.os_crashes = 0


def compare(name, src, path, ref, sp, tmp, counts, verbose, tag=""):
    what = f"{name}{tag}"
    if not check(sp["rc"] == 0 and not sanitizer_report(sp["stderr"]),
                 f"{what}: read_dump crashed or reported (rc {sp['rc']}): "
                 f"{sp['stderr'][-2000:]}"):
        counts.crashes += 1
        return
    # nothing prints from library code (libtiff's handlers included)
    check(sp["stderr"] == "", f"{what}: the readers printed: "
          f"{sp['stderr'][-500:]!r}")
    if "crash" in ref:
        counts.os_crashes += 1
        print(f"note: {what}: {ref['crash']}", file=sys.stderr)
    levels = sorted({k for k in list(ref) + list(sp) if k.isdigit()}, key=int)
    if "open" in sp and not levels:
        levels = ["0"]
    for lv in levels:
        counts.levels += 1
        r = ref.get(lv, "error " + ref.get("open", ref.get("crash", "?")))
        s = sp.get(lv, "error " + sp.get("open", "?"))
        if unstable(src, int(lv)):
            counts.unstable += 1
            continue
        r_ok, s_ok = r.startswith("ok"), s.startswith("ok")
        if verbose:
            print(f"  {what} level {lv}: openslide {r[:70]!r} | "
                  f"slidepipe {s[:90]!r}")
        if not s_ok:
            msg = s[len("error "):]
            check("\n" not in msg and path in msg,
                  f"{what} level {lv}: error names the file: {msg!r}")
        if r_ok and s_ok:
            same = r == s and same_file(os.path.join(tmp, f"os-{lv}.rgb"),
                                        os.path.join(tmp, f"level-{lv}.rgb"))
            if check(same, f"{what} level {lv}: slidepipe's pixels differ "
                     "from OpenSlide's (silent wrong pixels)"):
                counts.agree += 1
            else:
                counts.silent_diff += 1
        elif not r_ok and not s_ok:
            counts.agree += 1
            counts.clean_errors += 1
        elif s_ok:
            counts.silent_success += 1
            check(False, f"{what} level {lv}: slidepipe read it, OpenSlide "
                  f"fails: {r}")
        else:
            counts.stricter += 1
            check(False, f"{what} level {lv}: slidepipe fails where "
                  f"OpenSlide reads it: {s}")


def check_run(binary, name, path, tmp):
    out = os.path.join(tmp, "out")
    r = subprocess.run([binary, "run", path, "-o", out, "--quiet",
                        "--threads", "2"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode >= 0 and not sanitizer_report(r.stderr),
          f"{name}: run crashed ({r.returncode}): {r.stderr[-2000:]}")
    if r.returncode == 0:
        check(r.stderr == "", f"{name}: run prints nothing: {r.stderr!r}")
    else:
        lines = r.stderr.strip().splitlines()
        check(len(lines) == 1 and path in lines[0],
              f"{name}: run fails with one line naming the file: {lines}")
        for ext in (".dzi", ".h5", ".json"):
            check(not os.path.exists(out + ext),
                  f"{name}: failed run leaves no {out + ext}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return r.returncode == 0


def check_tiff_write_error(binary, root):
    """A pyramidal TIFF that cannot be written (the file size limit hit
    while libtiff writes it): one line on stderr that quotes libtiff's
    cause, nothing printed by libtiff itself, no output left."""
    import resource
    import signal
    from corrupt_slides import TILE_BYTE_COUNTS, Tiff
    slide = os.path.join(DATA, "CMU-1-Small-Region.svs")
    d = os.path.join(root, "tiffwrite")
    os.makedirs(d)
    r = subprocess.run([binary, "tile", slide, "-o", os.path.join(d, "a"),
                        "--container", "tiff", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    if not check(r.returncode == 0, f"tile --container tiff: {r.stderr}"):
        return
    with open(os.path.join(d, "a.tiff"), "rb") as f:
        t = Tiff(f.read())
    # the spool holds exactly the tiles; the TIFF needs more than that
    limit = sum(sum(t.array(tags, TILE_BYTE_COUNTS) or [])
                for _, _, tags in t.ifds)

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = os.path.join(d, "b")
    r = subprocess.run([binary, "tile", slide, "-o", out, "--container",
                        "tiff", "--quiet"], capture_output=True, text=True,
                       timeout=300, preexec_fn=small_files)
    lines = r.stderr.strip().splitlines()
    check(r.returncode not in (0,) and r.returncode > 0,
          f"tile into a too-small file fails cleanly: {r.returncode}")
    check(len(lines) == 1 and "b.tiff" in lines[0] and
          "Write error" in lines[0],
          f"one line naming the file and libtiff's cause: {lines}")
    check(not os.path.exists(out + ".tiff") and
          not os.path.exists(out + ".json"),
          "nothing left at the output's name")
    check(sorted(os.listdir(d)) == ["a.json", "a.tiff"],
          f"no temporary left: {sorted(os.listdir(d))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--runs", type=int, default=6,
                    help="mutants also given to `slidepipe run`")
    ap.add_argument("--keep", help="write the mutants here and keep them")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.worker:
        worker()
        return 0
    dump = os.environ.get("SLIDEPIPE_READ_DUMP") or os.path.join(
        os.environ.get("SLIDEPIPE_BUILD", "build"), "tests", "read_dump")
    binary = os.environ.get("SLIDEPIPE_BIN") or os.path.join(
        os.environ.get("SLIDEPIPE_BUILD", "build"), "cli", "slidepipe")
    root = tempfile.mkdtemp(prefix="sp-corrupt-")
    mdir = a.keep or os.path.join(root, "mutants")
    os.makedirs(mdir, exist_ok=True)
    sdir = os.path.join(root, "sources")
    os.makedirs(sdir)
    extra = pyramids(DATA, sdir)
    check(extra or not shutil.which("vips"), "vips made the pyramids")
    mutants = (make(DATA, mdir, a.count, a.seed, extra) +
               crafted(DATA, mdir, [p for p, _ in extra]))
    for f in ("unreadable.svs", "unopenable.tiff"):
        if os.path.exists(os.path.join(DATA, f)):
            mutants.append((os.path.join(DATA, f), f, "testdata"))
    counts = Counts()
    ref = Reference()
    runs_done = 0
    try:
        for i, (path, src, kind) in enumerate(mutants):
            name = os.path.basename(path)
            tmp = os.path.join(root, f"w{i}")
            os.makedirs(tmp)
            counts.mutants += 1
            # OpenSlide and slidepipe side by side (two cores)
            box = {}
            side = SIDE.get(src, MAX_SIDE)
            t = threading.Thread(target=lambda: box.update(
                r=ref.ask(path, tmp, side)))
            t.start()
            sp = slidepipe_levels(dump, path, tmp, side)
            t.join()
            compare(name, src, path, box["r"], sp, tmp, counts, a.verbose)
            # the pipeline's way of reading: bands and boxes that cut
            # native tiles (level 0: whole pixels everywhere)
            if sp.get("direct") and i % 3 == 0:
                for lv in range(8):
                    p = os.path.join(tmp, f"level-{lv}.rgb")
                    if os.path.exists(p):
                        os.remove(p)
                sp = slidepipe_levels(dump, path, tmp, side,
                                      piece=(397, 171))
                sp = {k: v for k, v in sp.items() if k in ("rc", "stderr",
                      "open", "direct", "0")}
                r0 = {k: v for k, v in box["r"].items() if not k.isdigit()
                      or k == "0"}
                compare(name, src, path, r0, sp, tmp, counts, a.verbose,
                        tag=" (pieces)")
            shutil.rmtree(tmp, ignore_errors=True)
            if src not in SIDE and (
                    kind in ("testdata", "desc_no_equals") or
                    (runs_done < a.runs and i % 7 == 0)):
                os.makedirs(tmp)
                check_run(binary, name, path, tmp)
                runs_done += 1
                shutil.rmtree(tmp, ignore_errors=True)
        check_tiff_write_error(binary, root)
    finally:
        ref.close()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    c = counts
    print(f"mutants tried {c.mutants}, levels {c.levels}: clean errors "
          f"{c.clean_errors}, agreements {c.agree}, silent differences "
          f"{c.silent_diff}, silent successes {c.silent_success}, stricter "
          f"{c.stricter}, unstable in OpenSlide {c.unstable}, crashes "
          f"{c.crashes} (OpenSlide worker deaths {c.os_crashes}); "
          f"`run` on {runs_done}")
    check(c.silent_diff == 0, "no silent differences")
    check(c.mutants >= min(a.count, 20), "mutants were made")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
