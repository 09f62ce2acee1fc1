#!/usr/bin/python3
"""`slidepipe serve` over HTTP: on-the-fly Deep Zoom tiles equal the tiles
of the pre-built pyramid (`slidepipe tile`) byte for byte at every level
(CMU-1-Small-Region.svs, boxes.tiff, a generated slide), deep tiles of a
bigger generated slide read from a native level stay close to them;
skipped background tiles are served as background; HTTP caching (ETag,
304, Cache-Control), content types, HEAD, 405; traversal attempts (.., %2e,
absolute paths, NUL bytes, overlong URLs, symbolic links) all get 4xx and
never read outside; label images only with --show-associated."""
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image
from sptest import DATA, check, finish

BIN = os.environ["SLIDEPIPE_BIN"]
SYNTH = os.environ.get("SLIDEPIPE_SYNTH")
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
BOXES = os.path.join(DATA, "boxes.tiff")



class Server:
    """slidepipe serve on 127.0.0.1, an ephemeral port; always killed."""

    def __init__(self, *args):
        self.p = subprocess.Popen([BIN, "serve", "--port", "0", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        line = self.p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.p.kill()
            raise RuntimeError("serve did not start: %r %s" %
                               (line, self.p.stderr.read()))
        self.port = int(m.group(1))
        self.ids = {}
        for l in iter(self.p.stdout.readline, ""):
            m = re.match(r"\s+/slide/(\S+)\s+(.*)", l)
            if m:
                self.ids[m.group(2)] = m.group(1)
            if len(self.ids) == args_count(args):
                break

    def get(self, path, method="GET", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def raw(self, data):
        """Send raw bytes, return the status code (0: no answer)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            s.sendall(data)
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
            return int(m.group(1)) if m else 0
        except OSError:
            return 0
        finally:
            s.close()

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def args_count(args):
    return sum(1 for a in args if not a.startswith("--"))


def tile(src, out, *extra):
    r = subprocess.run([BIN, "tile", src, "-o", out, "--quiet", *extra],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"tile {src}: {r.stderr}")


def dz_levels(w, h):
    n = 0
    while (1 << n) < max(w, h):
        n += 1
    return n + 1


def tiles_of(w, h, T=254):
    n = dz_levels(w, h)
    for lv in range(n):
        d = n - 1 - lv
        lw, lh = w, h
        for _ in range(d):
            lw, lh = (lw + 1) // 2, (lh + 1) // 2
        for r in range((lh + T - 1) // T):
            for c in range((lw + T - 1) // T):
                yield lv, c, r


def compare_all(srv, fly, pre, w, h, what, max_tiles=None):
    ok = bad = 0
    for i, (lv, c, r) in enumerate(tiles_of(w, h)):
        if max_tiles and i >= max_tiles:
            break
        s1, h1, b1 = srv.get(f"/dzi/{fly}_files/{lv}/{c}_{r}.jpeg")
        s2, h2, b2 = srv.get(f"/dzi/{pre}_files/{lv}/{c}_{r}.jpeg")
        if s1 == 200 and s2 == 200 and b1 == b2:
            ok += 1
        else:
            bad += 1
            if bad <= 3:
                print(f"  {what} tile {lv}/{c}_{r}: {s1} {s2} "
                      f"{len(b1)} {len(b2)} bytes", file=sys.stderr)
    check(bad == 0 and ok > 0, f"{what}: on-the-fly == pre-built for {ok} "
          f"tiles, {bad} differ")


def decode(b):
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).astype(np.float64)


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="sp-viewer-tiles-")
    tile(CMU, os.path.join(tmp, "pcmu"))
    tile(BOXES, os.path.join(tmp, "pboxes"))
    synth = os.path.join(tmp, "synth.svs")
    big = os.path.join(tmp, "big.svs")
    subprocess.run([SYNTH, "-o", synth, "--width", "1500", "--height", "1100",
                    "--seed", "7"], check=True, capture_output=True)
    subprocess.run([SYNTH, "-o", big, "--width", "6000", "--height", "4000",
                    "--seed", "3"], check=True, capture_output=True)
    tile(synth, os.path.join(tmp, "psynth"))
    tile(big, os.path.join(tmp, "pbig"))
    # tissue on a flat background: the pyramid encodes each solid tile's
    # colour once and reuses the bytes (tiles_reused), which must be the
    # bytes the viewer's encoder makes of the same pixels
    crop, wide = os.path.join(tmp, "crop.v"), os.path.join(tmp, "wide.v")
    flat = os.path.join(tmp, "flat.tif")
    subprocess.run(["vips", "crop", CMU, crop, "0", "0", "1000", "800"],
                   check=True)
    subprocess.run(["vips", "embed", crop, wide, "900", "700", "2200", "1800",
                    "--extend", "background", "--background",
                    "242 242 240 255"], check=True)
    subprocess.run(["vips", "tiffsave", wide, flat, "--tile", "--tile-width",
                    "256", "--tile-height", "256", "--compression", "jpeg",
                    "--Q", "85"], check=True)
    r = subprocess.run([BIN, "tile", flat, "-o", os.path.join(tmp, "pflat"),
                        "--quiet", "--json"], capture_output=True, text=True,
                       timeout=300)
    reused = json.loads(r.stdout)["tiles_reused"] if r.returncode == 0 else 0
    check(reused > 0, f"flat: solid tiles reused ({reused}): {r.stderr}")
    tile(CMU, os.path.join(tmp, "skip"), "--skip-background")
    # a pyramid whose tile is a symbolic link to a file outside it
    tile(BOXES, os.path.join(tmp, "evil"))
    secret = os.path.join(tmp, "secret.jpeg")
    with open(secret, "wb") as f:
        f.write(b"SECRET" * 100)
    victim = os.path.join(tmp, "evil_files", "9", "0_0.jpeg")
    os.remove(victim)
    os.symlink(secret, victim)
    os.symlink(secret, os.path.join(tmp, "evil_files", "8", "0_0.jpeg.lnk"))

    inputs = [CMU, BOXES, synth, big, flat] + [
        os.path.join(tmp, p + ".dzi")
        for p in ("pcmu", "pboxes", "psynth", "pbig", "pflat", "skip", "evil")]
    srv = Server(*inputs)
    try:
        ids = srv.ids
        cmu, boxes, syn, bg = (ids["CMU-1-Small-Region.svs"], ids["boxes.tiff"],
                               ids["synth.svs"], ids["big.svs"])
        # ---- on the fly == pre-built, every level ----
        compare_all(srv, cmu, ids["pcmu.dzi"], 2220, 2967, "CMU")
        compare_all(srv, boxes, ids["pboxes.dzi"], 300, 250, "boxes")
        compare_all(srv, syn, ids["psynth.dzi"], 1500, 1100, "synth")
        compare_all(srv, ids["flat.tif"], ids["pflat.dzi"], 2200, 1800, "flat")
        # the big slide: exact up to 4 MP regions; deeper tiles start from
        # a native level: close, not identical
        n = dz_levels(6000, 4000)
        for lv in range(n):
            s1, _, b1 = srv.get(f"/dzi/{bg}_files/{lv}/0_0.jpeg")
            s2, _, b2 = srv.get(f"/dzi/{ids['pbig.dzi']}_files/{lv}/0_0.jpeg")
            if not check(s1 == 200 and s2 == 200, f"big level {lv}: {s1} {s2}"):
                continue
            a, b = decode(b1), decode(b2)
            if not check(a.shape == b.shape, f"big level {lv}: {a.shape} {b.shape}"):
                continue
            d = n - 1 - lv
            region = min(6000, 255 << d) * min(4000, 255 << d)
            if region <= 4 << 20:
                check(b1 == b2, f"big level {lv}: exact tile differs")
            else:
                mse = np.mean((a - b) ** 2)
                psnr = 99 if mse == 0 else 10 * np.log10(255 ** 2 / mse)
                check(psnr > 28, f"big level {lv}: native-level tile PSNR {psnr:.1f}")

        # ---- skipped background tiles come back as background ----
        man = json.load(open(os.path.join(tmp, "skip.json")))
        skipped = [(L["level"], c, r) for L in man["levels"]
                   for r, row in enumerate(L["tiles"]) for c, ch in enumerate(row)
                   if ch == "0"]
        check(len(skipped) > 0, "the skip pyramid skipped some tiles")
        for (lv, c, r) in skipped[:5]:
            st, hd, body = srv.get(f"/dzi/{ids['skip.dzi']}_files/{lv}/{c}_{r}.jpeg")
            _, _, ref = srv.get(f"/dzi/{ids['pcmu.dzi']}_files/{lv}/{c}_{r}.jpeg")
            if check(st == 200 and hd.get("content-type") == "image/jpeg",
                     f"skipped tile {lv}/{c}_{r}: {st}"):
                a, b = decode(body), decode(ref)
                check(a.shape == b.shape and a.min() >= 240,
                      f"skipped tile {lv}/{c}_{r} is a white tile of the same size")

        # ---- caching, content types, HEAD, methods ----
        meta = json.loads(srv.get(f"/api/slide/{cmu}")[2])
        v = meta["version"]
        check(meta["width"] == 2220 and meta["height"] == 2967 and
              abs(meta["mpp_x"] - 0.499) < 1e-3 and meta["vendor"] == "aperio",
              f"slide metadata {meta}")
        path = f"/dzi/{cmu}_files/12/1_1.jpeg"
        st, hd, body = srv.get(path + "?v=" + v)
        check(st == 200 and hd["content-type"] == "image/jpeg" and
              "immutable" in hd.get("cache-control", "") and
              "max-age=31536000" in hd.get("cache-control", "") and
              hd.get("etag", "").startswith('"'), f"versioned tile headers {hd}")
        check(body[:3] == b"\xff\xd8\xff", "a JPEG tile")
        st2, hd2, _ = srv.get(path)
        check(st2 == 200 and hd2.get("cache-control") == "no-cache" and
              hd2.get("etag") == hd["etag"], f"unversioned tile headers {hd2}")
        st3, hd3, b3 = srv.get(path, headers={"If-None-Match": hd["etag"]})
        check(st3 == 304 and b3 == b"" and hd3.get("etag") == hd["etag"],
              f"If-None-Match gives 304: {st3}")
        st4, hd4, b4 = srv.get(path + "?v=" + v, method="HEAD")
        check(st4 == 200 and b4 == b"" and
              int(hd4.get("content-length", -1)) == len(body) and
              hd4.get("content-type") == "image/jpeg", f"HEAD {st4} {hd4}")
        st, hd, _ = srv.get(f"/dzi/{ids['pcmu.dzi']}_files/12/1_1.jpeg")
        check(st == 200 and hd.get("etag") and hd.get("content-type") == "image/jpeg",
              "pre-built tile headers")
        for p, ctype in (("/", "text/html; charset=utf-8"),
                         (f"/slide/{cmu}", "text/html; charset=utf-8"),
                         ("/api/slides", "application/json; charset=utf-8"),
                         (f"/dzi/{cmu}.dzi", "application/xml; charset=utf-8"),
                         ("/static/viewer.js", "text/javascript; charset=utf-8"),
                         ("/static/viewer.css", "text/css; charset=utf-8"),
                         ("/static/openseadragon.min.js",
                          "text/javascript; charset=utf-8")):
            st, hd, body = srv.get(p)
            check(st == 200 and hd.get("content-type") == ctype and
                  hd.get("x-content-type-options") == "nosniff" and
                  hd.get("etag"), f"{p}: {st} {hd.get('content-type')}")
            st, _, _ = srv.get(p, headers={"If-None-Match": hd.get("etag", "x")})
            check(st == 304, f"{p}: revalidation gives {st}")
        st, hd, body = srv.get("/")
        check("default-src 'none'" in hd.get("content-security-policy", ""),
              "pages carry a Content-Security-Policy")
        dzi = srv.get(f"/dzi/{cmu}.dzi")[2].decode()
        check('TileSize="254"' in dzi and 'Overlap="1"' in dzi and
              'Width="2220"' in dzi and 'Height="2967"' in dzi, "dzi descriptor")
        for m in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"):
            st, hd, _ = srv.get("/", method=m)
            check(st == 405 and "GET" in hd.get("allow", ""), f"{m} gives {st}")
        check(srv.raw(b"POST /api/slides HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 5\r\n\r\nhello") == 405, "POST with a body")
        for p in ("/nope", f"/slide/{cmu}x", f"/dzi/{cmu}_files/13/0_0.jpeg",
                  f"/dzi/{cmu}_files/12/99_0.jpeg", f"/dzi/{cmu}_files/12/0_0.png",
                  f"/assoc/{cmu}/label.png", f"/assoc/{cmu}/macro.png",
                  "/static/nope.js", f"/api/slide/{cmu}/features"):
            st = srv.get(p)[0]
            check(400 <= st < 500, f"{p} gives {st}")

        # ---- traversal and malformed requests ----
        attacks = [
            "/static/../../../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
            "/static/%2e%2e/%2e%2e/etc/passwd", "/dzi/%2e%2e/slide.dzi",
            f"/dzi/{cmu}_files/../../etc/passwd", "/etc/passwd",
            "//etc/passwd", "/static//etc/passwd", "/static/viewer.js%00.png",
            f"/dzi/{cmu}_files/12/0_0.jpeg%00", "/static/.%2e/x", "/..",
            "/static/..", "/./static/viewer.js", f"/slide/{cmu}/..",
            f"/dzi/{ids['evil.dzi']}_files/9/0_0.jpeg",
            f"/dzi/{ids['evil.dzi']}_files/8/0_0.jpeg.lnk",
            "/static/%76iewer.js", "/static\\viewer.js", "/" + "a" * 5000,
            f"/dzi/{cmu}_files/12/0_0.jpeg?v=../../x", "/api/slides?x=1",
            f"/api/slide/{cmu}/features?x=1", f"/dzi/{cmu}_files/-1/0_0.jpeg",
            f"/dzi/{cmu}_files/012/0_0.jpeg", f"/dzi/{cmu}_files/12/0_99999999999.jpeg",
        ]
        for a in attacks:
            st = srv.raw(b"GET " + a.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                         b"Connection: close\r\n\r\n")
            check(400 <= st < 500, f"{a[:80]} gives {st}")
        raws = [b"GET /static/viewer.js\x00/../x HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET \x00 HTTP/1.1\r\n\r\n",
                b"GET http://127.0.0.1/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /" + b"%2e" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100000 + b"\r\n\r\n",
                b"GARBAGE\r\n\r\n", b"GET /../../etc/passwd HTTP/1.0\r\n\r\n",
                b"GET /static/viewer.js HTTP/9.9\r\n\r\n"]
        for rq in raws:
            st = srv.raw(rq)
            check(st == 0 or 400 <= st < 600 and st != 500,
                  f"raw {rq[:40]!r}... gives {st}")
        check(srv.alive(), "the server survived the attacks")
        st, _, body = srv.get("/static/viewer.js")
        check(st == 200 and b"SECRET" not in body, "still serving")
    finally:
        rc = srv.stop()
    check(rc == 0, f"serve exits 0 on SIGTERM (got {rc})")

    # ---- associated images only when asked ----
    srv = Server("--show-associated", CMU)
    try:
        cmu = srv.ids["CMU-1-Small-Region.svs"]
        st, hd, body = srv.get(f"/assoc/{cmu}/label.png")
        check(st == 200 and hd.get("content-type") == "image/png" and
              body[:8] == b"\x89PNG\r\n\x1a\n" and
              "no-store" in hd.get("cache-control", ""), f"label with "
              f"--show-associated: {st}")
        page = srv.get(f"/slide/{cmu}")[2].decode()
        check(f"/assoc/{cmu}/label.png" in page, "the viewer page shows the label")
    finally:
        srv.stop()

    # ---- a folder: batch outputs, pyramids, slides; symlinks skipped ----
    d = os.path.join(tmp, "dir")
    os.makedirs(os.path.join(d, "case-1"))
    tile(BOXES, os.path.join(d, "case-1", "slide"))
    tile(BOXES, os.path.join(d, "pyr"))
    os.symlink(CMU, os.path.join(d, "link.svs"))
    srv = Server(d)
    try:
        lst = json.loads(srv.get("/api/slides")[2])["slides"]
        names = sorted(s["id"] for s in lst)
        check(names == ["case-1", "pyr"], f"folder scan ids {names}")
    finally:
        srv.stop()

    # ---- bad inputs ----
    r = subprocess.run([BIN, "serve", "--port", "0", os.path.join(DATA, "MANIFEST.tsv")],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 1 and r.stderr.count("\n") == 1 and "MANIFEST" in r.stderr,
          f"an unreadable slide: rc {r.returncode} {r.stderr!r}")
    r = subprocess.run([BIN, "serve", "--listen", "localhost", CMU],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2, f"a non-numeric --listen: rc {r.returncode}")
    subprocess.run(["rm", "-rf", tmp])
    print(f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, never hang
        import traceback
        traceback.print_exc()
        check(False, "the test raised an exception")
    sys.exit(finish())
