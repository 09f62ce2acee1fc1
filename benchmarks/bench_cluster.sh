#!/bin/sh
# The batch beyond one machine: what decides its speed on a cluster,
# measured here, and the rest modelled (docs/CLUSTER.md):
#   1. slidepipe-mpi against the local batch, side by side on the twenty
#      bench_batch slides with the same thread budget (mpirun -np 2, one
#      thread a rank, vs batch --threads 2): wall, CPU, peak RSS, ratio.
#   2. rank 0's round trip per slide (benchmarks/mpi_rtt.c, the same
#      transport, messages and choice over a 10,000-slide queue), with
#      rank 0 only coordinating and with rank 0 running slides too.
#   3. discovery of 10,000 slide entries (batch --dry-run over 10,000
#      small Aperio files), the cost every shard and rank 0 pay first.
#   4. cluster_sim.py: a 10,000-slide cohort on 1-128 nodes through the
#      same dispatch policies, from this run's per-slide costs (the batch
#      at one thread), the measured per-slide thread scaling, the round
#      trip and the discovery cost; and the storage bandwidth it needs.
# usage: benchmarks/bench_cluster.sh
#   SLIDEPIPE_BIN, SLIDEPIPE_MPI, SLIDEPIPE_SYNTH, SLIDEPIPE_RTT (the
#   build's executables; defaults under build/), SLIDEPIPE_TESTDATA
#   (small.svs for the discovery entries)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
BIN=${SLIDEPIPE_BIN:-$root/build/cli/slidepipe}
MPI=${SLIDEPIPE_MPI:-$root/build/cli/slidepipe-mpi}
RTT=${SLIDEPIPE_RTT:-$root/build/benchmarks/bench_mpi_rtt}
SYNTH=${SLIDEPIPE_SYNTH:-$root/build/tools/slidepipe-synth}
DATA=${SLIDEPIPE_TESTDATA:-$root/../shared/testdata}
out=$here/out/cluster
. "$here/common.sh"
src=$here/out/batch-slides
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo \
    OMPI_MCA_oob_tcp_if_include=lo
mkdir -p "$out"
: >"$out/results.txt"
mp=$(sp_batch_slides "$src" "$SYNTH" 1)
drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true; }

# 1. the same twenty slides, local and over MPI, same threads in all
for round in 1 2; do
    rm -rf "$out/local" "$out/mpi"; drop
    sp_timed "local$round" "$out/results.txt" "$BIN" batch "$src" \
        -o "$out/local" --threads 2 --quiet
    drop
    sp_timed "mpi$round" "$out/results.txt" mpirun --oversubscribe -np 2 \
        "$MPI" "$src" -o "$out/mpi" --threads 1 --quiet
done
# the per-slide costs at one thread, for the model
rm -rf "$out/one"; drop
sp_timed one "$out/results.txt" "$BIN" batch "$src" -o "$out/one" \
    --threads 1 --quiet
bytes=$(du -sb "$src" "$out/one" | awk '{ s += $1 } END { print s }')

# 2. rank 0's round trip
rtt0=$(mpirun --oversubscribe -np 2 "$RTT" 5000 0)
rtt2=$(mpirun --oversubscribe -np 2 "$RTT" 3000 2)

# 3. discovery of 10,000 entries
disc=$out/disc
if [ ! -f "$disc/s9999.svs" ]; then
    mkdir -p "$disc"
    i=0
    while [ $i -lt 10000 ]; do cp "$DATA/small.svs" "$disc/s$i.svs"; i=$((i + 1)); done
fi
rm -rf "$out/disc-out"; drop
sp_timed discovery "$out/results.txt" "$BIN" batch "$disc" -o "$out/disc-out" \
    --dry-run --quiet

awk -v mp="$mp" '
{ wall[$1] = $2; cpu[$1] = $3; rss[$1] = $4 }
END {
    printf "20 slides, %d megapixels; 2 threads in all either way\n", mp
    printf "%-10s %8s %8s %12s\n", "run", "wall s", "cpu s", "peak RSS MB"
    split("local1 mpi1 local2 mpi2 one discovery", n, " ")
    for (i = 1; i <= 6; i++)
        printf "%-10s %8.2f %8.2f %12.0f\n", n[i], wall[n[i]], cpu[n[i]], rss[n[i]] / 1024
    printf "slidepipe-mpi / local batch (wall): %.3f, %.3f\n",
        wall["mpi1"] / wall["local1"], wall["mpi2"] / wall["local2"]
    printf "discovery of 10,000 entries: %.2f s (%.3f ms an entry)\n",
        wall["discovery"], wall["discovery"] / 10
}' "$out/results.txt" | tee "$out/report.txt"
echo "rank 0 round trip, rank 0 idle:         $rtt0" | tee -a "$out/report.txt"
echo "rank 0 round trip, rank 0 runs slides: $rtt2" | tee -a "$out/report.txt"

# 4. the model, with this run's figures
rtt_s=$(echo "$rtt2" | sed 's/.*"mean_ms": \([0-9.]*\).*/\1/' | awk '{ print $1 / 1000 }')
probe_s=$(awk '$1 == "discovery" { print $2 * 2 / 10000 }' "$out/results.txt")
bpm=$(awk -v b="$bytes" -v mp="$mp" 'BEGIN { print b / mp }')
/usr/bin/python3 "$here/cluster_sim.py" --summary1 "$out/one/batch-summary.json" \
    --rtt "$rtt_s" --probe "$probe_s" --bytes-per-mp "$bpm" |
    tee -a "$out/report.txt"
rm -rf "$out/local" "$out/mpi" "$out/one" "$out/disc-out"
