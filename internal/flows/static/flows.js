// The flow inspector: a live table of flows (GET /api/flows, then the
// Server-Sent Events of /api/flows/stream with the same filters), filters,
// pause and clear, the HAR export link, and a detail pane
// (GET /api/flows/{id}) whose bodies the server has already rendered.
"use strict";
(function () {
  const A = window.Admin;
  const MAX_ROWS = 1000;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#flows tbody");
  const empty = document.getElementById("empty");
  const detail = document.getElementById("detail");
  const split = document.getElementById("split");
  const pauseBtn = document.getElementById("pause");
  let es = null;
  let selected = null;
  const shown = new Set(); // the IDs of the rows
  let pending = []; // flows streamed in, not yet shown
  let scheduled = false;
  let paused = false;
  let generation = 0;

  function params() {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") q.set(k, String(v).trim());
    return q;
  }

  async function reload() {
    const gen = ++generation;
    const q = params();
    document.getElementById("har").href = "/flows.har" + (q.toString() ? "?" + q : "");
    if (es) { es.close(); es = null; }
    let data;
    try {
      const lq = new URLSearchParams(q);
      lq.set("limit", String(MAX_ROWS));
      data = await A.getJSON("/api/flows?" + lq);
    } catch (e) {
      showError(e);
      return;
    }
    if (gen !== generation) return; // the filters changed meanwhile
    pending = [];
    shown.clear();
    for (const f of data.flows) shown.add(f.id);
    tbody.replaceChildren(...data.flows.map((f) => row(f, false)));
    updateEmpty();
    setState(data.state);
    // Stream what came after the list; a flow both listed and streamed
    // shows once.
    const sq = new URLSearchParams(q);
    if (data.state.last_id) sq.set("after", String(data.state.last_id));
    es = A.stream("/api/flows/stream?" + sq, {
      flow(f) { add(f); },
      state(s) { setState(s); },
    });
  }

  function showError(e) {
    empty.hidden = false;
    empty.textContent = String(e.message || e);
    empty.classList.add("err");
  }

  function updateEmpty() {
    empty.hidden = tbody.rows.length > 0;
    empty.classList.remove("err");
    empty.textContent = "No flows yet. Requests through the proxy appear here as they finish.";
  }

  // add queues a streamed flow; the queue is shown once per frame, so that
  // a busy proxy costs the page one update per frame, not one per flow.
  // A hidden page (no frames) keeps the newest MAX_ROWS only.
  function add(f) {
    pending.push(f);
    if (pending.length > 2 * MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  }

  function flush() {
    scheduled = false;
    const batch = pending.slice(-MAX_ROWS);
    pending = [];
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      const f = batch[i];
      if (shown.has(f.id)) continue;
      shown.add(f.id);
      frag.append(row(f, true));
    }
    tbody.prepend(frag);
    while (tbody.rows.length > MAX_ROWS) {
      shown.delete(Number(tbody.lastElementChild.dataset.id));
      tbody.lastElementChild.remove();
    }
    updateEmpty();
  }

  function statusClass(f) {
    return "status-" + (f.status ? Math.floor(f.status / 100) : 0);
  }

  function row(f, fresh) {
    const tags = [];
    if (f.intercepted) tags.push(A.el("span", { class: "tag", title: "decrypted from an intercepted CONNECT" }, "TLS"));
    if (f.tunnel) tags.push(A.el("span", { class: "tag", title: "tunnel: contents not inspected" }, "tunnel"));
    const tr = A.el("tr", { "data-id": f.id, class: fresh ? "new" : null, "aria-selected": String(f.id === selected) },
      A.el("td", { class: "num muted" }, f.id),
      A.el("td", { class: "muted" }, A.fmtTime(f.start)),
      A.el("td", null, f.method),
      A.el("td", { class: "num " + statusClass(f), title: f.error ? f.error + ": " + f.reason : null }, f.status || (f.error ? "ERR" : "–")),
      A.el("td", { class: "url", title: f.url }, f.url, ...tags),
      A.el("td", null, f.user),
      A.el("td", { class: "addr", title: f.client }, f.client),
      A.el("td", { class: "addr", title: f.upstream }, f.upstream),
      A.el("td", { class: "num" }, A.fmtBytes(f.bytes_in)),
      A.el("td", { class: "num" }, A.fmtBytes(f.bytes_out)),
      A.el("td", { class: "num" }, A.fmtMs(f.timings.total_ms)),
      A.el("td", { class: "wf" }, waterfall(f.timings)));
    tr.addEventListener("click", () => select(f.id));
    return tr;
  }

  // phases splits a flow's total time into dns, connect, tls, wait (to the
  // first byte) and receive.
  function phases(t) {
    const setup = t.dns_ms + t.connect_ms + t.tls_ms;
    const wait = t.first_byte_ms > 0 ? Math.max(t.first_byte_ms - setup, 0) : Math.max(t.total_ms - setup, 0);
    const receive = t.first_byte_ms > 0 ? Math.max(t.total_ms - t.first_byte_ms, 0) : 0;
    return [["dns", t.dns_ms], ["connect", t.connect_ms], ["tls", t.tls_ms], ["wait", wait], ["receive", receive]];
  }

  function waterfall(t) {
    const ps = phases(t);
    const sum = ps.reduce((s, [, v]) => s + v, 0);
    const w = A.el("div", { class: "waterfall", title: ps.filter(([, v]) => v > 0).map(([k, v]) => k + " " + A.fmtMs(v)).join(", ") });
    if (sum > 0) {
      for (const [k, v] of ps) {
        if (v <= 0) continue;
        const s = A.el("span", { class: k });
        s.style.width = (100 * v / sum).toFixed(2) + "%";
        w.append(s);
      }
    }
    return w;
  }

  function setState(s) {
    paused = s.paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.classList.toggle("paused", paused);
    let text = s.flows + " / " + s.max_flows + " flows · " + A.fmtBytes(s.bytes) + " / " + A.fmtBytes(s.max_bytes);
    if (paused) text = "recording paused · " + text;
    if (s.missed) text += " · " + s.missed + " missed (reload)";
    document.getElementById("ringstate").textContent = text;
  }

  async function select(id) {
    selected = id;
    for (const tr of tbody.rows) tr.setAttribute("aria-selected", String(Number(tr.dataset.id) === id));
    let f;
    try {
      f = await A.getJSON("/api/flows/" + id);
    } catch (e) {
      showDetail(true);
      detail.replaceChildren(closeButton(), A.el("p", { class: "err" }, String(e.message || e)));
      return;
    }
    if (selected !== id) return;
    renderDetail(f);
  }

  function showDetail(show) {
    detail.hidden = !show;
    split.classList.toggle("detail-open", show);
    if (!show) {
      selected = null;
      for (const tr of tbody.rows) tr.setAttribute("aria-selected", "false");
    }
  }

  function closeButton() {
    const b = A.el("button", { class: "close", type: "button", title: "close", "aria-label": "close" }, "\u00D7");
    b.addEventListener("click", () => showDetail(false));
    return b;
  }

  function kv(rows) {
    return A.el("table", { class: "kv" }, A.el("tbody", null, ...rows.filter(Boolean).map(([k, v, cls]) =>
      A.el("tr", null, A.el("td", null, k), A.el("td", { class: "v" + (cls ? " " + cls : "") }, v)))));
  }

  function headers(list) {
    if (!list.length) return A.el("p", { class: "empty" }, "no headers");
    return kv(list.map((h) => [h.name, h.value, h.value === "[REDACTED]" ? "redacted" : ""]));
  }

  function body(b) {
    const meta = [];
    if (b.content_type) meta.push(b.content_type);
    if (b.kind !== "none") meta.push(b.truncated ? "first " + A.fmtBytes(b.captured) + " of " + A.fmtBytes(b.size) : A.fmtBytes(b.size));
    if (b.note) meta.push(b.note);
    const out = [A.el("div", { class: "body-meta" }, meta.join(" · ") || "no body")];
    switch (b.kind) {
      case "text":
      case "json":
        out.push(A.el("pre", { class: "body " + b.kind }, b.text));
        break;
      case "image":
        out.push(A.el("img", { class: "body", src: b.data_url, alt: "captured image" }));
        break;
      case "binary":
        out.push(A.el("pre", { class: "body hex" }, b.hex));
        break;
    }
    return A.el("div", { class: "body-view", "data-kind": b.kind }, ...out);
  }

  function renderDetail(f) {
    const t = f.timings;
    const ps = phases(t);
    showDetail(true);
    detail.replaceChildren(
      closeButton(),
      A.el("h2", null, f.method + " " + f.url),
      kv([
        ["status", f.status ? String(f.status) : "none", statusClass(f)],
        f.error && ["error", f.error + (f.reason ? ": " + f.reason : ""), "err"],
        ["started", new Date(f.start).toLocaleString([], { hour12: false })],
        ["protocol", f.proto],
        f.user && ["user", f.user],
        ["client", f.client],
        f.upstream && ["upstream", f.upstream],
        ["request body", A.fmtBytes(f.bytes_in)],
        ["response body", A.fmtBytes(f.bytes_out)],
        f.intercepted && ["intercepted", "decrypted from a CONNECT tunnel"],
        f.tunnel && ["tunnel", "contents relayed, not inspected"],
      ]),
      A.el("h3", null, "Timing"),
      A.el("div", { class: "timing" },
        waterfall(t),
        A.el("div", { class: "legend" }, ...ps.map(([k, v]) => A.el("span", { class: k }, k + " " + A.fmtMs(v))),
          A.el("span", null, "total " + A.fmtMs(t.total_ms)))),
      A.el("h3", null, "Request headers"),
      headers(f.request.headers),
      A.el("h3", null, "Request body"),
      body(f.request.body),
      A.el("h3", null, "Response headers"),
      headers(f.response.headers),
      A.el("h3", null, "Response body"),
      body(f.response.body));
    detail.dataset.id = String(f.id);
  }

  let debounce = 0;
  form.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(reload, 250);
  });
  form.addEventListener("submit", (e) => { e.preventDefault(); reload(); });
  pauseBtn.addEventListener("click", async () => {
    try { setState(await A.post("/api/flows/" + (paused ? "resume" : "pause"))); } catch (e) { showError(e); }
  });
  document.getElementById("clear").addEventListener("click", async () => {
    try {
      setState(await A.post("/api/flows/clear"));
      tbody.replaceChildren();
      shown.clear();
      pending = [];
      showDetail(false);
      updateEmpty();
    } catch (e) { showError(e); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === "Escape") { showDetail(false); return; }
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp" && e.key !== "j" && e.key !== "k") return;
    const rows = Array.from(tbody.rows);
    if (!rows.length) return;
    let i = rows.findIndex((r) => Number(r.dataset.id) === selected);
    i = e.key === "ArrowDown" || e.key === "j" ? Math.min(i + 1, rows.length - 1) : Math.max(i - 1, 0);
    select(Number(rows[i].dataset.id));
    rows[i].scrollIntoView({ block: "nearest" });
    e.preventDefault();
  });

  reload();
})();
