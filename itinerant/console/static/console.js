// The Itinerant console (docs/console.md): hash routes, polled every 2 s.
// Everything from the mesh is put on the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const STATES = ["running", "parked", "awaiting_approval", "compensating", "compensated",
  "completed", "failed", "rejected"];
const main = document.getElementById("main");
let timer = null;
let route = 0; // bumped on every navigation: answers for an old page are dropped

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "css") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces the page's content; ``children`` may nest arrays and hold nulls.
function put(...children) {
  main.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Itinerant-Console": "1" },
    body: JSON.stringify(body),
  };
  const answer = await fetch(path, { credentials: "same-origin", ...options });
  if (answer.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await answer.json().catch(() => ({ error: `HTTP ${answer.status}` }));
  if (!answer.ok) throw new Error(data.error || `HTTP ${answer.status}`);
  return data;
}

function flash(text, bad) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = bad ? "flash bad" : "flash good";
  box.hidden = false;
}

function when(iso) { return iso ? String(iso).replace("T", " ").slice(0, 19) : ""; }
function short(id) { return id ? String(id).slice(0, 8) : ""; }
function stateChip(state) { return el("span", { class: `state s-${state}`, text: state }); }
function sagaLink(id) {
  return id ? el("a", { href: `#/sagas/${encodeURIComponent(id)}`, text: id }) : "";
}
function table(headers, rows, attrs) {
  return el("div", { class: "scroll" }, el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows)));
}
function pairs(list) {
  return el("dl", { class: "pairs" }, list.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}

// Re-runs ``load`` every POLL_MS while this page is shown; ``render`` only when data changed.
function poll(load, render) {
  const mine = route;
  let last = null;
  async function tick() {
    try {
      const data = await load();
      if (mine !== route) return;
      const text = JSON.stringify(data);
      if (text !== last) { last = text; render(data); }
      document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (mine === route) flash(error.message, true);
    }
    if (mine === route) timer = setTimeout(tick, POLL_MS);
  }
  tick();
}

// -- sagas ---------------------------------------------------------------------------------------

function sagasPage(params) {
  const state = params.get("state") || "";
  const filter = el("select", { id: "state-filter", "aria-label": "state", onchange: (e) => {
    location.hash = e.target.value ? `#/sagas?state=${e.target.value}` : "#/sagas";
  } }, el("option", { value: "", text: "every state" }),
  STATES.map((s) => el("option", { value: s, selected: s === state, text: s })));
  const find = el("input", { id: "find-saga", placeholder: "saga id", "aria-label": "saga id" });
  const form = el("form", { class: "tools", onsubmit: (e) => {
    e.preventDefault();
    if (find.value.trim()) location.hash = `#/sagas/${encodeURIComponent(find.value.trim())}`;
  } }, filter, find, el("button", { type: "submit", text: "Find" }));
  const counts = el("p", { class: "counts" });
  const list = el("div");
  put(el("h1", { text: "Sagas" }), form, counts, list);
  const query = state ? `?state=${encodeURIComponent(state)}&limit=200` : "?limit=200";
  poll(() => api(`/api/sagas${query}`), (data) => {
    counts.replaceChildren(...Object.entries(data.counts).map(([s, n]) =>
      el("a", { href: `#/sagas?state=${s}`, class: "count" }, stateChip(s), ` ${n}`)));
    list.replaceChildren(table(["saga", "state", "updated", "steps", "customer", "reason"],
      data.sagas.map((s) => el("tr", { "data-saga": s.saga_id },
        el("td", {}, sagaLink(s.saga_id)), el("td", {}, stateChip(s.state)),
        el("td", { text: when(s.updated_at) }), el("td", { text: s.steps.length }),
        el("td", { text: s.customer || "" }), el("td", { text: s.reason || "" }))),
    { id: "sagas" }));
  });
}

function budgetRows(budget, limits) {
  if (!budget) return [];
  const cap = limits || budget;
  return [
    ["hops", `${budget.hops} of ${cap.max_hops}`],
    ["tokens", `${budget.tokens} of ${cap.max_tokens}`],
    ["cost", `$${Number(budget.cost_usd).toFixed(4)} of $${Number(cap.max_cost_usd).toFixed(2)}`],
  ];
}

// Steps as a waterfall: each bar starts when the step was recorded minus its duration.
function waterfall(saga) {
  const start = Date.parse(saga.created_at);
  const spans = saga.steps.map((s) => {
    const end = Date.parse(s.at);
    return { step: s, from: Math.max(end - s.duration_ms, start), to: end };
  });
  const finish = Math.max(start + 1, ...spans.map((s) => s.to), Date.parse(saga.updated_at));
  const total = finish - start;
  return el("div", { class: "waterfall", id: "steps" }, spans.map(({ step, from, to }) => {
    const left = ((from - start) / total) * 100;
    const width = Math.max(((to - from) / total) * 100, 0.5);
    const name = `${step.index}${step.branch !== null && step.branch !== undefined ? "." + step.branch : ""} ${step.agent}.${step.action}`;
    return el("div", { class: "row" },
      el("span", { class: "label", text: name }),
      el("span", { class: "track" }, el("span", {
        class: `span st-${step.status}`, css: { left: `${left}%`, width: `${width}%` },
        title: `${step.status} ${step.duration_ms.toFixed(0)} ms${step.error ? ": " + step.error : ""}`,
      })),
      el("span", { class: "meta", text: `${step.status} ${step.duration_ms.toFixed(0)} ms` }));
  }));
}

function decisionForm(sagaId, onDone) {
  const why = el("input", { class: "why", placeholder: "why (recorded on the timeline)",
    "aria-label": "why", required: true });
  async function decide(decision) {
    if (!why.value.trim()) { flash("say why before deciding", true); why.focus(); return; }
    try {
      const done = await api(`/api/approvals/${encodeURIComponent(sagaId)}`, { decision, why: why.value });
      flash(done.message, false);
      if (onDone) onDone();
    } catch (error) { flash(error.message, true); }
  }
  return el("form", { class: "decide", onsubmit: (e) => e.preventDefault() }, why,
    el("button", { type: "button", class: "approve", onclick: () => decide("approve"), text: "Approve" }),
    el("button", { type: "button", class: "reject", onclick: () => decide("reject"), text: "Reject" }));
}

function sagaPage(id) {
  const head = el("div");
  const hold = el("div");
  const steps = el("div");
  const timeline = el("div");
  const trace = el("div");
  put(el("h1", {}, "Saga ", el("code", { id: "saga-id", text: id })), head, hold,
    el("h2", { text: "Steps" }), steps, el("h2", { text: "Trace" }), trace,
    el("h2", { text: "Timeline" }), timeline);
  let heldShown = false;
  let traced = "";
  poll(async () => {
    const [saga, spans] = await Promise.all([api(`/api/sagas/${encodeURIComponent(id)}`),
      api(`/api/sagas/${encodeURIComponent(id)}/trace`)]);
    const text = JSON.stringify(spans);
    if (text !== traced) { traced = text; trace.replaceChildren(spanWaterfall(spans)); }
    return saga;
  }, (saga) => {
    head.replaceChildren(pairs([
      ["state", el("span", { id: "saga-state" }, stateChip(saga.state))],
      ["reason", saga.reason], ["error", saga.error], ["customer", saga.customer],
      ["created", when(saga.created_at)], ["updated", when(saga.updated_at)],
      ["deadline", when(saga.deadline)], ...budgetRows(saga.budget, saga.limits),
    ]));
    const waiting = saga.state === "awaiting_approval" && saga.approval;
    if (waiting && !heldShown) {
      const a = saga.approval;
      hold.replaceChildren(el("section", { class: "held" }, el("h2", { text: "Awaiting approval" }),
        pairs([["amount", a.amount_usd !== null ? `$${a.amount_usd.toFixed(2)}` : ""],
          ["why held", a.reasons.join("; ")], ["deadline", when(a.deadline)]]),
        decisionForm(id)));
    } else if (!waiting) hold.replaceChildren();
    heldShown = Boolean(waiting);
    steps.replaceChildren(saga.steps.length ? waterfall(saga) : el("p", { text: "no steps yet" }));
    timeline.replaceChildren(el("ol", { class: "timeline", id: "timeline" },
      saga.timeline.map((t) => el("li", {}, el("time", { text: when(t.at) }), " ",
        el("b", { text: t.event }), t.detail ? ` ${t.detail}` : ""))));
  });
}

// -- dead letters --------------------------------------------------------------------------------

function deadLettersPage(params) {
  const status = params.get("status") || "";
  const filter = el("select", { "aria-label": "status", onchange: (e) => {
    location.hash = e.target.value ? `#/dead-letters?status=${e.target.value}` : "#/dead-letters";
  } }, el("option", { value: "", text: "every status" }),
  ["pending", "replayed", "discarded"].map((s) => el("option", { value: s, selected: s === status, text: s })));
  const list = el("div");
  put(el("h1", { text: "Dead letters" }), el("div", { class: "tools" }, filter), list);
  poll(() => api("/api/dead-letters"), (entries) => {
    const shown = entries.filter((e) => !status || e.status === status);
    list.replaceChildren(shown.length ? table(["entry", "status", "reason", "service", "saga", "at"],
      shown.map((e) => el("tr", { "data-entry": e.id },
        el("td", {}, el("a", { href: `#/dead-letters/${e.id}`, text: e.id })),
        el("td", { text: e.status_text }), el("td", { text: e.reason || "" }),
        el("td", { text: e.service || "" }), el("td", {}, sagaLink(e.saga_id)),
        el("td", { text: when(e.at) }))), { id: "dead-letters" })
      : el("p", { text: "no dead letters" }));
  });
}

async function deadLetterPage(id) {
  const mine = route;
  put(el("h1", {}, "Dead letter ", el("code", { text: id })), el("p", { text: "loading ..." }));
  let e;
  try { e = await api(`/api/dead-letters/${encodeURIComponent(id)}`); } catch (error) {
    if (mine === route) put(el("p", { class: "error", text: error.message }));
    return;
  }
  if (mine !== route) return;
  const force = el("input", { type: "checkbox", id: "force" });
  const why = el("input", { class: "why", id: "discard-why", placeholder: "why it is given up", "aria-label": "why" });
  async function act(path, body) {
    try {
      const done = await api(`/api/dead-letters/${encodeURIComponent(e.id)}/${path}`, { ...body, force: force.checked });
      flash(done.message, false);
      deadLetterPage(id);
    } catch (error) { flash(error.message, true); }
  }
  const payload = typeof e.payload === "string" ? e.payload : JSON.stringify(e.payload, null, 2);
  put(
    el("h1", {}, "Dead letter ", el("code", { text: e.id })),
    pairs([["status", el("span", { id: "entry-status", text: e.status_text })], ["reason", e.reason],
      ["error", e.error_type ? `${e.error_type}: ${e.error || ""}` : e.error], ["service", e.service],
      ["saga", sagaLink(e.saga_id)], ["origin", `${e.origin_topic}[${e.origin_partition}]@${e.origin_offset}`],
      ["attempts", e.attempts], ["at", when(e.at)], ["message", e.ce_type ? `${e.ce_type} ${e.ce_id}` : ""],
      ["truncated", e.truncated.length ? `${e.truncated.join(", ")} (replay re-reads the original)` : ""]]),
    el("section", { class: "actions" },
      el("button", { id: "replay", class: "approve", onclick: () => act("replay", {}), text: "Replay" }),
      el("span", { class: "discard" }, why, el("button", { id: "discard", class: "reject", onclick: () => {
        if (!why.value.trim()) { flash("say why before discarding", true); return; }
        act("discard", { why: why.value });
      }, text: "Discard" })),
      el("label", { class: "force" }, force, " force (again, after a replay or discard)")),
    e.actions.length ? [el("h2", { text: "What operators did" }), table(["action", "at", "by", "why"],
      e.actions.map((a) => el("tr", {}, el("td", { text: a.action }), el("td", { text: when(a.at) }),
        el("td", { text: a.by }), el("td", { text: a.why || "" }))))] : null,
    el("h2", { text: "Headers" }),
    table(["header", "value"], Object.entries(e.headers).map(([k, v]) =>
      el("tr", {}, el("td", {}, el("code", { text: k })), el("td", { class: "wrap", text: v }))), { id: "headers" }),
    el("h2", { text: "Payload" }), el("pre", { id: "payload", text: payload }));
}

// -- approvals -----------------------------------------------------------------------------------

function approvalsPage() {
  const list = el("div", { id: "approvals" });
  const empty = el("p", { text: "nothing is waiting for a decision" });
  put(el("h1", { text: "Approvals" }), list);
  const rows = new Map(); // saga id -> card, kept while it waits (so a typed reason survives)
  poll(() => api("/api/sagas?state=awaiting_approval&limit=1000"), (data) => {
    const ids = new Set(data.sagas.map((s) => s.saga_id));
    for (const [id, card] of rows) if (!ids.has(id)) { card.remove(); rows.delete(id); }
    for (const saga of data.sagas) {
      if (rows.has(saga.saga_id)) continue;
      const a = saga.approval || {};
      const card = el("article", { class: "held", "data-saga": saga.saga_id },
        el("h2", {}, sagaLink(saga.saga_id)),
        pairs([["amount", a.amount_usd !== null && a.amount_usd !== undefined ? `$${a.amount_usd.toFixed(2)}` : ""],
          ["why held", (a.reasons || []).join("; ")], ["since", when(a.requested_at)], ["deadline", when(a.deadline)],
          ["customer", saga.customer]]),
        decisionForm(saga.saga_id));
      rows.set(saga.saga_id, card);
      list.append(card);
    }
    if (!rows.size) list.replaceChildren(empty); else empty.remove();
  });
}

async function heldCount() {
  try {
    const data = await api("/api/sagas?state=awaiting_approval&limit=1000");
    document.getElementById("held-count").textContent = data.sagas.length ? String(data.sagas.length) : "";
  } catch (_) { /* shown by the page's own poll */ }
}

// -- the trace -----------------------------------------------------------------------------------

// Every span of the saga's traces, depth first, as [node, depth, trace start offset].
function flatSpans(traces) {
  const out = [];
  let base = 0;
  for (const trace of traces) {
    const visit = (node, depth) => {
      out.push({ node, depth, from: base + node.start_offset_ms });
      node.children.forEach((c) => visit(c, depth + 1));
    };
    trace.roots.forEach((r) => visit(r, 0));
    base += trace.duration_ms;
  }
  return out;
}

function spanWaterfall(data) {
  const spans = flatSpans(data.traces);
  if (!spans.length) return el("p", { text: "no spans yet (they are written about a second after they end)" });
  const total = Math.max(1, ...spans.map((s) => s.from + s.node.duration_ms));
  return el("div", { class: "waterfall spans", id: "spans" }, spans.map(({ node, depth, from }) => {
    const left = (from / total) * 100;
    const width = Math.max((node.duration_ms / total) * 100, 0.4);
    const bad = node.status === "ERROR" || node.status === "error";
    return el("div", { class: "row", "data-service": node.service },
      el("span", { class: "label", css: { paddingLeft: `${Math.min(depth, 12) * 0.7}rem` },
        title: node.name, text: node.name }),
      el("span", { class: "track" }, el("span", {
        class: `span${bad ? " st-failed" : ""}`, css: { left: `${left}%`, width: `${width}%` },
        title: `${node.service} ${node.name} ${node.duration_ms.toFixed(1)} ms${node.status_message ? ": " + node.status_message : ""}`,
      })),
      el("span", { class: "meta", text: `${node.service} ${node.duration_ms.toFixed(1)} ms` }));
  }));
}

// -- agents and charts ---------------------------------------------------------------------------

function fmt(value, digits) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}
function ms(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}
function circuits(row) {
  const entries = Object.entries(row.circuits || {});
  if (!entries.length) return "-";
  return el("div", { class: "chips" },
    entries.map(([dep, state]) => el("span", { class: `state c-${state}`, text: `${dep} ${state}` })));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = String(value); else node.setAttribute(key, String(value));
  }
  node.append(...children.flat(Infinity).filter((c) => c));
  return node;
}
const COLOURS = ["#2256c5", "#1b7f4b", "#b3261e", "#9a6400", "#7b3fb5", "#00838f", "#c2185b", "#5d6675"];

// A small line chart: one polyline per series over the sampled window.
function lineChart(chart) {
  const W = 320, H = 120, P = 4;
  const points = chart.series.flatMap((s) => s.points);
  const card = el("figure", { class: "chart", "data-chart": chart.name }, el("figcaption", { text: chart.title }));
  if (!points.length) { card.append(el("p", { class: "muted", text: "no samples yet" })); return card; }
  const t0 = Math.min(...points.map((p) => p[0])), t1 = Math.max(t0 + 1, ...points.map((p) => p[0]));
  const high = Math.max(0, ...points.map((p) => p[1]));
  const top = high > 0 ? high : 1;
  const x = (t) => P + ((t - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (v / top) * (H - 2 * P);
  const lines = chart.series.map((s, i) => svg("polyline", {
    "data-series": s.name, fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": 1.5,
    points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
  }));
  card.append(svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chart.title },
    svg("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#dde1e8" }),
    svg("text", { x: P + 2, y: 12, class: "axis", text: `max ${Number(high.toPrecision(3))}` }), lines));
  card.append(el("div", { class: "legend" }, chart.series.map((s, i) => el("span", {},
    el("i", { css: { background: COLOURS[i % COLOURS.length] } }),
    `${s.name} ${fmt(s.points.length ? s.points[s.points.length - 1][1] : null, 2)}`))));
  return card;
}

function agentsPage() {
  const list = el("div");
  const charts = el("div", { class: "charts", id: "charts" });
  put(el("h1", { text: "Agents" }), list, el("h2", { text: "Charts (last 15 min)" }), charts);
  poll(() => Promise.all([api("/api/agents"), api("/api/charts")]), ([view, data]) => {
    list.replaceChildren(table(["service", "health", "msg/s", "total", "failed", "retries", "dlq", "lag", "p99", "circuits"],
      view.services.map((r) => el("tr", { "data-service": r.service },
        el("td", { text: r.service }),
        el("td", {}, el("span", { class: `state ${r.up ? "s-completed" : "s-failed"}`, text: r.up ? "up" : "down", title: r.error || "" })),
        el("td", { class: "rate", title: r.rate_window, text: fmt(r.rate, 2) }),
        el("td", { text: fmt(r.processed, 0) }), el("td", { text: fmt(r.failed, 0) }),
        el("td", { text: fmt(r.retries, 0) }), el("td", { text: fmt(r.dlq, 0) }),
        el("td", { text: fmt(r.lag, 0) }), el("td", { text: ms(r.p99_s) }),
        el("td", { class: "circuits" }, circuits(r)))), { id: "agents" }));
    charts.replaceChildren(...data.charts.map(lineChart));
  });
}

// -- routing -------------------------------------------------------------------------------------

function show() {
  route += 1;
  clearTimeout(timer);
  document.getElementById("flash").hidden = true;
  const [path, query] = (location.hash.slice(1) || "/sagas").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("here", link.dataset.nav === parts[0]);
  }
  if (parts[0] === "sagas" && parts[1]) sagaPage(parts[1]);
  else if (parts[0] === "dead-letters" && parts[1]) deadLetterPage(parts[1]);
  else if (parts[0] === "dead-letters") deadLettersPage(params);
  else if (parts[0] === "approvals") approvalsPage();
  else if (parts[0] === "agents") agentsPage();
  else sagasPage(params);
}

window.addEventListener("hashchange", show);
api("/api/me").then((me) => {
  document.getElementById("who").textContent = `${me.principal}${me.approver ? " (approver)" : ""}`;
}).catch(() => {});
heldCount();
setInterval(heldCount, POLL_MS * 2);
show();
