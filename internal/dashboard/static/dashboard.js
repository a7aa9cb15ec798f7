// The dashboard: tiles, 15-minute charts (uPlot) and lists, fed by the
// Server-Sent Events of /api/stats/stream: a "snapshot" (the current state
// and the history) when it connects, then a "tick" per sample.
"use strict";
(function () {
  const A = window.Admin;
  const HISTORY = 900;
  const columns = ["t", "requests", "errors", "denials", "bytes_in", "bytes_out",
    "p50", "p95", "p99", "active_connections", "active_requests", "active_tunnels"];
  const hist = {};
  for (const c of columns) hist[c] = [];

  // bytesAxis labels byte ticks without trailing zeros: 2 MiB, 512 KiB.
  const bytesAxis = (u, vals) => vals.map((v) => {
    let i = 0;
    while (Math.abs(v) >= 1024 && i < 4) { v /= 1024; i++; }
    return (Number.isInteger(v) ? v : v.toFixed(1)) + " " + ["B", "KiB", "MiB", "GiB", "TiB"][i];
  });
  // Byte ticks at round binary steps: 1, 2, 5, 10, 20, 50 … KiB, MiB, GiB.
  const bytesIncrs = [];
  for (const unit of [1, 1024, 1024 * 1024, 1024 * 1024 * 1024]) {
    for (const m of [1, 2, 5, 10, 20, 50, 100, 200, 500]) bytesIncrs.push(m * unit);
  }
  const two = (n) => String(n).padStart(2, "0");
  // Time ticks as 24-hour clock times, with seconds when ticks are closer
  // than a minute.
  const timeAxis = (u, splits, axisIdx, space, incr) => splits.map((v) => {
    const d = new Date(v * 1000);
    return two(d.getHours()) + ":" + two(d.getMinutes()) + (incr < 60 ? ":" + two(d.getSeconds()) : "");
  });
  const HEIGHT = 150;
  const numAxis = (u, vals) => vals.map((v) => A.fmtNum(v));
  const msAxis = (u, vals) => vals.map((v) => A.fmtMs(v));

  const charts = [
    { id: "chart-rates", series: [["requests", "requests/s", "--c1"], ["errors", "errors/s", "--c2"], ["denials", "denials/s", "--c4"]], axis: numAxis, fmt: (v) => A.fmtNum(v) },
    { id: "chart-latency", series: [["p50", "P50", "--c3"], ["p95", "P95", "--c4"], ["p99", "P99", "--c2"]], axis: msAxis, fmt: (v) => A.fmtMs(v) },
    { id: "chart-bytes", series: [["bytes_out", "to clients", "--c1"], ["bytes_in", "from clients", "--c5"]], axis: bytesAxis, incrs: bytesIncrs, fmt: (v) => A.fmtBytes(v) + "/s" },
    { id: "chart-active", series: [["active_connections", "connections", "--c1"], ["active_requests", "requests", "--c3"], ["active_tunnels", "tunnels", "--c5"]], axis: numAxis, fmt: (v) => A.fmtNum(v) },
  ];

  function makeChart(c) {
    const box = document.getElementById(c.id);
    const grid = { stroke: A.cssVar("--grid"), width: 1 };
    const axisStyle = { stroke: A.cssVar("--muted"), grid, ticks: { stroke: A.cssVar("--grid"), width: 1 }, font: "11px system-ui, sans-serif" };
    const opts = {
      width: Math.max(box.clientWidth, 200),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [Object.assign({ values: timeAxis }, axisStyle), Object.assign({ values: c.axis, size: 62, space: 24 }, c.incrs ? { incrs: c.incrs } : {}, axisStyle)],
      series: [{ label: "time", value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleTimeString([], { hour12: false })) }].concat(c.series.map(([, label, color]) => ({
        label,
        stroke: A.cssVar(color),
        width: 1.5,
        points: { show: false },
        value: (u, v) => (v == null ? "–" : c.fmt(v)),
      }))),
    };
    c.plot = new uPlot(opts, dataOf(c), box);
    new ResizeObserver(() => c.plot.setSize({ width: Math.max(box.clientWidth, 200), height: HEIGHT })).observe(box);
  }

  function dataOf(c) {
    return [hist.t].concat(c.series.map(([col]) => hist[col]));
  }

  // redraw hands the columns to every chart, shows the latest values in
  // the legends unless the pointer is on a chart, and writes what it plots
  // into the chart's data attributes (points, max), where tests read it.
  function redraw() {
    for (const c of charts) {
      if (!c.plot) continue;
      c.plot.setData(dataOf(c));
      if (c.plot.cursor.left == null || c.plot.cursor.left < 0) c.plot.setLegend({ idx: hist.t.length - 1 });
      const box = document.getElementById(c.id);
      let max = 0;
      for (const [col] of c.series) for (const v of hist[col]) if (v > max) max = v;
      box.dataset.points = String(hist.t.length);
      box.dataset.max = String(max);
    }
  }

  function setHistory(h) {
    for (const c of columns) hist[c] = (h[c] || []).slice(-HISTORY);
  }

  function addPoint(p) {
    const n = hist.t.length;
    if (n > 0 && p.t <= hist.t[n - 1]) return; // already in the snapshot
    for (const c of columns) {
      hist[c].push(p[c]);
      if (hist[c].length > HISTORY) hist[c].shift();
    }
  }

  function setV(tile, key, text) {
    const e = document.querySelector("#" + tile + ' [data-v="' + key + '"]');
    if (e) e.textContent = text;
  }

  function renderNow(n) {
    setV("tile-requests", "rate", A.fmtNum(n.rates.requests));
    setV("tile-requests", "total", A.fmtNum(n.totals.requests, 0));
    setV("tile-errors", "rate", A.fmtNum(n.rates.errors));
    const errMinute = n.errors.reduce((s, e) => s + e.last_minute, 0);
    setV("tile-errors", "minute", A.fmtNum(errMinute, 0));
    document.getElementById("tile-errors").classList.toggle("bad", errMinute > 0);
    setV("tile-latency", "p50", A.fmtMs(n.latency_ms.p50));
    setV("tile-latency", "p95", A.fmtMs(n.latency_ms.p95));
    setV("tile-latency", "p99", A.fmtMs(n.latency_ms.p99));
    setV("tile-active", "connections", A.fmtNum(n.active.connections, 0));
    setV("tile-active", "requests", A.fmtNum(n.active.requests, 0));
    setV("tile-active", "tunnels", A.fmtNum(n.active.tunnels, 0));
    setV("tile-bytes", "out", A.fmtBytes(n.rates.bytes_out) + "/s");
    setV("tile-bytes", "in", A.fmtBytes(n.rates.bytes_in) + "/s");
    ratioTile("tile-dns", n.dns, "hits", "hits", "misses");
    ratioTile("tile-pool", n.pool, "reused", "reused", "new");
    setV("tile-denials", "rate", A.fmtNum(n.rates.denials));
    setV("tile-denials", "total", A.fmtNum(n.totals.denials, 0));
    document.getElementById("tile-denials").classList.toggle("bad", n.denials.some((d) => d.last_minute > 0));
    renderTop(n.top);
    renderCounts("errors", n.errors, "no errors");
    renderCounts("denials", n.denials, "no denials");
    document.getElementById("updated").textContent = "updated " + new Date(n.time).toLocaleTimeString([], { hour12: false });
  }

  // ratioTile shows a hit ratio of the last minute (or since the start when
  // the last minute had none), with the counts since the start in a tooltip.
  function ratioTile(id, r, what, hitWord, missWord) {
    const minute = r.last_minute != null;
    setV(id, "ratio", A.fmtPct(minute ? r.last_minute : r.ratio));
    setV(id, "detail", r.ratio == null ? "no data yet" : what + (minute ? ", last minute" : ", since start"));
    document.getElementById(id).title = A.fmtNum(r.hits, 0) + " " + hitWord + ", " + A.fmtNum(r.misses, 0) + " " + missWord + " since the start";
  }

  function renderTop(top) {
    const body = document.querySelector("#top tbody");
    const rows = top.map((t) => A.el("tr", null,
      A.el("td", { title: t.host, class: "mono" }, t.host),
      A.el("td", { class: "num" }, A.fmtNum(t.rate)),
      A.el("td", { class: "share", title: A.fmtPct(t.share) }, bar(t.share))));
    body.replaceChildren(...(rows.length ? rows : [A.el("tr", { class: "none" }, A.el("td", { colspan: 3 }, "no traffic yet"))]));
  }

  function bar(share) {
    const b = A.el("div", { class: "bar" });
    b.style.width = Math.max(share * 100, 0.5).toFixed(1) + "%";
    return b;
  }

  function renderCounts(id, list, none) {
    const body = document.querySelector("#" + id + " tbody");
    const rows = list.map((c) => A.el("tr", null,
      A.el("td", { class: "mono", title: c.name }, c.name),
      A.el("td", { class: "num" + (c.last_minute > 0 ? " err" : "") }, A.fmtNum(c.last_minute, 0)),
      A.el("td", { class: "num" }, A.fmtNum(c.total, 0))));
    body.replaceChildren(...(rows.length ? rows : [A.el("tr", { class: "none" }, A.el("td", { colspan: 3 }, none))]));
  }

  function start() {
    for (const c of charts) makeChart(c);
    A.stream("/api/stats/stream", {
      snapshot(s) {
        setHistory(s.history);
        renderNow(s.now);
        redraw();
      },
      tick(t) {
        if (t.point) addPoint(t.point);
        renderNow(t.now);
        redraw();
      },
    });
  }

  start();
})();
