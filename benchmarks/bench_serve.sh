#!/bin/sh
# Tile serving, side by side, on loopback, bounded in time: random Deep
# Zoom tile requests (uniform over every tile of the pyramid) fired by wrk
# at
#   1. slidepipe serve, pre-built pyramid (slidepipe tile, DZI) from disk
#   2. slidepipe serve, tiles rendered on the fly from the slide (cache
#      kept at 1 MiB, so nearly every request renders: the cold case)
#   3. IIPImage (iipsrv.fcgi) behind lighttpd's FastCGI, serving the
#      pyramidal TIFF made by `slidepipe tile --container tiff`
# and prints tiles/s, p50/p99 latency, errors and the servers' peak RSS.
# Also:
#   1b. run 1 again with one request per connection (wrk -H 'Connection:
#       close'), against keep-alive (wrk's default) in run 1
#   4. slidepipe serve, on the fly, --cache-mb 16, a single-level 20000^2
#      slide (slidepipe-synth --levels 1: no native lower levels, so the
#      low levels come from the overview), random tiles of random levels
#      (each level equally likely): peak RSS beside the bound that
#      `serve --help` documents for the settings
#
# usage: benchmarks/bench_serve.sh [SLIDE] [SECONDS] [CONNECTIONS]
#   SLIDEPIPE_SYNTH: the generator (build/tools/slidepipe-synth)
#   SLIDE defaults to benchmarks/out/bench-32768x24576.svs (made by
#   ../shared/bench/make-bench-slide.sh from CMU-1-Small-Region.svs when
#   missing); SECONDS per run (10); CONNECTIONS (8, wrk with 2 threads).
# Needs: wrk, lighttpd, iipimage-server, python3 (scripts/install-deps.sh).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${SLIDEPIPE_BIN:-$ROOT/build/cli/slidepipe}
SYNTH=${SLIDEPIPE_SYNTH:-$ROOT/build/tools/slidepipe-synth}
CORES=$(nproc)
OUT=$ROOT/benchmarks/out/serve
SLIDE=${1:-$ROOT/benchmarks/out/bench-32768x24576.svs}
DUR=${2:-10}
CONN=${3:-8}
mkdir -p "$OUT"
if [ ! -f "$SLIDE" ]; then
    "$ROOT/../shared/bench/make-bench-slide.sh" \
        "${SLIDEPIPE_TESTDATA:-$ROOT/../shared/testdata}/CMU-1-Small-Region.svs" "$SLIDE"
fi
SLIDE=$(cd "$(dirname "$SLIDE")" && pwd)/$(basename "$SLIDE")
[ -x "$BIN" ] || { echo "bench_serve: build slidepipe first ($BIN)" >&2; exit 1; }

pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# ---- inputs: the two pyramids of the same slide, same settings ----
if [ ! -f "$OUT/pyr.dzi" ]; then
    /usr/bin/time -f "%e s %M KB" "$BIN" tile "$SLIDE" -o "$OUT/pyr" --quiet --force
fi
if [ ! -f "$OUT/pyr.tiff" ]; then
    /usr/bin/time -f "%e s %M KB" "$BIN" tile "$SLIDE" -o "$OUT/pyr.tiff" \
        --container tiff --quiet --force
fi
W=$(sed -n 's/.*Width="\([0-9]*\)".*/\1/p' "$OUT/pyr.dzi")
H=$(sed -n 's/.*Height="\([0-9]*\)".*/\1/p' "$OUT/pyr.dzi")

# every tile URL of a Deep Zoom pyramid of W x H (tile T, overlap O)
urls() { # PREFIX T EXT
    /usr/bin/python3 - "$W" "$H" "$1" "$2" "$3" <<'PY'
import sys
W, H, pre, T, ext = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
n = 0
while (1 << n) < max(W, H):
    n += 1
for lv in range(n + 1):
    w, h = W, H
    for _ in range(n - lv):
        w, h = (w + 1) // 2, (h + 1) // 2
    for r in range((h + T - 1) // T):
        for c in range((w + T - 1) // T):
            print(f"{pre}/{lv}/{c}_{r}.{ext}")
PY
}

# random tiles: uniform over all tiles, or (SP_BY_LEVEL=1) a level first,
# uniform over the levels, then a tile of it
cat > "$OUT/random.lua" <<'LUA'
local paths, levels = {}, {}
local by_level = os.getenv("SP_BY_LEVEL") == "1"
for line in io.lines(os.getenv("SP_URLS")) do
  paths[#paths + 1] = line
  local lv = tonumber(line:match("_files/(%d+)/")) or 0
  if not levels[lv + 1] then levels[lv + 1] = {} end
  table.insert(levels[lv + 1], line)
end
local nlv = #levels
local seeded = false
request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    seeded = true
  end
  if by_level then
    local l = levels[math.random(nlv)]
    return wrk.format("GET", l[math.random(#l)])
  end
  return wrk.format("GET", paths[math.random(#paths)])
end
LUA

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_url() { # URL
    i=0
    until /usr/bin/python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench_serve: $1 never answered" >&2; exit 1; }
        sleep 0.2
    done
}

peak_rss() { # PID...: summed VmHWM in MB
    t=0
    for p in "$@"; do
        k=$(sed -n 's/VmHWM:[^0-9]*\([0-9]*\).*/\1/p' "/proc/$p/status" 2>/dev/null || echo 0)
        t=$((t + ${k:-0}))
    done
    echo $((t / 1024))
}

RESULTS=$OUT/results.tsv
printf "server\ttiles_per_s\tp50_ms\tp99_ms\terrors\tpeak_rss_mb\tbound_mb\n" > "$RESULTS"

# the memory bound of `serve --help`, MiB:
# CACHE_MB OVERVIEWS OVERVIEW_MP THREADS READERS MAX_CONNECTIONS
bound() {
    awk -v c="$1" -v o="$2" -v m="$3" -v t="$4" -v r="$5" -v n="$6" -v k="$CORES" \
        'BEGIN { printf "%.0f", c + o*m*3 + t*16 + (r + o*k)*50 + o*12 + n*0.03 + 64 }'
}
DEFAULT_BOUND_ARGS="2 16 $CORES $((CORES + 1)) 256"

# run_wrk NAME BASEURL URLFILE BOUND PIDS... (WRK_CLOSE=1: one request per
# connection)
run_wrk() {
    name=$1 base=$2 list=$3 bnd=$4; shift 4
    rpids=$*
    # warm-up: a sample must answer 200 (and warms the page cache alike)
    head -n 200 "$list" | while read -r u; do
        code=$(/usr/bin/python3 -c "import urllib.request,sys
try: print(urllib.request.urlopen(sys.argv[1], timeout=30).status)
except Exception as e: print(getattr(e,'code',0))" "$base$u")
        [ "$code" = 200 ] || { echo "bench_serve: $name $u -> $code" >&2; exit 1; }
    done
    # a first pass over the same URLs warms the page cache alike for the
    # runs that follow (not recorded)
    SP_URLS=$list SP_BY_LEVEL=${SP_BY_LEVEL:-0} wrk -t2 -c"$CONN" -d"$(( (DUR + 1) / 2 ))s" \
        --timeout 10s -s "$OUT/random.lua" "$base" > /dev/null
    # (wrk keeps a -H header only with a space after the colon)
    if [ "${WRK_CLOSE:-0}" = 1 ]; then set -- -H "Connection: close"; else set --; fi
    SP_URLS=$list SP_BY_LEVEL=${SP_BY_LEVEL:-0} wrk -t2 -c"$CONN" -d"${DUR}s" --timeout 10s --latency \
        "$@" -s "$OUT/random.lua" "$base" > "$OUT/wrk-$name.txt"
    rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name.txt")
    p50=$(awk '$1=="50%" {print $2}' "$OUT/wrk-$name.txt")
    p99=$(awk '$1=="99%" {print $2}' "$OUT/wrk-$name.txt")
    errs=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' "$OUT/wrk-$name.txt")
    ms() { echo "$1" | awk '/us$/ {sub("us",""); print $0/1000; next} /ms$/ {sub("ms",""); print $0+0; next} /s$/ {sub("s",""); print $0*1000}'; }
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$name" "$rps" "$(ms "$p50")" "$(ms "$p99")" \
        "$errs" "$(peak_rss $rpids)" "$bnd" >> "$RESULTS"
}

# ---- 1. slidepipe, pre-built ----
P=$(free_port)
"$BIN" serve --quiet --port "$P" "$OUT/pyr.dzi" & sp1=$!; pids="$pids $sp1"
wait_url "http://127.0.0.1:$P/api/slides"
urls /dzi/pyr_files 254 jpeg > "$OUT/urls-sp.txt"
run_wrk slidepipe-prebuilt "http://127.0.0.1:$P" "$OUT/urls-sp.txt" \
    "$(bound 256 $DEFAULT_BOUND_ARGS)" $sp1
# 1b. the same, one request per connection
WRK_CLOSE=1
run_wrk slidepipe-prebuilt-close \
    "http://127.0.0.1:$P" "$OUT/urls-sp.txt" "$(bound 256 $DEFAULT_BOUND_ARGS)" $sp1
WRK_CLOSE=0
kill $sp1; wait $sp1 2>/dev/null || true

# ---- 2. slidepipe, on the fly (cold: 1 MiB cache) ----
P=$(free_port)
ln -sf "$SLIDE" "$OUT/fly.svs"
"$BIN" serve --quiet --port "$P" --cache-mb 1 "$OUT/fly.svs" & sp2=$!; pids="$pids $sp2"
wait_url "http://127.0.0.1:$P/api/slides"
urls /dzi/fly_files 254 jpeg > "$OUT/urls-fly.txt"
run_wrk slidepipe-on-the-fly "http://127.0.0.1:$P" "$OUT/urls-fly.txt" \
    "$(bound 1 $DEFAULT_BOUND_ARGS)" $sp2
kill $sp2; wait $sp2 2>/dev/null || true

# ---- 4. slidepipe, on the fly, a single-level slide, 16 MiB cache ----
FLAT=$OUT/flat-20000.svs
if [ ! -f "$FLAT" ]; then
    "$SYNTH" -o "$FLAT" --width 20000 --height 20000 --levels 1 --seed 5
fi
P=$(free_port)
"$BIN" serve --quiet --port "$P" --cache-mb 16 "$FLAT" & sp4=$!; pids="$pids $sp4"
wait_url "http://127.0.0.1:$P/api/slides"
FW=$W FH=$H
W=20000 H=20000
urls /dzi/flat-20000_files 254 jpeg > "$OUT/urls-flat.txt"
W=$FW H=$FH
SP_BY_LEVEL=1
run_wrk slidepipe-flat-on-the-fly "http://127.0.0.1:$P" "$OUT/urls-flat.txt" \
    "$(bound 16 $DEFAULT_BOUND_ARGS)" $sp4
SP_BY_LEVEL=0
kill $sp4; wait $sp4 2>/dev/null || true

# ---- 3. IIPImage behind lighttpd FastCGI ----
P=$(free_port)
FP=$(free_port)
cat > "$OUT/lighttpd.conf" <<CONF
server.modules = ("mod_fastcgi")
server.document-root = "$OUT"
server.bind = "127.0.0.1"
server.port = $P
server.errorlog = "$OUT/lighttpd-error.log"
server.max-connections = 256
fastcgi.server = ( "/fcgi-bin/iipsrv.fcgi" =>
  (( "host" => "127.0.0.1", "port" => $FP, "check-local" => "disable",
     "min-procs" => 2, "max-procs" => 2,
     "bin-path" => "/usr/lib/iipimage-server/iipsrv.fcgi",
     "bin-environment" => (
        "LOGFILE" => "$OUT/iipsrv.log", "VERBOSITY" => "0",
        "FILESYSTEM_PREFIX" => "$OUT/", "JPEG_QUALITY" => "75",
        "MAX_IMAGE_CACHE_SIZE" => "256", "MAX_CVT" => "5000" ) )) )
CONF
lighttpd -D -f "$OUT/lighttpd.conf" & lt=$!; pids="$pids $lt"
wait_url "http://127.0.0.1:$P/fcgi-bin/iipsrv.fcgi?DeepZoom=pyr.tiff.dzi"
urls "/fcgi-bin/iipsrv.fcgi?DeepZoom=pyr.tiff_files" 256 jpg > "$OUT/urls-iip.txt"
iip=$(pgrep -f "^/usr/lib/iipimage-server/iipsrv.fcgi" -P "$lt" | tr '\n' ' ' || true)
run_wrk iipimage "http://127.0.0.1:$P" "$OUT/urls-iip.txt" - $lt $iip
kill $lt; wait $lt 2>/dev/null || true

# ---- report ----
echo "== tile serving: ${W}x${H} slide, random Deep Zoom tiles, wrk -t2 -c$CONN, ${DUR}s each, $(nproc) cores"
column -t -s "$(printf '\t')" "$RESULTS"
/usr/bin/python3 - "$RESULTS" <<'PY'
import csv, sys
rows = {r["server"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
iip = float(rows["iipimage"]["tiles_per_s"])
for k in ("slidepipe-prebuilt", "slidepipe-on-the-fly"):
    print(f"{k}: {float(rows[k]['tiles_per_s']) / iip:.2f}x IIPImage's throughput")
p99 = float(rows["slidepipe-on-the-fly"]["p99_ms"])
print(f"on-the-fly p99 {p99:.0f} ms (target < 250 ms): {'ok' if p99 < 250 else 'MISSED'}")
ka, cl = (float(rows[k]["tiles_per_s"]) for k in
          ("slidepipe-prebuilt", "slidepipe-prebuilt-close"))
print(f"pre-built, keep-alive {ka:.0f} tiles/s vs one request per connection "
      f"{cl:.0f} tiles/s: {ka / cl:.2f}x")
for k in ("slidepipe-on-the-fly", "slidepipe-flat-on-the-fly"):
    r = rows[k]
    ok = float(r["peak_rss_mb"]) <= float(r["bound_mb"])
    print(f"{k}: peak RSS {r['peak_rss_mb']} MB, documented bound "
          f"{r['bound_mb']} MiB: {'within' if ok else 'OVER'}")
PY
