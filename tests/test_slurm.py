"""The batch on a real Slurm cluster: a single-node cluster from Debian's
slurm-wlm and munge, started here (tests/cluster/slurm.sh, as root) and
stopped at the end, runs the two kinds of job docs/CLUSTER.md gives:

(a) a job array, `sbatch --array=0-2` of plain `slidepipe batch` (each
    task takes its shard from SLURM_ARRAY_TASK_*), then the merge as a job
    that depends on the array;
(b) `sbatch -n 3` of `srun --mpi=pmix slidepipe-mpi`.

Both must give the cohort a local `slidepipe batch` of the same folder
gives (tiles, .dzi, done.json's keys, HDF5 arrays through h5py, statuses,
cohort.h5), with logs whose lines name the shard or rank and the host.
Every daemon the test started is gone at the end. Exit 77 (skipped) when
not root: CI runs as root."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sptest import BIN, check, finish  # noqa: E402
import test_batch_mpi as tb  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "cluster", "slurm.sh")


def job_lines(path):
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
            "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def job_wait(env, job, timeout=600):
    """Until every record of `job` (each task of an array) has finished,
    polled every 0.2 s: the exit status `sbatch --wait` gives (the
    largest task's, 1 for one ended by a signal), or None on timeout.
    (`sbatch --wait` itself sleeps 2 s, then 8 s, then 32 s between its
    looks: most of this test's time was spent in those sleeps.)"""
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["scontrol", "-o", "show", "job", job],
                           capture_output=True, text=True, env=env,
                           timeout=60)
        recs = [dict(kv.split("=", 1) for kv in line.split()
                     if "=" in kv)
                for line in r.stdout.splitlines() if line.strip()]
        if r.returncode == 0 and recs and \
                all(x.get("JobState") in FINISHED for x in recs):
            rc = 0
            for x in recs:
                code, sig = (x.get("ExitCode", "0:0").split(":") + ["0"])[:2]
                rc = max(rc, 1 if int(sig) else int(code))
            return rc
        time.sleep(0.2)
    return None


def sbatch(env, *args, want=(0,)):
    """Submit, then wait for the job to finish (job_wait); its exit
    status must be one of `want`. Returns the job id."""
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True,
                       text=True, env=env, timeout=600)
    job = r.stdout.strip().split(";")[0]
    rc = job_wait(env, job) if r.returncode == 0 and job else r.returncode
    check(rc in want,
          f"sbatch {' '.join(args)}: exit {rc}: {r.stderr}")
    return job


def gone(pid):
    """Not running (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def main():
    if os.geteuid() != 0:
        print("test_slurm: needs root (it starts munged, slurmctld, slurmd)")
        return 77
    if not tb.MPI_BIN:
        print("FAIL: slidepipe-mpi missing", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sp-slurm-") as tmp:
        cl = os.path.join(tmp, "cluster")
        r = subprocess.run(["sh", HARNESS, "start", cl], capture_output=True,
                           text=True, timeout=120)
        if not check(r.returncode == 0, f"cluster start: {r.stderr}"):
            return finish()
        pids = {}
        for d in ("munged", "slurmctld", "slurmd"):
            with open(os.path.join(cl, d + ".pid")) as f:
                pids[d] = int(f.read().strip())
        try:
            run_jobs(tmp, cl)
        finally:
            r = subprocess.run(["sh", HARNESS, "stop", cl],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0, f"cluster stop: {r.stderr}")
            for d, pid in pids.items():
                check(gone(pid), f"{d} ({pid}) stopped")
    return finish()


def run_jobs(tmp, cl):
    env = dict(tb.ENV, SLURM_CONF=os.path.join(cl, "slurm.conf"))
    src = os.path.join(tmp, "src")
    tb.make_inputs(src)
    ref = os.path.join(tmp, "local")
    r = tb.run([BIN, "batch", src, "-o", ref, "--threads", "2", "--quiet"])
    check(r.returncode == 1, f"local batch: exit {r.returncode}")
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)

    # (a) a job array of plain batches, then the merge after it
    out = os.path.join(tmp, "array")
    script = os.path.join(tmp, "array.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n"
                f"exec {BIN} batch {src} -o {out} --threads 1 --log-json\n")
    # a task whose share holds the broken slide exits 1
    job = sbatch(env, "--array=0-2", "-o",
                 os.path.join(logs, "array-%a.log"), script, want=(0, 1))
    merge = sbatch(env, f"--dependency=afterany:{job}", "-o",
                   os.path.join(logs, "merge.log"), "--wrap",
                   f"{BIN} batch {src} -o {out} --merge", want=(1,))
    del merge
    for k in range(3):
        lines = job_lines(os.path.join(logs, f"array-{k}.log"))
        check(lines and all(e.get("shard") == k and e.get("host")
                            for e in lines),
              f"array task {k}: every log line names shard {k} and the host")
        js = tb.summary(out, f"batch-summary.shard-{k}-of-3.json")
        check(js.get("shard") == k and js.get("shards") == 3,
              f"array task {k} took shard {k} of 3 from Slurm")
    tb.same_cohort(ref, out, "slurm array + merge")

    # (b) srun --mpi=pmix of slidepipe-mpi in an allocation of 3 tasks
    out = os.path.join(tmp, "mpi")
    script = os.path.join(tmp, "mpi.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n"
                f"srun --mpi=pmix -n 3 -O {tb.MPI_BIN} {src} -o {out} "
                "--threads 1 --log-json\n")
    sbatch(env, "-n", "3", "-O", "-o",
           os.path.join(logs, "mpi.log"), script, want=(1,))
    lines = job_lines(os.path.join(logs, "mpi.log"))
    check({e.get("rank") for e in lines} == {0, 1, 2} and
          all(e.get("host") for e in lines),
          "srun --mpi=pmix: three ranks log, each line with its host")
    tb.same_cohort(ref, out, "slurm srun --mpi=pmix")


if __name__ == "__main__":
    sys.exit(main())
