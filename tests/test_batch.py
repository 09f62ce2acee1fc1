#!/usr/bin/python3
"""`slidepipe batch`: many slides, failures isolated, resumable.

- all of the test data plus generated slides (duplicates names, a damaged
  .svs, an empty file, fake MIRAX and Hamamatsu sets, hidden files): the
  good slides are done and identical to a standalone `slidepipe run`, every
  broken one is reported with its cause, the not-slides are listed, the
  exit status says so, the summaries list everything, cohort.h5 links the
  done slides (checked with h5py);
- rerun: nothing redone (inodes and mtimes unchanged); new options redo;
  --force redoes;
- SIGKILL at several points, rerun after each: in the end every output is
  complete and equal to a clean run, no folder is ever left at a final
  path without its done.json, completed slides are not rewritten;
- SIGINT: exit 130, nothing partial, a rerun resumes;
- a slide cut short while it is being read: that slide fails, exit 1;
- manifests: ids, relative paths, per-slide options, bad rows;
- read-only output (a read-only tmpfs when `mount` works, else a path
  under a regular file) and a full file system (a tiny tmpfs when `mount`
  works, and always an RLIMIT_FSIZE limit): clear errors, nothing done."""
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from sptest import (DATA, check, files_of, finish, leaks, slide_secrets,
                    stats_of, synth_slide)

BIN = os.environ["SLIDEPIPE_BIN"]

# broken files of the test data -> words their error must contain
BROKEN = {
    "unopenable.tiff": "Unsupported TIFF compression: 52479",
    "unreadable.svs": "Bogus marker length",
}
NOT_SLIDES = ["MANIFEST.tsv"]
# images libvips opens, found in a folder, under the slide size rule
SMALL_IMAGES = {"smalltif.tif": "image 640x480 is below the slide size rule"}
GOOD = ["CMU-1-Small-Region", "boxes", "small", "tcga-cr-7395-01a-01-ts1"]
OUTPUTS = ["slide.dzi", "slide_files", "slide.json", "slide.h5", "done.json"]



def run(*args, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          errors="replace", **kw)


def synth(path, w, h, seed):
    synth_slide(path, "--width", str(w), "--height", str(h),
                "--seed", str(seed), "--quiet", "--threads", "1",
                check=True, timeout=120)


def summary(out):
    with open(os.path.join(out, "batch-summary.json")) as f:
        js = json.load(f)
    with open(os.path.join(out, "batch-summary.tsv")) as f:
        rows = [l.rstrip("\n").split("\t") for l in f]
    return js, rows


def by_path(js):
    """summary entries by path: below the input folder (or the file name)"""
    return {s["path"]: s for s in js["slides"]}


def h5_arrays(path):
    with h5py.File(path, "r") as f:
        return f["coords"][:], f["features"][:]


def same_as_reference(out_dir, ref_base, what):
    """OUT/<id>/slide.* against a standalone run written to ref_base.*"""
    tiles = files_of(os.path.join(out_dir, "slide_files"))
    ref_tiles = files_of(ref_base + "_files")
    check(len(tiles) > 0 and tiles == ref_tiles,
          f"{what}: tiles identical to a standalone run "
          f"({len(tiles)} vs {len(ref_tiles)})")
    with open(os.path.join(out_dir, "slide.dzi"), "rb") as a, \
            open(ref_base + ".dzi", "rb") as b:
        check(a.read() == b.read(), f"{what}: .dzi identical")
    c1, f1 = h5_arrays(os.path.join(out_dir, "slide.h5"))
    c2, f2 = h5_arrays(ref_base + ".h5")
    check(np.array_equal(c1, c2) and np.array_equal(f1, f2, equal_nan=True),
          f"{what}: HDF5 coords and features identical")


def no_partials(out, what, killed=False):
    """Final folders only hold complete results; no temporaries remain
    (after a SIGKILL, hidden temporaries may: the next run removes them)."""
    for name in os.listdir(out):
        p = os.path.join(out, name)
        if killed and name.startswith("."):
            continue
        check(".tmp-" not in name, f"{what}: temporary {name} left behind")
        if os.path.isdir(p):
            check(os.path.exists(os.path.join(p, "done.json")),
                  f"{what}: {name}/ exists without done.json")
            for o in OUTPUTS:
                check(os.path.exists(os.path.join(p, o)),
                      f"{what}: {name}/{o} missing")


def events_until(p, stop):
    """Read --log-json events from p.stderr until stop(event) is true."""
    for line in p.stderr:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if stop(ev):
            return True
    return False


def can_mount(tmp):
    d = os.path.join(tmp, "mnt-probe")
    os.makedirs(d)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                       capture_output=True)
    if r.returncode != 0:
        return False
    subprocess.run(["umount", d])
    return True


# ---------------------------------------------------------------------------

def test_full(tmp):
    gen = os.path.join(tmp, "gen")
    os.makedirs(os.path.join(gen, "sub"))
    synth(os.path.join(gen, "s1.svs"), 2000, 1500, 1)
    synth(os.path.join(gen, "s2.svs"), 1500, 1000, 2)
    synth(os.path.join(gen, "sub", "s1.svs"), 1200, 900, 3)  # same name
    with open(os.path.join(gen, "s1.svs"), "rb") as f:
        blob = f.read()
    with open(os.path.join(gen, "damaged.svs"), "wb") as f:
        f.write(blob[:len(blob) // 3])
    open(os.path.join(gen, "empty.svs"), "wb").close()
    with open(os.path.join(gen, "notes.txt"), "w") as f:
        f.write("not a slide\n")
    with open(os.path.join(gen, ".hidden.svs"), "wb") as f:
        f.write(blob)
    # MIRAX: X.mrxs is the slide, X/ its data (here both fake)
    os.makedirs(os.path.join(gen, "mx"))
    with open(os.path.join(gen, "mx.mrxs"), "w") as f:
        f.write("fake\n")
    for n in ("Slidedat.ini", "Data0000.dat"):
        with open(os.path.join(gen, "mx", n), "w") as f:
            f.write("x\n")
    # Hamamatsu: the .vms names its jpegs; they are not slides of their own
    with open(os.path.join(gen, "hm.vms"), "w") as f:
        f.write("[Virtual Microscope Specimen]\nNoLayers=1\n"
                "ImageFile=hm.jpg\nMapFile=hm_map.jpg\n")
    for n in ("hm.jpg", "hm_map.jpg"):
        with open(os.path.join(gen, n), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not really")

    out = os.path.join(tmp, "out")
    r = run("batch", DATA, gen, "-o", out, "--threads", "2")
    check(r.returncode == 1,
          f"full batch: exit {r.returncode}, want 1 (failed inputs): {r.stderr}")
    check("failed" in r.stderr and "batch-summary.tsv" in r.stderr,
          "full batch: stderr says slides failed and where the summary is")
    js, rows = summary(out)
    sl = by_path(js)
    p = lambda *a: os.path.join(*a)
    ids = {}
    for name in GOOD:
        ext = ".tiff" if name == "boxes" else ".svs"
        s = sl.get(p(name + ext))
        if check(s is not None and s["status"] == "done",
                 f"{name}: done ({s and s['status']}: {s and s['error']})"):
            ids[name] = s["slide"]
    for name, cause in BROKEN.items():
        s = sl.get(p(name))
        check(s is not None and s["status"] == "failed" and
              cause in (s["error"] or "") and s["stage"],
              f"{name}: failed with '{cause}' and a stage: {s}")
    for name in NOT_SLIDES:
        s = sl.get(p(name))
        check(s is not None and s["status"] == "not-a-slide" and
              "not a slide format" in (s["error"] or ""),
              f"{name}: listed as not-a-slide with the cause: {s}")
    for name, cause in SMALL_IMAGES.items():
        s = sl.get(p(name))
        check(s is not None and s["status"] == "not-a-slide" and
              cause in (s["error"] or ""),
              f"{name}: skipped under the slide size rule: {s}")
    # the DICOM series of two files: one slide (the first file), done
    check(sl.get(p("dicom-boxes/boxes_0.dcm"), {}).get("status") == "done" and
          p("dicom-boxes/boxes_1.dcm") not in sl,
          "dicom-boxes: one slide for the series, done")
    check(sl.get(p("damaged.svs"), {}).get("status") == "failed",
          "damaged .svs in a directory: a failure, not 'not a slide'")
    check("empty file" in (sl.get(p("empty.svs"), {}).get("error") or ""),
          "empty .svs: failed, 'empty file'")
    check(sl.get(p("mx.mrxs"), {}).get("status") == "failed",
          "fake .mrxs: reported as a (failed) slide")
    check(sl.get(p("notes.txt"), {}).get("status") == "not-a-slide",
          "notes.txt: not-a-slide")
    for owned in ("mx/Slidedat.ini", "mx/Data0000.dat", "hm.jpg", "hm_map.jpg",
                  ".hidden.svs"):
        check(owned not in sl,
              f"{owned}: part of a multi-file slide / hidden: not listed")
    check("hm.vms" in sl, "hm.vms: listed once")
    a, b = sl.get(p("s1.svs")), sl.get(p("sub", "s1.svs"))
    check(a and b and a["status"] == b["status"] == "done" and
          {a["slide"], b["slide"]} == {"s1", "s1-2"},
          f"two s1.svs: ids s1 and s1-2 ({a and a['slide']}, {b and b['slide']})")
    # summary files agree and list everything
    check(rows[0] == ["slide", "path", "status", "seconds", "tiles",
                      "tissue_area_mm2", "stage", "error"], "TSV header")
    check(len(rows) - 1 == len(js["slides"]) == len(sl),
          "TSV and JSON list the same entries")
    check(js["finished"] is True and js["counts"]["failed"] ==
          sum(1 for s in js["slides"] if s["status"] == "failed"),
          "JSON: finished, counts")
    for s in js["slides"]:
        if s["status"] == "done":
            check(isinstance(s["tiles"], int) and s["tiles"] > 0 and
                  s["seconds"] > 0, f"{s['slide']}: tiles and seconds")
    cmu = sl[p("CMU-1-Small-Region.svs")]
    check(cmu["tissue_area_mm2"] and cmu["tissue_area_mm2"] > 0,
          "CMU: tissue area in the summary")
    check(sl[p("boxes.tiff")]["tissue_area_mm2"] is None,
          "boxes (no mpp): tissue area null, not 0")
    no_partials(out, "full batch")
    # done slides are what `slidepipe run` makes on its own
    ref = os.path.join(tmp, "ref")
    os.makedirs(ref)
    for name, root, rel in (("CMU-1-Small-Region", DATA,
                             "CMU-1-Small-Region.svs"),
                            ("s1-2", gen, "sub/s1.svs")):
        rr = run("run", p(root, rel), "-o", p(ref, name), "--quiet",
                 "--threads", "1")
        check(rr.returncode == 0, f"reference run {name}: {rr.stderr}")
        same_as_reference(p(out, sl[rel]["slide"]), p(ref, name), f"{name}")
    # done.json records what resume needs
    with open(p(out, ids["CMU-1-Small-Region"], "done.json")) as f:
        done = json.load(f)
    check(done["quickhash"] == cmu["quickhash"] and len(done["fingerprint"]) == 16
          and done["run"]["ok"] is True, "done.json: quickhash, fingerprint, run")
    # ...and names the final output, below OUTDIR, never the temporary
    # folder it was built in
    cid = ids["CMU-1-Small-Region"]
    check(done["run"]["output"] == f"{cid}/slide.dzi" and
          done["slide"] == done["run"]["slide"] == "CMU-1-Small-Region.svs"
          and done["paths"] == "relative",
          f"done.json: final output and slide as recorded: {done['run']}")
    with open(p(out, cid, "done.json")) as f:
        text = f.read()
    check(".tmp-" not in text and out not in text and DATA not in text,
          "done.json: no temporary folder, no OUTDIR or input folder")
    # the cohort links every done slide
    n_done = sum(1 for s in js["slides"] if s["status"] == "done")
    with h5py.File(p(out, "cohort.h5"), "r") as f:
        paths = sorted(x.decode() for x in f["slides/path"][:])
        rows_total = int(f["features"].shape[0])
    want = sorted(f"{s['slide']}/slide.h5" for s in js["slides"]
                  if s["status"] == "done")
    check(paths == want and len(paths) == n_done,
          f"cohort.h5 links the done slides: {paths}")
    check(rows_total == sum(h5py.File(p(out, x), "r")["features"].shape[0]
                            for x in want), "cohort rows = sum of slides")

    # rerun: nothing redone, same exit status
    before = stats_of(out)
    r2 = run("batch", DATA, gen, "-o", out, "--threads", "2")
    check(r2.returncode == 1, f"rerun: exit {r2.returncode}, want 1")
    js2, _ = summary(out)
    st2 = {s["path"]: s["status"] for s in js2["slides"]}
    check(all(st2[k] == "already-done" for k, s in sl.items()
              if s["status"] == "done"), "rerun: done slides already-done")
    check(all(st2[k] == "failed" for k, s in sl.items()
              if s["status"] == "failed"), "rerun: failed slides tried again")
    after = stats_of(out)
    kept = [k for k in before if "/" in k]  # inside slide folders
    check(kept and all(after.get(k) == before[k] for k in kept),
          "rerun: no slide file rewritten (inode, mtime)")
    # new options: everything would be redone (dry run writes nothing)
    r3 = run("batch", DATA, gen, "-o", out, "--quality", "90", "--dry-run")
    lines = [l for l in r3.stdout.splitlines() if l.startswith("CMU-1")]
    check(lines and " run " in lines[0], f"dry run with new options: {lines}")
    check(stats_of(out) == after, "dry run writes nothing")
    # --force redoes one slide set
    r4 = run("batch", p(DATA, "boxes.tiff"), "-o", out, "--force")
    check(r4.returncode == 0, f"--force: exit {r4.returncode}: {r4.stderr}")
    bx = p(ids["boxes"], "slide.h5")
    check(stats_of(out).get(bx) != after.get(bx), "--force rewrote the slide")


def test_kill(tmp):
    src = os.path.join(tmp, "ksrc")
    os.makedirs(src)
    sizes = [(3000, 2400), (2600, 2000), (2400, 1800), (2000, 1500),
             (1800, 1400), (1600, 1200), (1400, 1000)]
    for i, (w, h) in enumerate(sizes):
        synth(os.path.join(src, f"k{i}.svs"), w, h, 10 + i)
    ref = os.path.join(tmp, "kref")
    os.makedirs(ref)
    for i in range(len(sizes)):
        r = run("run", os.path.join(src, f"k{i}.svs"), "-o",
                os.path.join(ref, f"k{i}"), "--quiet", "--threads", "1")
        check(r.returncode == 0, f"reference k{i}: {r.stderr}")
    out = os.path.join(tmp, "kout")
    seen = {}  # done slide folder -> stats when first seen complete
    points = [("after planning", lambda e: e["event"] == "planned"),
              ("mid-slide", lambda e: e["event"] == "start"),
              ("after a slide", lambda e: e["event"] == "finish"),
              ("after two slides",
               lambda e, n=[0]: e["event"] == "finish" and
               (n.__setitem__(0, n[0] + 1) or n[0] == 2))]
    for what, stop in points:
        p = subprocess.Popen([BIN, "batch", src, "-o", out, "--threads", "2",
                              "--log-json"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        events_until(p, stop)
        p.kill()
        p.wait()
        p.stderr.close()
        time.sleep(0.05)
        no_partials(out, f"SIGKILL {what}", killed=True)
        for name in os.listdir(out):
            d = os.path.join(out, name)
            if os.path.isdir(d) and not name.startswith(".") and \
                    name not in seen:
                seen[name] = stats_of(d)
        print(f"SIGKILL {what}: {len(seen)} slides complete so far",
              file=sys.stderr)
    r = run("batch", src, "-o", out, "--threads", "2")
    check(r.returncode == 0, f"rerun after kills: exit {r.returncode}: {r.stderr}")
    js, _ = summary(out)
    check(all(s["status"] in ("done", "already-done") for s in js["slides"])
          and len(js["slides"]) == len(sizes), "after kills: every slide done")
    check(sum(s["status"] == "already-done" for s in js["slides"]) == len(seen),
          f"after kills: {len(seen)} slides completed earlier were skipped")
    check(len(seen) >= 1, f"kills left some completed slides ({len(seen)})")
    no_partials(out, "after kills")
    for name, st in seen.items():
        check(stats_of(os.path.join(out, name)) == st,
              f"{name}: completed before a kill, not rewritten")
    for i in range(len(sizes)):
        same_as_reference(os.path.join(out, f"k{i}"),
                          os.path.join(ref, f"k{i}"), f"k{i} after kills")
    with h5py.File(os.path.join(out, "cohort.h5"), "r") as f:
        check(len(f["slides/path"]) == len(sizes), "cohort after kills")

    # SIGINT: clean stop, exit 130, nothing partial, rerun resumes
    out2 = os.path.join(tmp, "kint")
    p = subprocess.Popen([BIN, "batch", src, "-o", out2, "--threads", "2",
                          "--log-json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    events_until(p, lambda e: e["event"] == "start")
    p.send_signal(signal.SIGINT)
    so, se = p.communicate(timeout=120)
    check(p.returncode == 130, f"SIGINT: exit {p.returncode}, want 130")
    js, _ = summary(out2)
    check(js["interrupted"] is True and
          any(s["status"] == "interrupted" for s in js["slides"]),
          "SIGINT: summary marks interrupted slides")
    no_partials(out2, "SIGINT")
    r = run("batch", src, "-o", out2, "--threads", "2")
    check(r.returncode == 0, f"rerun after SIGINT: {r.returncode} {r.stderr}")


def test_manifest(tmp):
    d = os.path.join(tmp, "man")
    os.makedirs(d)
    synth(os.path.join(d, "a.svs"), 1200, 900, 21)
    synth(os.path.join(d, "b.svs"), 1200, 900, 22)
    m = os.path.join(d, "slides.tsv")
    with open(m, "w") as f:
        f.write("path\tid\toptions\n# a comment\n\n"
                "a.svs\tcase-A\ttile-size=512 quality=90\n"
                f"{os.path.join(d, 'b.svs')}\n"
                f"{os.path.join(DATA, 'unreadable.svs')}\tbad\n"
                "missing.svs\n")
    out = os.path.join(tmp, "mout")
    r = run("batch", "--manifest", m, "-o", out, "--threads", "2")
    check(r.returncode == 1, f"manifest: exit {r.returncode}: {r.stderr}")
    js, _ = summary(out)
    st = {s["slide"]: s for s in js["slides"]}
    check(st.get("case-A", {}).get("status") == "done" and
          st.get("b", {}).get("status") == "done", f"manifest ids: {list(st)}")
    check("Bogus marker length" in (st.get("bad", {}).get("error") or ""),
          "manifest: unreadable slide failed with its cause")
    check("No such file" in (st.get("missing", {}).get("error") or ""),
          "manifest: missing file failed (explicit inputs are failures)")
    with open(os.path.join(out, "case-A", "slide.dzi")) as f:
        check('TileSize="512"' in f.read(), "per-slide tile-size applied")
    with open(os.path.join(out, "b", "slide.dzi")) as f:
        check('TileSize="254"' in f.read(), "others keep the default")
    for bad, words in (("a.svs\tx\tcolour=red\n", "line 1: unknown option"),
                       ("a.svs\tx\tquality=900\n", "line 1: option 'quality'"),
                       ("a.svs\tbad id\n", "line 1: slide id"),
                       ("a.svs\tsame\nb.svs\tsame\n", "also given")):
        with open(m, "w") as f:
            f.write(bad)
        r = run("batch", "--manifest", m, "-o", os.path.join(tmp, "mbad"))
        check(r.returncode == 2 and words in r.stderr,
              f"bad manifest {bad!r}: exit {r.returncode}, {r.stderr!r}")
    check(not os.path.exists(os.path.join(tmp, "mbad", "batch-summary.tsv")),
          "bad manifest: nothing written")
    r = run("batch", "-o", out)
    check(r.returncode == 2, "no inputs: usage error")
    r = run("batch", d)
    check(r.returncode == 2 and "-o" in r.stderr, "no -o: usage error")
    r = run("batch", d, "-o", out, "--quality", "0")
    check(r.returncode == 2, "bad --quality: usage error")


def test_unwritable(tmp, mount_ok):
    src = os.path.join(tmp, "wsrc")
    os.makedirs(src)
    synth(os.path.join(src, "w1.svs"), 2000, 1500, 31)
    synth(os.path.join(src, "w2.svs"), 1600, 1200, 32)

    def nothing_done(out, what):
        for root, _, files in os.walk(out):
            check("done.json" not in files, f"{what}: a done.json in {root}")
        if os.path.isdir(out):
            check(not os.path.exists(os.path.join(out, "cohort.h5")),
                  f"{what}: no cohort")

    # read-only output
    if mount_ok:
        ro = os.path.join(tmp, "ro")
        os.makedirs(ro)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", ro],
                       check=True)
        try:
            for out in (ro, os.path.join(ro, "sub")):
                r = run("batch", src, "-o", out)
                err = r.stderr.strip().splitlines()
                check(r.returncode == 3 and len(err) == 1 and
                      "Read-only file system" in err[0] and out in err[0],
                      f"read-only {out}: exit {r.returncode}, {err}")
        finally:
            subprocess.run(["umount", ro])
    blocker = os.path.join(tmp, "a-file")
    open(blocker, "w").close()
    r = run("batch", src, "-o", os.path.join(blocker, "out"))
    err = r.stderr.strip().splitlines()
    check(r.returncode == 3 and len(err) == 1 and "Not a directory" in err[0],
          f"output under a file: exit {r.returncode}, {err}")

    # full file system
    def full_case(out, what, **kw):
        r = run("batch", src, "-o", out, "--threads", "2", **kw)
        check(r.returncode == 3, f"{what}: exit {r.returncode}, want 3")
        js, _ = summary(out)
        for s in js["slides"]:
            check(s["status"] == "failed" and any(
                w in (s["error"] or "") for w in
                ("No space left on device", "File too large")),
                f"{what}: {s['slide']} failed with the cause: {s['error']}")
            check(".tmp-" not in (s["error"] or "") and
                  out not in (s["error"] or ""),
                  f"{what}: the error names the final file below OUTDIR: "
                  f"{s['error']}")
        nothing_done(out, what)
        for name in os.listdir(out):
            check(".tmp-" not in name, f"{what}: temporary {name} left")

    if mount_ok:
        full = os.path.join(tmp, "full")
        os.makedirs(full)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs",
                        full], check=True)
        try:
            full_case(os.path.join(full, "out"), "tiny tmpfs")
        finally:
            subprocess.run(["umount", full])
    limit = 96 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    full_case(os.path.join(tmp, "fsize"), "RLIMIT_FSIZE",
              preexec_fn=small_files)


def fill(d):
    """Fill the file system of folder d to the last byte."""
    with open(os.path.join(d, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    with open(os.path.join(d, "filler2"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0")
                f.flush()
        except OSError:
            pass


def test_disk_full(tmp, mount_ok):
    """OUTDIR on a file system with no byte left: the one error line says
    "No space left on device" and names OUTDIR (errno was once read after
    the probe file's unlink: "No such file or directory")."""
    src = os.path.join(tmp, "dfsrc")
    os.makedirs(src)
    synth(os.path.join(src, "d1.svs"), 600, 400, 51)
    mnt = os.path.join(tmp, "dfull")
    os.makedirs(mnt)
    out = os.path.join(mnt, "out")
    if mount_ok:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                       check=True)
        try:
            fill(mnt)
            r = run("batch", src, "-o", out)
        finally:
            subprocess.run(["umount", mnt])
        rc, err = r.returncode, r.stderr
    elif os.geteuid() == 0 and shutil.which("unshare"):
        # no mount here: a private mount namespace of our own
        q = shlex.quote
        script = (f"mount -t tmpfs -o size=2m tmpfs {q(mnt)} || exit 99; "
                  f"dd if=/dev/zero of={q(mnt)}/filler bs=64k 2>/dev/null; "
                  f"dd if=/dev/zero of={q(mnt)}/filler2 bs=1 2>/dev/null; "
                  f"exec {q(BIN)} batch {q(src)} -o {q(out)}")
        r = subprocess.run(["unshare", "-m", "sh", "-c", script],
                           capture_output=True, text=True, timeout=300)
        rc, err = r.returncode, r.stderr
        if rc == 99 or "unshare:" in err:
            print(f"disk full: SKIPPED, cannot mount a tmpfs even in "
                  f"unshare -m: {err.strip()}", file=sys.stderr)
            return
    else:
        print("disk full: SKIPPED, mounting a tmpfs needs root "
              f"(euid {os.geteuid()})", file=sys.stderr)
        return
    lines = err.strip().splitlines()
    check(rc == 3 and len(lines) == 1 and
          "No space left on device" in lines[0] and out in lines[0],
          f"full OUTDIR: exit {rc}, one line naming it and the cause: "
          f"{lines}")


def test_privacy(tmp):
    """Shared outputs carry no folder above the input folder, no absolute
    path, no label or macro image, no slide property (docs/OUTPUTS.md):
    every file of OUTDIR and, through h5py, every attribute and string of
    its HDF5 files, is scanned. --full-paths records the absolute path.
    done.json markers from before (no "paths") are redone."""
    secret = os.path.join(tmp, "MRN-0042-ACC-7")  # the folder names a patient
    os.makedirs(os.path.join(secret, "sub"))
    cmu = os.path.join(DATA, "CMU-1-Small-Region.svs")
    shutil.copy(cmu, os.path.join(secret, "case.svs"))
    shutil.copy(os.path.join(DATA, "unreadable.svs"),
                os.path.join(secret, "sub", "broken.svs"))
    synth(os.path.join(secret, "sub", "other.svs"), 800, 600, 61)
    out = os.path.join(tmp, "pout")
    r = run("batch", secret, "-o", out, "--threads", "2")
    check(r.returncode == 1, f"privacy batch: exit {r.returncode}: {r.stderr}")
    needles = slide_secrets(cmu, os.path.join(secret, "case.svs"))
    needles["output folder"] = out.encode()
    needles["temporary folder"] = b".tmp-"
    found = leaks(out, needles)
    check(not found, f"batch outputs carry: {found[:12]}")
    js, _ = summary(out)
    sl = by_path(js)
    check(set(sl) == {"case.svs", "sub/broken.svs", "sub/other.svs"},
          f"summary paths below the input folder: {sorted(sl)}")
    check("sub/broken.svs" in (sl["sub/broken.svs"]["error"] or ""),
          f"the error names the slide below the input folder: "
          f"{sl['sub/broken.svs']['error']}")
    check(os.path.join(secret, "sub", "broken.svs") in r.stderr,
          "stderr (not shared) keeps the full path")
    with open(os.path.join(out, "case", "slide.json")) as f:
        check(json.load(f)["source"]["path"] == "case.svs",
              "sidecar: the path below the input folder")
    with h5py.File(os.path.join(out, "case", "slide.h5"), "r") as f:
        check(f.attrs["source_file"] == "case.svs", "HDF5: the file name")

    # done.json of a version before path privacy (no "paths"): redone;
    # a current one: kept
    dj = os.path.join(out, "case", "done.json")
    with open(dj) as f:
        old = json.load(f)
    del old["paths"]
    old["slide"] = os.path.join(secret, "case.svs")
    with open(dj, "w") as f:
        json.dump(old, f)
    r = run("batch", secret, "-o", out, "--threads", "2")
    check(r.returncode == 1, f"rerun over an old marker: exit {r.returncode}")
    sl = by_path(summary(out)[0])
    check(sl["case.svs"]["status"] == "done" and
          sl["sub/other.svs"]["status"] == "already-done",
          "an old done.json is redone, a current one kept: "
          f"{sl['case.svs']['status']}, {sl['sub/other.svs']['status']}")
    found = leaks(out, needles)
    check(not found, f"after redoing an old marker: {found[:12]}")

    # --full-paths: absolute paths, on request; switching redoes
    r = run("batch", secret, "-o", out, "--threads", "2", "--full-paths")
    check(r.returncode == 1, f"--full-paths rerun: exit {r.returncode}")
    js, _ = summary(out)
    sl = {s["slide"]: s for s in js["slides"]}
    case = os.path.join(secret, "case.svs")
    check(sl["case"]["path"] == case and sl["case"]["status"] == "done",
          f"--full-paths: summary path absolute, redone: {sl['case']}")
    with open(os.path.join(out, "case", "slide.json")) as f:
        check(json.load(f)["source"]["path"] == case,
              "--full-paths: sidecar path absolute")
    with open(os.path.join(out, "case", "done.json")) as f:
        d = json.load(f)
    check(d["slide"] == case and d["paths"] == "full" and
          d["run"]["output"] == os.path.join(os.path.realpath(out), "case",
                                             "slide.dzi"),
          f"--full-paths: done.json slide and final output: {d['run']}")
    check(js["outdir"] == os.path.realpath(out), "--full-paths: outdir")


def test_vanish(tmp):
    """A slide cut short while the batch runs (planned whole, cut before
    its job opens it): that slide fails with the cause, exit 1, nothing
    marked done; the slide beside it is done."""
    src = os.path.join(tmp, "vsrc")
    os.makedirs(src)
    big = os.path.join(src, "v.svs")
    synth(big, 4000, 3000, 41)
    # larger, so it starts first (largest first) and holds the one thread:
    # v.svs is cut while w.svs runs. (Cut while v's own job is inside
    # openslide_open, Debian's OpenSlide 3.4.1 itself can die of a NULL
    # read as the file shrinks under it, a crash, exit 4: the race this
    # check used to run, lost now and then under ASan.)
    synth(os.path.join(src, "w.svs"), 4200, 3000, 42)
    out = os.path.join(tmp, "vout")
    p = subprocess.Popen([BIN, "batch", src, "-o", out, "--threads", "1",
                          "--log-json"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    started = []
    events_until(p, lambda e: e["event"] == "start" and
                 not started.append(e["slide"]))
    os.truncate(big, 200000)
    p.stderr.read()
    p.wait(timeout=120)
    p.stderr.close()
    check(started == ["w"], f"the larger slide started first: {started}")
    check(p.returncode == 1, f"input cut mid-run: exit {p.returncode}, want 1")
    js, _ = summary(out)
    sl = {x["slide"]: x for x in js["slides"]}
    s = sl.get("v", {})
    check(s.get("status") == "failed" and "v.svs" in (s.get("error") or "")
          and src not in (s.get("error") or ""),
          f"input cut mid-run: failed naming the slide (not its folder): {s}")
    check(not os.path.exists(os.path.join(out, "v")), "input cut: no output")
    check(sl.get("w", {}).get("status") == "done",
          f"the slide beside it: {sl.get('w')}")


def test_done_json(tmp):
    """done.json edited by hand or by an older version (found by
    fuzz/fuzz_done.c): a missing key makes the slide stale (redone, the
    batch did crash), numbers out of range are unknown (converting them
    was undefined behaviour)."""
    d = os.path.join(tmp, "dj")
    os.makedirs(d)
    synth(os.path.join(d, "a.svs"), 600, 400, 31)
    out = os.path.join(tmp, "djout")
    r = run("batch", d, "-o", out, "--threads", "1")
    check(r.returncode == 0, f"done.json: first run {r.returncode} {r.stderr}")
    done = os.path.join(out, "a", "done.json")
    with open(done) as f:
        good = json.load(f)
    bad = dict(good, threads=1e19)
    bad["run"] = dict(good["run"], tiles_written=1e300)
    with open(done, "w") as f:
        json.dump(bad, f)
    r = run("batch", d, "-o", out, "--threads", "1")
    js, _ = summary(out)
    s = js["slides"][0] if js["slides"] else {}
    check(r.returncode == 0 and s.get("status") == "already-done" and
          s.get("threads") is None and s.get("tiles") is None,
          f"done.json with huge numbers: exit {r.returncode}, {s}")
    for key in ("fingerprint", "quickhash", "schema"):
        with open(done, "w") as f:
            json.dump({k: v for k, v in good.items() if k != key}, f)
        r = run("batch", d, "-o", out, "--threads", "1")
        js, _ = summary(out)
        s = js["slides"][0] if js["slides"] else {}
        check(r.returncode == 0 and s.get("status") == "done",
              f"done.json without {key}: redone, exit {r.returncode} "
              f"{r.stderr[-300:]!r} {s}")
        with open(done) as f:
            good = json.load(f)


def main():
    tmp = tempfile.mkdtemp(prefix="sp-batch-")
    t0 = time.time()
    try:
        mount_ok = os.geteuid() == 0 and can_mount(tmp)
        for name, fn in (("full", lambda: test_full(tmp)),
                         ("kill", lambda: test_kill(tmp)),
                         ("manifest", lambda: test_manifest(tmp)),
                         ("vanish", lambda: test_vanish(tmp)),
                         ("done_json", lambda: test_done_json(tmp)),
                         ("unwritable", lambda: test_unwritable(tmp, mount_ok)),
                         ("disk full", lambda: test_disk_full(tmp, mount_ok)),
                         ("privacy", lambda: test_privacy(tmp))):
            t = time.time()
            try:
                fn()
            except Exception as e:  # report, keep going
                import traceback
                traceback.print_exc()
                check(False, f"{name}: {e!r}")
            print(f"{name}: {time.time() - t:.1f} s", file=sys.stderr)
    finally:
        for d in ("ro", "full", "dfull"):
            subprocess.run(["umount", os.path.join(tmp, d)],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"total {time.time() - t0:.1f} s", file=sys.stderr)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
