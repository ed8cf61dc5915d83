// The zray dashboard page: polls the JSON API and redraws each section.
// Every value from the cluster goes in with textContent (never innerHTML):
// task names, tracebacks and logs are user data.
"use strict";

const REFRESH_MS = 1500;
const SVG_NS = "http://www.w3.org/2000/svg";
let selectedLog = null;          // {node_id, pid} of the worker whose log is shown

// The token came in the URL; the server answered with a cookie: keep it out
// of the address bar (and of screenshots and history).
if (location.search.includes("token=")) {
  history.replaceState(null, "", location.pathname + location.hash);
}

// == small helpers =============================================================
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "title") node.title = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fill(id, ...children) {
  document.getElementById(id).replaceChildren(...children);
}

function num(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2).replace(/\.?0+$/, "");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

const BYTE_RESOURCES = new Set(["memory", "object_store_memory"]);

function amount(name, value) {   // a resource quantity as people read it
  return BYTE_RESOURCES.has(name) ? bytes(value) : num(value);
}

function shortId(id) { return id ? String(id).slice(0, 8) : "-"; }

function colour(name) {       // one stable colour per function name
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 55%, 55%)`;
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) =>
      c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))))));
}

function badge(text, kind) { return el("span", { class: `badge ${kind || text}` }, text); }

function meter(used, total, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  const bar = el("div", { class: "bar" });
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  if (share > 0.9) bar.classList.add("hot");
  return el("div", { class: "meter", title: label },
    el("div", { class: "track" }, bar), el("span", {}, label));
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) throw new Error(await response.text());
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// == sections ==================================================================
function renderSummary(cluster, tasks, objects) {
  const cards = [];
  const alive = cluster.nodes.filter((n) => n.alive).length;
  cards.push(["Nodes", `${alive} / ${cluster.nodes.length}`, "alive / known"]);
  for (const r of cluster.totals.filter((t) => t.name === "CPU" || (t.name === "GPU" && t.total > 0))) {
    cards.push([r.name, `${num(r.used)} / ${num(r.total)}`, "used / total"]);
  }
  cards.push(["Tasks running", tasks.counts.running, `${tasks.counts.queued} queued` +
    (tasks.counts.direct_running ? `, ${tasks.counts.direct_running} direct` : "")]);
  cards.push(["Tasks done", tasks.counts.done, `${tasks.counts.failed} failed`]);
  cards.push(["Objects", objects.totals.objects, bytes(objects.totals.bytes) + " in memory"]);
  fill("summary", ...cards.map(([title, value, note]) =>
    el("div", { class: "card" }, el("div", { class: "card-title" }, title),
      el("div", { class: "card-value" }, value), el("div", { class: "card-note" }, note))));
}

function renderNodes(cluster) {
  const rows = cluster.nodes.map((n) => [
    el("td", { title: n.endpoint }, el("div", { class: "mono" }, n.address), el("div", { class: "sub" },
      `${n.hostname || "?"} · node ${shortId(n.node_id)}${n.head ? " · head" : ""}`)),
    el("td", {}, n.alive ? badge("alive") : badge(n.error ? "unreachable" : "dead", "dead")),
    el("td", {}, ...n.resources.map((r) => meter(r.used, r.total,
      `${r.name} ${amount(r.name, r.used)} / ${amount(r.name, r.total)}`))),
    n.store ? el("td", {}, meter(n.store.used, n.store.capacity,
      `${bytes(n.store.used)} / ${bytes(n.store.capacity)}`),
    el("div", { class: "sub" }, `${n.store.objects} objects` + (n.store.spilled ? `, ${bytes(n.store.spilled)} spilled` : ""))) : "-",
    n.workers ? `${n.workers.total} (${n.workers.busy} busy, ${n.workers.actors} actors, ${n.workers.idle} idle)` : "-",
    n.workers ? `${n.running} running, ${n.queued} queued` : (n.error || "-"),
  ]);
  fill("nodes", table(["Address", "State", "Resources (used / total)", "Object store", "Workers", "Work"],
    rows, "No nodes."));
}

function renderTimeline(data) {
  const width = Math.max(600, document.getElementById("timeline-chart").clientWidth || 1000);
  const left = 110, right = 12, top = 24, rowHeight = 24;
  const rows = new Map(data.workers.map((w, i) => [w.pid, i]));
  const height = top + Math.max(1, data.workers.length) * rowHeight + 8;
  const x = (t) => left + (t + data.window_s) / data.window_s * (width - left - right);
  const chart = svg("svg", { id: "timeline-svg", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": "tasks per worker over the last minute" });
  for (let t = -data.window_s; t <= 0; t += 10) {
    chart.append(svg("line", { x1: x(t), x2: x(t), y1: top - 6, y2: height - 8, class: "tick" }));
    chart.append(svg("text", { x: x(t), y: 14, class: "tick-label", "text-anchor": "middle" },
      t === 0 ? "now" : `${t} s`));
  }
  data.workers.forEach((w, i) => {
    const y = top + i * rowHeight;
    if (i % 2 === 0) chart.append(svg("rect", { x: 0, y, width, height: rowHeight, class: "row" }));
    chart.append(svg("text", { x: 8, y: y + 16, class: "row-label" }, `pid ${w.pid}`));
  });
  for (const s of data.spans) {
    if (!rows.has(s.pid)) continue;
    const x0 = x(Math.max(s.start_s, -data.window_s)), x1 = Math.max(x(s.end_s), x0 + 2);
    const y = top + rows.get(s.pid) * rowHeight + 3;
    const bar = svg("rect", { x: x0, y, width: x1 - x0, height: rowHeight - 6, rx: 3,
      fill: s.failed ? "#d9534f" : colour(s.name),
      class: "span" + (s.open ? " open" : "") + (s.failed ? " failed" : "") });
    bar.append(svg("title", {}, `${s.name} (${s.cat}) — ${seconds(s.end_s - s.start_s)}` +
      (s.open ? ", running" : "") + (s.failed ? ", failed" : "")));
    chart.append(bar);
    if (x1 - x0 > 60) {
      chart.append(svg("text", { x: x0 + 4, y: y + 13, class: "span-label" },
        s.name.length * 6.5 > x1 - x0 - 8 ? s.name.slice(0, Math.floor((x1 - x0 - 8) / 6.5)) : s.name));
    }
  }
  if (!data.workers.length) {
    chart.append(svg("text", { x: width / 2, y: top + 16, "text-anchor": "middle", class: "empty-svg" },
      "No task ran in the last minute."));
  }
  fill("timeline-chart", chart);
}

function renderTasks(data) {
  const order = ["running", "blocked", "queued", "infeasible", "done", "failed"];
  fill("task-counts", ...order.map((state) =>
    el("span", { class: `chip ${state}` }, el("b", {}, data.counts[state]), ` ${state}`)));
  fill("task-list", table(["Function", "State", "Node", "Worker", "Duration", "Ended"],
    data.latest.map((t) => [el("td", { class: "mono" }, t.name), el("td", {}, badge(t.state)),
      shortId(t.node_id), t.pid ? `pid ${t.pid}` : "-", seconds(t.duration_s),
      t.ended_ago_s === null ? "" : `${seconds(t.ended_ago_s)} ago`]),
    "No task has run yet."));
  fill("task-errors", ...(data.errors.length ? data.errors.map((e) =>
    el("details", { class: "error" },
      el("summary", {}, el("span", { class: "mono" }, e.name || "task"),
        ` failed on node ${shortId(e.node_id)}` + (e.pid ? `, pid ${e.pid}` : "") +
        (e.time ? ` at ${new Date(e.time * 1000).toLocaleTimeString()}` : "")),
      el("pre", {}, e.message))) : [el("p", { class: "empty" }, "No errors.")]));
  // The newest error stays open: its traceback is what one came to read.
  const first = document.querySelector("#task-errors details");
  if (first) first.open = true;
}

function renderActors(data) {
  fill("actor-list", table(["Class", "State", "Name", "Node", "Worker", "Restarts", "Queued", "Actor id"],
    data.actors.map((a) => [el("td", { class: "mono" }, a.class), el("td", { title: a.death_reason || "" }, badge(a.state)),
      a.name || "-", shortId(a.node_id), a.pid ? `pid ${a.pid}` : "-",
      a.restarts === null ? "∞" : `${a.restarts} / ${a.max_restarts < 0 ? "∞" : a.max_restarts}`,
      a.queued, el("td", { class: "mono sub" }, shortId(a.actor_id))]),
    "No actors."));
}

function renderObjects(data) {
  const t = data.totals;
  fill("object-summary",
    el("span", { class: "chip" }, el("b", {}, t.objects), " objects"),
    el("span", { class: "chip" }, el("b", {}, bytes(t.bytes)), ` of ${bytes(t.capacity)} in shared memory`),
    el("span", { class: "chip" }, el("b", {}, bytes(t.spilled_bytes)), ` spilled (${t.spilled_objects} objects)`),
    el("span", { class: "chip" }, el("b", {}, bytes(t.inline_bytes)), " inline"));
  fill("object-list", table(["Object id", "Size", "Where", "Refs", "Held by", "Node"],
    data.biggest.map((o) => [el("td", { class: "mono" }, o.object_id.slice(0, 16)), bytes(o.size),
      badge(o.where + (o.error ? " (error)" : ""), o.where), o.refcount,
      o.holders.join(", ") || "-", shortId(o.node_id)]),
    "The object store is empty."));
}

// What a worker does, direct work included (leased tasks, direct actor calls).
function workerDoing(w) {
  const running = w.running.join(", ");
  let text = w.actor ? `actor ${w.actor}` + (running ? `: ${running}` : "")
    : (running || (w.leased ? "leased, idle" : "idle"));
  if (w.queued) text += ` · ${w.queued} queued`;
  if (w.finished) text += ` · ${w.finished} direct done`;
  return text;
}

function renderWorkers(data) {
  if (!selectedLog && data.workers.length) selectedLog = data.workers[0];
  fill("log-workers", ...data.workers.map((w) => {
    const item = el("li", { class: selectedLog && selectedLog.pid === w.pid ? "selected" : "" },
      el("b", {}, `pid ${w.pid}`), " ", badge(w.state),
      el("div", { class: "sub" }, workerDoing(w)));
    item.addEventListener("click", () => { selectedLog = w; refreshLog(); renderWorkers(data); });
    return item;
  }));
}

async function refreshLog() {
  if (!selectedLog) return;
  const { node_id, pid } = selectedLog;
  const box = document.getElementById("log-text");
  try {
    const data = await getJSON(`/api/logs?node=${encodeURIComponent(node_id)}&pid=${pid}`);
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = data.text || `(pid ${pid} has printed nothing yet)`;
    if (atBottom) box.scrollTop = box.scrollHeight;
  } catch (err) {
    box.textContent = `pid ${pid}: ${err.message}`;
  }
}

// == the loop ==================================================================
async function refresh() {
  const live = document.getElementById("live");
  try {
    const [cluster, tasks, actors, objects, timeline, workers] = await Promise.all(
      ["cluster", "tasks", "actors", "objects", "timeline", "workers"].map((p) => getJSON(`/api/${p}`)));
    renderSummary(cluster, tasks, objects);
    renderNodes(cluster);
    renderTimeline(timeline);
    renderTasks(tasks);
    renderActors(actors);
    renderObjects(objects);
    renderWorkers(workers);
    await refreshLog();
    live.textContent = `live · ${new Date(cluster.time * 1000).toLocaleTimeString()}`;
    live.className = "live ok";
  } catch (err) {
    live.textContent = `not updating: ${err.message}`;
    live.className = "live down";
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
