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
  tables: { hosts: new Map(), vms: new Map(), pairs: new Map(), ops: new Map(), flows: new Map() },
  events: [],
  tab: "pairs",
  filter: "",
  severity: "",
};

// How long the page takes, for the size bench (`duplex-bench console`):
// when the first message was on screen (ms since navigation), and for
// each later one, from its arrival to being on screen. The newest kept.
const TIMINGS_KEPT = 2000;
const timings = { shown: null, first_bytes: 0, applies: [] };
window.duplexTimings = timings;
let arrived = null; // the oldest message not yet on screen: { at, bytes }

const $ = (id) => document.getElementById(id);
const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const cls = (s) => esc(String(s ?? "none").toLowerCase());

// ---- the live feed ----

function connect() {
  const feed = new EventSource("/v1/stream");
  feed.addEventListener("update", (m) => {
    if (!arrived) arrived = { at: performance.now(), bytes: 0 };
    arrived.bytes += m.data.length;
    link(true);
    apply(JSON.parse(m.data));
  });
  // EventSource reconnects by itself after a dropped connection, but not
  // after an error answer (this controller stopped leading, the session
  // ended): then the page says why and tries again.
  feed.onerror = () => {
    link(false);
    if (feed.readyState === EventSource.CLOSED) lost();
  };
}

// Between tries of a feed that was refused.
const RETRY_MS = 5000;

async function lost() {
  let why = "the controller does not answer";
  try {
    const stop = new AbortController();
    const r = await fetch("/v1/stream", { signal: stop.signal });
    if (r.ok) {
      stop.abort();
      return connect();
    }
    const e = await r.json().catch(() => null);
    why = e && e.error ? `${e.error.message} (${e.error.code})` : `answer ${r.status}`;
  } catch (_) {
    /* the controller is down or unreachable: said above */
  }
  link(false, why);
  setTimeout(lost, RETRY_MS);
}

function link(up, why) {
  const l = $("link");
  l.className = "link " + (up ? "up" : "down");
  l.textContent = up ? "live" : why ? `feed lost: ${why}; retrying every ${RETRY_MS / 1000} s` : "reconnecting…";
}

function apply(msg) {
  // A feed's first message is everything: after a reconnection (a dropped
  // connection, a new leader) what the page held may be gone meanwhile.
  if (msg.full) {
    for (const t of Object.values(state.tables)) t.clear();
    state.events = [];
  }
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
    if (!arrived) return;
    const shown = arrived;
    arrived = null;
    // On screen once the frame holding this render was laid out and
    // painted: the start of the frame after it.
    requestAnimationFrame(() => {
      const done = performance.now();
      if (timings.shown === null) (timings.shown = done), (timings.first_bytes = shown.bytes);
      else timings.applies.push({ ms: done - shown.at, bytes: shown.bytes, tab: state.tab });
      timings.applies.splice(0, Math.max(0, timings.applies.length - TIMINGS_KEPT));
    });
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
  if (state.tab === "topology") renderTopology();
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
        ${h.cpu_pct === undefined ? "" : `<div class="load">in use: CPU ${h.cpu_pct} % · memory ${h.mem_pct} %</div>`}
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
      <td class="${cls(v.role)}">${esc(v.role ?? "")}</td><td>${v.backup ? "replica on " + esc(v.backup) : ""}</td>
      <td><button type="button" data-act="explain" data-name="${esc(v.spec.name)}">Why here?</button></td></tr>`);
  $("vmtable").innerHTML = `<table><thead><tr><th>VM</th><th>host</th><th>status</th><th>address</th><th>pair</th><th>role</th><th>S2/S5</th><th></th></tr></thead><tbody>${body.join("")}</tbody></table>${more}`;
}

// ---- topology: sites, racks and hosts, with the measured flows ----

// Geometry of the picture (SVG units).
const TOPO = { col: 120, gap: 40, top: 34, row: 22, box: 18 };
// Most flows listed under the picture.
const MAX_FLOW_ROWS = 100;

function rate(b) {
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let i = 0;
  while (b >= 1000 && i < units.length - 1) (b /= 1000), i++;
  return `${b.toFixed(b < 10 && i ? 1 : 0)} ${units[i]}`;
}

// Where each host sits in the picture, by site then rack.
function layout() {
  const racks = new Map();
  for (const h of state.tables.hosts.values()) {
    const k = `${h.site}\u0000${h.rack ?? "–"}`;
    if (!racks.has(k)) racks.set(k, { site: h.site, rack: h.rack ?? "–", hosts: [] });
    racks.get(k).hosts.push(h);
  }
  const pos = new Map();
  const cols = [];
  let x = 0;
  let site = null;
  let height = 0;
  for (const k of [...racks.keys()].sort()) {
    const r = racks.get(k);
    if (site !== null && r.site !== site) x += TOPO.gap;
    site = r.site;
    r.hosts.sort((a, b) => a.name.localeCompare(b.name));
    r.hosts.forEach((h, i) => pos.set(h.name, { x, y: TOPO.top + i * TOPO.row, site: r.site, rack: r.rack }));
    cols.push({ x, ...r });
    height = Math.max(height, TOPO.top + r.hosts.length * TOPO.row);
    x += TOPO.col;
  }
  return { pos, cols, width: Math.max(x, TOPO.col), height: height + 4 };
}

function reach(a, b) {
  if (!a || !b) return "unplaced";
  if (a === b) return "same host";
  if (a.site !== b.site) return "across sites";
  return a.rack === b.rack ? "same rack" : "across racks";
}

function renderTopology() {
  const { pos, cols, width, height } = layout();
  const hostOf = (vm) => state.tables.vms.get(vm)?.host;
  const links = new Map();
  const flows = [...state.tables.flows.values()].sort((a, b) => b.bytes_per_s - a.bytes_per_s);
  for (const f of flows) {
    const [ha, hb] = [hostOf(f.from), hostOf(f.to)];
    if (!pos.has(ha) || !pos.has(hb) || ha === hb) continue;
    const k = ha < hb ? `${ha}\u0000${hb}` : `${hb}\u0000${ha}`;
    const l = links.get(k) || { a: pos.get(ha), b: pos.get(hb), rate: 0, what: reach(pos.get(ha), pos.get(hb)) };
    l.rate += f.bytes_per_s;
    links.set(k, l);
  }
  const mid = (p) => [p.x + (TOPO.col - 10) / 2, p.y + TOPO.box / 2];
  const lines = [...links.values()].map((l) => {
    const [[x1, y1], [x2, y2]] = [mid(l.a), mid(l.b)];
    const w = Math.min(8, 1 + Math.log10(1 + l.rate / 1000));
    return `<line class="flow ${l.what.replace(/ /g, "-")}" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" stroke-width="${w.toFixed(1)}"><title>${esc(l.what)}: ${rate(l.rate)}</title></line>`;
  });
  const boxes = cols.map((c) => {
    const hosts = c.hosts.map((h) => {
      const p = pos.get(h.name);
      return `<g class="host-box ${cls(h.state)}" data-host="${esc(h.name)}"><rect x="${p.x}" y="${p.y}" width="${TOPO.col - 10}" height="${TOPO.box}" rx="3"><title>${esc(h.name)}: ${esc(h.state)}, ${h.vms.length} VMs${h.vms.length ? ": " + esc(h.vms.slice(0, 20).join(", ")) : ""}</title></rect><text x="${p.x + 4}" y="${p.y + 13}">${esc(h.name)} · ${h.vms.length}</text></g>`;
    });
    return `<text class="rack-label" x="${c.x}" y="${TOPO.top - 18}">${esc(c.site)}</text><text class="rack-label" x="${c.x}" y="${TOPO.top - 5}">rack ${esc(c.rack)}</text>${hosts.join("")}`;
  });
  $("topo").innerHTML = `<svg class="topo" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${boxes.join("")}${lines.join("")}</svg>`;
  const shown = flows.filter((f) => matches(`${f.from} ${f.to} ${hostOf(f.from) ?? ""} ${hostOf(f.to) ?? ""}`)).slice(0, MAX_FLOW_ROWS);
  const body = shown.map((f) => {
    const [ha, hb] = [hostOf(f.from), hostOf(f.to)];
    return `<tr data-flow="${esc(f.name)}"><td>${esc(f.from)}</td><td>${esc(ha ?? "–")}</td><td>${esc(f.to)}</td><td>${esc(hb ?? "–")}</td><td>${rate(f.bytes_per_s)}</td><td>${esc(reach(pos.get(ha), pos.get(hb)))}</td></tr>`;
  });
  $("flows").innerHTML = flows.length
    ? `<table><thead><tr><th>from VM</th><th>on</th><th>to VM</th><th>on</th><th>measured</th><th>path</th></tr></thead><tbody>${body.join("")}</tbody></table>`
    : `<p class="more">No traffic between VMs measured yet.</p>`;
}

// ---- a VM's placement explanation ----

// Passing hosts listed (the best), and reasons listed per failing filter.
const EXPLAIN_HOSTS = 10;
const EXPLAIN_REASONS = 3;

async function explain(vm) {
  const e = await call("GET", `/v1/placement/${encodeURIComponent(vm)}`);
  if (!e) return;
  const pass = e.hosts.filter((h) => h.verdict.result === "pass").sort((a, b) => a.factor.total - b.factor.total);
  const fails = new Map();
  for (const h of e.hosts.filter((h) => h.verdict.result === "fail")) {
    if (!fails.has(h.verdict.filter)) fails.set(h.verdict.filter, []);
    fails.get(h.verdict.filter).push(h);
  }
  const f = (x) => (x ? x.total.toFixed(1) : "–");
  const verdict = e.chosen && e.chosen !== e.current_host
    ? `placement would move it to <b>${esc(e.chosen)}</b> (cost ${f(e.chosen_factor)} against ${f(e.stay)} for staying)`
    : `it stays (cost of staying ${f(e.stay)}${e.chosen ? "" : "; no other host passes the filters"})`;
  const peers = e.peers.map((p) => `${esc(p.vm)} on ${esc(p.host ?? "–")}: ${rate(p.bytes_per_s)}`).join("; ");
  const rows = pass.slice(0, EXPLAIN_HOSTS).map((h) => `<tr data-host="${esc(h.host)}"><td>${esc(h.host)}</td><td>${esc(h.rack)}</td><td>${h.factor.total.toFixed(1)}</td><td>${h.factor.traffic.toFixed(0)}</td><td>${h.factor.utilization.toFixed(0)}</td><td>${(h.factor.memory_bytes / 1048576).toFixed(0)} MiB over ${h.factor.memory_hops} links</td></tr>`);
  const failed = [...fails.entries()].map(([filter, hs]) => `<li>${hs.length} host(s) fail <b>${esc(filter.replace(/_/g, " "))}</b>: ${hs.slice(0, EXPLAIN_REASONS).map((h) => `${esc(h.host)} (${esc(h.verdict.reason)})`).join("; ")}${hs.length > EXPLAIN_REASONS ? "…" : ""}</li>`);
  const box = $("explain");
  box.innerHTML = `<button type="button" id="explain-close">×</button>
    <h2>Placement of <span class="vm">${esc(e.vm)}</span> on <span class="at">${esc(e.current_host ?? "–")}</span></h2>
    <p>${verdict}. It receives ${rate(e.incoming_bytes_per_s)}${peers ? ` (${peers})` : ""}.</p>
    <table><thead><tr><th>host that passes</th><th>rack</th><th>cost</th><th>traffic × hops</th><th>congestion</th><th>memory to move</th></tr></thead><tbody>${rows.join("")}</tbody></table>
    ${pass.length > EXPLAIN_HOSTS ? `<p class="more">${EXPLAIN_HOSTS} best of ${pass.length} passing hosts.</p>` : ""}
    <ul>${failed.join("")}</ul>`;
  box.hidden = false;
  $("explain-close").addEventListener("click", () => (box.hidden = true));
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
  explain: (n) => explain(n),
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
