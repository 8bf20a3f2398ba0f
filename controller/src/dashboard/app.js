// Switchyard's dashboard: reads the admin API with the admin token and draws the nodes, the
// decisions as they happen, rates and TTFT over the last minutes, and the policy controls.
// Plain JavaScript, no build step; every text from the API goes in with textContent.
"use strict";

const WINDOW_MS = 5 * 60 * 1000;
const BUCKET_MS = 10 * 1000;
const NODES_EVERY_MS = 1000;
const DECISIONS_EVERY_MS = 400;
const SHOWN_DECISIONS = 60;

const state = {
  token: null,
  records: new Map(), // `${at_ms}/${id}` -> record
  newest: [],         // keys, newest first, for the stream
  seenFirstLoad: false,
  policies: null,
  selected: "",
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = text; }
  if (!response.ok) {
    const message = value && value.error ? value.error.message : text;
    const error = new Error(`${method} ${path}: ${response.status} ${message}`);
    error.status = response.status;
    throw error;
  }
  return value;
}

function say(text) {
  document.getElementById("message").textContent = text || "";
}

function ms(value) {
  if (value === null || value === undefined) return "-";
  return value >= 10000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms";
}

function ago(msAgo) {
  if (msAgo < 1000) return Math.round(msAgo) + " ms";
  if (msAgo < 120000) return (msAgo / 1000).toFixed(1) + " s";
  return Math.round(msAgo / 60000) + " min";
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1];
}

// A horizontal meter; its width is set through the CSSOM (the page's policy forbids inline
// style attributes, not style properties set from script).
function bar(fraction, hot) {
  const outer = el("div", { class: "meter" + (hot ? " hot" : "") }, el("div", {}));
  outer.firstChild.style.width = (Math.max(0, Math.min(1, fraction || 0)) * 100).toFixed(1) + "%";
  return outer;
}

function row(key, value) {
  return el("div", { class: "row" }, el("span", { class: "k" }, key), el("span", { class: "v" }, value));
}

// ---------------------------------------------------------------- nodes

function recentByNode(now) {
  const out = new Map();
  for (const record of state.records.values()) {
    if (now - record.at_ms > WINDOW_MS) continue;
    const node = (record.outcome && record.outcome.node) || "none";
    if (!out.has(node)) out.set(node, []);
    out.get(node).push(record);
  }
  return out;
}

function sparkline(records, now) {
  const buckets = Math.round(WINDOW_MS / BUCKET_MS);
  const counts = new Array(buckets).fill(0);
  for (const record of records) {
    const index = buckets - 1 - Math.floor((now - record.at_ms) / BUCKET_MS);
    if (index >= 0 && index < buckets) counts[index] += 1;
  }
  const max = Math.max(1, ...counts);
  const width = 150, height = 24, step = width / buckets;
  const svg = svgEl("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}` });
  counts.forEach((count, i) => {
    const h = count ? Math.max(1, (count / max) * height) : 0;
    svg.append(svgEl("rect", { x: (i * step).toFixed(1), y: (height - h).toFixed(1), width: Math.max(1, step - 1).toFixed(1), height: h.toFixed(1) }));
  });
  const title = svgEl("title", {});
  title.textContent = `requests per 10 s over the last 5 minutes (max ${max})`;
  svg.append(title);
  return svg;
}

function drawNodes(view, now) {
  const links = new Map((view.links || []).map((l) => [l.node, l]));
  const recent = recentByNode(now);
  const cards = [];
  for (const node of view.snapshot.nodes) {
    const link = links.get(node.name);
    const why = (view.unhealthy || {})[node.name];
    const heat = node.thermal_throttled || (node.gpus || []).some((g) => g.throttled);
    let badge = el("span", { class: "badge" }, "healthy");
    if (!node.healthy) badge = el("span", { class: "badge bad" }, "unhealthy");
    else if (heat || node.on_battery) badge = el("span", { class: "badge warn" }, heat ? "throttled" : "on battery");
    const card = el("div", { class: "card", id: "node-" + node.name, "data-node": node.name },
      el("h3", {}, el("span", {}, node.name, el("span", { class: "muted" }, "  " + node.runtime)), badge));
    if (why) card.append(el("div", { class: "why" }, why));
    const inFlight = node.in_flight, max = node.max_concurrency;
    card.append(row("in flight / max", `${inFlight} / ${max}` + (node.queued ? `, ${node.queued} queued` : "")));
    card.append(bar(inFlight / Math.max(1, max), inFlight >= max));
    for (const gpu of node.gpus || []) {
      const parts = [`${Math.round(gpu.util_pct)} %`];
      if (gpu.temp_c !== undefined && gpu.temp_c !== null) parts.push(`${Math.round(gpu.temp_c)} °C`);
      if (gpu.power_w !== undefined && gpu.power_w !== null) parts.push(`${Math.round(gpu.power_w)} W`);
      if (gpu.throttled) parts.push("throttled");
      card.append(row(gpu.name, parts.join(", ")));
      card.append(row("VRAM", `${(gpu.mem_used_mb / 1024).toFixed(1)} / ${(gpu.mem_total_mb / 1024).toFixed(1)} GiB`));
      card.append(bar(gpu.mem_used_mb / Math.max(1, gpu.mem_total_mb), gpu.mem_used_mb / Math.max(1, gpu.mem_total_mb) > 0.95));
    }
    card.append(row("CPU, RAM", `${Math.round(node.cpu_util_pct)} %, ${(node.mem_used_mb / 1024).toFixed(1)} / ${(node.mem_total_mb / 1024).toFixed(1)} GiB`));
    card.append(row("tokens/s, TTFT", `${node.tokens_per_sec ? node.tokens_per_sec.toFixed(1) : "-"}, ${ms(node.ttft_ms)}`));
    const power = [];
    if (node.on_battery !== null && node.on_battery !== undefined) power.push(node.on_battery ? "on battery" : "on AC");
    if (link && link.battery_pct !== null && link.battery_pct !== undefined) power.push(`${Math.round(link.battery_pct)} %`);
    if (link && link.thermal_pressure) power.push(`thermal ${link.thermal_pressure}`);
    if (node.thermal_throttled) power.push("throttled");
    if (power.length) card.append(row("power, heat", power.join(", ")));
    if (link && link.energy && link.energy.joules_per_token) {
      card.append(row("energy", `${link.energy.joules_per_token.toFixed(2)} J/token (${link.energy.source})`));
    }
    if (link) {
      card.append(row("link", link.connected ? `up, from ${link.peer}` : `down${link.last_error ? ": " + link.last_error : ""}`));
      card.append(row("telemetry age", ago(link.telemetry_age_ms)));
      const days = link.cert.expires_in_s / 86400;
      card.append(row("certificate", days < 0 ? "EXPIRED" : `expires in ${days.toFixed(0)} days`));
    } else {
      card.append(row("link", "static (no agent)"));
    }
    const mine = recent.get(node.name) || [];
    card.append(row("answered, 5 min", el("span", { class: "answered" }, String(mine.length))));
    card.append(sparkline(mine, now));
    cards.push(card);
  }
  document.getElementById("nodes").replaceChildren(...cards);
}

// ---------------------------------------------------------------- rates

function summarise(records) {
  const ttfts = records.map((r) => r.outcome.ttft_ms).filter((t) => t !== undefined && t !== null).sort((a, b) => a - b);
  const errors = records.filter((r) => r.outcome.status >= 500 || r.outcome.status === 429).length;
  const faults = records.filter((r) => r.decided.fault).length;
  const minutes = WINDOW_MS / 60000;
  return { perMin: (records.length / minutes).toFixed(1), errors, faults, p50: quantile(ttfts, 0.5), p95: quantile(ttfts, 0.95) };
}

function drawRates(now) {
  const recent = [...state.records.values()].filter((r) => now - r.at_ms <= WINDOW_MS);
  const byNode = new Map(), byPolicy = new Map();
  for (const record of recent) {
    const node = record.outcome.node || "none";
    const policy = record.decided.policy + (record.decided.canary ? " (canary)" : "");
    if (!byNode.has(node)) byNode.set(node, []);
    if (!byPolicy.has(policy)) byPolicy.set(policy, []);
    byNode.get(node).push(record);
    byPolicy.get(policy).push(record);
  }
  const nodeRows = [...byNode.entries()].sort().map(([node, records]) => {
    const s = summarise(records);
    return el("tr", { "data-node": node }, el("td", {}, node), el("td", {}, s.perMin), el("td", {}, s.errors),
      el("td", {}, ms(s.p50)), el("td", {}, ms(s.p95)), el("td", {}, sparkline(records, now)));
  });
  document.querySelector("#by-node tbody").replaceChildren(...nodeRows);
  const policyRows = [...byPolicy.entries()].sort().map(([policy, records]) => {
    const s = summarise(records);
    return el("tr", {}, el("td", {}, policy), el("td", {}, s.perMin), el("td", {}, s.errors), el("td", {}, s.faults),
      el("td", {}, ms(s.p50)), el("td", {}, ms(s.p95)));
  });
  document.querySelector("#by-policy tbody").replaceChildren(...policyRows);
}

// ---------------------------------------------------------------- decisions

function decisionOf(record) {
  const d = record.decided.decision;
  if (d.route) return { node: record.outcome.node || (d.route.targets[0] || {}).node || "-", reason: d.route.reason };
  if (d.reject) return { node: "rejected " + d.reject.status, reason: d.reject.message };
  return { node: "-", reason: "" };
}

function drawDecisions(fresh) {
  const rows = state.newest.slice(0, SHOWN_DECISIONS).map((key) => {
    const record = state.records.get(key);
    const { node, reason } = decisionOf(record);
    const status = record.outcome.status;
    const classes = [status >= 400 ? "error-row" : "", fresh.has(key) ? "fresh" : ""].join(" ").trim();
    return el("tr", { class: classes, "data-request": record.id },
      el("td", {}, new Date(record.at_ms).toLocaleTimeString()),
      el("td", {}, record.id),
      el("td", {}, record.request.task || "-"),
      el("td", {}, record.request.model),
      el("td", {}, node),
      el("td", {}, record.decided.policy + (record.decided.canary ? " (canary)" : "") + (record.decided.fault ? " (fault: fallback)" : "")),
      el("td", { class: "reason" }, reason),
      el("td", {}, ms(record.outcome.ttft_ms)),
      el("td", {}, status));
  });
  document.querySelector("#decisions tbody").replaceChildren(...rows);
  document.getElementById("decision-count").textContent = `(${state.records.size} in the last minutes; newest first)`;
}

async function pollDecisions() {
  const view = await api("GET", "/admin/decisions?limit=500");
  const now = Date.now();
  const fresh = new Set();
  for (const record of view.records || []) {
    const key = `${record.at_ms}/${record.id}`;
    if (!state.records.has(key)) {
      if (state.seenFirstLoad) fresh.add(key);
      state.records.set(key, record);
    }
  }
  state.seenFirstLoad = true;
  for (const [key, record] of state.records) {
    if (now - record.at_ms > 2 * WINDOW_MS) state.records.delete(key);
  }
  state.newest = [...state.records.keys()].sort((a, b) => {
    const [ta, ia] = a.split("/"), [tb, ib] = b.split("/");
    return Number(tb) - Number(ta) || ib.localeCompare(ia, undefined, { numeric: true });
  });
  drawDecisions(fresh);
  drawRates(now);
}

// ---------------------------------------------------------------- policies

async function act(method, path, body) {
  try {
    await api(method, path, body);
    say("");
    await pollNodes();
  } catch (e) {
    say(e.message);
  }
}

function drawPolicies(view) {
  state.policies = view;
  document.getElementById("active-policy").textContent = view.active || "none (built-in fallback)";
  const rows = view.policies.slice().reverse().map((p) => {
    const faults = Object.values(p.stats.faults || {}).reduce((a, b) => a + b, 0);
    const controls = el("td", {});
    if (!p.active) {
      controls.append(el("button", { type: "button", "data-activate": p.id, onclick: () => act("POST", `/admin/policies/${encodeURIComponent(p.id).replace(/%40/g, "@")}/activate`) }, "activate"), " ",
        el("button", { type: "button", "data-shadow": p.id, onclick: () => act("POST", "/admin/shadow", { policy: p.id }) }, "shadow"), " ",
        el("button", { type: "button", "data-canary": p.id, onclick: () => {
          const percent = Number(document.getElementById("canary-percent").value) || 10;
          act("POST", "/admin/canary", { policy: p.id, percent });
        } }, "canary"));
    }
    return el("tr", { class: p.active ? "active" : "", "data-policy": p.id },
      el("td", {}, p.active ? "●" : ""), el("td", { title: p.description }, p.id), el("td", {}, p.stats.decisions), el("td", {}, faults), controls);
  });
  document.querySelector("#policies tbody").replaceChildren(...rows);
  document.getElementById("rollback").disabled = !(view.previous && view.previous.length);
}

function drawShadow(report) {
  const panel = document.getElementById("shadow");
  if (!report) {
    panel.replaceChildren(el("h3", {}, "Shadow"), el("p", { class: "muted" }, "None running: a loaded policy's \"shadow\" button runs it beside the active one, off the request path."));
    return;
  }
  const rate = report.compared ? (100 * report.agreed / report.compared).toFixed(1) + " %" : "-";
  const list = el("ul", {}, ...report.differences.slice(0, 8).map(([text, count]) => el("li", {}, `${count} × ${text}`)));
  const faults = Object.entries(report.faults || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  panel.replaceChildren(el("h3", {}, "Shadow ", el("b", {}, report.policy)),
    row("agreement", `${rate} of ${report.compared} (${report.dropped} dropped)`),
    faults ? row("faults", faults) : null, list,
    el("button", { type: "button", id: "shadow-stop", onclick: () => act("DELETE", "/admin/shadow") }, "stop shadow"));
}

function shareRow(name, share) {
  return el("tr", {}, el("td", {}, name), el("td", {}, share.answered), el("td", {}, (share.error_rate * 100).toFixed(1) + " %"),
    el("td", {}, ms(share.ttft_p50_ms)), el("td", {}, ms(share.ttft_p95_ms)), el("td", {}, share.faults));
}

function drawCanary(view) {
  const panel = document.getElementById("canary");
  const percent = document.getElementById("canary-percent");
  const kept = percent ? percent.value : "10";
  const children = [el("h3", {}, "Canary"),
    el("p", {}, "share for a new canary ", el("input", { type: "number", id: "canary-percent", min: 1, max: 100, value: kept }), " %")];
  const c = view.canary;
  if (c) {
    const status = c.state === "running" ? "running" : c.state === "rolled-back" ? `ROLLED BACK: ${c.why}` : c.state;
    children.push(el("p", { id: "canary-state" }, el("b", {}, c.policy), ` at ${c.percent} % against ${c.active}: ${status}`));
    children.push(el("table", {}, el("thead", {}, el("tr", {}, ...["", "answered", "errors", "TTFT p50", "TTFT p95", "faults"].map((h) => el("th", {}, h)))),
      el("tbody", {}, shareRow("canary", c.window_canary), shareRow("active", c.window_active))));
    if (c.state === "running") {
      children.push(el("p", {}, el("button", { type: "button", id: "canary-promote", onclick: () => act("POST", "/admin/canary/promote") }, "promote"), " ",
        el("button", { type: "button", id: "canary-stop", onclick: () => act("DELETE", "/admin/canary") }, "stop")));
    }
  }
  children.push(row("automatic rollbacks", String(view.rollbacks)));
  const events = (view.events || []).slice(-5).reverse();
  if (events.length) {
    children.push(el("ul", {}, ...events.map((e) => el("li", {}, `${new Date(e.at_ms).toLocaleTimeString()} ${e.kind} ${e.policy}: ${e.detail}`))));
  }
  panel.replaceChildren(...children);
}

async function pollNodes() {
  const [nodes, policies, canary] = await Promise.all([api("GET", "/admin/nodes"), api("GET", "/admin/policies"), api("GET", "/admin/canary")]);
  let shadow = null;
  try { shadow = await api("GET", "/admin/shadow"); } catch (e) { if (e.status !== 404) throw e; }
  const now = Date.now();
  drawNodes(nodes, now);
  drawPolicies(policies);
  drawShadow(shadow);
  drawCanary(canary);
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
}

// ---------------------------------------------------------------- start

function every(interval, task) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try { await task(); } catch (e) {
      if (e.status === 401) { logout("The admin token was refused."); return; }
      document.getElementById("updated").textContent = "error: " + e.message;
    } finally { running = false; }
  };
  tick();
  return setInterval(tick, interval);
}

const timers = [];

function logout(message) {
  timers.splice(0).forEach(clearInterval);
  sessionStorage.removeItem("switchyard-token");
  state.token = null;
  document.getElementById("main").classList.add("hidden");
  document.getElementById("login").classList.remove("hidden");
  document.getElementById("login-error").textContent = message || "";
}

async function connect(token) {
  state.token = token;
  try {
    await api("GET", "/admin/policies");
  } catch (e) {
    logout(e.status === 401 ? "The admin token was refused." : e.message);
    return;
  }
  sessionStorage.setItem("switchyard-token", token);
  document.getElementById("login").classList.add("hidden");
  document.getElementById("main").classList.remove("hidden");
  timers.push(every(NODES_EVERY_MS, pollNodes), every(DECISIONS_EVERY_MS, pollDecisions));
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  connect(document.getElementById("token").value.trim());
});
document.getElementById("rollback").addEventListener("click", () => act("POST", "/admin/rollback"));

// A link with `#token=...` (also one pasted into an open page: that changes only the
// fragment, the page does not reload).
function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token") || sessionStorage.getItem("switchyard-token");
  if (fragment.has("token")) history.replaceState(null, "", location.pathname);
  timers.splice(0).forEach(clearInterval);
  if (token) connect(token); else logout("");
}
window.addEventListener("hashchange", start);
start();
