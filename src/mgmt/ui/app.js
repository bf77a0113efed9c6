// warren management UI: hash-routed pages over the management HTTP API.
"use strict";

const state = { auth: sessionStorage.getItem("warren-auth"), timer: null, chart: [] };
const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Basic " + state.auth, "X-Requested-With": "XMLHttpRequest" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, opts);
  if (r.status === 401 && method === "GET" && path === "/whoami") throw new Error("Login failed");
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && (data.reason || data.error)) || r.statusText);
  return data;
}

function flash(msg, isError) {
  const f = $("#flash");
  f.textContent = msg;
  f.className = isError ? "flash error" : "flash";
}

function table(id, cols, rows) {
  const head = cols.map((c) => `<th>${esc(c[0])}</th>`).join("");
  const body = rows.map((r) => "<tr>" + cols.map((c) => {
    const v = c[1](r);
    return typeof v === "number" ? `<td class="num">${v}</td>` : `<td>${v}</td>`;
  }).join("") + "</tr>").join("");
  return `<table id="${id}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

const rate = (d) => (d && d.rate !== undefined ? d.rate : 0);
const qlink = (q) => `<a href="#/queue/${enc(q.vhost)}/${enc(q.name)}">${esc(q.name)}</a>`;

const pages = {
  async overview() {
    const o = await api("GET", "/overview");
    const nodes = await api("GET", "/nodes");
    const t = o.object_totals, q = o.queue_totals, m = o.message_stats || {};
    state.chart.push({ publish: rate(m.publish_details), deliver: rate(m.deliver_get_details), ack: rate(m.ack_details) });
    if (state.chart.length > 120) state.chart.shift();
    $("#page").innerHTML = `<h1>Overview</h1>
      <div class="totals" id="totals">
        <span>Connections<b id="total-connections">${t.connections}</b></span>
        <span>Channels<b id="total-channels">${t.channels}</b></span>
        <span>Exchanges<b id="total-exchanges">${t.exchanges}</b></span>
        <span>Queues<b id="total-queues">${t.queues}</b></span>
        <span>Consumers<b id="total-consumers">${t.consumers}</b></span>
      </div>
      <h2>Queued messages</h2>
      <div class="totals"><span>Ready<b id="total-ready">${q.messages_ready ?? 0}</b></span>
        <span>Unacked<b id="total-unacked">${q.messages_unacknowledged ?? 0}</b></span>
        <span>Total<b>${q.messages ?? 0}</b></span></div>
      <h2>Message rates (msg/s)</h2>
      <div class="totals"><span>Publish<b id="rate-publish">${rate(m.publish_details)}</b></span>
        <span>Deliver<b id="rate-deliver">${rate(m.deliver_get_details)}</b></span>
        <span>Ack<b>${rate(m.ack_details)}</b></span>
        <span>Confirm<b>${rate(m.confirm_details)}</b></span></div>
      <canvas id="rates-chart" width="720" height="200"></canvas>
      <p>Node <code>${esc(o.node)}</code>, ${esc(o.product_name)} ${esc(o.product_version)}.
      Listeners: ${o.listeners.map((l) => `${esc(l.protocol)} ${esc(l.ip_address)}:${l.port}`).join(", ")}</p>
      <h2>Nodes</h2>` + table("nodes-table", [
      ["Name", (n) => esc(n.name)], ["Type", (n) => esc(n.type)],
      ["Running", (n) => (n.running ? "yes" : "no")],
      ["App", (n) => (n.app_running === false ? "stopped" : n.running ? "running" : "–")],
    ], nodes);
    drawChart();
  },

  async connections() {
    const cs = await api("GET", "/connections");
    $("#page").innerHTML = `<h1>Connections</h1>` + table("connections-table", [
      ["Name", (c) => esc(c.name)], ["User", (c) => esc(c.user)], ["Vhost", (c) => esc(c.vhost)],
      ["State", (c) => esc(c.state)], ["Channels", (c) => c.channels], ["Client", (c) => esc((c.client_properties || {}).product)],
      ["From client B/s", (c) => rate(c.recv_oct_details)], ["To client B/s", (c) => rate(c.send_oct_details)],
      ["", (c) => `<button class="close-conn" data-name="${esc(c.name)}">Close</button>`],
    ], cs);
    for (const b of document.querySelectorAll(".close-conn")) {
      b.onclick = () => act(() => api("DELETE", "/connections/" + enc(b.dataset.name)), "Connection closed");
    }
  },

  async channels() {
    const cs = await api("GET", "/channels");
    $("#page").innerHTML = `<h1>Channels</h1>` + table("channels-table", [
      ["Channel", (c) => esc(c.name)], ["User", (c) => esc(c.user)], ["Vhost", (c) => esc(c.vhost)],
      ["Mode", (c) => (c.confirm ? "C" : "") + (c.transactional ? "T" : "")], ["Prefetch", (c) => c.prefetch_count],
      ["Unacked", (c) => c.messages_unacknowledged], ["Consumers", (c) => c.consumer_count],
    ], cs);
  },

  async exchanges() {
    const [es, vs] = await Promise.all([api("GET", "/exchanges"), api("GET", "/vhosts")]);
    $("#page").innerHTML = `<h1>Exchanges</h1>` + table("exchanges-table", [
      ["Vhost", (e) => esc(e.vhost)],
      ["Name", (e) => `<a href="#/exchange/${enc(e.vhost)}/${enc(e.name || "amq.default")}">${esc(e.name || "(AMQP default)")}</a>`],
      ["Type", (e) => esc(e.type)], ["Features", (e) => (e.durable ? "D " : "") + (e.auto_delete ? "AD " : "") + (e.internal ? "I" : "")],
    ], es) + `<form class="box" id="add-exchange"><h3>Add exchange</h3>
      <label>Vhost ${vhostSelect(vs, "ex-vhost")}</label>
      <label>Name <input id="ex-name" required></label>
      <label>Type <select id="ex-type"><option>direct</option><option>fanout</option><option>topic</option><option>headers</option></select></label>
      <label>Durable <select id="ex-durable"><option value="true">yes</option><option value="false">no</option></select></label>
      <button type="submit">Add exchange</button></form>`;
    $("#add-exchange").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PUT", `/exchanges/${enc($("#ex-vhost").value)}/${enc($("#ex-name").value)}`,
      { type: $("#ex-type").value, durable: $("#ex-durable").value === "true", auto_delete: false, internal: false, arguments: {} }), "Exchange added"); };
  },

  async exchange(vhost, name) {
    const [e, bs] = await Promise.all([api("GET", `/exchanges/${enc(vhost)}/${enc(name)}`), api("GET", `/exchanges/${enc(vhost)}/${enc(name)}/bindings/source`)]);
    $("#page").innerHTML = `<h1>Exchange ${esc(e.name || "(AMQP default)")}</h1>
      <p>Vhost <code>${esc(e.vhost)}</code>, type ${esc(e.type)}${e.durable ? ", durable" : ""}</p>
      <h2>Bindings</h2>` + table("exchange-bindings", [
        ["To", (b) => esc(b.destination)], ["Type", (b) => esc(b.destination_type)], ["Routing key", (b) => esc(b.routing_key)],
      ], bs) + publishForm();
    wirePublish(vhost, name);
  },

  async queues() {
    const [qs, vs] = await Promise.all([api("GET", "/queues"), api("GET", "/vhosts")]);
    $("#page").innerHTML = `<h1>Queues</h1>` + table("queues-table", [
      ["Vhost", (q) => esc(q.vhost)], ["Name", qlink], ["Type", (q) => esc(q.type)],
      ["Features", (q) => (q.durable ? "D " : "") + (q.auto_delete ? "AD " : "") + (q.exclusive ? "Excl" : "")],
      ["Ready", (q) => q.messages_ready], ["Unacked", (q) => q.messages_unacknowledged], ["Total", (q) => q.messages],
      ["Consumers", (q) => q.consumers], ["Incoming/s", (q) => rate((q.message_stats || {}).publish_details)],
      ["Deliver/s", (q) => rate((q.message_stats || {}).deliver_get_details)],
    ], qs) + `<form class="box" id="add-queue"><h3>Add queue</h3>
      <label>Vhost ${vhostSelect(vs, "q-vhost")}</label>
      <label>Name <input id="q-name" required></label>
      <label>Durable <select id="q-durable"><option value="true">yes</option><option value="false">no</option></select></label>
      <label>Arguments (JSON) <input id="q-args" value="{}"></label>
      <button type="submit">Add queue</button></form>`;
    $("#add-queue").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PUT", `/queues/${enc($("#q-vhost").value)}/${enc($("#q-name").value)}`,
      { durable: $("#q-durable").value === "true", auto_delete: false, arguments: JSON.parse($("#q-args").value || "{}") }), "Queue added"); };
  },

  async queue(vhost, name) {
    const q = await api("GET", `/queues/${enc(vhost)}/${enc(name)}`);
    $("#page").innerHTML = `<h1>Queue <span id="queue-name">${esc(q.name)}</span></h1>
      <p>Vhost <code>${esc(q.vhost)}</code>, type ${esc(q.type)}${q.durable ? ", durable" : ""}. Arguments: <code>${esc(JSON.stringify(q.arguments))}</code></p>
      ${q.type === "quorum" ? `<p id="queue-replicas">Leader <code>${esc(q.leader || "none")}</code>; members ${(q.members || []).map((m) => `<code>${esc(m)}</code>`).join(", ")}; online ${(q.online || []).map((m) => `<code>${esc(m)}</code>`).join(", ")}</p>` : ""}
      <div class="totals"><span>Ready<b id="queue-ready">${q.messages_ready}</b></span><span>Unacked<b id="queue-unacked">${q.messages_unacknowledged}</b></span>
      <span>Consumers<b>${q.consumers}</b></span></div>` +
      table("queue-consumers", [["Consumer tag", (c) => esc(c.consumer_tag)], ["Channel", (c) => esc(c.channel_details.name)],
        ["Ack required", (c) => String(c.ack_required)], ["Prefetch", (c) => c.prefetch_count]], q.consumer_details || []) +
      `<form class="box" id="get-form"><h3>Get messages</h3>
        <label>Ack mode <select id="get-ackmode"><option value="ack_requeue_true">Nack message requeue true</option>
        <option value="ack_requeue_false">Ack message requeue false</option></select></label>
        <label>Messages <input id="get-count" type="number" value="1" min="1"></label>
        <button type="submit" id="get-submit">Get Message(s)</button><div id="get-result"></div></form>
      <div class="box"><h3>Purge</h3><button id="purge">Purge Messages</button></div>
      <div class="box"><h3>Delete</h3><button id="delete-queue">Delete Queue</button></div>` + publishForm();
    $("#get-form").onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const ms = await api("POST", `/queues/${enc(vhost)}/${enc(name)}/get`, { count: Number($("#get-count").value), ackmode: $("#get-ackmode").value, encoding: "auto", truncate: 50000 });
        $("#get-result").innerHTML = ms.length === 0 ? `<p id="get-empty">Queue is empty</p>` :
          ms.map((m, i) => `<h4>Message ${i + 1}</h4><p>Exchange ${esc(m.exchange)}, routing key ${esc(m.routing_key)}, redelivered ${m.redelivered}</p><pre class="payload">${esc(m.payload)}</pre>`).join("");
      } catch (e) { flash(e.message, true); }
    };
    $("#purge").onclick = () => act(() => api("DELETE", `/queues/${enc(vhost)}/${enc(name)}/contents`), "Queue purged");
    $("#delete-queue").onclick = () => act(async () => { await api("DELETE", `/queues/${enc(vhost)}/${enc(name)}`); location.hash = "#/queues"; }, "Queue deleted");
    wirePublish(vhost, "amq.default", name);
  },

  async admin() {
    const [us, vs, ps, pols] = await Promise.all([api("GET", "/users"), api("GET", "/vhosts"), api("GET", "/permissions"), api("GET", "/policies")]);
    $("#page").innerHTML = `<h1>Admin</h1><h2>Users</h2>` + table("users-table", [
      ["Name", (u) => esc(u.name)], ["Tags", (u) => esc(u.tags.join(", "))],
    ], us) + `<form class="box" id="add-user"><h3>Add a user</h3>
      <label>Username <input id="user-name" required></label><label>Password <input id="user-pass" type="password" required></label>
      <label>Tags <input id="user-tags" placeholder="administrator, monitoring, management"></label><button type="submit">Add user</button></form>
      <h2>Virtual hosts</h2>` + table("vhosts-table", [["Name", (v) => esc(v.name)], ["Messages", (v) => v.messages]], vs) +
      `<form class="box" id="add-vhost"><h3>Add a virtual host</h3><label>Name <input id="vhost-name" required></label><button type="submit">Add virtual host</button></form>
      <h2>Permissions</h2>` + table("permissions-table", [["User", (p) => esc(p.user)], ["Vhost", (p) => esc(p.vhost)],
        ["Configure", (p) => esc(p.configure)], ["Write", (p) => esc(p.write)], ["Read", (p) => esc(p.read)]], ps) +
      `<form class="box" id="set-permission"><h3>Set permission</h3>
      <label>User <select id="perm-user">${us.map((u) => `<option>${esc(u.name)}</option>`).join("")}</select></label>
      <label>Vhost ${vhostSelect(vs, "perm-vhost")}</label>
      <label>Configure <input id="perm-configure" value=".*"></label><label>Write <input id="perm-write" value=".*"></label>
      <label>Read <input id="perm-read" value=".*"></label><button type="submit">Set permission</button></form>
      <h2>Policies</h2>` + table("policies-table", [["Vhost", (p) => esc(p.vhost)], ["Name", (p) => esc(p.name)], ["Pattern", (p) => esc(p.pattern)],
        ["Apply to", (p) => esc(p["apply-to"])], ["Definition", (p) => esc(JSON.stringify(p.definition))], ["Priority", (p) => p.priority]], pols);
    $("#add-user").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PUT", "/users/" + enc($("#user-name").value),
      { password: $("#user-pass").value, tags: $("#user-tags").value }), "User added"); };
    $("#add-vhost").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PUT", "/vhosts/" + enc($("#vhost-name").value)), "Virtual host added"); };
    $("#set-permission").onsubmit = (ev) => { ev.preventDefault(); act(() => api("PUT", `/permissions/${enc($("#perm-vhost").value)}/${enc($("#perm-user").value)}`,
      { configure: $("#perm-configure").value, write: $("#perm-write").value, read: $("#perm-read").value }), "Permission set"); };
  },
};

function vhostSelect(vs, id) {
  return `<select id="${id}">${vs.map((v) => `<option>${esc(v.name)}</option>`).join("")}</select>`;
}

function publishForm() {
  return `<form class="box" id="publish-form"><h3>Publish message</h3>
    <label>Routing key <input id="pub-key"></label>
    <label>Delivery mode <select id="pub-mode"><option value="1">1 - Non-persistent</option><option value="2">2 - Persistent</option></select></label>
    <label>Payload <textarea id="pub-payload" rows="4" cols="50"></textarea></label>
    <button type="submit" id="pub-submit">Publish message</button></form>`;
}

function wirePublish(vhost, exchange, fixedKey) {
  if (fixedKey !== undefined) $("#pub-key").value = fixedKey;
  $("#publish-form").onsubmit = (ev) => {
    ev.preventDefault();
    act(async () => {
      const r = await api("POST", `/exchanges/${enc(vhost)}/${enc(exchange)}/publish`, {
        routing_key: $("#pub-key").value, payload: $("#pub-payload").value, payload_encoding: "string",
        properties: { delivery_mode: Number($("#pub-mode").value) },
      });
      if (!r.routed) throw new Error("Message published, but not routed");
    }, "Message published");
  };
}

async function act(fn, ok) {
  try { await fn(); flash(ok); await render(); } catch (e) { flash(e.message, true); }
}

function drawChart() {
  const c = $("#rates-chart");
  if (!c) return;
  const g = c.getContext("2d"), w = c.width, h = c.height, pts = state.chart;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...pts.map((p) => Math.max(p.publish, p.deliver, p.ack)));
  g.fillStyle = "#666"; g.fillText(max.toFixed(0) + " msg/s", 4, 12);
  const series = [["publish", "#e67e22"], ["deliver", "#2980b9"], ["ack", "#27ae60"]];
  series.forEach(([k, col], i) => {
    g.strokeStyle = col; g.beginPath();
    pts.forEach((p, j) => { const x = (j / 119) * (w - 10) + 5, y = h - 5 - (p[k] / max) * (h - 20); j ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke(); g.fillStyle = col; g.fillText(k, w - 60, 14 + i * 12);
  });
}

async function render() {
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  const page = pages[parts[0]] ? parts[0] : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  try { await pages[page](...parts.slice(1)); } catch (e) { flash(e.message, true); }
}

async function login(user, pass) {
  state.auth = btoa(user + ":" + pass);
  try {
    const me = await api("GET", "/whoami");
    sessionStorage.setItem("warren-auth", state.auth);
    $("#whoami").textContent = `User ${me.name}`;
    $("#login").hidden = true; $("#nav").hidden = false; $("#logout").hidden = false;
    await render();
    clearInterval(state.timer);
    state.timer = setInterval(() => { if (!document.querySelector("form:focus-within")) render(); }, 5000);
  } catch (e) {
    state.auth = null; sessionStorage.removeItem("warren-auth");
    $("#login").hidden = false; $("#login-error").textContent = e.message;
  }
}

$("#login-form").onsubmit = (ev) => { ev.preventDefault(); login($("#login-user").value, $("#login-pass").value); };
$("#logout").onclick = () => { sessionStorage.removeItem("warren-auth"); location.reload(); };
window.addEventListener("hashchange", () => { if (state.auth) render(); });
if (state.auth) {
  const [u, ...p] = atob(state.auth).split(":");
  login(u, p.join(":"));
} else {
  $("#login").hidden = false;
}
