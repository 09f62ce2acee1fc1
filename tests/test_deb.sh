#!/bin/sh
# The Debian package end to end, as root on a Debian 12 machine
# (scripts/test.sh runs it after the ctest suites; about 30 s):
#   1. build it (scripts/package.sh, a Release build in build-release/ or
#      BUILD_DIR; scripts/test.sh passes build/, which it has built that
#      way and tested, so nothing is compiled a second time)
#   2. lintian: no errors, no warnings but those listed below (the tags
#      found are printed)
#   3. apt-get install ./slidepipe_*.deb: it may pull only packages of the
#      Debian archive
#   4. from a folder outside the source tree: /usr/bin/slidepipe --version,
#      info and run on a test slide, serve (under strace: it must open
#      nothing in the source or build tree) answering its pages, assets
#      and one tile
#   5. dpkg -r slidepipe: none of the files `dpkg -L` listed remain.
# The package is removed on every exit (trap), so a failed run never
# leaves /usr/bin/slidepipe behind. Refuses to run when a slidepipe is
# already installed. Test slides: $SLIDEPIPE_TESTDATA.
#   tests/test_deb.sh [BUILD_DIR]
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
bdir=${1:-build-release}
data=${SLIDEPIPE_TESTDATA:-$src/../shared/testdata}
py=/usr/bin/python3

fail() {
    echo "test_deb: FAIL: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the package)"
data=$(cd "$data" 2>/dev/null && pwd) || fail "no test slides (set SLIDEPIPE_TESTDATA)"
slide=$data/CMU-1-Small-Region.svs
[ -f "$slide" ] || fail "no test slide $slide (set SLIDEPIPE_TESTDATA)"
if dpkg-query -W -f='${Status}' slidepipe 2>/dev/null | grep -q installed ||
    [ -e /usr/bin/slidepipe ]; then
    fail "slidepipe is already installed here: remove it first (dpkg -r slidepipe)"
fi

tmp=$(mktemp -d /tmp/sp-deb-test.XXXXXX)
installed=false
srv=""
# stop serve: strace's child, then strace (which, signalled itself,
# would detach and leave serve running)
stop_serve() {
    kill $(ps -o pid= --ppid "$srv") 2>/dev/null || true
    wait "$srv" 2>/dev/null || true
    srv=""
}
cleanup() {
    status=$?
    if [ -n "$srv" ]; then
        stop_serve
    fi
    if $installed; then
        dpkg -r slidepipe >/dev/null 2>&1 || echo "test_deb: dpkg -r slidepipe failed" >&2
    fi
    rm -rf "$tmp"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. build ----
deb=$("$src/scripts/package.sh" "$bdir" 2>"$tmp/package.log") || {
    tail -n 30 "$tmp/package.log" >&2
    fail "scripts/package.sh"
}
case $deb in /*) ;; *) deb=$src/$deb ;; esac
echo "test_deb: built $(basename "$deb"); Depends: $(dpkg-deb -f "$deb" Depends)"

# ---- 2. lintian ----
# no errors, and no warnings but these (each with its reason):
#   slidepipe-synth has no man page yet (the install rules generate the
#   others with help2man; to be added there)
allowed="W: slidepipe: no-manual-page [usr/bin/slidepipe-synth]"
lintian --fail-on none --display-info "$deb" >"$tmp/lintian.log" 2>&1 || {
    cat "$tmp/lintian.log" >&2
    fail "lintian did not run"
}
grep -E '^[EWI]: ' "$tmp/lintian.log" | sed 's/^/test_deb: lintian: /' || true
bad=$(grep -E '^[EW]: ' "$tmp/lintian.log" | grep -vxF "$allowed" || true)
[ -z "$bad" ] || fail "lintian: $bad"

# ---- 3. install ----
# what apt would install besides slidepipe: only from the Debian archive
LC_ALL=C apt-get install -s -y "$deb" >"$tmp/sim.log" 2>&1 ||
    { cat "$tmp/sim.log" >&2; fail "apt-get cannot resolve the package's Depends"; }
extra=$(grep '^Inst ' "$tmp/sim.log" | grep -v '^Inst slidepipe ' | grep -v 'Debian' || true)
[ -z "$extra" ] || fail "apt-get would install from outside Debian: $extra"
n=$(grep -c '^Inst ' "$tmp/sim.log" || true)
echo "test_deb: apt-get installs $n package(s) (slidepipe included)"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./*|/|; s|/$||' |
    while read -r f; do
        if [ -e "$f" ]; then echo "$f"; fi
    done >"$tmp/before"
installed=true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >"$tmp/apt.log" 2>&1 ||
    { cat "$tmp/apt.log" >&2; fail "apt-get install $deb"; }
# the package's own paths: what dpkg -L lists, less the folders that
# existed before it (/usr/bin, ...)
dpkg -L slidepipe | grep -vxF -f "$tmp/before" >"$tmp/own" || true
[ -x /usr/bin/slidepipe ] || fail "no /usr/bin/slidepipe after install"

# ---- 4. smoke test, outside the source tree ----
mkdir "$tmp/work"
cd "$tmp/work"
sp=/usr/bin/slidepipe
v=$($sp --version) || fail "slidepipe --version"
echo "$v" | grep -q "^slidepipe $(dpkg-deb -f "$deb" Version)" ||
    fail "--version says '$v'"
$sp info "$slide" >info.txt || fail "slidepipe info"
grep -q aperio info.txt || fail "info: no vendor in $(cat info.txt)"
mkdir out
$sp run "$slide" -o out/cmu --quiet || fail "slidepipe run"
for f in out/cmu.dzi out/cmu.json out/cmu.h5 out/cmu_files/0/0_0.jpeg; do
    [ -s "$f" ] || fail "run made no $f"
done

strace -f -qq -e trace=%file -o strace.log $sp serve --port 0 out/cmu.dzi "$slide" \
    >serve.out 2>serve.err &
srv=$!
$py - "$tmp/work/serve.out" <<'EOF' || fail "serve (stderr: $(cat serve.err))"
import json, re, sys, time, urllib.request
out = sys.argv[1]
for _ in range(100):
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", open(out).read())
    if m:
        break
    time.sleep(0.1)
else:
    sys.exit("serve printed no address")
base = f"http://127.0.0.1:{m.group(1)}"
def get(path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        assert r.status == 200, (path, r.status)
        return r.headers.get("Content-Type", ""), r.read()
_, body = get("/")
slides = json.loads(get("/api/slides")[1])["slides"]
assert len(slides) == 2, slides
for s in slides:
    assert s["name"].encode() in body, (s["name"], "not on the list page")
    t, page = get(f"/slide/{s['id']}")
    assert t.startswith("text/html"), t
    # the page's scripts and styles: the installed viewer assets
    refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.decode())
    names = {r.split("/")[-1].split("?")[0] for r in refs}
    assert {"openseadragon.min.js", "viewer.js", "viewer.css"} <= names, refs
    for r in refs:
        assert len(get(r)[1]) > 100, r
    dzi = get(s["dzi"])[1].decode()
    assert "<Image" in dzi, dzi[:200]
    stem = s["dzi"].split("?")[0][:-len(".dzi")]
    t, tile = get(f"{stem}_files/{s['dz_levels'] - 1}/0_0.{s['format']}")
    assert t == "image/jpeg" and tile[:2] == b"\xff\xd8", (t, tile[:4])
print(f"test_deb: serve answered pages, assets and tiles of {len(slides)} slides")
EOF
stop_serve
if grep -v ENOENT strace.log | grep -F -e "\"$src/" -e "\"$src\"" >strace.src; then
    head -n 5 strace.src >&2
    fail "the installed slidepipe opened files in the source tree $src"
fi
grep -q '"/usr/share/slidepipe/viewer/static/openseadragon.min.js"' strace.log ||
    fail "serve did not read /usr/share/slidepipe/viewer/static/openseadragon.min.js"
cd /

# ---- 5. remove ----
dpkg -r slidepipe >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log" >&2; fail "dpkg -r slidepipe"; }
installed=false
left=""
while read -r f; do
    [ -e "$f" ] && left="$left $f"
done <"$tmp/own"
[ -z "$left" ] || fail "left after dpkg -r:$left"
echo "test_deb: removed; none of its $(wc -l <"$tmp/own") paths remain"
echo "test_deb: PASS"
