#!/usr/bin/python3
"""`cmake --install` into a temporary prefix, then the installed slidepipe
used from a folder outside the source tree, as a Debian user would: info,
run, batch, query and serve (the pages, every /static/ asset, a tile, and
OpenSeadragon opening the slide in headless Chromium). Every command runs
under `strace -f -e trace=%file`: a path of the source tree or the build
tree in any file call fails the test. Also the installed layout: the
binaries, the browser assets (byte for byte the source tree's), a man page
for slidepipe and for every command its --help lists, the docs."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # Debian python3-websocket
from sptest import DATA, check, finish
from test_viewer_browser import Page, start_chromium, stop_chromium

SRC = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.path.realpath(os.environ["SLIDEPIPE_BUILD"])
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
# trees the installed binary must not touch (node_modules may be a link
# to another checkout's)
FORBIDDEN = {SRC, BUILD, os.path.realpath(os.path.join(SRC, "viewer", "node_modules"))}
OSD = os.path.join(SRC, "viewer", "node_modules", "openseadragon", "build",
                   "openseadragon", "openseadragon.min.js")


class Tracer:
    """Runs commands under strace from `cwd`; collects the paths of every
    file call."""

    def __init__(self, tmp, cwd):
        self.tmp, self.cwd, self.logs = tmp, cwd, []
        # no SLIDEPIPE_* from ctest: the binary must not need them. LSan
        # cannot run under a tracer (the ASan build): no leak check here
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SLIDEPIPE_", "LD_"))}
        self.env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + \
            ":detect_leaks=0"

    def argv(self, args):
        log = os.path.join(self.tmp, f"strace-{len(self.logs)}.log")
        self.logs.append(log)
        return ["strace", "-f", "-qq", "-s", "4096", "-e", "trace=%file",
                "-o", log, *args]

    def run(self, *args, timeout=120):
        return subprocess.run(self.argv(args), cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args):
        return subprocess.Popen(self.argv(args), cwd=self.cwd, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def paths(self, log):
        """Every quoted string of the log's file calls, made absolute."""
        out = set()
        with open(log, errors="replace") as f:
            for line in f:
                for s in re.findall(r'"((?:[^"\\]|\\.)*)"', line):
                    if s.startswith("/") or "/" in s:
                        out.add(os.path.normpath(os.path.join(self.cwd, s)))
        return out


def inside(path, roots):
    return any(path == r or path.startswith(r + "/") for r in roots)


def tree_offenders(tracer, log):
    return sorted(p for p in tracer.paths(log) if inside(p, FORBIDDEN))


def check_layout(prefix, bin_):
    for f in ("bin/slidepipe", "bin/slidepipe-synth"):
        check(os.access(os.path.join(prefix, f), os.X_OK), f"installed {f}")
    static = os.path.join(prefix, "share/slidepipe/viewer/static")
    for name, src in (("viewer.js", os.path.join(SRC, "viewer/static/viewer.js")),
                      ("viewer.css", os.path.join(SRC, "viewer/static/viewer.css")),
                      ("openseadragon.min.js", OSD)):
        p = os.path.join(static, name)
        check(os.path.isfile(p) and open(p, "rb").read() == open(src, "rb").read(),
              f"installed asset {name} is the source's")
    doc = os.path.join(prefix, "share/doc/slidepipe")
    for src in [os.path.join(SRC, "README.md")] + glob.glob(os.path.join(SRC, "docs", "*.md")):
        rel = os.path.relpath(src, SRC)
        check(os.path.isfile(os.path.join(doc, rel)), f"installed doc {rel}")
    check(os.path.isfile(os.path.join(doc, "openseadragon", "LICENSE.txt")),
          "OpenSeadragon's licence installed")
    # a man page per command --help lists, rendering without warnings
    help_ = subprocess.run([bin_, "--help"], capture_output=True, text=True).stdout
    cmds = re.findall(r"^  ([a-z]+) ", help_.split("Commands:\n", 1)[1].split("\n\n")[0],
                      re.M)
    check(len(cmds) >= 8, f"commands of --help: {cmds}")
    man = os.path.join(prefix, "share/man/man1")
    for page, words in [("slidepipe", ["slidepipe"] + cmds)] + [
            (f"slidepipe-{c}", [f"slidepipe {c}", "--help"]) for c in cmds]:
        p = os.path.join(man, page + ".1")
        if not check(os.path.isfile(p), f"man page {page}.1"):
            continue
        r = subprocess.run(["man", "--warnings", "-l", p], capture_output=True,
                           text=True, env=dict(os.environ, MANWIDTH="80"))
        text = re.sub(r"\s+", " ", r.stdout.replace("\u2010\n", "").replace("-\n", "-"))
        check(r.returncode == 0 and r.stderr == "" and all(w in text for w in words),
              f"man {page}: renders and names {words} {r.stderr!r}")
    extra = set(os.listdir(man)) - {"slidepipe.1"} - {f"slidepipe-{c}.1" for c in cmds}
    check(not extra, f"no man page without a command: {extra}")


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def check_serve(tracer, bin_, prefix, work, tmp):
    srv = tracer.popen(bin_, "serve", "--port", "0", os.path.join(work, "cmu.dzi"))
    chrome = None
    try:
        head = srv.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", head)
        ids = re.findall(r"/slide/(\S+)", srv.stdout.readline())
        if not check(m and ids, f"serve: {head!r}"):
            srv.kill()
            print(srv.stderr.read(), file=sys.stderr)
            return
        base, sid = f"http://127.0.0.1:{m.group(1)}", ids[0]
        st, _, page = get(f"{base}/slide/{sid}")
        check(st == 200, "the slide's page")
        static = os.path.join(prefix, "share/slidepipe/viewer/static")
        assets = re.findall(r'"/static/([^"?]+)', page.decode())
        check(sorted(set(assets)) == sorted(os.listdir(static)),
              f"the page uses every installed asset: {assets}")
        for a in set(assets):
            st, _, body = get(f"{base}/static/{a}")
            check(st == 200 and body == open(os.path.join(static, a), "rb").read(),
                  f"/static/{a} is the installed file")
        st, ctype, tile = get(f"{base}/dzi/{sid}_files/8/0_0.jpeg")
        check(st == 200 and ctype == "image/jpeg" and tile[:3] == b"\xff\xd8\xff",
              "a tile over HTTP")

        # OpenSeadragon, as installed, opens the slide in a browser
        chrome, wsurl = start_chromium(os.path.join(tmp, "profile"))
        pg = Page(websocket.create_connection(wsurl, timeout=30, suppress_origin=True))
        pg.call("Page.enable")
        pg.call("Page.navigate", url=f"{base}/slide/{sid}")
        ok = pg.wait("window.slidepipeViewer && slidepipeViewer.ready && "
                     "slidepipeViewer.viewer.world.getItemAt(0) && "
                     "slidepipeViewer.viewer.world.getItemAt(0).getFullyLoaded()")
        check(ok, "Chromium: OpenSeadragon opens the slide and loads its tiles")
        st = json.loads(pg.js("JSON.stringify({n: slidepipeViewer.tilesLoaded, "
                              "f: slidepipeViewer.tilesFailed, "
                              "osd: OpenSeadragon.version.versionStr})"))
        want = re.search(rb"openseadragon (\S+)", open(OSD, "rb").read(200)).group(1)
        check(st["n"] > 0 and st["f"] == 0 and st["osd"] == want.decode(),
              f"Chromium: tiles loaded, OpenSeadragon {want.decode()}: {st}")
    finally:
        stop_chromium(chrome)
        # SIGTERM to slidepipe itself (strace's child): a clean exit
        kids = open(f"/proc/{srv.pid}/task/{srv.pid}/children").read().split() \
            if srv.poll() is None else []
        for k in kids:
            os.kill(int(k), signal.SIGTERM)
        try:
            check(srv.wait(timeout=20) == 0, "serve exits 0 on SIGTERM")
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
            check(False, "serve did not stop on SIGTERM")
    log = tracer.logs[-1]
    check(any(p.startswith(static + "/") for p in tracer.paths(log)),
          "serve read its assets from the installed folder")


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="sp-install-")
    try:
        prefix = os.path.join(tmp, "prefix")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        if not check(r.returncode == 0, f"cmake --install: {r.stderr}"):
            return finish()
        bin_ = os.path.join(prefix, "bin", "slidepipe")
        check_layout(prefix, bin_)

        work = os.path.join(tmp, "work")
        os.makedirs(work)
        tr = Tracer(tmp, work)

        # the detector itself: the build tree's binary is caught
        tr.run(os.path.join(BUILD, "cli", "slidepipe"), "--version")
        check(tree_offenders(tr, tr.logs.pop()), "strace sees the build tree")

        r = tr.run(bin_, "--version")
        check(r.returncode == 0 and r.stdout.startswith("slidepipe "), "--version")
        r = tr.run(bin_, "info", "--json", CMU)
        check(r.returncode == 0 and json.loads(r.stdout)["ok"], f"info: {r.stderr}")
        r = tr.run(bin_, "run", CMU, "-o", "cmu", "--quiet")
        check(r.returncode == 0 and os.path.isfile(os.path.join(work, "cmu.h5"))
              and os.path.isfile(os.path.join(work, "cmu.dzi")), f"run: {r.stderr}")
        r = tr.run(bin_, "batch", "--quiet", "-o", "batch",
                   os.path.join(DATA, "boxes.tiff"), os.path.join(DATA, "small.svs"))
        check(r.returncode == 0 and os.path.isfile(os.path.join(work, "batch", "cohort.h5")),
              f"batch: {r.returncode} {r.stderr}")
        r = tr.run(bin_, "query", "--count", "-f", "json", "cmu.h5", "batch/cohort.h5")
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        check(r.returncode == 0 and rows and rows[-1]["slide"] is None
              and rows[-1]["count"] > 0, f"query: {r.stdout} {r.stderr}")
        check_serve(tr, bin_, prefix, work, tmp)

        for log in tr.logs:
            bad = tree_offenders(tr, log)
            check(not bad, f"{log}: the installed binary touched {bad[:5]}")
        check(time.time() - t0 < 60, f"took {time.time() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
