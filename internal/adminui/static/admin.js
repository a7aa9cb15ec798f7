// Shared helpers of the fwdproxy admin pages: formatting, DOM building,
// fetching and a Server-Sent Events connection that shows its state.
"use strict";
(function () {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];

  function fmtBytes(n) {
    if (n == null || isNaN(n)) return "–";
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }

  function fmtNum(n, digits) {
    if (n == null || isNaN(n)) return "–";
    if (digits == null) digits = Math.abs(n) < 10 && n % 1 !== 0 ? 2 : Math.abs(n) < 100 && n % 1 !== 0 ? 1 : 0;
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return n.toFixed(digits);
  }

  function fmtMs(ms) {
    if (ms == null || isNaN(ms)) return "–";
    if (ms === 0) return "0";
    if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
    if (ms < 1000) return ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0) + " ms";
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  function fmtPct(r) {
    if (r == null || isNaN(r)) return "–";
    return (r * 100).toFixed(r >= 0.995 || r === 0 ? 0 : 1) + "%";
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  // el builds an element: el("td", {class: "num", title: "x"}, "text", child…).
  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "dataset") Object.assign(e.dataset, v);
        else e.setAttribute(k, v === true ? "" : v);
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
    return r.json();
  }

  async function post(url) {
    const r = await fetch(url, { method: "POST", credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
    return r.json();
  }

  // stream opens an EventSource on url with a listener per event name and
  // shows its state in the element #live. It returns the EventSource.
  function stream(url, listeners) {
    const live = document.getElementById("live");
    const es = new EventSource(url);
    const set = (cls, text) => {
      if (!live) return;
      live.className = "live " + cls;
      live.textContent = text;
    };
    set("", "connecting");
    es.onopen = () => set("on", "live");
    es.onerror = () => set("off", es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting");
    for (const [name, fn] of Object.entries(listeners)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data), ev));
    }
    return es;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  window.Admin = { fmtBytes, fmtNum, fmtMs, fmtPct, fmtTime, el, getJSON, post, stream, cssVar };
})();
