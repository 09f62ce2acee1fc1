"""The scale model of slidepipe's batch beyond one machine.

Two cores cannot show what 100 nodes do, so this replays a cohort through
the same dispatch policies the code uses, with costs measured on this
machine (benchmarks/bench_cluster.sh measures and passes them):

  MPI (slidepipe-mpi, pipeline/batch_sched.c): rank 0 probes every slide
    (discovery), then keeps the queue largest first; every node (rank 0's
    too) holds T threads; whenever a node has free threads it is sent the
    largest queued slide whose share K = min(ceil(MP / 64), T) fits them.
    Rank 0 serves one result-and-next-slide exchange at a time, each
    costing the measured round trip (a queue forms when many nodes finish
    together).
  job array (--shard, pipeline/batch_shard.c): every task probes every
    slide, keeps its share of a greedy size-balanced split (largest
    first, each slide to the shard with the fewest megapixels so far),
    and runs it with the local policy; the makespan is the slowest task's.

Per-slide wall time on a node: its CPU cost c(MP) = a + b * MP (fitted to
the per-slide seconds of a real local batch run with one thread each:
--summary1), shared over K threads with Amdahl's law, its serial fraction
from a measured speed-up of one slide's `slidepipe run` at K threads
(--speedup K=S; f = (K / S - 1) / (K - 1)). Measured 2026-12-04 on a
16-core machine for the 32768x24576 slide: 1 thread 8.01 s, 2: 5.18,
4: 2.58, 8: 1.42, 16: 0.94 (S(16) = 8.5, f = 0.059, which also gives
S(8) = 5.7 and S(4) = 3.4 within the measurement's spread). The cohort: --slides megapixel sizes drawn
from a log-normal (median --median-mp, sigma --sigma, clipped to
[--min-mp, --max-mp]); the defaults stand for TCGA-like diagnostic slides
at 40x (median ~2.5 gigapixels, a tail to 15). Seeded: the same arguments
give the same figures.

Prints, for 1..128 nodes: makespan, parallel efficiency T1 / (N * TN),
the scheduler's cost per slide against the median slide's time, and the
file-system bandwidth the nodes need together (--bytes-per-mp: slide
read plus outputs written per level-0 megapixel, measured by the bench):
the model assumes storage keeps up, which at 100 nodes it must do at
that rate.
--json prints the same as one JSON object."""
import argparse
import heapq
import json
import math
import random
import sys


def fit_cost(summary_path):
    """a, b of c(MP) = a + b * MP from a batch summary (threads 1)"""
    with open(summary_path) as f:
        js = json.load(f)
    pts = [(s["width"] * s["height"] / 1e6, s["seconds"])
           for s in js["slides"]
           if s["status"] == "done" and s.get("width") and s.get("seconds")]
    if len(pts) < 2:
        sys.exit(f"cluster_sim: {summary_path}: fewer than two done slides")
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    b = sxy / sxx if sxx > 0 else my / mx
    a = max(0.0, my - b * mx)
    return a, b, n


def cohort(args):
    rng = random.Random(args.seed)
    mu = math.log(args.median_mp)
    out = []
    for _ in range(args.slides):
        mp = rng.lognormvariate(mu, args.sigma)
        out.append(min(args.max_mp, max(args.min_mp, mp)))
    return out


class Model:
    def __init__(self, a, b, speedup, threads):
        self.a, self.b, self.t = a, b, threads
        k, s = speedup
        s = min(max(s, 1.0), float(k))
        # Amdahl's serial fraction
        self.f = (k / s - 1.0) / (k - 1.0) if k > 1 else 1.0

    def share(self, mp):
        return max(1, min(self.t, math.ceil(mp / 64.0)))

    def wall(self, mp):
        k = self.share(mp)
        return (self.a + self.b * mp) * (self.f + (1 - self.f) / k)


def run_node_local(model, sizes):
    """One node running `sizes` with the local policy; its makespan."""
    queue = sorted(sizes, reverse=True)
    free, now, running = model.t, 0.0, []  # heap of (end, threads)
    while queue or running:
        started = True
        while started and queue:
            started = False
            for i, mp in enumerate(queue):
                k = model.share(mp)
                if k <= free:
                    free -= k
                    heapq.heappush(running, (now + model.wall(mp), k))
                    del queue[i]
                    started = True
                    break
        end, k = heapq.heappop(running)
        now, free = end, free + k
    return now


def sim_mpi(model, sizes, nodes, rtt, discovery):
    """Makespan of slidepipe-mpi on `nodes` nodes (rank 0's included)."""
    queue = sorted(sizes, reverse=True)
    t0 = discovery
    free = [model.t] * nodes
    events = []  # (time, node, threads) slide ends
    rank0_busy_until = t0
    now = t0
    served = 0

    def dispatch(node, at):
        nonlocal rank0_busy_until, served
        while queue:
            pick = next((i for i, mp in enumerate(queue)
                         if model.share(mp) <= free[node]), None)
            if pick is None:
                return
            mp = queue.pop(pick)
            k = model.share(mp)
            # rank 0 answers one exchange at a time
            start = max(at, rank0_busy_until) + rtt
            rank0_busy_until = start
            served += 1
            free[node] -= k
            heapq.heappush(events, (start + model.wall(mp), node, k))

    for n in range(nodes):
        dispatch(n, now)
    makespan = now
    while events:
        end, node, k = heapq.heappop(events)
        makespan = max(makespan, end)
        free[node] += k
        dispatch(node, end)
    return makespan


def sim_shards(model, sizes, shards, discovery):
    """Makespan of a job array of `shards` tasks (one node each)."""
    load = [0.0] * shards
    share = [[] for _ in range(shards)]
    for mp in sorted(sizes, reverse=True):
        best = min(range(shards), key=lambda s: (load[s], s))
        load[best] += max(mp, 1.0)
        share[best].append(mp)
    return discovery + max(run_node_local(model, s) for s in share)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summary1", required=True,
                    help="batch-summary.json of a local batch, --threads 1")
    ap.add_argument("--speedup", default="16=8.5",
                    help="K=S: one slide's run is S times faster at K "
                    "threads than at 1 (default: 16=8.5, measured)")
    ap.add_argument("--rtt", type=float, default=0.002,
                    help="rank 0's round trip per slide, s (bench_mpi_rtt)")
    ap.add_argument("--probe", type=float, default=0.001,
                    help="discovery cost per slide entry per process, s")
    ap.add_argument("--bytes-per-mp", type=float, default=0,
                    help="bytes read + written per megapixel (0: unknown)")
    ap.add_argument("--threads", type=int, default=32,
                    help="cores per node (default 32)")
    ap.add_argument("--slides", type=int, default=10000)
    ap.add_argument("--median-mp", type=float, default=2500)
    ap.add_argument("--sigma", type=float, default=0.6)
    ap.add_argument("--min-mp", type=float, default=100)
    ap.add_argument("--max-mp", type=float, default=15000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", default="1,2,4,8,16,32,64,100,128")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    a, b, npts = fit_cost(args.summary1)
    try:
        k, sp = args.speedup.split("=")
        speedup = (int(k), float(sp))
    except ValueError:
        sys.exit(f"cluster_sim: --speedup {args.speedup}: expected K=S")
    model = Model(a, b, speedup, args.threads)
    sizes = cohort(args)
    walls = sorted(model.wall(mp) for mp in sizes)
    median = walls[len(walls) // 2]
    # discovery: rank 0 (or every shard) probes every entry, as many
    # probe processes as its threads (at most 32: batch_plan.c)
    disc = len(sizes) * args.probe / min(args.threads, 32)
    rows = []
    t1_mpi = t1_arr = None
    for n in [int(x) for x in args.nodes.split(",")]:
        mk = sim_mpi(model, sizes, n, args.rtt, disc)
        ma = sim_shards(model, sizes, n, disc)
        t1_mpi = t1_mpi or (mk if n == 1 else None)
        t1_arr = t1_arr or (ma if n == 1 else None)
        rows.append({"nodes": n, "mpi_makespan_h": mk / 3600,
                     "fs_gb_per_s": sum(sizes) * args.bytes_per_mp / mk / 1e9,
                     "mpi_efficiency": t1_mpi / (n * mk) if t1_mpi else None,
                     "array_makespan_h": ma / 3600,
                     "array_efficiency": t1_arr / (n * ma) if t1_arr else None})
    res = {"fit": {"a_s": a, "b_s_per_mp": b, "slides_fitted": npts,
                   "serial_fraction": model.f},
           "cohort": {"slides": len(sizes), "median_mp": sorted(sizes)[
               len(sizes) // 2], "max_mp": max(sizes),
               "total_gp": sum(sizes) / 1e3},
           "node_threads": args.threads,
           "median_slide_s": median,
           "rtt_s": args.rtt,
           "overhead_per_slide": args.rtt / median,
           "discovery_s": disc,
           "rows": rows}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"fit: c(MP) = {a:.3f} s + {b * 1e3:.3f} ms/MP (1 thread, "
          f"{npts} slides); serial fraction {model.f:.3f}")
    print(f"cohort: {len(sizes)} slides, median {res['cohort']['median_mp']:.0f}"
          f" MP, largest {max(sizes):.0f} MP, {sum(sizes) / 1e3:.0f} GP; "
          f"{args.threads} threads a node")
    print(f"median slide {median:.2f} s on a node; rank 0 round trip "
          f"{args.rtt * 1e3:.2f} ms = {100 * args.rtt / median:.3f}% of it; "
          f"discovery {disc:.1f} s")
    print(f"{'nodes':>5}  {'MPI h':>8}  {'MPI eff':>7}  {'array h':>8}  "
          f"{'array eff':>9}  {'FS GB/s':>7}")
    for r in rows:
        print(f"{r['nodes']:>5}  {r['mpi_makespan_h']:>8.3f}  "
              f"{r['mpi_efficiency']:>7.3f}  {r['array_makespan_h']:>8.3f}  "
              f"{r['array_efficiency']:>9.3f}  {r['fs_gb_per_s']:>7.2f}")


if __name__ == "__main__":
    main()
