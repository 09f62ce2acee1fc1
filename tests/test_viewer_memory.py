#!/usr/bin/python3
"""`slidepipe serve` keeps to its documented memory bound on a slide with
no native lower levels: a generated single-level 20000x20000 JPEG TIFF is
served with a small cache (12000x12000 in the ASan build); every tile of the lowest Deep Zoom levels (cut
from the overview, or read from level 0 in bands) equals the tile of the
pre-built pyramid (`slidepipe tile`) byte for byte, and under random
on-the-fly requests over every level from 8 clients the server's peak RSS
(VmHWM) stays under the bound `serve --help` documents for the settings
used."""
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from sptest import BIN, SYNTH, check, finish

W = H = 20000
T = 254
# the settings served with, and the documented bound (serve --help), MiB
CACHE_MB, THREADS, READERS, OVERVIEWS, OVERVIEW_MP, MAXCONN = 16, 2, 2, 1, 1, 256
CORES = os.cpu_count() or 1


def bound_mib():
    return (CACHE_MB + OVERVIEWS * OVERVIEW_MP * 3 + THREADS * 16 +
            (READERS + OVERVIEWS * CORES) * 50 + OVERVIEWS * 12 +
            MAXCONN * 0.03 + 64)


def asan(binary):
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    return "libasan" in r.stdout


def dz_levels(w, h):
    n = 0
    while (1 << n) < max(w, h):
        n += 1
    return n + 1


def level_size(lv):
    n = dz_levels(W, H)
    w, h = W, H
    for _ in range(n - 1 - lv):
        w, h = (w + 1) // 2, (h + 1) // 2
    return w, h, (w + T - 1) // T, (h + T - 1) // T


def vmhwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return -1


def main():
    global W, H
    t0 = time.time()
    san = asan(BIN)
    if san:  # ASan makes generating and tiling 400 MP slow: 144 MP
        W = H = 12000
    tmp = tempfile.mkdtemp(prefix="sp-viewer-mem-")
    slide = os.path.join(tmp, "flat.svs")
    r = subprocess.run([SYNTH, "-o", slide, "--width", str(W), "--height",
                        str(H), "--levels", "1", "--seed", "5"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"synth: {r.stderr}")
    pyr = os.path.join(tmp, "pyr")
    r = subprocess.run([BIN, "tile", slide, "-o", pyr, "--quiet"],
                       capture_output=True, text=True, timeout=600)
    check(r.returncode == 0, f"tile: {r.stderr}")
    n = dz_levels(W, H)
    env = dict(os.environ)
    if san:  # a small quarantine, so freed blocks are reused
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + \
            ":quarantine_size_mb=8:thread_local_quarantine_size_kb=64"
    p = subprocess.Popen([BIN, "serve", "--port", "0", "--cache-mb",
                          str(CACHE_MB), "--threads", str(THREADS),
                          "--readers", str(READERS), "--overviews",
                          str(OVERVIEWS), "--overview-mp", str(OVERVIEW_MP),
                          slide], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", p.stdout.readline())
        if not check(m is not None, "serve started"):
            return
        port = int(m.group(1))

        def get(conn, path):
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()

        # ---- the lowest levels, byte for byte against the pyramid ----
        # (levels 0..n-5: four halvings or more below level 0, i.e. tiles
        # over 4 MP of level 0: the overview's and the banded ones)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        same = diff = 0
        for lv in range(n - 4):
            _, _, cols, rows = level_size(lv)
            if san and lv == n - 5:  # ASan: the banded level's first row
                rows = 1
            for row in range(rows):
                for col in range(cols):
                    name = f"{lv}/{col}_{row}.jpeg"
                    st, body = get(c, f"/dzi/flat_files/{name}")
                    with open(os.path.join(pyr + "_files", name), "rb") as f:
                        ref = f.read()
                    if st == 200 and body == ref:
                        same += 1
                    else:
                        diff += 1
                        if diff <= 3:
                            print(f"  tile {name}: {st}, {len(body)} vs "
                                  f"{len(ref)} bytes", file=sys.stderr)
        c.close()
        check(diff == 0 and same > 0, f"{W}x{H}, low levels: {same} tiles equal the "
              f"pyramid's, {diff} differ")
        low = vmhwm_mib(p.pid)

        # ---- random on-the-fly tiles of every level, 8 clients ----
        stop = time.time() + 5
        counts = {"ok": 0, "bad": 0}
        lock = threading.Lock()

        def client(seed):
            rnd = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while time.time() < stop:
                lv = rnd.randrange(n)
                _, _, cols, rows = level_size(lv)
                path = (f"/dzi/flat_files/{lv}/{rnd.randrange(cols)}_"
                        f"{rnd.randrange(rows)}.jpeg")
                try:
                    st, _ = get(conn, path)
                except (OSError, http.client.HTTPException):
                    st = 0
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port,
                                                      timeout=120)
                with lock:
                    counts["ok" if st == 200 else "bad"] += 1
            conn.close()

        ths = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        peak = vmhwm_mib(p.pid)
        check(counts["ok"] > 0 and counts["bad"] == 0,
              f"random tiles: {counts['ok']} answered, {counts['bad']} failed")
        b = bound_mib()
        if san:  # ASan: shadow memory (1/8) and allocator slack on top
            b = b * 1.5 + 128
        print(f"peak RSS {peak:.0f} MiB (after the low levels {low:.0f}), "
              f"bound {b:.0f} MiB{' (ASan)' if san else ''}")
        check(0 < peak < b, f"peak RSS {peak:.0f} MiB under the documented "
              f"bound {b:.0f} MiB")
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    check(p.returncode == 0, f"serve exits 0 (got {p.returncode})")
    print(f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        check(False, "the test raised an exception")
    sys.exit(finish())
