#!/usr/bin/python3
"""A real browser against `slidepipe serve`: headless Chromium (Debian's
/usr/bin/chromium) driven over the DevTools protocol (a minimal WebSocket
client below, standard library only). The viewer page of a slide analysed
by `slidepipe run` loads with no internet access, OpenSeadragon opens,
every request in the page's network log succeeds (no 4xx/5xx, no failed
load), the keyboard alone zooms, pans and toggles the heatmap (H), the
overlay appears with its legend, controls have accessible names, text
contrast meets WCAG 2.1 AA, and a screenshot is not blank. The slide list
page loads its thumbnails likewise."""
import base64
import io
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

import websocket  # Debian python3-websocket (websocket-client)
from PIL import Image
from sptest import DATA, check, finish

BIN = os.environ["SLIDEPIPE_BIN"]
CMU = os.path.join(DATA, "CMU-1-Small-Region.svs")
CHROMIUM = os.environ.get("SLIDEPIPE_CHROMIUM", "/usr/bin/chromium")



class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS {expr[:60]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.2)
        return None

    def key(self, key, code, vk, text=None, until=None):
        """Press and release a key; with `until` (a JS expression), hold
        it down until that is true (at most 30 s)."""
        for t in ("keyDown", "keyUp"):
            p = dict(type=t, key=key, code=code, windowsVirtualKeyCode=vk,
                     nativeVirtualKeyCode=vk)
            if text and t == "keyDown":
                p["text"] = text
            self.call("Input.dispatchKeyEvent", **p)
            if t == "keyDown" and until:
                self.wait(until)


def start_server(*args):
    p = subprocess.Popen([BIN, "serve", "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        p.kill()
        raise RuntimeError(f"serve: {line!r} {p.stderr.read()}")
    return p, f"http://127.0.0.1:{m.group(1)}"


def start_chromium(profile):
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--mute-audio",
            "--no-default-browser-check", "--hide-scrollbars",
            "--force-device-scale-factor=1", "--window-size=1280,900",
            f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "about:blank"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    port_file = os.path.join(profile, "DevToolsActivePort")
    t0 = time.time()
    while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
        if time.time() - t0 > 30 or p.poll() is not None:
            raise RuntimeError("chromium did not start")
        time.sleep(0.1)
    time.sleep(0.2)
    port = int(open(port_file).read().split()[0])
    for _ in range(50):
        try:
            targets = json.load(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/json/list", timeout=5))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return p, pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("no page target")


def stop_chromium(chrome):
    """Kill start_chromium's browser and its helpers; accepts None."""
    if chrome:
        try:
            os.killpg(chrome.pid, signal.SIGKILL)
        except OSError:
            pass
        chrome.wait()


A11Y_JS = r"""
(() => {
  const out = {unnamed: [], contrast: []};
  for (const el of document.querySelectorAll('button, input, select, a[href]')) {
    const name = (el.getAttribute('aria-label') || '').trim() ||
      (el.labels && el.labels.length ? el.labels[0].textContent.trim() : '') ||
      (el.tagName !== 'INPUT' && el.tagName !== 'SELECT' ? el.textContent.trim() : '') ||
      (el.querySelector('img[alt]:not([alt=""])') ? 'img' : '');
    if (!name && el.getAttribute('tabindex') !== '-1') out.unnamed.push(el.outerHTML.slice(0, 80));
  }
  const lum = c => { const v = c.map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
                     return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const rgba = s => { const m = s.match(/[\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const bgOf = el => { let layers = [];
    for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let bg = [255, 255, 255];
    for (const c of layers.reverse()) bg = [0, 1, 2].map(i => c[i] * c[3] + bg[i] * (1 - c[3]));
    return bg; };
  for (const el of document.querySelectorAll('h1, h2, a, button, label, td, th, dt, dd, p, span, caption, option')) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const st = getComputedStyle(el), fg = rgba(st.color), bg = bgOf(el);
    const f = [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3]));
    const l1 = lum(f), l2 = lum(bg), ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const big = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (big ? 3 : 4.5)) out.contrast.push(el.tagName + ' ' + el.textContent.trim().slice(0, 30) + ' ' + ratio.toFixed(2));
  }
  return out;
})()
"""


def main():
    t0 = time.time()
    if not check(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is installed"):
        return
    tmp = tempfile.mkdtemp(prefix="sp-viewer-browser-")
    out = os.path.join(tmp, "cmu")
    r = subprocess.run([BIN, "run", CMU, "-o", out, "--quiet"], capture_output=True,
                       text=True, timeout=300)
    if not check(r.returncode == 0 and os.path.exists(out + ".h5"),
                 f"slidepipe run: {r.returncode} {r.stderr}"):
        return
    srv = chrome = None
    try:
        srv, base = start_server(out + ".dzi", CMU)
        chrome, wsurl = start_chromium(os.path.join(tmp, "profile"))
        page = Page(websocket.create_connection(wsurl, timeout=30, suppress_origin=True))
        page.call("Network.enable")
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

        # ---- the viewer page ----
        page.call("Page.navigate", url=base + "/slide/cmu")
        ok = page.wait("window.slidepipeViewer && slidepipeViewer.ready && "
                       "slidepipeViewer.viewer.world.getItemAt(0) && "
                       "slidepipeViewer.viewer.world.getItemAt(0).getFullyLoaded()")
        check(ok, "OpenSeadragon opens the slide and loads its tiles")
        st = page.js("JSON.stringify({n: slidepipeViewer.tilesLoaded, f: "
                     "slidepipeViewer.tilesFailed, e: slidepipeViewer.errors, "
                     "osd: OpenSeadragon.version.versionStr})")
        st = json.loads(st)
        check(st["n"] > 0 and st["f"] == 0 and not st["e"],
              f"tiles loaded {st}")
        check(page.js("!!document.querySelector('#scalebar:not([hidden]) .label') && "
                      "/\\d+ (\\u00b5m|mm)/.test(document.querySelector('#scalebar .label').textContent)"),
              "the scale bar shows a length from the slide's mpp")

        # keyboard only: focus the slide, zoom in with '+', pan with arrows.
        # OpenSeadragon 6 zooms 1% a frame while a key is held, and 10
        # frames for a tap: a tap zooms ~1.1x, holding the key further.
        page.js("slidepipeViewer.viewer.canvas.focus(); document.activeElement === "
                "slidepipeViewer.viewer.canvas")
        zoom = "slidepipeViewer.viewer.viewport.getZoom(true)"
        z0 = page.js(zoom)
        page.key("=", "Equal", 187, "=")
        time.sleep(1.0)
        zt = page.js(zoom)
        check(zt > z0 * 1.05, f"a tap on '+' zooms in ({z0} -> {zt})")
        page.key("=", "Equal", 187, "=", until=f"{zoom} > {zt * 1.3}")
        time.sleep(1.0)
        z1 = page.js(zoom)
        check(z1 > zt * 1.3, f"holding '+' zooms in further ({zt} -> {z1})")
        time.sleep(0.5)
        check(page.js(zoom) == z1, "releasing '+' stops the zoom")
        c0 = page.js("slidepipeViewer.viewer.viewport.getCenter(true).x")
        page.key("ArrowRight", "ArrowRight", 39)
        page.key("ArrowRight", "ArrowRight", 39)
        time.sleep(1.0)
        c1 = page.js("slidepipeViewer.viewer.viewport.getCenter(true).x")
        check(c1 != c0, f"arrow keys pan ({c0} -> {c1})")
        # H toggles the heatmap overlay
        page.key("h", "KeyH", 72, "h")
        shown = page.wait("slidepipeViewer.heatmapShown && "
                          "slidepipeViewer.viewer.world.getItemCount() === 2")
        check(shown, "H shows the heatmap overlay")
        check(page.js("document.getElementById('heatmap-toggle').checked && "
                      "!document.getElementById('legend').hidden && "
                      "document.querySelector('#legend .max').textContent !== ''"),
              "the toggle is checked and the legend shown")
        check(page.js("slidepipeViewer.heatmapTiles") > 0, "the heatmap has tiles")
        op = page.js("slidepipeViewer.viewer.world.getItemAt(1).getOpacity()")
        check(0 < op < 1, f"the overlay is semi-transparent ({op})")
        # wait until the zoomed view is fully drawn, then screenshot
        page.call("Page.navigate", url=base + "/slide/cmu")
        page.wait("window.slidepipeViewer && slidepipeViewer.ready && "
                  "slidepipeViewer.viewer.world.getItemAt(0).getFullyLoaded()")
        page.js("slidepipeViewer.toggleHeatmap(true)")
        page.wait("slidepipeViewer.heatmapShown")
        time.sleep(0.5)
        shot = page.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        if os.environ.get("SLIDEPIPE_VIEWER_SHOT"):  # keep it for a look
            with open(os.environ["SLIDEPIPE_VIEWER_SHOT"], "wb") as f:
                f.write(png)
        im = Image.open(io.BytesIO(png)).convert("RGB")
        box = page.js("(() => { const r = document.getElementById('osd')"
                      ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()")
        crop = im.crop(tuple(int(v) for v in box))
        colours = len(set(crop.resize((160, 120)).getdata()))
        lo, hi = zip(*crop.getextrema())
        check(colours > 100 and max(hi) - min(lo) > 100,
              f"the screenshot of the viewer is not blank ({colours} colours)")
        # heatmap toggled off by the checkbox (keyboard: space on it)
        page.js("document.getElementById('heatmap-toggle').focus()")
        page.key(" ", "Space", 32, " ")
        time.sleep(0.3)
        check(page.js("slidepipeViewer.viewer.world.getItemCount() === 1 && "
                      "document.getElementById('legend').hidden"),
              "space on the focused checkbox hides the overlay")
        a = page.js(A11Y_JS)
        check(not a["unnamed"], f"every control has an accessible name: {a['unnamed']}")
        check(not a["contrast"], f"text contrast >= 4.5:1 (AA): {a['contrast']}")

        # ---- the slide list ----
        page.call("Page.navigate", url=base + "/")
        ok = page.wait("document.readyState === 'complete' && "
                       "[...document.images].length === 2 && [...document.images]"
                       ".every(i => i.complete && i.naturalWidth > 0)")
        check(ok, "the slide list shows every thumbnail")
        a = page.js(A11Y_JS)
        check(not a["unnamed"] and not a["contrast"], f"list page accessibility {a}")
        check(page.js("document.querySelectorAll('tbody tr').length") == 2,
              "two slides listed")
        check("0.57 mm" in page.js("document.body.textContent"),
              "the tissue area of the analysed slide is listed")

        # ---- the network log ----
        resp = [e["params"]["response"] for e in page.events
                if e["method"] == "Network.responseReceived"]
        ours = [r for r in resp if r["url"].startswith(base)]
        bad = [(r["url"], r["status"]) for r in ours if r["status"] >= 400]
        check(len(ours) > 10 and not bad,
              f"{len(ours)} responses, none 4xx/5xx: {bad[:5]}")
        check(any("_files/" in r["url"] for r in ours), "tile requests were made")
        check(not [r for r in resp if not r["url"].startswith((base, "data:"))],
              "no request left the server (works offline)")
        fails = [e["params"] for e in page.events
                 if e["method"] == "Network.loadingFailed"]
        check(not fails, f"no failed loads: {fails[:3]}")
        exc = [e["params"] for e in page.events
               if e["method"] == "Runtime.exceptionThrown"]
        check(not exc, f"no JavaScript exceptions: {str(exc)[:300]}")
        # OpenSeadragon reports deprecated options and calls on the console
        cons = [" ".join(str(a.get("value", a.get("description", "")))
                         for a in e["params"]["args"])
                for e in page.events if e["method"] == "Runtime.consoleAPICalled"
                and e["params"]["type"] in ("error", "warning", "assert")]
        check(not cons, f"no console errors or warnings: {cons[:3]}")
    finally:
        stop_chromium(chrome)
        if srv:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=20)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()
            check(srv.returncode == 0, f"serve exits 0 on SIGTERM ({srv.returncode})")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        check(False, "the test raised an exception")
    sys.exit(finish())
