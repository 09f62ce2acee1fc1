#!/bin/sh
# A real single-node Slurm cluster for the tests, from Debian's packages
# (slurm-wlm, munge), started and stopped by the tests themselves (as
# root; nothing of the system's own configuration is used or changed):
#
#   tests/cluster/slurm.sh start DIR   munged, slurmctld and slurmd with
#                                      DIR/slurm.conf (this host on
#                                      127.0.0.1, its CPUs, one partition),
#                                      state, spool, logs and pid files in
#                                      DIR; waits until the node is idle;
#                                      writes DIR/env.sh (SLURM_CONF)
#   tests/cluster/slurm.sh stop DIR    cancels the jobs, stops every daemon
#                                      it started, checks they are gone
#
# munged runs with its own key and socket in DIR (Slurm finds it through
# AuthInfo=socket=). proctrack/linuxproc and task/none: no cgroups or
# systemd needed. The node declares at least 4 CPUs (config_overrides) so
# a 2-core machine can run three MPI ranks. Ports are chosen from the pid.
set -eu
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf

daemons="slurmd slurmctld munged"

# Is process $1 running (a zombie that no one reaps is not: in a container
# the init may not reap daemons that double-forked)?
running() {
    [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null || echo Z)
    [ "$st" != Z ] && [ "$st" != X ]
}

stop() {
    if [ -f "$conf" ] && [ -f "$dir/slurmctld.pid" ]; then
        SLURM_CONF=$conf scancel --quiet --user=root 2>/dev/null || true
    fi
    for d in $daemons; do
        pf=$dir/$d.pid
        [ -f "$pf" ] || continue
        pid=$(cat "$pf" 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    # the slurmstepd left of this cluster's jobs (its environment names
    # this slurm.conf; another cluster's, or the system's, are not
    # touched): SIGKILL, as it ignores SIGTERM
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null |
            grep -qxF "SLURM_CONF=$conf"; then
            kill -9 "$p" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        alive=""
        for d in $daemons; do
            pf=$dir/$d.pid
            [ -f "$pf" ] || continue
            pid=$(cat "$pf" 2>/dev/null || true)
            if [ -n "$pid" ] && running "$pid"; then
                alive="$alive $d"
            else
                rm -f "$pf"
            fi
        done
        [ -z "$alive" ] && return 0
        sleep 0.2
    done
    for d in $alive; do
        kill -9 "$(cat "$dir/$d.pid")" 2>/dev/null || true
        rm -f "$dir/$d.pid"
    done
    echo "slurm.sh: killed$alive (did not stop in 10 s)" >&2
}

fail() {
    echo "slurm.sh: $*" >&2
    for f in munged.log slurmctld.log slurmd.log; do
        [ -f "$dir/$f" ] && { echo "---- $f" >&2; tail -20 "$dir/$f" >&2; }
    done
    stop
    exit 1
}

start() {
    [ "$(id -u)" -eq 0 ] || { echo "slurm.sh: needs root" >&2; exit 1; }
    for p in munged slurmctld slurmd sinfo; do
        command -v "$p" >/dev/null ||
            { echo "slurm.sh: $p missing (scripts/install-deps.sh test)" >&2; exit 1; }
    done
    stop
    host=$(hostname -s)
    cpus=$(nproc)
    [ "$cpus" -ge 4 ] || cpus=4
    mem=$(awk '/MemTotal/ { printf "%d", $2 / 1024 / 2 }' /proc/meminfo)
    base=$((20000 + ($$ % 2000) * 4))
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 700 "$dir/munge"
    # munge: a key of our own
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" ||
        fail "munged did not start"
    cat >"$conf" <<CONF
ClusterName=sptest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SrunPortRange=$((base + 2))-$((base + 40))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
LaunchParameters=use_interactive_step
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    echo "export SLURM_CONF=$conf" >"$dir/env.sh"
    export SLURM_CONF="$conf"
    slurmctld -f "$conf" || fail "slurmctld did not start"
    slurmd -f "$conf" -N "$host" || fail "slurmd did not start"
    for _ in $(seq 150); do
        st=$(sinfo -h -N -o %t 2>/dev/null | head -1)
        case $st in
        idle) return 0 ;;
        esac
        sleep 0.2
    done
    fail "the node did not become idle in 30 s (state '${st:-none}')"
}

case $cmd in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
