/* slidepipe viewer page: OpenSeadragon on the slide's Deep Zoom tiles, a
 * scale bar from the slide's mpp, and a heatmap overlay of one per-tile
 * feature drawn from /api/slide/<id>/features. Settings come from the
 * data- attributes of <main> (no inline script: the page's CSP forbids
 * it). window.slidepipeViewer exposes the state for tests. */
(function () {
  "use strict";
  var main = document.getElementById("main");
  var cfg = main.dataset;
  var W = Number(cfg.width), H = Number(cfg.height);
  var mpp = cfg.mpp ? Number(cfg.mpp) : 0;
  var statusEl = document.getElementById("status");
  var state = window.slidepipeViewer = {
    ready: false, tilesLoaded: 0, tilesFailed: 0, heatmapShown: false,
    heatmapTiles: 0, errors: []
  };
  function say(msg) { statusEl.textContent = msg; }

  var viewer = OpenSeadragon({
    element: document.getElementById("osd"),
    tileSources: "/dzi/" + cfg.id + ".dzi?v=" + cfg.version,
    showNavigationControl: false,
    drawer: "canvas",
    crossOriginPolicy: false,
    visibilityRatio: 0.5,
    minZoomImageRatio: 0.8,
    maxZoomPixelRatio: 2,
    animationTime: 0.6,
    imageLoaderLimit: 8
  });
  state.viewer = viewer;
  /* the canvas is the keyboard target (OpenSeadragon's own keys: arrows
   * and W A S D pan, + and - zoom, for as long as they are held since
   * OpenSeadragon 6; 0 home); name it for screen readers */
  viewer.canvas.setAttribute("aria-label",
      "Slide image. Arrow keys pan, plus and minus zoom, 0 shows the whole slide, H toggles the heatmap.");
  viewer.canvas.setAttribute("role", "img");

  viewer.addHandler("open", function () {
    state.ready = true;
    say("Slide loaded. Use the arrow keys to pan and plus or minus to zoom.");
    updateScale();
  });
  viewer.addHandler("open-failed", function (e) {
    state.errors.push("open failed: " + e.message);
    say("The slide could not be opened.");
  });
  viewer.addHandler("tile-loaded", function (e) {
    if (e.tiledImage === heat.item) return;
    state.tilesLoaded++;
  });
  viewer.addHandler("tile-load-failed", function (e) {
    state.tilesFailed++;
    state.errors.push("tile failed: " + (e.message || ""));
  });

  function step(f) {
    viewer.viewport.zoomBy(f);
    viewer.viewport.applyConstraints();
  }
  document.getElementById("zoom-in").addEventListener("click", function () { step(1.6); });
  document.getElementById("zoom-out").addEventListener("click", function () { step(1 / 1.6); });
  document.getElementById("home").addEventListener("click", function () { viewer.viewport.goHome(); });

  /* ---- scale bar ---- */
  var sb = document.getElementById("scalebar");
  var sbBar = sb.querySelector(".bar"), sbLabel = sb.querySelector(".label");
  function updateScale() {
    if (!mpp || !viewer.world.getItemAt(0)) { sb.hidden = true; return; }
    var item = viewer.world.getItemAt(0);
    var a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    var b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    var pxPerImagePx = (b.x - a.x) / 1000;
    if (!(pxPerImagePx > 0)) return;
    var umPerScreenPx = mpp / pxPerImagePx;
    var target = 120 * umPerScreenPx; /* ~120 px long */
    var p = Math.pow(10, Math.floor(Math.log10(target)));
    var nice = [1, 2, 5, 10].map(function (k) { return k * p; })
        .filter(function (v) { return v <= target; }).pop() || p;
    var px = nice / umPerScreenPx;
    sbBar.style.width = Math.round(px) + "px";
    sbLabel.textContent = nice >= 1000 ? (nice / 1000) + " mm" : nice + " \u00b5m";
    sb.hidden = false;
  }
  viewer.addHandler("animation", updateScale);
  viewer.addHandler("resize", updateScale);

  /* ---- heatmap overlay ---- */
  var toggle = document.getElementById("heatmap-toggle");
  var select = document.getElementById("feature");
  var opacity = document.getElementById("opacity");
  var legend = document.getElementById("legend");
  var heat = { item: null, feature: null, token: 0 };
  var VIRIDIS = [[68,1,84],[72,40,120],[62,73,137],[49,104,142],[38,130,142],
                 [31,158,137],[53,183,121],[110,206,88],[181,222,43],[253,231,37]];
  function colour(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    var i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    var a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); });
  }
  function fmt(v) {
    if (v === null || !isFinite(v)) return "n/a";
    var a = Math.abs(v);
    return a !== 0 && (a < 0.01 || a >= 1e5) ? v.toExponential(2) : String(Math.round(v * 1000) / 1000);
  }
  function removeHeat() {
    if (heat.item) viewer.world.removeItem(heat.item);
    heat.item = null;
    state.heatmapShown = false;
    legend.hidden = true;
  }
  function showHeat() {
    var feature = select.value, token = ++heat.token;
    say("Loading the " + feature + " heatmap\u2026");
    fetch("/api/slide/" + cfg.id + "/features?feature=" + encodeURIComponent(feature))
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        if (token !== heat.token || !toggle.checked) return;
        removeHeat();
        var E = d.tile_size, k = 4;
        var cols = Math.ceil(W / E), rows = Math.ceil(H / E);
        var scale = Math.min(k, 4096 / Math.max(cols, rows));
        var cw = Math.max(1, Math.ceil(cols * scale)), ch = Math.max(1, Math.ceil(rows * scale));
        var cv = document.createElement("canvas");
        cv.width = cw; cv.height = ch;
        var g = cv.getContext("2d");
        var lo = d.min, hi = d.max, span = hi > lo ? hi - lo : 1;
        d.tiles.forEach(function (t) {
          if (t[2] === null) return;
          var c = colour((t[2] - lo) / span);
          g.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
          g.fillRect(Math.floor(t[0] / E * scale), Math.floor(t[1] / E * scale),
                     Math.ceil(scale), Math.ceil(scale));
        });
        state.heatmapTiles = d.tiles.length;
        viewer.addSimpleImage({
          url: cv.toDataURL("image/png"),
          x: 0, y: 0, width: (cw / scale * E) / W,
          opacity: Number(opacity.value) / 100,
          success: function (e) {
            if (token !== heat.token || !toggle.checked) { viewer.world.removeItem(e.item); return; }
            heat.item = e.item;
            heat.feature = feature;
            e.item.addOnceHandler("fully-loaded-change", function () { state.heatmapShown = true; });
            if (e.item.getFullyLoaded && e.item.getFullyLoaded()) state.heatmapShown = true;
          }
        });
        legend.querySelector(".title").textContent = feature;
        legend.querySelector(".min").textContent = fmt(lo);
        legend.querySelector(".max").textContent = fmt(hi);
        legend.setAttribute("aria-label", "Heatmap legend: " + feature + " from " + fmt(lo) + " (dark purple) to " + fmt(hi) + " (yellow)");
        legend.hidden = false;
        say("Heatmap of " + feature + " shown: " + d.count + " tiles, " + fmt(lo) + " to " + fmt(hi) + ".");
      })
      .catch(function (e) {
        state.errors.push("features: " + e.message);
        say("The heatmap could not be loaded (" + e.message + ").");
        toggle.checked = false;
      });
  }
  if (toggle) {
    toggle.addEventListener("change", function () {
      if (toggle.checked) showHeat(); else { heat.token++; removeHeat(); say("Heatmap hidden."); }
    });
    select.addEventListener("change", function () { if (toggle.checked) showHeat(); });
    opacity.addEventListener("input", function () {
      if (heat.item) heat.item.setOpacity(Number(opacity.value) / 100);
    });
    document.addEventListener("keydown", function (e) {
      var tag = (e.target && e.target.tagName) || "";
      if (e.ctrlKey || e.metaKey || e.altKey || tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
      if (e.key === "h" || e.key === "H") {
        toggle.checked = !toggle.checked;
        toggle.dispatchEvent(new Event("change"));
        e.preventDefault();
      }
    });
  }
  state.toggleHeatmap = function (on) {
    if (!toggle) return false;
    toggle.checked = on;
    toggle.dispatchEvent(new Event("change"));
    return true;
  };
})();
