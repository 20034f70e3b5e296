// flowstream's web UI: workflows, runs, a live graph of the selected run.
//
// One page, no build step. The graph is laid out left to right by dagre
// (vendor/dagre.min.js, a global `dagre`). Node states and counters come from
// polling GET /api/runs/{id} while the run is active; the event log comes
// from WS /api/runs/{id}/events, and each lifecycle event triggers a refresh.
// When the server goes away the page says so and keeps retrying; when it is
// back, lists, the selected run and its event feed pick up again.
"use strict";

const POLL_MS = 500;
const LIST_EVERY = 4; // refresh the lists every 4th poll
const MAX_EVENTS = 400;
const NODE_W = 200;
const NODE_H = 92;
const ACTIVE = new Set(["running", "stopping"]);

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
    li.innerHTML = `<span class="name"></span><span class="badge"></span>`;
    li.querySelector(".name").textContent = `${run.workflow} · ${run.run_id.slice(0, 6)}`;
    li.querySelector(".name").title = `${run.run_id}, ${new Date(run.started_at * 1000).toLocaleString()}`;
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
    renderRun();
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
    const took = run.duration_s != null ? ` · ${run.duration_s.toFixed(3)} s` : "";
    $("run-meta").textContent = `${run.mode} mode · started ${new Date(run.started_at * 1000).toLocaleTimeString()}${took}`;
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
  if (wf) renderGraph(wf, run);
  renderOutputs(run);
}

function renderOutputs(run) {
  const box = $("outputs");
  if (!run || run.outputs == null) {
    box.textContent = run && ACTIVE.has(run.status) ? "(when the run ends)" : "—";
    return;
  }
  const doc = { outputs: run.outputs };
  if (run.dead_letters && run.dead_letters.length) doc.dead_letters = run.dead_letters;
  if (!Object.keys(run.outputs).length && !doc.dead_letters) {
    box.textContent = "(none: in stream mode only sink.collect nodes keep outputs)";
    return;
  }
  let text = JSON.stringify(doc, null, 2);
  if (text.length > 20000) text = text.slice(0, 20000) + "\n…";
  box.textContent = text + (run.truncated ? "\n(truncated by the server)" : "");
}

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

function layout(wf) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 70, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of wf.nodes || []) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  (wf.connections || []).forEach((c, i) => {
    const from = c.from_port || "out";
    const to = c.to_port || "in";
    const label = from === "out" && to === "in" ? "" : `${from} → ${to}`;
    g.setEdge(c.from_node, c.to_node, { label, width: label ? 60 : 0, height: label ? 14 : 0 }, `e${i}`);
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
    // Scaled down to fit the page's width, never up.
    const width = Math.max(size.width || 0, 200);
    const height = Math.max(size.height || 0, 120);
    root.setAttribute("viewBox", `0 0 ${width} ${height}`);
    root.style.width = "100%";
    root.style.maxWidth = `${width}px`;
    root.style.height = "auto";
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
        const t = svg("text", { x: edge.x, y: edge.y, class: "edge-label", "text-anchor": "middle" }, root);
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
      const type = svg("text", { x: 10, y: 38, class: "muted" }, group);
      type.textContent = types.get(id) || "";
      const counts = svg("text", { x: 10, y: 55, class: "counts" }, group);
      const rate = svg("text", { x: 10, y: 71, class: "rate" }, group);
      svg("rect", { class: "fill-track", x: 10, y: 79, width: NODE_W - 20, height: 5, rx: 2 }, group);
      const bar = svg("rect", { class: "fill-bar", x: 10, y: 79, width: 0, height: 5, rx: 2 }, group);
      const tip = svg("title", {}, group);
      state.nodeEls.set(id, { group, counts, rate, bar, tip });
    }
  }
  for (const [id, els] of state.nodeEls) {
    const st = run ? run.nodes[id] : null;
    const nodeState = st ? st.state : "pending";
    els.group.dataset.state = nodeState;
    els.group.dataset.itemsIn = st ? st.items_in : 0;
    els.group.dataset.itemsOut = st ? st.items_out : 0;
    els.counts.textContent = st ? `in ${fmt(st.items_in)} · out ${fmt(st.items_out)}` : "in 0 · out 0";
    const errs = st ? st.errors + (st.dead_letters ? ` · dl ${fmt(st.dead_letters)}` : "") : 0;
    els.rate.textContent = st ? `${fmt(st.items_per_s)}/s · err ${errs}` : "";
    const fill = st && st.channel_fill != null ? st.channel_fill : null;
    els.bar.setAttribute("width", fill == null ? 0 : Math.round((NODE_W - 20) * fill));
    els.bar.classList.toggle("high", fill != null && fill > 0.8);
    els.tip.textContent = `${id}: ${nodeState}` + (fill == null ? "" : `, input channel ${Math.round(fill * 100)}% full`);
  }
}

function fmt(n) {
  if (n == null) return "0";
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (!Number.isInteger(n)) return n.toFixed(n < 10 ? 1 : 0);
  return String(n);
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
  const time = new Date(event.timestamp * 1000).toLocaleTimeString([], { hour12: false });
  const kind = document.createElement("span");
  kind.className = `kind ${event.event}`;
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
      return `${e.node_id}: in ${e.stats.items_in || 0}, out ${e.stats.items_out || 0}`;
    case "NodeFailed":
      return `${e.node_id}: ${e.error_type}: ${e.error}${e.will_retry ? " (will retry)" : ""}`;
    case "NodeEvent":
      return `${e.node_id}: ${e.name} ${JSON.stringify(e.data ?? null)}`;
    case "WorkflowCompleted":
      return `${e.status} in ${(e.duration_s || 0).toFixed(3)} s${e.error ? `: ${e.error}` : ""}`;
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
  refreshLists();
  poll();
}

document.addEventListener("DOMContentLoaded", init);
