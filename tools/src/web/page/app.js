// The backer page: status, peers, conflicts and live events, all through
// the JSON API with the session token this tab holds (sessionStorage; no
// cookie: see tools/src/web.rs).
"use strict";

const KEY = "backer-session";
let session = sessionStorage.getItem(KEY);
let lastId = 0;

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (session) headers["Authorization"] = "Bearer " + session;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    session = null;
    sessionStorage.removeItem(KEY);
    $("login-needed").hidden = false;
    throw new Error("not logged in");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function login() {
  const m = location.hash.match(/^#login=([0-9a-f]+)$/);
  if (!m) return;
  history.replaceState(null, "", location.pathname);
  const r = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: m[1] }),
  });
  if (r.ok) {
    session = (await r.json()).session;
    sessionStorage.setItem(KEY, session);
  }
}

function setState(text, cls) {
  const s = $("state");
  s.textContent = text;
  s.className = "badge " + cls;
}

function ago(secs) {
  if (secs === null || secs === undefined) return "never";
  const d = Math.max(0, Math.round(Date.now() / 1000 - secs));
  if (d < 60) return d + " s ago";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  return Math.round(d / 3600) + " h ago";
}

function showPeers(peers) {
  const ul = $("peers");
  ul.replaceChildren();
  if (!peers.length) ul.append(el("li", "empty", "No peers yet (backer peer add ID ADDR)."));
  for (const p of peers) {
    const li = el("li");
    li.append(el("span", "dot" + (p.connected ? " on" : "")));
    li.append(el("code", "", String(p.id).slice(0, 7)));
    const bits = [p.connected ? "connected" : "not connected", "last sync " + ago(p.last_sync)];
    if (p.addr) bits.push(p.addr);
    if (p.files_to_go) bits.push(p.files_to_go + " files, " + p.bytes_to_go + " bytes to go");
    li.append(document.createTextNode(" " + bits.join(" · ")));
    li.title = p.id;
    ul.append(li);
  }
}

async function refresh() {
  try {
    const s = await api("/api/status");
    $("node-id").textContent = s.node;
    $("mount").textContent = s.mount || "(no mount: a replica)";
    $("root").textContent = s.root;
    $("commits").textContent = s.commits;
    showPeers(s.peers || []);
    const syncing = (s.peers || []).some((p) => p.files_to_go > 0);
    setState(syncing ? "syncing" : "up to date", syncing ? "warn" : "ok");
  } catch (e) {
    setState(String(e.message || e), "bad");
  }
}

function describe(e) {
  const d = e.data || {};
  switch (e.type) {
    case "LocalChange": return d.kind + " " + (d.from ? d.from + " → " : "") + d.path;
    case "RemoteChange": return "from " + String(d.peer).slice(0, 7) + ": " + d.paths.join(", ") + (d.truncated ? " …" : "");
    case "PeerConnected": return String(d.peer).slice(0, 7) + " at " + d.address;
    case "PeerDisconnected": return String(d.peer).slice(0, 7) + " (" + d.reason + ")";
    case "SyncProgress": return String(d.peer).slice(0, 7) + ": " + d.files_to_go + " files to go";
    case "SyncDone": return "in sync with " + String(d.peer).slice(0, 7);
    case "Conflict": return d.path + ": other version kept as " + d.copy;
    case "HistoryCollected": return "kept " + d.roots_kept + " of " + d.roots_before + " roots";
    case "Error": return d.place + ": " + d.what;
    default: return JSON.stringify(d);
  }
}

function showEvent(e) {
  const ul = $("events");
  const li = el("li");
  li.dataset.id = e.id;
  li.dataset.type = e.type;
  li.append(el("span", "ev-type", e.type));
  li.append(el("span", "ev-what", describe(e)));
  li.append(el("span", "ev-time", e.time));
  ul.prepend(li);
  while (ul.children.length > 200) ul.lastChild.remove();
  if (e.type === "Conflict") {
    const c = $("conflicts");
    c.querySelector(".empty")?.remove();
    c.prepend(el("li", "", e.data.path + " ↔ " + e.data.copy));
  }
  refreshSoon();
}

// One status refresh for a burst of events.
let pending = null;
function refreshSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 300);
}

// A long poll, so the session token rides in a header (EventSource cannot
// send one); ids rise by 1, so a gap means the ring dropped some.
async function follow() {
  for (;;) {
    try {
      const evs = await api("/api/events?since=" + lastId + "&timeout=30");
      for (const e of evs) {
        if (lastId && e.id > lastId + 1) showEvent({ id: e.id, type: "Gap", time: e.time, data: { missed: e.id - lastId - 1 } });
        lastId = e.id;
        showEvent(e);
      }
    } catch (e) {
      if (!session) return;
      setState("node unreachable", "bad");
      await new Promise((r) => setTimeout(r, 2000));
      refresh();
    }
  }
}

async function start() {
  $("copy-id").addEventListener("click", () => navigator.clipboard?.writeText($("node-id").textContent));
  await login();
  if (!session) {
    $("login-needed").hidden = false;
    setState("not logged in", "bad");
    return;
  }
  await refresh();
  follow();
  setInterval(refresh, 10000);
}

start();
