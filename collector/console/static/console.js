// NodeWarden console: the list, filters (kept in the URL), charts, detail, live tail, status, export.
// Everything goes through the collector's /api/ with the token as a bearer header; text from events is
// only ever put in the page with textContent (never as HTML).
"use strict";

const FILTERS = ["since", "until", "severity", "kind", "rule", "node", "namespace", "image", "text", "status"];
const PALETTE = ["#1f6feb", "#d1392b", "#e08a1e", "#2f8a4e", "#8250df", "#c9b52b", "#0a7e8c", "#b35c9e", "#888"];
const SEV_COLORS = { critical: "#8e1b1b", high: "#d1392b", medium: "#e08a1e", low: "#c9b52b", info: "#6b8fb3",
  debug: "#9aa7b4" };
const PAGE = 50;
const $ = (sel) => document.querySelector(sel);

let token = sessionStorage.getItem("nw-token") || "";
let nextCursor = "";
let tail = null; // AbortController of the running live tail
const shown = new Set(); // event ids in the table

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

class AuthError extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (resp.status === 401) { askToken(token ? "That token was refused." : ""); throw new AuthError("token"); }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp;
}

function askToken(msg) {
  $("#token-error").textContent = msg || "";
  const d = $("#token-dialog");
  if (!d.open) d.showModal();
}

// -- filters <-> URL ---------------------------------------------------------------------------------

function filterParams() {
  const p = new URLSearchParams();
  const f = $("#filters");
  for (const name of FILTERS) {
    const v = f.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  return p;
}

function fromURL() {
  const u = new URLSearchParams(location.search);
  const f = $("#filters");
  for (const name of FILTERS) f.elements[name].value = u.get(name) || "";
  return u;
}

function pushURL(extra) {
  const p = filterParams();
  for (const [k, v] of Object.entries(extra || {})) if (v) p.set(k, v);
  const q = p.toString();
  history.pushState(null, "", q ? "?" + q : location.pathname);
}

// -- list ------------------------------------------------------------------------------------------------

function timeText(iso) { return iso.replace("T", " ").replace(/\.\d+Z$/, "Z"); }

function row(s) {
  const where = [s.namespace, s.pod].filter(Boolean).join("/");
  const tr = el("tr", { "data-id": String(s.id), "data-kind": s.kind, "data-severity": s.severity },
    el("td", { class: "time", text: timeText(s.time) }),
    el("td", { class: "kind", text: s.kind }),
    el("td", { class: "action act-" + s.action, text: s.action }),
    el("td", { class: "severity" }, el("span", { class: "sev sev-" + s.severity, text: s.severity })),
    el("td", { class: "reason", text: s.reason || s.rule, title: s.reason || s.rule }),
    el("td", { class: "node", text: s.node }),
    el("td", { class: "where", text: where, title: where }),
    el("td", { class: "container", text: s.container, title: s.container_id }),
    el("td", { class: "image", text: s.image, title: s.image }),
    el("td", { class: "status st-" + s.status, text: s.status }));
  tr.addEventListener("click", () => openDetail(s.id, true));
  return tr;
}

async function loadList(append) {
  $("#error").textContent = "";
  const p = filterParams();
  p.set("limit", String(PAGE));
  if (append && nextCursor) p.set("before", nextCursor);
  const body = $("#events tbody");
  try {
    const got = await (await api("/api/events?" + p)).json();
    if (!append) { body.replaceChildren(); shown.clear(); }
    for (const s of got.events) { if (!shown.has(s.id)) { shown.add(s.id); body.append(row(s)); } }
    nextCursor = got.next;
    $("#more").hidden = !got.next;
    $("#summary-line").textContent = shown.size + " events shown" + (got.next ? " (more below)" : "") +
      (got.partial ? " — scanned " + got.scanned + " rows, none further yet: press Older events to go on" : "") +
      " · first page in " + got.took_ms + " ms";
  } catch (e) { if (!(e instanceof AuthError)) $("#error").textContent = "Could not load events: " + e.message; }
}

// -- charts ----------------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function chart(fig, series, n) {
  const keys = Object.keys(series);
  const totals = new Array(n).fill(0);
  for (const k of keys) series[k].forEach((v, i) => { totals[i] += v; });
  const max = Math.max(1, ...totals);
  const W = 480, H = 90, bw = W / n;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const color = (k, i) => (fig.id === "chart-severity" && SEV_COLORS[k]) || PALETTE[i % PALETTE.length];
  for (let b = 0; b < n; b++) {
    let y = H;
    keys.forEach((k, i) => {
      const v = series[k][b];
      if (!v) return;
      const h = (v / max) * (H - 4);
      y -= h;
      const r = svg("rect", { x: (b * bw + 0.5).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 1).toFixed(1),
        height: h.toFixed(1), fill: color(k, i), "data-key": k, "data-count": String(v) });
      r.append(svg("title", {}));
      r.firstChild.textContent = `${k}: ${v}`;
      s.append(r);
    });
  }
  const legend = el("div", { class: "legend" });
  keys.forEach((k, i) => {
    const sum = series[k].reduce((a, b) => a + b, 0);
    const sw = el("i");
    sw.style.background = color(k, i);
    legend.append(el("span", { "data-key": k }, sw, `${k} ${sum}`));
  });
  fig.querySelector(".plot").replaceChildren(s, legend);
}

async function loadCharts() {
  try {
    const got = await (await api("/api/counts?" + filterParams())).json();
    for (const g of ["severity", "rule", "namespace", "image"]) {
      const fig = $("#chart-" + g);
      chart(fig, got.by[g], got.buckets);
      fig.querySelector(".plot").prepend(el("div", { class: "axis" }, el("span", { text: timeText(got.since_time) }),
        el("span", { text: timeText(got.until_time) })));
    }
    if (got.truncated) $("#summary-line").append(` · charts count the newest ${got.scanned} events`);
  } catch (e) { if (!(e instanceof AuthError)) $("#error").textContent = "Could not load counts: " + e.message; }
}

// -- detail ----------------------------------------------------------------------------------------------

let current = null;

async function openDetail(id, push) {
  document.querySelectorAll("#events tr.selected").forEach((r) => r.classList.remove("selected"));
  const tr = document.querySelector(`#events tr[data-id="${id}"]`);
  if (tr) tr.classList.add("selected");
  if (push) pushURL({ event: String(id) });
  let d;
  try { d = await (await api("/api/events/" + id)).json(); } catch (e) {
    if (!(e instanceof AuthError)) $("#error").textContent = "Could not open event " + id + ": " + e.message;
    return;
  }
  current = d;
  const s = d.summary;
  $("#detail").hidden = false;
  $("#detail").dataset.id = String(s.id);
  $("#detail-title").textContent = `${s.kind}: ${s.reason || s.rule || s.name}`;
  const dl = $("#detail-fields");
  dl.replaceChildren();
  for (const [k, v] of [["Time", timeText(s.time)], ["Action", s.action], ["Severity", s.severity],
    ["Rule", s.rule], ["Node", s.node], ["Namespace", s.namespace], ["Pod", s.pod], ["Container", s.container_id],
    ["Image", s.image], ["Process", s.process], ["Command line", s.command_line]]) {
    if (v) dl.append(el("dt", { text: k }), el("dd", { text: v, "data-field": k.toLowerCase() }));
  }
  showStatus(d.status.status);
  const ol = $("#lineage");
  ol.replaceChildren();
  for (const p of d.lineage) {
    const what = [p.pid ? "pid " + p.pid : "", p.name || "", p.executable || "", p.command_line || ""]
      .filter(Boolean).join("  ");
    ol.append(el("li", { "data-role": p.role }, el("span", { class: "role", text: p.role }), what));
  }
  if (!d.lineage.length) ol.append(el("li", { text: "no process (an image verdict or a pre-start block)" }));
  const fd = $("#findings");
  fd.replaceChildren();
  for (const f of d.findings) {
    const head = [f.severity, f.category, f.rule, f.action].filter(Boolean).join(" · ");
    const rest = [f.path, f.detail, f.advisory, f.package].filter(Boolean).join(" — ");
    fd.append(el("div", { class: "finding" }, el("strong", { text: head }), el("div", { text: rest })));
  }
  if (!d.findings.length) fd.append(el("p", { text: "none" }));
  $("#raw").textContent = JSON.stringify(d.record, null, 2);
}

function showStatus(st) {
  const e = $("#detail-status");
  e.textContent = st;
  e.className = "st-" + st;
}

async function setStatus(st) {
  if (!current) return;
  const id = current.summary.id;
  try {
    const got = await (await api(`/api/events/${id}/status`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ status: st }) })).json();
    showStatus(got.status);
    const cell = document.querySelector(`#events tr[data-id="${id}"] td.status`);
    if (cell) { cell.textContent = got.status; cell.className = "status st-" + got.status; }
  } catch (e) { if (!(e instanceof AuthError)) $("#error").textContent = "Could not set status: " + e.message; }
}

// -- live tail ---------------------------------------------------------------------------------------------

function tailState(on, text) {
  const s = $("#tail-state");
  s.className = on ? "on" : "off";
  s.textContent = text;
  $("#tail-toggle").textContent = on ? "Stop live tail" : "Start live tail";
}

async function startTail() {
  stopTail();
  const ctl = new AbortController();
  tail = ctl;
  let received = 0;
  tailState(true, "live tail connecting");
  try {
    const resp = await api("/api/tail?" + filterParams(), { signal: ctl.signal });
    tailState(true, "live tail on · 0 new");
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const msg = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let ev = "message", data = "";
        for (const line of msg.split("\n")) {
          if (line.startsWith("event: ")) ev = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (ev === "events") {
          const body = $("#events tbody");
          for (const s of JSON.parse(data)) {
            if (shown.has(s.id)) continue;
            shown.add(s.id);
            const tr = row(s);
            tr.classList.add("new");
            body.prepend(tr);
            received++;
          }
          tailState(true, `live tail on · ${received} new`);
        } else if (ev === "dropped") {
          tailState(true, `live tail on · ${received} new · ${data} dropped (too slow)`);
        }
      }
    }
    if (tail === ctl) tailState(false, "live tail ended");
  } catch (e) {
    if (tail === ctl && e.name !== "AbortError") tailState(false, "live tail failed: " + e.message);
  }
}

function stopTail() {
  if (tail) { const t = tail; tail = null; t.abort(); }
  tailState(false, "live tail off");
}

// -- export --------------------------------------------------------------------------------------------------

async function exportAs(fmt) {
  const p = filterParams();
  p.set("format", fmt);
  try {
    const blob = await (await api("/api/export?" + p)).blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: "nodewarden-events." + fmt });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  } catch (e) { if (!(e instanceof AuthError)) $("#error").textContent = "Export failed: " + e.message; }
}

// -- wiring -----------------------------------------------------------------------------------------------------

function reloadAll() {
  nextCursor = "";
  loadList(false);
  loadCharts();
  if (tail) startTail(); // the tail follows the filter too
}

function init() {
  const u = fromURL();
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); pushURL(); reloadAll(); });
  $("#clear").addEventListener("click", () => { for (const n of FILTERS) $("#filters").elements[n].value = "";
    pushURL(); reloadAll(); });
  $("#more").addEventListener("click", () => loadList(true));
  $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; current = null; pushURL(); });
  $("#mark-handled").addEventListener("click", () => setStatus("handled"));
  $("#mark-ignored").addEventListener("click", () => setStatus("ignored"));
  $("#mark-unhandled").addEventListener("click", () => setStatus("unhandled"));
  $("#tail-toggle").addEventListener("click", () => (tail ? stopTail() : startTail()));
  $("#export-json").addEventListener("click", () => exportAs("json"));
  $("#export-csv").addEventListener("click", () => exportAs("csv"));
  $("#token-change").addEventListener("click", () => askToken(""));
  $("#token-form").addEventListener("submit", () => {
    token = $("#token-input").value.trim();
    sessionStorage.setItem("nw-token", token);
    setTimeout(() => { const ev = new URLSearchParams(location.search).get("event"); reloadAll();
      if (ev) openDetail(ev, false); }, 0);
  });
  window.addEventListener("popstate", () => { const v = fromURL(); reloadAll();
    if (v.get("event")) openDetail(v.get("event"), false); else $("#detail").hidden = true; });
  reloadAll();
  if (u.get("event")) openDetail(u.get("event"), false);
}

document.addEventListener("DOMContentLoaded", init);
