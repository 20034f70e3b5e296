// flowstream's web UI: workflows, runs, a live graph of the selected run.
//
// One page, no build step. The graph is laid out left to right by dagre
// (vendor/dagre.min.js, a global `dagre`). Node states and counters come from
// polling GET /api/runs/{id} while the run is active; the event log comes
// from WS /api/runs/{id}/events, and each lifecycle event triggers a refresh.
// When the server goes away the page says so and keeps retrying; when it is
// back, lists, the selected run and its event feed pick up again.
//
// Each poll of an active run adds a point per node to a small history (rates
// in and out, input channel fill, errors, event-time lag; the last HISTORY_S
// seconds), drawn in the node panel; selecting a run first fills it from the
// server's own samples (GET /api/runs/{id}/series), so a reload starts with
// the run's recent past. A node with parallelism shows its instances in its
// panel; an event-time node its watermark and lag. A running stream shows
// its recent outputs. Times show in one format everywhere: ISO 8601, UTC, ms.
// Workflows are edited as YAML text; the server validates and keeps the text.
"use strict";

const POLL_MS = 500;
const LIST_EVERY = 4; // refresh the lists every 4th poll
const MAX_EVENTS = 400;
const HISTORY_S = 300; // a node's charts cover the last five minutes
const MAX_ROWS = 200; // rows per output table
const NODE_W = 230;
const NODE_H = 104;
const ACTIVE = new Set(["running", "stopping"]);
const CEL_FIELDS = new Set(["expr", "predicate", "key", "where", "condition", "when", "value", "timestamp", "by"]);

const state = {
  token: localStorage.getItem("flowstream.token") || "",
  authForReads: false,
  tokenAsked: false,
  online: null,
  workflows: [],
  runs: [],
  selection: null, // {kind: "workflow", name} | {kind: "run", id}
  run: null, // the selected run's last RunDetail
  workflow: null, // the selected workflow's document (no run selected)
  layoutKey: null,
  nodeEls: new Map(),
  socket: null,
  socketRun: null,
  socketDone: false,
  events: [],
  tick: 0,
  history: new Map(), // node id -> [{t, rin, rout, fill, err, lag}] of the selected run
  historyRun: null,
  backfilled: new Map(), // node id -> points taken from the server's samples
  node: null, // the node shown in the node panel
  editing: null, // the workflow name in the editor (null: a new one)
};

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

// --- the token ------------------------------------------------------------------

function takeTokenFromUrl() {
  // A link like http://127.0.0.1:8080/#token=... sets the token; the fragment
  // never reaches the server, and is removed from the address bar at once.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    localStorage.setItem("flowstream.token", state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function askToken() {
  $("token-input").value = state.token;
  $("token-dialog").showModal();
}

// --- HTTP -----------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    setOnline(false);
    throw err;
  }
  setOnline(true);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = { detail: text };
  }
  return { ok: response.ok, status: response.status, data };
}

function setOnline(online) {
  if (state.online === online) return;
  const wasOffline = state.online === false;
  state.online = online;
  const el = $("connection");
  el.dataset.state = online ? "connected" : "reconnecting";
  el.textContent = online ? "connected" : "server unreachable: reconnecting…";
  if (online && wasOffline) {
    // The server is back (perhaps a new process): start over from its state.
    state.layoutKey = null;
    closeEvents();
    refreshLists();
    refreshSelection();
  }
}

function showProblem(result) {
  const doc = result.data || {};
  let text = `${doc.title || "Error"} (${result.status}): ${doc.detail || ""}`;
  for (const p of doc.problems || []) {
    const where = [p.node && `node '${p.node}'`, p.field].filter(Boolean).join(", ");
    text += `\n  ${where ? where + ": " : ""}${p.message}`;
  }
  const box = $("message");
  box.textContent = text;
  box.hidden = false;
  if (result.status === 401) askToken();
}

function clearProblem() {
  $("message").hidden = true;
}

// --- lists ----------------------------------------------------------------------

let listsAsked = 0;
async function refreshLists() {
  // Answers may come back out of order: only the latest request's count.
  const asked = ++listsAsked;
  let workflows, runs, health;
  try {
    [health, workflows, runs] = await Promise.all([
      api("GET", "/api/health"),
      api("GET", "/api/workflows"),
      api("GET", "/api/runs?limit=50"),
    ]);
  } catch (_) {
    return;
  }
  if (asked !== listsAsked) return;
  if (health.ok) state.authForReads = health.data.auth_required_for_reads;
  if (health.status === 401) {
    // Beyond loopback every endpoint needs the token, reads included.
    state.authForReads = true;
    if (!state.tokenAsked) {
      state.tokenAsked = true; // once: the token button is there for later
      askToken();
    }
    return;
  }
  if (workflows.ok) state.workflows = workflows.data;
  if (runs.ok) state.runs = runs.data;
  renderLists();
}

function renderLists() {
  const wfList = $("workflows");
  wfList.replaceChildren();
  for (const wf of state.workflows) {
    const li = document.createElement("li");
    li.dataset.workflow = wf.name;
    if (state.selection?.kind === "workflow" && state.selection.name === wf.name) {
      li.classList.add("selected");
    }
    li.innerHTML = `<span class="name"></span><span class="sub"></span>`;
    li.querySelector(".name").textContent = wf.name;
    li.querySelector(".sub").textContent = `${wf.mode} · ${wf.nodes} nodes`;
    const run = document.createElement("button");
    run.type = "button";
    run.className = "run-workflow";
    run.textContent = "Run";
    run.addEventListener("click", (ev) => {
      ev.stopPropagation();
      startRun(wf.name);
    });
    li.append(run);
    li.addEventListener("click", () => selectWorkflow(wf.name));
    wfList.append(li);
  }
  if (!state.workflows.length) {
    wfList.innerHTML = `<li class="empty">none yet: PUT /api/workflows/{name}</li>`;
  }
  const runList = $("runs");
  runList.replaceChildren();
  for (const run of state.runs) {
    const li = document.createElement("li");
    li.dataset.runId = run.run_id;
    if (state.selection?.kind === "run" && state.selection.id === run.run_id) {
      li.classList.add("selected");
    }
    li.classList.add("run");
    li.innerHTML = `<span class="name"></span><span class="badge"></span><span class="sub"></span>`;
    li.querySelector(".name").textContent = `${run.workflow} · ${run.run_id.slice(0, 6)}`;
    li.querySelector(".name").title = run.run_id;
    const restarts = run.restarts ? ` · restarts ${run.restarts}` : "";
    li.querySelector(".sub").textContent = `${clock(run.started_at)} · ${duration(run)}${restarts}`;
    const badge = li.querySelector(".badge");
    badge.dataset.status = run.status;
    badge.textContent = run.status;
    li.addEventListener("click", () => selectRun(run.run_id));
    runList.append(li);
  }
  if (!state.runs.length) runList.innerHTML = `<li class="empty">none yet</li>`;
}

// --- selection ------------------------------------------------------------------

async function selectWorkflow(name) {
  state.selection = { kind: "workflow", name };
  state.run = null;
  state.layoutKey = null;
  closeEvents();
  clearEvents();
  clearProblem();
  renderLists();
  await refreshSelection();
}

async function selectRun(runId) {
  state.selection = { kind: "run", id: runId };
  state.layoutKey = null;
  if (state.historyRun !== runId) {
    state.history = new Map();
    state.backfilled = new Map();
    state.historyRun = runId;
    backfill(runId);
  }
  if (state.socketRun !== runId) {
    closeEvents();
    clearEvents();
  }
  clearProblem();
  renderLists();
  await refreshSelection();
}

async function refreshSelection() {
  const sel = state.selection;
  if (!sel) return;
  let result;
  try {
    result = await api(
      "GET",
      sel.kind === "run" ? `/api/runs/${sel.id}` : `/api/workflows/${encodeURIComponent(sel.name)}`,
    );
  } catch (_) {
    return;
  }
  if (sel !== state.selection) return; // the user moved on meanwhile
  if (!result.ok) {
    showProblem(result);
    return;
  }
  if (sel.kind === "run") {
    const listed = state.runs.find((r) => r.run_id === sel.id);
    if (!listed || listed.status !== result.data.status) refreshLists();
    state.run = result.data;
    state.workflow = result.data.graph;
    record(result.data);
    renderRun();
    refreshCheckpoints(result.data);
    if (state.socketRun !== sel.id || (!state.socket && !state.socketDone)) {
      openEvents(sel.id);
    }
  } else {
    state.run = null;
    state.workflow = result.data;
    renderRun();
  }
}

// --- actions --------------------------------------------------------------------

async function startRun(name) {
  clearProblem();
  let result;
  try {
    result = await api("POST", `/api/workflows/${encodeURIComponent(name)}/runs`, {});
  } catch (_) {
    return;
  }
  if (!result.ok) {
    showProblem(result);
    return;
  }
  await selectRun(result.data.run_id);
  refreshLists();
}

async function control(action) {
  const run = state.run;
  if (!run) return;
  clearProblem();
  let result;
  try {
    result = await api("POST", `/api/runs/${run.run_id}/${action}`);
  } catch (_) {
    return;
  }
  if (!result.ok) showProblem(result);
  await refreshSelection();
  refreshLists();
}

async function restart() {
  const run = state.run;
  const name = run ? run.workflow : state.selection?.name;
  if (!name) return;
  if (run && ACTIVE.has(run.status)) {
    try {
      await api("POST", `/api/runs/${run.run_id}/cancel`);
    } catch (_) {
      return;
    }
  }
  await startRun(name);
}

// --- times and numbers --------------------------------------------------------

function clock(t) {
  // One format for every time on the page: ISO 8601, UTC, milliseconds.
  if (t == null) return "—";
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(date.getTime()) ? String(t) : date.toISOString();
}

function seconds(s) {
  if (s == null) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function duration(run) {
  if (run.duration_s != null) return seconds(run.duration_s);
  if (ACTIVE.has(run.status)) return `running ${seconds((Date.now() - Date.parse(run.started_at)) / 1000)}`;
  return "—";
}

function rate(r) {
  // No rate under a second of data: the count says it all.
  return r == null ? "—" : `${fmt(r)}/s`;
}

// --- the run view ---------------------------------------------------------------

function renderRun() {
  const run = state.run;
  const wf = state.workflow;
  const status = $("run-status");
  if (run) {
    $("run-title").textContent = `${run.workflow} · run ${run.run_id}`;
    status.hidden = false;
    status.dataset.status = run.status;
    status.textContent = run.status;
    const restarts = run.restarts ? ` · resumed after ${run.restarts} server restart(s)` : "";
    $("run-meta").textContent = `${run.mode} mode · started ${clock(run.started_at)} · ${duration(run)}${restarts}`;
    if (run.error) {
      const box = $("message");
      box.textContent = run.error;
      box.hidden = false;
    }
  } else if (wf) {
    $("run-title").textContent = `${wf.name} (not running)`;
    status.hidden = true;
    $("run-meta").textContent = `${wf.mode || "dag"} mode · ${(wf.nodes || []).length} nodes`;
  }
  const active = run && ACTIVE.has(run.status);
  $("start-button").disabled = !wf;
  $("stop-button").disabled = !(run && run.status === "running");
  $("cancel-button").disabled = !active;
  $("restart-button").disabled = !wf;
  $("edit-button").disabled = !wf;
  if (wf) renderGraph(wf, run);
  renderOutputs(run);
  renderNode();
}

function renderOutputs(run) {
  const box = $("outputs");
  if (run && run.outputs == null && run.recent_outputs && Object.keys(run.recent_outputs).length) {
    // A running stream: the latest records of each output, newest last.
    box.replaceChildren();
    for (const [node, ports] of Object.entries(run.recent_outputs)) {
      for (const [port, recent] of Object.entries(ports)) {
        const el = table(`${node}.${port}: latest ${recent.records.length} of ${fmt(recent.seen)} (live)`, recent.records);
        el.dataset.recent = `${node}.${port}`;
        el.dataset.seen = recent.seen;
        box.append(el);
      }
    }
    return;
  }
  if (!run || run.outputs == null) {
    box.textContent = run && ACTIVE.has(run.status) ? "(when the run ends)" : "—";
    return;
  }
  const letters = run.dead_letters || [];
  if (!Object.keys(run.outputs).length && !letters.length) {
    box.textContent = "(none: in stream mode only sink.collect nodes keep outputs)";
    return;
  }
  box.replaceChildren();
  for (const [node, ports] of Object.entries(run.outputs)) {
    for (const [port, values] of Object.entries(ports)) {
      box.append(table(`${node}.${port} (${values.length}${run.truncated ? "+" : ""})`, values));
    }
  }
  if (letters.length) {
    box.append(table(`dead letters (${letters.length})`, letters.map((d) => ({ node: d.node_id, reason: d.reason, item: d.item }))));
  }
}

function table(caption, values) {
  // Records become columns (the first rows' keys); anything else one column.
  const el = document.createElement("table");
  el.dataset.caption = caption;
  el.createCaption().textContent = caption;
  const records = values.length && values.every((v) => v && typeof v === "object" && !Array.isArray(v));
  const columns = records ? [...new Set(values.slice(0, 50).flatMap(Object.keys))].slice(0, 12) : ["value"];
  const head = el.createTHead().insertRow();
  for (const c of ["#", ...columns]) head.append(Object.assign(document.createElement("th"), { textContent: c }));
  const body = el.createTBody();
  values.slice(0, MAX_ROWS).forEach((v, i) => {
    const row = body.insertRow();
    row.insertCell().textContent = String(i);
    for (const c of columns) {
      const cell = row.insertCell();
      const x = records ? v[c] : v;
      cell.textContent = x === undefined ? "" : typeof x === "string" ? x : JSON.stringify(x);
      cell.title = cell.textContent;
    }
  });
  if (values.length > MAX_ROWS) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = columns.length + 1;
    cell.textContent = `… ${values.length - MAX_ROWS} more`;
  }
  return el;
}

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

function layout(wf) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 20, ranksep: 56, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of wf.nodes || []) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  (wf.connections || []).forEach((c, i) => {
    const from = c.from_port || "out";
    const to = c.to_port || "in";
    const label = from === "out" && to === "in" ? "" : `${from} → ${to}`;
    // dagre gives each label room of its own: sized to the text, no overlap.
    g.setEdge(c.from_node, c.to_node, { label, width: label ? label.length * 7 + 10 : 0, height: label ? 18 : 0, labelpos: "c" }, `e${i}`);
  });
  dagre.layout(g);
  return g;
}

function renderGraph(wf, run) {
  const key = JSON.stringify([wf.nodes, wf.connections]);
  const root = $("graph");
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    state.nodeEls.clear();
    root.replaceChildren();
    const g = layout(wf);
    const size = g.graph();
    // Drawn at its own size (the box scrolls) so text stays readable however
    // many nodes there are.
    const width = Math.max(size.width || 0, 200);
    const height = Math.max(size.height || 0, 120);
    root.setAttribute("viewBox", `0 0 ${width} ${height}`);
    root.style.width = `${width}px`;
    root.style.height = `${height}px`;
    const defs = svg("defs", {}, root);
    const marker = svg("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
    }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" }, marker);
    for (const e of g.edges()) {
      const edge = g.edge(e);
      const d = edge.points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
      svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }, root);
      if (edge.label) {
        svg("rect", { x: edge.x - edge.width / 2, y: edge.y - 9, width: edge.width, height: 16, rx: 3, class: "edge-label-bg" }, root);
        const t = svg("text", { x: edge.x, y: edge.y + 4, class: "edge-label", "text-anchor": "middle" }, root);
        t.textContent = edge.label;
      }
    }
    const types = new Map((wf.nodes || []).map((n) => [n.id, n.type]));
    for (const id of g.nodes()) {
      const n = g.node(id);
      const x = n.x - NODE_W / 2;
      const y = n.y - NODE_H / 2;
      const group = svg("g", { class: "node", transform: `translate(${x},${y})`, "data-node-id": id }, root);
      svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 8 }, group);
      svg("path", { class: "band", d: `M0,8 a8,8 0 0 1 8,-8 h${NODE_W - 16} a8,8 0 0 1 8,8 v14 h-${NODE_W} z` }, group);
      const title = svg("text", { x: 10, y: 16, class: "title" }, group);
      title.textContent = id;
      const type = svg("text", { x: 10, y: 39, class: "muted" }, group);
      type.textContent = types.get(id) || "";
      const counts = svg("text", { x: 10, y: 57, class: "counts" }, group);
      const rate = svg("text", { x: 10, y: 74, class: "rate" }, group);
      const fillLabel = svg("text", { x: 10, y: 89, class: "fill-label" }, group);
      svg("rect", { class: "fill-track", x: 10, y: 94, width: NODE_W - 20, height: 5, rx: 2 }, group);
      const bar = svg("rect", { class: "fill-bar", x: 10, y: 94, width: 0, height: 5, rx: 2 }, group);
      const tip = svg("title", {}, group);
      group.addEventListener("click", () => selectNode(id));
      state.nodeEls.set(id, { group, type, typeName: types.get(id) || "", counts, rate, fillLabel, bar, tip });
    }
  }
  for (const [id, els] of state.nodeEls) {
    const st = run ? run.nodes[id] : null;
    const nodeState = st ? st.state : "pending";
    els.group.dataset.state = nodeState;
    els.group.dataset.itemsIn = st ? st.items_in : 0;
    els.group.dataset.itemsOut = st ? st.items_out : 0;
    els.group.dataset.role = st ? st.role : "";
    els.group.classList.toggle("selected", state.node === id);
    els.counts.textContent = countText(st);
    // The type line also says how many instances run, and an event-time
    // node's lag behind the clock.
    const extra = [];
    if (st && st.parallelism > 1) extra.push(`×${st.parallelism}`);
    if (st && st.watermark_ms != null) extra.push(`lag ${lagText(st, true)}`);
    els.type.textContent = [els.typeName, ...extra].join(" · ");
    els.group.dataset.parallelism = st ? st.parallelism || 1 : 1;
    if (st && st.watermark) els.group.dataset.watermark = st.watermark;
    else delete els.group.dataset.watermark;
    const errs = st && (st.errors || st.dead_letters) ? ` · errors ${fmt(st.errors)}${st.dead_letters ? ` · dead ${fmt(st.dead_letters)}` : ""}` : "";
    els.rate.textContent = st ? `${rateText(st)}${errs}` : "";
    const fill = st && st.channel_fill != null ? st.channel_fill : null;
    els.fillLabel.textContent = fill == null ? "no input channel" : `input channel ${Math.round(fill * 100)}% full`;
    els.bar.setAttribute("width", fill == null ? 0 : Math.round((NODE_W - 20) * fill));
    els.bar.classList.toggle("high", fill != null && fill > 0.8);
    els.tip.textContent = `${id}: ${nodeState}` + (fill == null ? "" : `, input channel ${Math.round(fill * 100)}% full`);
  }
}

function countText(st) {
  // A sink's input is what it wrote; a source's output is what it read.
  if (!st) return "in 0 · out 0";
  if (st.role === "sink") return `written ${fmt(st.items_in)}`;
  if (st.role === "source") return `emitted ${fmt(st.items_out)}`;
  return `in ${fmt(st.items_in)} · out ${fmt(st.items_out)}`;
}

function rateText(st) {
  if (st.role === "sink") return rate(st.rate_in);
  if (st.role === "source") return rate(st.rate_out);
  return `${rate(st.rate_in)} in · ${rate(st.rate_out)} out`;
}

function fmt(n) {
  if (n == null) return "0";
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (!Number.isInteger(n)) return n.toFixed(n < 10 ? 1 : 0);
  return String(n);
}

// --- a node's history and details --------------------------------------------

function record(run) {
  // One point per node per poll while the run is active: the node panel's charts.
  if (!ACTIVE.has(run.status) && state.history.size) return;
  const t = Date.now() / 1000;
  for (const [id, st] of Object.entries(run.nodes || {})) {
    let points = state.history.get(id);
    if (!points) state.history.set(id, (points = []));
    points.push({ t, rin: st.rate_in, rout: st.rate_out, fill: st.channel_fill, err: (st.errors || 0) + (st.dead_letters || 0), lag: st.watermark_lag_s });
    while (points.length && points[0].t < t - HISTORY_S) points.shift();
  }
}

async function backfill(runId) {
  // The server's samples of the run so far: charts start with its recent past.
  let result;
  try {
    result = await api("GET", `/api/runs/${runId}/series`);
  } catch (_) {
    return;
  }
  if (!result.ok || state.historyRun !== runId) return;
  for (const [id, samples] of Object.entries(result.data || {})) {
    const have = state.history.get(id) || [];
    const first = have.length ? have[0].t : Infinity;
    const older = samples
      .filter((p) => p.t < first)
      .map((p) => ({ t: p.t, rin: p.rate_in, rout: p.rate_out, fill: p.channel_fill, err: p.errors || 0, lag: p.watermark_lag_s }));
    state.history.set(id, [...older, ...have]);
    state.backfilled.set(id, older.length);
  }
  renderNode();
}

function lagText(st, compact) {
  // Event-time lag: how far the watermark is behind the clock (compact: one
  // unit, for the graph's node boxes).
  const lag = st.watermark_lag_s;
  if (lag == null) return "—";
  const text = compact ? roughly(Math.abs(lag)) : seconds(Math.abs(lag));
  return lag < 0 ? `${text} ahead` : text;
}

function roughly(s) {
  if (s < 120) return seconds(s);
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function selectNode(id) {
  state.node = state.node === id ? null : id;
  for (const [nid, els] of state.nodeEls) els.group.classList.toggle("selected", state.node === nid);
  renderNode();
}

function renderNode() {
  const panel = $("node-panel");
  const id = state.node;
  const decl = id && state.workflow ? (state.workflow.nodes || []).find((n) => n.id === id) : null;
  if (!decl) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  panel.dataset.node = id;
  $("node-title").textContent = `${id} (${decl.type})`;
  const st = state.run ? state.run.nodes[id] : null;
  const facts = [
    ["state", st ? st.state : "pending"],
    ["role", st ? st.role : "—"],
    [st && st.role === "sink" ? "written" : "in", st ? fmt(st.items_in) : "0"],
    ["out", st ? fmt(st.items_out) : "0"],
    ["rate", st ? rateText(st) : "—"],
    ["errors", st ? `${fmt(st.errors)} (dead letters ${fmt(st.dead_letters)})` : "0"],
    ["input channel", st && st.channel_fill != null ? `${Math.round(st.channel_fill * 100)}% full` : "none (source, or fused into its upstream)"],
  ];
  if (st && st.watermark) facts.push(["watermark", clock(st.watermark)], ["event-time lag", lagText(st)]);
  if (st && st.parallelism > 1) facts.push(["instances", `${st.parallelism} (sums above; one row each below)`]);
  const dl = $("node-facts");
  dl.replaceChildren();
  for (const [k, v] of facts) dl.append(Object.assign(document.createElement("dt"), { textContent: k }), Object.assign(document.createElement("dd"), { textContent: v }));
  const config = decl.config || {};
  $("node-config").textContent = Object.keys(config).length ? JSON.stringify(config, null, 2) : "(defaults)";
  const cel = $("node-cel");
  cel.replaceChildren();
  for (const [k, v] of Object.entries(config)) {
    if (typeof v === "string" && CEL_FIELDS.has(k)) cel.append(Object.assign(document.createElement("li"), { textContent: `${k}: ${v}` }));
  }
  if (!cel.children.length) cel.append(Object.assign(document.createElement("li"), { textContent: "(none)" }));
  const rows = (st && st.instances) || [];
  const box = $("node-instances");
  box.replaceChildren();
  if (rows.length) {
    const list = table(
      `instances of ${id} (${rows.length})`,
      rows.map((r) => ({
        instance: r.node_id,
        state: r.state,
        in: r.items_in,
        out: r.items_out,
        "items/s": rateText({ ...r, role: st.role }),
        errors: r.errors + r.dead_letters,
        "input channel": r.channel_fill == null ? "—" : `${Math.round(r.channel_fill * 100)}% full`,
        ...(r.watermark_ms != null ? { "lag": lagText(r) } : {}),
      })),
    );
    list.classList.add("instances");
    box.append(list);
  }
  const points = state.history.get(id) || [];
  const charts = $("node-charts");
  charts.dataset.backfilled = state.backfilled.get(id) || 0;
  charts.replaceChildren(
    chart("items/s in (blue) and out (green)", points, [["rin", "line-in"], ["rout", "line-out"]]),
    chart("input channel fill (0–100%)", points, [["fill", "line-fill"]], 1),
    chart("errors and dead letters (total)", points, [["err", "line-err"]]),
  );
  if (st && st.watermark_ms != null) {
    charts.append(chart("event-time lag (s)", points, [["lag", "line-lag"]]));
  }
}

function chart(label, points, series, fixedMax) {
  const box = document.createElement("div");
  box.className = "chart";
  const W = 300, H = 56;
  let max = fixedMax || 0;
  if (!fixedMax) for (const p of points) for (const [k] of series) max = Math.max(max, p[k] || 0);
  const last = points.length ? points[points.length - 1] : null;
  const show = (k, v) => (k === "fill" ? (v == null ? "—" : `${Math.round(v * 100)}%`) : k === "lag" ? (v == null ? "—" : seconds(Math.abs(v))) : fmt(v));
  const now = last ? series.map(([k]) => show(k, last[k])).join(" / ") : "—";
  const covered = points.length > 1 ? seconds(last.t - points[0].t) : "—";
  box.append(Object.assign(document.createElement("div"), { className: "label", textContent: `${label}: ${now} (max ${fixedMax ? "100%" : fmt(max)}, last ${covered})` }));
  const el = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-points": points.length });
  // The x axis spans what is recorded, up to HISTORY_S: a young run fills it.
  const t1 = last ? last.t : 0;
  const span = points.length > 1 ? t1 - points[0].t || 1 : 1;
  for (const [k, cls] of series) {
    const d = points
      .filter((p) => p[k] != null)
      .map((p, i) => `${i ? "L" : "M"}${(W - ((t1 - p.t) / span) * W).toFixed(1)},${(H - 2 - ((p[k] || 0) / (max || 1)) * (H - 4)).toFixed(1)}`)
      .join(" ");
    if (d) svg("path", { d, class: cls, "data-series": k }, el);
  }
  box.append(el);
  return box;
}

// --- checkpoints --------------------------------------------------------------

let checkpointsAsked = 0;
async function refreshCheckpoints(run) {
  // Only workflows with a checkpoint store have any; asked every other poll.
  const panel = $("checkpoints-panel");
  if (!run.graph || !run.graph.checkpoint) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  if (checkpointsAsked++ % 2) return;
  let result;
  try {
    result = await api("GET", `/api/runs/${run.run_id}/checkpoints`);
  } catch (_) {
    return;
  }
  if (!result.ok || state.run?.run_id !== run.run_id) return;
  const box = $("checkpoints");
  const rows = result.data.map((c) => ({
    epoch: c.epoch ?? "—",
    "last commit": clock(c.last_commit_at),
    restores: c.restores,
    "last restore": c.last_restore_at ? clock(c.last_restore_at) : "—",
    attempts: c.attempts,
    status: c.status,
    started: clock(c.started_at),
    positions: Object.keys(c.positions || {}).length ? c.positions : "",
  }));
  const where = `store ${run.graph.checkpoint.path}, every ${run.graph.checkpoint.interval_ms ?? 1000} ms`;
  const parts = rows.length ? [table(where, rows)] : ["(nothing committed yet)"];
  if (rows.length) parts[0].classList.add("store");
  // The latest epochs of this workflow's current run in the store.
  const epochs = result.data.length ? result.data[0].epochs || [] : [];
  if (epochs.length) {
    const list = table(
      `latest epochs (${epochs.length})`,
      epochs.map((e) => ({
        epoch: e.epoch,
        committed: clock(e.committed_at),
        duration: seconds(e.duration_ms / 1000),
        size: bytes(e.size_bytes),
      })),
    );
    list.classList.add("epochs");
    parts.push(list);
  }
  box.replaceChildren(...parts);
  box.dataset.epoch = result.data.length ? result.data[0].epoch ?? 0 : 0;
  box.dataset.epochs = epochs.length;
}

function bytes(n) {
  if (n == null) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// --- the workflow editor ------------------------------------------------------

const NEW_WORKFLOW = `# A workflow: nodes, and the connections between them.
name: example
mode: dag
nodes:
  - id: numbers
    type: source.range
    config: {stop: 10}
  - id: double
    type: transform.map
    config: {expr: "x * 2"}
  - id: result
    type: sink.collect
connections:
  - numbers -> double
  - double -> result
`;

async function openEditor(name) {
  state.editing = name;
  let text = NEW_WORKFLOW;
  if (name) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    try {
      const r = await fetch(`/api/workflows/${encodeURIComponent(name)}/source`, { headers });
      if (r.ok) text = await r.text();
    } catch (_) {
      return;
    }
  }
  $("editor-name").textContent = name || "(new)";
  $("editor-text").value = text;
  $("editor-problems").replaceChildren();
  renderGutter(new Set());
  $("editor-dialog").showModal();
}

function renderGutter(bad) {
  const lines = $("editor-text").value.split("\n").length;
  const gutter = $("editor-gutter");
  gutter.replaceChildren();
  for (let i = 1; i <= lines; i++) {
    const span = document.createElement("span");
    span.textContent = `${bad.has(i) ? "● " : ""}${i}\n`;
    if (bad.has(i)) span.className = "bad";
    gutter.append(span);
  }
  // Sized to its text, the textarea never scrolls itself: the box scrolls
  // both, so line numbers stay beside their lines.
  $("editor-text").rows = Math.max(lines, 8);
  $("editor-text").scrollTop = 0;
}

function problemLine(lines, p) {
  // The line a problem is about: its node's "id:" line, or its field's key.
  const esc = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let start = 0;
  if (p.node) {
    const re = new RegExp(`^\\s*-?\\s*id:\\s*["']?${esc(p.node)}["']?\\s*(#.*)?$`);
    const i = lines.findIndex((l) => re.test(l));
    if (i < 0) return null;
    start = i;
  }
  if (p.field) {
    const key = String(p.field).split(/[.[]/).pop();
    const re = new RegExp(`^\\s*-?\\s*${esc(key)}\\s*:`);
    for (let i = start; i < lines.length; i++) if (re.test(lines[i]) || lines[i].includes(`${key}:`)) return i + 1;
  }
  return p.node ? start + 1 : null;
}

async function saveEditor() {
  const text = $("editor-text").value;
  const match = text.match(/^name:\s*["']?([^"'\s#]+)/m);
  const list = $("editor-problems");
  list.replaceChildren();
  const say = (message, line) => {
    const li = document.createElement("li");
    li.textContent = line ? `line ${line}: ${message}` : message;
    if (line) li.dataset.line = line;
    list.append(li);
  };
  if (!match) {
    say("the workflow needs a top-level 'name:'");
    return;
  }
  const name = match[1];
  const headers = { "Content-Type": "application/yaml", Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(`/api/workflows/${encodeURIComponent(name)}`, { method: "PUT", headers, body: text });
  } catch (_) {
    say("the server is unreachable");
    return;
  }
  if (response.ok) {
    $("editor-dialog").close();
    await refreshLists();
    await selectWorkflow(name);
    return;
  }
  let doc = {};
  try {
    doc = await response.json();
  } catch (_) {
    /* not JSON */
  }
  const lines = text.split("\n");
  const bad = new Set();
  if (!(doc.problems || []).length) say(`${doc.title || "Error"} (${response.status}): ${doc.detail || ""}`);
  for (const p of doc.problems || []) {
    const line = problemLine(lines, p);
    if (line) bad.add(line);
    const where = [p.node && `node '${p.node}'`, p.field].filter(Boolean).join(", ");
    say(`${where ? where + ": " : ""}${p.message}`, line);
  }
  renderGutter(bad);
  if (response.status === 401) askToken();
}

// --- the event feed -------------------------------------------------------------

function openEvents(runId) {
  closeEvents();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const query = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const socket = new WebSocket(`${proto}//${location.host}/api/runs/${runId}/events${query}`);
  state.socket = socket;
  state.socketRun = runId;
  state.socketDone = false;
  // A reconnect replays the run's recorded events: start the log afresh.
  socket.addEventListener("open", clearEvents);
  socket.addEventListener("message", (msg) => {
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    // A stream's recent outputs also come as events; the outputs panel
    // shows them (from the run's detail), the log would only fill up.
    if (event.event === "NodeEvent" && event.name === "recent_outputs") return;
    addEvent(event);
    if (event.event !== "NodeEvent") refreshSoon();
  });
  socket.addEventListener("close", (ev) => {
    if (state.socket !== socket) return;
    state.socket = null;
    // 1000: the run ended and every event was sent; 44xx: nothing to retry.
    state.socketDone = ev.code === 1000 || (ev.code >= 4400 && ev.code < 4500);
    refreshSoon();
  });
}

function closeEvents() {
  const socket = state.socket;
  state.socket = null;
  state.socketRun = null;
  if (socket) socket.close();
}

function clearEvents() {
  state.events = [];
  $("events").replaceChildren();
  $("event-count").textContent = "";
}

function addEvent(event) {
  state.events.push(event);
  const list = $("events");
  const li = document.createElement("li");
  const time = clock(event.timestamp);
  const kind = document.createElement("span");
  // A failed run's end is not green: the class carries its status.
  kind.className = `kind ${event.event}${event.status ? ` status-${event.status}` : ""}`;
  kind.textContent = event.event;
  li.dataset.event = event.event;
  li.append(`${time} `, kind, ` ${describe(event)}`);
  list.append(li);
  while (list.children.length > MAX_EVENTS) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
  $("event-count").textContent = `(${state.events.length})`;
}

function describe(e) {
  switch (e.event) {
    case "WorkflowStarted":
      return `${e.workflow}, ${e.mode} mode, ${e.nodes} nodes`;
    case "NodeStarted":
      return `${e.node_id} (${e.node_type})${e.attempt > 1 ? ` attempt ${e.attempt}` : ""}`;
    case "NodeCompleted":
      return `${e.node_id}: in ${e.stats.items_in || 0}, out ${e.stats.items_out || 0}${e.stats.rate_in != null ? `, ${fmt(e.stats.rate_in)}/s in` : ""}`;
    case "NodeFailed":
      return `${e.node_id}: ${e.error_type}: ${e.error}${e.will_retry ? " (will retry)" : ""}`;
    case "NodeEvent":
      return `${e.node_id}: ${e.name} ${JSON.stringify(e.data ?? null)}`;
    case "WorkflowCompleted":
      return `${e.status} in ${seconds(e.duration_s || 0)}${e.error ? `: ${e.error}` : ""}`;
    default:
      return "";
  }
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refreshSelection();
  }, 60);
}

// --- the loop -------------------------------------------------------------------

async function poll() {
  state.tick += 1;
  const active = state.run && ACTIVE.has(state.run.status);
  if (state.online === false) {
    try {
      await api("GET", "/api/health");
    } catch (_) {
      /* still away */
    }
  } else {
    if (active) await refreshSelection();
    if (state.tick % LIST_EVERY === 0) await refreshLists();
    if (active && !state.socket && !state.socketDone && state.selection?.kind === "run") {
      openEvents(state.selection.id);
    }
  }
  setTimeout(poll, state.online === false ? 1000 : POLL_MS);
}

function init() {
  takeTokenFromUrl();
  $("token-button").addEventListener("click", askToken);
  $("token-dialog").addEventListener("close", () => {
    if ($("token-dialog").returnValue === "save") {
      state.token = $("token-input").value.trim();
      localStorage.setItem("flowstream.token", state.token);
    }
  });
  $("start-button").addEventListener("click", () => {
    const name = state.run ? state.run.workflow : state.selection?.name;
    if (name) startRun(name);
  });
  $("stop-button").addEventListener("click", () => control("stop"));
  $("cancel-button").addEventListener("click", () => control("cancel"));
  $("restart-button").addEventListener("click", restart);
  $("edit-button").addEventListener("click", () => {
    const name = state.run ? state.run.workflow : state.selection?.name;
    if (name) openEditor(name);
  });
  $("new-workflow").addEventListener("click", () => openEditor(null));
  $("editor-save").addEventListener("click", saveEditor);
  $("editor-text").addEventListener("input", () => renderGutter(new Set()));
  $("node-close").addEventListener("click", () => selectNode(state.node));
  refreshLists();
  poll();
}

document.addEventListener("DOMContentLoaded", init);
