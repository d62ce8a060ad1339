// The Duplex console: the tables the controller's live feed
// (/v1/stream, server-sent events) keeps up to date, and actions through
// the API with the operator's session. No framework, no build step.
"use strict";

// Most rows a table shows at once (a filter narrows the rest).
const MAX_ROWS = 500;
// Most events kept in the page.
const MAX_EVENTS = 1000;
// Header every changing request carries (the controller refuses a
// session's change without it).
const CSRF = { "x-duplex-console": "1" };

const state = {
  tables: { hosts: new Map(), vms: new Map(), pairs: new Map(), ops: new Map() },
  events: [],
  tab: "pairs",
  filter: "",
  severity: "",
};

const $ = (id) => document.getElementById(id);
const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const cls = (s) => esc(String(s ?? "none").toLowerCase());

// ---- the live feed ----

function connect() {
  const feed = new EventSource("/v1/stream");
  feed.addEventListener("update", (m) => {
    link(true);
    apply(JSON.parse(m.data));
  });
  feed.onerror = () => link(false); // EventSource reconnects by itself
}

function link(up) {
  const l = $("link");
  l.className = "link " + (up ? "up" : "down");
  l.textContent = up ? "live" : "reconnecting…";
}

function apply(msg) {
  for (const [name, change] of Object.entries(msg.tables || {})) {
    const t = state.tables[name];
    if (!t) continue;
    for (const row of change.upsert) t.set(key(name, row), row);
    for (const k of change.remove) t.delete(k);
  }
  if (msg.events && msg.events.length) {
    state.events.push(...msg.events);
    state.events.splice(0, Math.max(0, state.events.length - MAX_EVENTS));
  }
  schedule();
}

function key(table, row) {
  if (table === "vms") return row.spec.name;
  if (table === "ops") return row.id;
  return row.name;
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

// ---- rendering ----

function matches(text) {
  return !state.filter || text.toLowerCase().includes(state.filter);
}

function capped(rows, total, what) {
  const shown = rows.slice(0, MAX_ROWS);
  const more = total > shown.length ? `<p class="more">${shown.length} of ${total} ${what} shown: filter to narrow.</p>` : "";
  return { shown, more };
}

function render() {
  const t = state.tables;
  $("counts").textContent = `${t.hosts.size} hosts · ${t.vms.size} VMs · ${t.pairs.size} pairs`;
  if (state.tab === "pairs") renderPairs();
  if (state.tab === "hosts") renderHosts();
  if (state.tab === "vms") renderVms();
  if (state.tab === "feed") renderFeed();
}

function runningOp(subject) {
  for (const o of state.tables.ops.values()) if (o.subject === subject && o.state === "running") return o;
  return null;
}

function renderPairs() {
  const all = [...state.tables.pairs.values()].sort((a, b) => a.name.localeCompare(b.name));
  const rows = all.filter((p) => matches(`${p.name} ${p.vip} ${p.health} ${p.phase} ${p.members_status.map((m) => m.vm + " " + m.host).join(" ")}`));
  const { shown, more } = capped(rows, rows.length, "pairs");
  const body = shown.map((p) => {
    const members = p.members_status
      .map((m) => `<div data-member="${esc(m.vm)}">${esc(m.vm)} on ${esc(m.host)}: wanted <span class="${cls(m.wanted)}">${esc(m.wanted)}</span>, reports <span class="role ${cls(m.role)}">${esc(m.role ?? "–")}</span></div>`)
      .join("");
    const op = runningOp(`pair/${p.name}`);
    return `<tr data-pair="${esc(p.name)}">
      <td>${esc(p.name)}</td><td>${esc(p.vip)}</td>
      <td class="health ${cls(p.health)}">${esc(p.health)}</td><td class="phase">${esc(p.phase)}</td>
      <td>${members}</td>
      <td class="op">${op ? esc(op.progress) : ""}</td>
      <td><button type="button" data-act="switchover" data-name="${esc(p.name)}">Switch over</button>
          <button type="button" data-act="pair-migrate" data-name="${esc(p.name)}">Move (auto)</button></td></tr>`;
  });
  $("pairs").innerHTML = `<table><thead><tr><th>pair</th><th>service address</th><th>health</th><th>phase</th><th>members</th><th>operation</th><th></th></tr></thead><tbody>${body.join("")}</tbody></table>${more}`;
}

function renderHosts() {
  const all = [...state.tables.hosts.values()].filter((h) => matches(`${h.name} ${h.site} ${h.rack ?? ""} ${h.state} ${h.vms.join(" ")}`));
  const groups = new Map();
  for (const h of all) {
    const g = `site ${h.site} · rack ${h.rack ?? "–"}`;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(h);
  }
  let shown = 0;
  const out = [];
  for (const g of [...groups.keys()].sort()) {
    if (shown >= MAX_ROWS) break;
    const hosts = groups.get(g).sort((a, b) => a.name.localeCompare(b.name)).slice(0, MAX_ROWS - shown);
    shown += hosts.length;
    const cards = hosts.map((h) => `<div class="host" data-host="${esc(h.name)}">
        <b>${esc(h.name)}</b> <span class="${cls(h.state)}">${esc(h.state)}</span>${h.late_s ? ` <span class="down">silent ${h.late_s} s</span>` : ""}
        <div>${h.vcpus} vCPUs · ${Math.round(h.memory_mib / 1024)} GiB · ${h.vms.length} VMs</div>
        <div class="vmlist">${esc(h.vms.slice(0, 8).join(", "))}${h.vms.length > 8 ? "…" : ""}</div>
        <button type="button" data-act="drain" data-name="${esc(h.name)}">Drain</button>
        <select data-act="host-state" data-name="${esc(h.name)}"><option value="">state…</option><option>ready</option><option>maintenance</option><option>spare</option></select>
      </div>`);
    out.push(`<div class="rack"><h3>${esc(g)}</h3><div class="hostcards">${cards.join("")}</div></div>`);
  }
  const more = all.length > shown ? `<p class="more">${shown} of ${all.length} hosts shown: filter to narrow.</p>` : "";
  $("hosts").innerHTML = out.join("") + more;
}

function renderVms() {
  const all = [...state.tables.vms.values()].filter((v) => matches(`${v.spec.name} ${v.host} ${v.status} ${v.spec.ip} ${v.pair ?? ""}`));
  all.sort((a, b) => a.spec.name.localeCompare(b.spec.name));
  const { shown, more } = capped(all, all.length, "VMs");
  const body = shown.map((v) => `<tr data-vm="${esc(v.spec.name)}"><td>${esc(v.spec.name)}</td><td>${esc(v.host)}</td>
      <td class="${cls(v.status)}">${esc(v.status)}</td><td>${esc(v.spec.ip)}</td><td>${esc(v.pair ?? "")}</td>
      <td class="${cls(v.role)}">${esc(v.role ?? "")}</td><td>${v.backup ? "replica on " + esc(v.backup) : ""}</td></tr>`);
  $("vms").innerHTML = `<table><thead><tr><th>VM</th><th>host</th><th>status</th><th>address</th><th>pair</th><th>role</th><th>S2/S5</th></tr></thead><tbody>${body.join("")}</tbody></table>${more}`;
}

function renderFeed() {
  const ops = [...state.tables.ops.values()].sort((a, b) => b.started_ms - a.started_ms).filter((o) => matches(`${o.kind} ${o.subject} ${o.progress} ${o.error ?? ""}`));
  $("ops").innerHTML = `<table><thead><tr><th>started</th><th>kind</th><th>subject</th><th>state</th><th>progress</th></tr></thead><tbody>${ops
    .slice(0, MAX_ROWS)
    .map((o) => `<tr><td>${new Date(o.started_ms).toLocaleTimeString()}</td><td>${esc(o.kind)}</td><td>${esc(o.subject)}</td><td class="${cls(o.state)}">${esc(o.state)}</td><td>${esc(o.error ?? o.progress)}</td></tr>`)
    .join("")}</tbody></table>`;
  const evs = state.events.filter((e) => (!state.severity || e.severity === state.severity) && matches(`${e.kind} ${e.subject} ${e.message}`)).slice(-MAX_ROWS).reverse();
  $("events").innerHTML = `<table><thead><tr><th>at</th><th>severity</th><th>kind</th><th>subject</th><th>message</th></tr></thead><tbody>${evs
    .map((e) => `<tr><td>${new Date(e.at_ms).toLocaleTimeString()}</td><td class="${cls(e.severity)}">${esc(e.severity)}</td><td>${esc(e.kind)}</td><td>${esc(e.subject)}</td><td>${esc(e.message)}</td></tr>`)
    .join("")}</tbody></table>`;
}

// ---- actions ----

function showError(text) {
  $("error-text").textContent = text;
  $("error").hidden = false;
}

async function call(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { ...CSRF, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let text = `${method} ${path}: ${r.status}`;
    try {
      const e = await r.json();
      text = e.error ? `${e.error.message} (${e.error.code})` : text;
    } catch (_) {
      /* not JSON: the status says it */
    }
    showError(text);
    return null;
  }
  $("error").hidden = true;
  return r.status === 204 ? {} : r.json();
}

const ACTIONS = {
  switchover: (n) => confirm(`Switch pair ${n} over?`) && call("POST", `/v1/pairs/${encodeURIComponent(n)}/switchover`),
  "pair-migrate": (n) => confirm(`Move pair ${n} to hosts placement chooses?`) && call("POST", `/v1/pairs/${encodeURIComponent(n)}/migrate`, { to: "auto" }),
  drain: (n) => confirm(`Drain host ${n} (move everything off it)?`) && call("POST", `/v1/hosts/${encodeURIComponent(n)}/drain`, { concurrency: 1 }),
};

function wire() {
  document.querySelectorAll("nav button[data-tab]").forEach((b) =>
    b.addEventListener("click", () => {
      state.tab = b.dataset.tab;
      document.querySelectorAll("nav button[data-tab]").forEach((x) => x.classList.toggle("on", x === b));
      document.querySelectorAll("section.tab").forEach((s) => (s.hidden = s.id !== state.tab));
      render();
    }),
  );
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value.trim().toLowerCase();
    schedule();
  });
  $("severity").addEventListener("change", (e) => {
    state.severity = e.target.value;
    schedule();
  });
  $("error-close").addEventListener("click", () => ($("error").hidden = true));
  $("logout").addEventListener("click", async () => {
    await fetch("/ui/logout", { method: "POST", headers: CSRF });
    document.body.textContent = "Logged out. Run `duplex console` for a new session.";
  });
  document.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-act]");
    if (b && ACTIONS[b.dataset.act]) ACTIONS[b.dataset.act](b.dataset.name);
  });
  document.addEventListener("change", (e) => {
    const s = e.target.closest("select[data-act=host-state]");
    if (!s || !s.value) return;
    const n = s.dataset.name;
    if (confirm(`Set host ${n} to ${s.value}?`)) call("POST", `/v1/hosts/${encodeURIComponent(n)}/state`, { state: s.value });
    s.value = "";
  });
}

wire();
connect();
