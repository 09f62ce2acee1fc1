"""The batch beyond one machine, on real engines (docs/CLUSTER.md):

- MPI: `mpirun --oversubscribe -np 3 slidepipe-mpi` over a folder of
  testdata and generated slides with a broken one among them gives the
  same outputs as a local `slidepipe batch` of the folder (tiles, .dzi and
  done.json's content key byte for byte, HDF5 arrays through h5py), the
  same statuses, and logs whose every --log-json line names its rank and
  host; a SIGKILL to mpirun part-way, then a rerun: complete, identical,
  and the slides finished before the kill untouched; a worker rank killed
  part-way: the summary on disk names the slides it had in flight, and
  the rerun redoes them.
- Job array: `--shard K/N` (and the same from SLURM_ARRAY_TASK_* alone)
  for every K, run at once on one OUTDIR, then `--merge`: the same cohort
  as the local batch; a merge with a shard missing names the slides no
  shard finished and exits non-zero.
OpenMPI as root needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), set here."""
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import (BIN, DATA, check, files_of, finish,  # noqa: E402
                    stats_of, synth_slide)

MPI_BIN = os.environ.get("SLIDEPIPE_MPI", "")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           # loopback only: no interface probing in a container
           OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
           OMPI_MCA_btl="self,tcp")
for k in list(ENV):
    if k.startswith("SLURM_"):
        del ENV[k]
# Under ASan: OpenMPI unloads its plugins in MPI_Finalize, before LSan
# looks, so their one-time allocations show as leaks of "<unknown
# module>" that no suppression can name. Leak checking is off for the
# runs here; the batch code they share is leak-checked by test_batch.py
# and fuzz_wire.
if "ASAN_OPTIONS" in ENV:
    ENV["ASAN_OPTIONS"] = ENV["ASAN_OPTIONS"].replace(
        "detect_leaks=1", "detect_leaks=0")
MPIRUN = ["mpirun", "--oversubscribe", "-np", "3"]
GOOD = ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"]
BAD = "unreadable.svs"
SIZES = [(3400, 2600), (2800, 2200), (2400, 1800), (2000, 1600),
         (1600, 1200), (1200, 1000)]


def run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV,
                          timeout=timeout, **kw)


def make_inputs(src):
    os.makedirs(src)
    for name in GOOD + [BAD]:
        os.symlink(os.path.join(DATA, name), os.path.join(src, name))
    for i, (w, h) in enumerate(SIZES):
        r = synth_slide(os.path.join(src, f"s{i}.svs"), "--width", str(w),
                        "--height", str(h), "--seed", str(40 + i),
                        capture_output=True, text=True, env=ENV, timeout=600)
        check(r.returncode == 0, f"synth s{i}: {r.stderr}")
    with open(os.path.join(src, "notes.txt"), "w") as f:
        f.write("not a slide\n")


def summary(out, name="batch-summary.json"):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def statuses(js):
    """slide -> status, done and already-done alike ("complete")"""
    return {s["slide"]: "complete" if s["status"] in ("done", "already-done")
            else s["status"] for s in js["slides"]}


def raw_statuses(js):
    return {s["slide"]: s["status"] for s in js["slides"]}


def slide_dirs(out):
    return sorted(d for d in os.listdir(out)
                  if os.path.isdir(os.path.join(out, d)) and d[0] != ".")


def same_cohort(ref, out, what):
    """Every slide folder of `out` holds what the local batch `ref` made."""
    check(slide_dirs(ref) == slide_dirs(out),
          f"{what}: slide folders {slide_dirs(out)} vs {slide_dirs(ref)}")
    for d in slide_dirs(ref):
        a, b = os.path.join(ref, d), os.path.join(out, d)
        if not os.path.isdir(b):
            continue
        ta, tb = files_of(os.path.join(a, "slide_files")), \
            files_of(os.path.join(b, "slide_files"))
        check(len(ta) > 0 and ta == tb, f"{what}: {d} tiles identical")
        with open(os.path.join(a, "slide.dzi"), "rb") as fa, \
                open(os.path.join(b, "slide.dzi"), "rb") as fb:
            check(fa.read() == fb.read(), f"{what}: {d} .dzi identical")
        with h5py.File(os.path.join(a, "slide.h5"), "r") as fa, \
                h5py.File(os.path.join(b, "slide.h5"), "r") as fb:
            check(np.array_equal(fa["coords"][:], fb["coords"][:]) and
                  np.array_equal(fa["features"][:], fb["features"][:],
                                 equal_nan=True),
                  f"{what}: {d} HDF5 coords and features identical")
        da = json.load(open(os.path.join(a, "done.json")))
        db = json.load(open(os.path.join(b, "done.json")))
        for k in ("quickhash", "fingerprint", "paths"):
            check(da.get(k) == db.get(k), f"{what}: {d} done.json {k}")
    sa, sb = statuses(summary(ref)), statuses(summary(out))
    check(sa == sb, f"{what}: statuses {sb} vs {sa}")
    with h5py.File(os.path.join(ref, "cohort.h5"), "r") as fa, \
            h5py.File(os.path.join(out, "cohort.h5"), "r") as fb:
        pa = sorted(x.decode() if isinstance(x, bytes) else x
                    for x in fa["slides/path"][:])
        pb = sorted(x.decode() if isinstance(x, bytes) else x
                    for x in fb["slides/path"][:])
        check(pa == pb and len(pa) == len(GOOD) + len(SIZES),
              f"{what}: cohort.h5 lists the same slides ({len(pb)})")


def wait_gone(pattern, timeout=30):
    """Until no process runs `pattern` (ranks and their slide children
    outlive mpirun by a moment)."""
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["pgrep", "-f", pattern], capture_output=True)
        if r.returncode != 0:
            return True
        time.sleep(0.1)
    return False


def json_lines(text):
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_mpi(tmp, src, ref):
    out = os.path.join(tmp, "mpi")
    r = run(MPIRUN + [MPI_BIN, src, "-o", out, "--threads", "1",
                      "--log-json"])
    check(r.returncode == 1, f"mpi batch: exit {r.returncode} (a bad slide "
          f"among them: 1): {r.stderr[-2000:]}")
    same_cohort(ref, out, "mpi")
    evs = json_lines(r.stderr)
    check(len(evs) > 0 and all("rank" in e and "host" in e for e in evs),
          "mpi: every --log-json line names its rank and host")
    ranks = {e.get("rank") for e in evs}
    check(ranks == {0, 1, 2}, f"mpi: all three ranks log ({ranks})")
    ran_on = {s.get("rank") for s in summary(out)["slides"] if "rank" in s}
    check(len(ran_on) >= 2, f"mpi: slides ran on several ranks ({ran_on})")
    check("rank 0 (" in r.stdout and "slides:" in r.stdout.splitlines()[-1],
          "mpi: rank 0 prints the summary with a line per rank")
    bad = [s for s in summary(out)["slides"] if s["slide"] == "unreadable"]
    check(bad and bad[0]["status"] == "failed" and
          "unreadable.svs" in (bad[0]["error"] or ""),
          "mpi: the broken slide fails with a message naming it")

    # rank 0 ending without handing out slides still ends the workers
    r = run(MPIRUN + [MPI_BIN, src, "-o", os.path.join(tmp, "dry"),
                      "--dry-run"], timeout=120)
    check(r.returncode == 0 and "to run" in r.stdout,
          f"mpi --dry-run: exit {r.returncode}")
    r = run(MPIRUN + [MPI_BIN, "--manifest", os.path.join(tmp, "none.tsv"),
                      "-o", os.path.join(tmp, "nomanifest")], timeout=120)
    check(r.returncode == 1 and "none.tsv" in r.stderr,
          f"mpi, a manifest only rank 0 reads is missing: exit "
          f"{r.returncode}, {r.stderr[-500:]}")

    # the same again: everything already done, nothing rewritten
    before = {d: stats_of(os.path.join(out, d)) for d in slide_dirs(out)}
    r = run(MPIRUN + [MPI_BIN, src, "-o", out, "--threads", "1"])
    st = raw_statuses(summary(out))
    check(all(v in ("already-done", "failed", "not-a-slide")
              for v in st.values()), f"mpi rerun: all skipped ({st})")
    check(before == {d: stats_of(os.path.join(out, d))
                     for d in slide_dirs(out)}, "mpi rerun: nothing rewritten")


def start_logged(src, out):
    """mpirun of a batch logging JSON events on stderr, left running."""
    return subprocess.Popen(MPIRUN + [MPI_BIN, src, "-o", out, "--threads",
                                      "1", "--log-json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def events(p):
    """The JSON events of a running `start_logged`, as they come."""
    for line in p.stderr:
        try:
            yield json.loads(line)
        except ValueError:
            continue


def test_mpi_kill(tmp, src, ref):
    out = os.path.join(tmp, "mpikill")
    p = start_logged(src, out)
    done = 0
    for e in events(p):
        if e.get("event") == "finish" and e.get("rank") == 0 and \
                e.get("status") == "done":
            done += 1
            if done == 2:
                break
    p.kill()
    p.wait()
    p.stderr.close()
    check(wait_gone(MPI_BIN), "SIGKILL to mpirun: every rank ends")
    seen = {d: stats_of(os.path.join(out, d)) for d in slide_dirs(out)}
    for d in seen:
        check(os.path.exists(os.path.join(out, d, "done.json")),
              f"SIGKILL: {d}/ without done.json")
    print(f"SIGKILL to mpirun: {len(seen)} slides complete", file=sys.stderr)
    check(len(seen) >= 2, f"SIGKILL after two slides: {len(seen)} complete")
    r = run(MPIRUN + [MPI_BIN, src, "-o", out, "--threads", "1"])
    check(r.returncode == 1, f"rerun after SIGKILL: exit {r.returncode} "
          f"{r.stderr[-2000:]}")
    same_cohort(ref, out, "after SIGKILL")
    st = raw_statuses(summary(out))
    check(sum(v == "already-done" for v in st.values()) == len(seen),
          f"after SIGKILL: the {len(seen)} finished slides skipped ({st})")
    for d, s in seen.items():
        check(stats_of(os.path.join(out, d)) == s,
              f"after SIGKILL: {d} untouched")
    check(not [n for n in os.listdir(out) if ".tmp-" in n],
          "after SIGKILL: no temporaries left")


def rank_pid(rank):
    """The pid of MPI rank `rank` itself (not a slide child of it)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{ppid}/cmdline", "rb") as f:
                pcmd = f.read()
        except OSError:
            continue
        if cmd.split(b"\0")[0] == MPI_BIN.encode() and \
                pcmd.split(b"\0")[0] != MPI_BIN.encode() and \
                f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    return None


def test_worker_dies(tmp, src, ref):
    out = os.path.join(tmp, "mpidie")
    p = start_logged(src, out)
    victim = None
    for e in events(p):
        # a slide has just started on rank 2: kill that rank
        if e.get("event") == "start" and e.get("rank") == 0 and \
                e.get("slide_rank") == 2:
            victim = e["slide"]
            pid = rank_pid(2)
            check(pid is not None, "rank 2's pid found")
            if pid:
                os.kill(pid, signal.SIGKILL)
            break
    rest = p.stderr.read()
    p.wait(timeout=120)
    p.stderr.close()
    check(p.returncode != 0, f"a dead worker fails the job ({p.returncode})")
    check(wait_gone(MPI_BIN), "after a worker died: every rank ends")
    js = summary(out)
    inflight = [s for s in js["slides"] if s["status"] == "running"]
    check(victim in [s["slide"] for s in inflight] and
          all(s.get("rank") is not None and s.get("host")
              for s in inflight),
          f"the summary names the slides in flight and where ({victim}, "
          f"{[(s['slide'], s.get('rank')) for s in inflight]})")
    del rest
    r = run(MPIRUN + [MPI_BIN, src, "-o", out, "--threads", "1",
                      "--log-json"])
    check(r.returncode == 1, f"rerun after a dead worker: {r.returncode}")
    same_cohort(ref, out, "after a dead worker")
    redone = {e["slide"] for e in json_lines(r.stderr)
              if e.get("event") == "start" and e.get("previous")}
    check(victim in redone, f"the rerun says it redoes {victim} ({redone})")


def test_shards(tmp, src, ref):
    out = os.path.join(tmp, "shards")
    n = 3
    procs = []
    for k in range(n):
        env = dict(ENV)
        cmd = [BIN, "batch", src, "-o", out, "--threads", "1", "--quiet"]
        if k == 1:
            # as a Slurm array task would run it: no --shard
            env.update(SLURM_ARRAY_TASK_ID=str(11), SLURM_ARRAY_TASK_MIN="10",
                       SLURM_ARRAY_TASK_COUNT=str(n))
        else:
            cmd += ["--shard", f"{k}/{n}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        p.communicate(timeout=600)
    check(not os.path.exists(os.path.join(out, "cohort.h5")),
          "shards write no cohort.h5")
    mine = []
    for k in range(n):
        js = summary(out, f"batch-summary.shard-{k}-of-{n}.json")
        mine.append({s["slide"] for s in js["slides"]
                     if s["status"] != "not-a-slide"})
        check(js.get("shard") == k and js.get("shards") == n,
              f"shard {k}'s summary says which it is")
    allids = set().union(*mine)
    check(sum(len(m) for m in mine) == len(allids) ==
          len(GOOD) + len(SIZES) + 1,
          f"shards split the slides without overlap ({mine})")
    check(all(mine), "every shard got slides")
    r = run([BIN, "batch", src, "-o", out, "--merge"])
    check(r.returncode == 1, f"merge: exit {r.returncode} (the bad slide)")
    same_cohort(ref, out, "shards + merge")
    bad = [s for s in summary(out)["slides"] if s["slide"] == "unreadable"]
    check(bad and "unreadable.svs" in (bad[0]["error"] or "") and
          bad[0]["stage"] == "open",
          f"merge: the bad slide's failure as its shard recorded it ({bad})")

    # a shard that never ran: the merge names what is missing
    out2 = os.path.join(tmp, "shards2")
    r = run([BIN, "batch", src, "-o", out2, "--shard", "0/2", "--quiet"])
    r = run([BIN, "batch", src, "-o", out2, "--merge"])
    js = summary(out2)
    missing = [s for s in js["slides"] if s["stage"] == "merge"]
    check(r.returncode != 0 and missing and
          all("not done" in s["error"] for s in missing),
          f"merge with a shard missing: {len(missing)} slides named "
          f"({r.returncode})")
    r = run([BIN, "batch", src, "-o", out2, "--shard", "2/2"])
    check(r.returncode == 2 and "--shard" in r.stderr,
          f"--shard 2/2 is a usage error: {r.stderr}")


def main():
    if not MPI_BIN or not shutil.which("mpirun"):
        print("FAIL: slidepipe-mpi or mpirun missing (scripts/install-deps.sh "
              "build test)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sp-mpi-") as tmp:
        src = os.path.join(tmp, "src")
        make_inputs(src)
        ref = os.path.join(tmp, "local")
        r = run([BIN, "batch", src, "-o", ref, "--threads", "2", "--quiet"])
        check(r.returncode == 1, f"local batch: exit {r.returncode}")
        test_mpi(tmp, src, ref)
        test_mpi_kill(tmp, src, ref)
        test_worker_dies(tmp, src, ref)
        test_shards(tmp, src, ref)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
