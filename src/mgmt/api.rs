//! Dispatch of management API calls, and the read-only endpoints.

use super::auth::{self, Who};
use super::http::*;
use super::{Mgmt, shapes, write};
use crate::admin::BrokerSnapshot;
use axum::http::Method;
use axum::http::request::Parts;
use bytes::Bytes;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// Handles one request. Runs on a blocking thread (admin calls wait on the shards).
pub fn dispatch(m: &Mgmt, peer: SocketAddr, parts: Parts, body: Bytes) -> Reply {
    let call = Call {
        method: parts.method,
        segs: split_path(parts.uri.path()),
        query: parse_query(parts.uri.query()),
        headers: parts.headers,
        body,
        peer,
    };
    let mut reply = match route(m, &call) {
        Ok(r) | Err(r) => r,
    };
    // Scripted callers (the web UI) handle a 401 themselves: a challenge
    // would make the browser pop up its own login dialog.
    if call.headers.contains_key("x-requested-with") {
        reply.headers.retain(|(name, _)| *name != "www-authenticate");
    }
    reply
}

fn route(m: &Mgmt, call: &Call) -> Res {
    let segs: Vec<&str> = call.segs.iter().map(|s| s.as_str()).collect();
    match segs.as_slice() {
        [] | ["index.html"] | ["js", ..] | ["css", ..] | ["app.js"] | ["style.css"] => super::ui::serve(call),
        ["metrics"] | ["metrics", "per-object"] => {
            let snap = snapshot(m)?;
            Ok(Reply::text(
                "text/plain; version=0.0.4",
                super::metrics::render(m, &snap, segs.len() == 2),
            ))
        }
        ["api", rest @ ..] => {
            // No credentials, no work: a snapshot asks every shard.
            if !call.headers.contains_key("authorization") {
                return Err(not_authorised("Login failed"));
            }
            let users = m
                .admin
                .users()
                .map_err(|e| Reply::error(503, "service_unavailable", &e))?;
            let who = auth::authenticate(call, &users, &m.admin.config.loopback_users)?;
            let snap = snapshot(m)?;
            if call.method == Method::GET || call.method == Method::HEAD {
                read(m, call, &who, &snap, rest)
            } else {
                write::handle(m, call, &who, &snap, rest)
            }
        }
        _ => Err(not_found()),
    }
}

pub fn snapshot(m: &Mgmt) -> Result<BrokerSnapshot, Reply> {
    m.admin
        .snapshot()
        .map_err(|e| Reply::error(503, "service_unavailable", &e))
}

/// 404 unless the vhost exists and the caller may see it.
pub fn visible_vhost(who: &Who, snap: &BrokerSnapshot, vhost: &str) -> Result<(), Reply> {
    if !snap.vhosts.iter().any(|v| v.name == vhost) {
        return Err(not_found());
    }
    if !who.sees_vhost(vhost) {
        return Err(forbidden("Access refused."));
    }
    Ok(())
}

pub fn need_admin(who: &Who) -> Result<(), Reply> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(forbidden("Not administrator user"))
    }
}

fn need_monitor(who: &Who) -> Result<(), Reply> {
    if who.is_monitor() {
        Ok(())
    } else {
        Err(forbidden("Not monitor user"))
    }
}

/// A list answer with RabbitMQ's query parameters: `sort` (a field, dotted
/// for nested ones) and `sort_reverse` always; with `page` (and
/// `page_size`, 1..=500, 100 by default) an envelope of one page, the
/// items filtered by `name` (a case-insensitive substring, or with
/// `use_regex=true` a case-insensitive regex). As in RabbitMQ, `name`
/// filters only paginated requests, and a page past the end is empty.
fn list(mut items: Vec<Value>, call: &Call) -> Res {
    let q = &call.query;
    if let Some(key) = q.get("sort").filter(|k| !k.is_empty()) {
        let field = |v: &Value| {
            key.split('.')
                .try_fold(v, |v, k| v.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        items.sort_by(|a, b| compare_json(&field(a), &field(b)));
        if q.get("sort_reverse").is_some_and(|r| r == "true") {
            items.reverse();
        }
    }
    let Some(page) = q.get("page") else {
        return Ok(Reply::json(&items));
    };
    let invalid = || bad_request("Pagination parameters are invalid");
    let page: usize = page.parse().map_err(|_| invalid())?;
    let size = match q.get("page_size") {
        Some(s) => Some(s.parse::<usize>().map_err(|_| invalid())?),
        None => None,
    };
    if page == 0 || size.is_some_and(|s| s == 0 || s > 500) {
        let size = size.map_or("undefined".to_string(), |s| s.to_string());
        return Err(Reply::error(
            400,
            "invalid_pagination_parameters",
            &format!("Invalid pagination parameters: page number {page}, page size {size}"),
        ));
    }
    let size = size.unwrap_or(100);
    let total = items.len();
    if let Some(name) = q.get("name").filter(|n| !n.is_empty()) {
        let name_of = |v: &Value| v.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if q.get("use_regex").is_some_and(|r| r == "true") {
            let re = regex::RegexBuilder::new(name)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|_| invalid())?;
            items.retain(|v| re.is_match(&name_of(v)));
        } else {
            let needle = name.to_lowercase();
            items.retain(|v| name_of(v).to_lowercase().contains(&needle));
        }
    }
    let filtered = items.len();
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .collect();
    Ok(Reply::json(&json!({
        "filtered_count": filtered, "item_count": slice.len(), "items": slice,
        "page": page, "page_count": filtered.div_ceil(size), "page_size": size, "total_count": total,
    })))
}

/// Orders JSON values for `sort`: missing first, then booleans, numbers
/// by value, strings.
fn compare_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.total_cmp(&y)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

fn one(v: Option<Value>) -> Res {
    v.map(|v| Reply::json(&v)).ok_or_else(not_found)
}

/// `amq.default` in a URL names the default exchange, as in RabbitMQ.
pub fn exchange_name(s: &str) -> &str {
    if s == "amq.default" { "" } else { s }
}

fn read(m: &Mgmt, call: &Call, who: &Who, snap: &BrokerSnapshot, p: &[&str]) -> Res {
    let rates = &m.rates;
    let conn_of = |name: &str| snap.connections.iter().find(|c| c.name == name);
    let consumers_of = |vhost: &str, queue: &str| -> Vec<Value> {
        snap.consumers
            .iter()
            .filter(|c| c.vhost == vhost && c.queue == queue)
            .map(|c| shapes::consumer(m, c, conn_of(&c.connection)))
            .collect()
    };
    if let Some(r) = super::limits::read(who, snap, p) {
        return r;
    }
    match p {
        ["overview"] => Ok(Reply::json(&overview(m, who, snap))),
        ["whoami"] => Ok(Reply::json(&json!({ "name": who.name, "tags": who.tags }))),
        ["warren", "cluster"] => {
            need_monitor(who)?;
            let v = m
                .admin
                .cluster(crate::admin::ClusterCmd::Status)
                .map_err(|e| Reply::error(500, "internal_error", &e))?;
            Ok(Reply::json(&v))
        }
        ["nodes"] => {
            need_monitor(who)?;
            Ok(Reply::json(&Value::Array(nodes(m, snap))))
        }
        ["nodes", name] => {
            need_monitor(who)?;
            match nodes(m, snap).into_iter().find(|n| n["name"] == *name) {
                Some(n) => Ok(Reply::json(&n)),
                None => Err(not_found()),
            }
        }
        ["extensions"] => Ok(Reply::json(&json!([]))),
        ["cluster-name"] => Ok(Reply::json(&json!({ "name": m.node }))),
        ["connections"] => list(
            snap.connections
                .iter()
                .filter(|c| who.sees_user_objects(&c.user))
                .map(|c| shapes::connection(m, c, rates))
                .collect(),
            call,
        ),
        ["connections", name] => one(conn_of(name)
            .filter(|c| who.sees_user_objects(&c.user))
            .map(|c| shapes::connection(m, c, rates))),
        ["connections", name, "channels"] => list(
            snap.channels
                .iter()
                .filter(|c| c.connection == *name && who.sees_user_objects(&c.user))
                .map(|c| shapes::channel(m, c, conn_of(&c.connection)))
                .collect(),
            call,
        ),
        ["vhosts", v, "connections"] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.connections
                    .iter()
                    .filter(|c| c.vhost == *v && who.sees_user_objects(&c.user))
                    .map(|c| shapes::connection(m, c, rates))
                    .collect(),
                call,
            )
        }
        ["channels"] => list(
            snap.channels
                .iter()
                .filter(|c| who.sees_user_objects(&c.user))
                .map(|c| shapes::channel(m, c, conn_of(&c.connection)))
                .collect(),
            call,
        ),
        ["vhosts", v, "channels"] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.channels
                    .iter()
                    .filter(|c| c.vhost == *v && who.sees_user_objects(&c.user))
                    .map(|c| shapes::channel(m, c, conn_of(&c.connection)))
                    .collect(),
                call,
            )
        }
        ["channels", name] => one(snap
            .channels
            .iter()
            .find(|c| shapes::channel_name(&c.connection, c.number) == *name)
            .filter(|c| who.sees_user_objects(&c.user))
            .map(|c| shapes::channel(m, c, conn_of(&c.connection)))),
        ["consumers"] => list(
            snap.consumers
                .iter()
                .filter(|c| who.sees_vhost(&c.vhost))
                .map(|c| shapes::consumer(m, c, conn_of(&c.connection)))
                .collect(),
            call,
        ),
        ["consumers", v] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.consumers
                    .iter()
                    .filter(|c| c.vhost == *v)
                    .map(|c| shapes::consumer(m, c, conn_of(&c.connection)))
                    .collect(),
                call,
            )
        }
        ["exchanges"] => list(
            snap.exchanges
                .iter()
                .filter(|e| who.sees_vhost(&e.vhost))
                .map(shapes::exchange)
                .collect(),
            call,
        ),
        ["exchanges", v] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.exchanges
                    .iter()
                    .filter(|e| e.vhost == *v)
                    .map(shapes::exchange)
                    .collect(),
                call,
            )
        }
        ["exchanges", v, name] => {
            visible_vhost(who, snap, v)?;
            let name = exchange_name(name);
            one(snap
                .exchanges
                .iter()
                .find(|e| e.vhost == *v && e.name == name)
                .map(shapes::exchange))
        }
        ["exchanges", v, name, "bindings", dir @ ("source" | "destination")] => {
            visible_vhost(who, snap, v)?;
            let name = exchange_name(name);
            if !snap.exchanges.iter().any(|e| e.vhost == *v && e.name == name) {
                return Err(not_found());
            }
            list(
                shapes::all_bindings(snap)
                    .iter()
                    .filter(|b| {
                        b.vhost == *v
                            && if *dir == "source" {
                                b.source == name
                            } else {
                                b.destination_type == "exchange" && b.destination == name
                            }
                    })
                    .map(shapes::binding)
                    .collect(),
                call,
            )
        }
        ["queues"] => list(
            snap.queues
                .iter()
                .filter(|q| who.sees_vhost(&q.vhost))
                .map(|q| shapes::queue(m, snap, q, None, rates))
                .collect(),
            call,
        ),
        ["queues", v] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.queues
                    .iter()
                    .filter(|q| q.vhost == *v)
                    .map(|q| shapes::queue(m, snap, q, None, rates))
                    .collect(),
                call,
            )
        }
        ["queues", v, name] => {
            visible_vhost(who, snap, v)?;
            one(snap
                .queue(v, name)
                .map(|q| shapes::queue(m, snap, q, Some(consumers_of(v, name)), rates)))
        }
        ["queues", v, name, "bindings"] => {
            visible_vhost(who, snap, v)?;
            if snap.queue(v, name).is_none() {
                return Err(not_found());
            }
            list(
                shapes::all_bindings(snap)
                    .iter()
                    .filter(|b| b.vhost == *v && b.destination_type == "queue" && b.destination == *name)
                    .map(shapes::binding)
                    .collect(),
                call,
            )
        }
        ["bindings"] => list(
            shapes::all_bindings(snap)
                .iter()
                .filter(|b| who.sees_vhost(&b.vhost))
                .map(shapes::binding)
                .collect(),
            call,
        ),
        ["bindings", v] => {
            visible_vhost(who, snap, v)?;
            list(
                shapes::all_bindings(snap)
                    .iter()
                    .filter(|b| b.vhost == *v)
                    .map(shapes::binding)
                    .collect(),
                call,
            )
        }
        ["bindings", v, "e", src, kind @ ("q" | "e"), dst, rest @ ..] if rest.len() <= 1 => {
            visible_vhost(who, snap, v)?;
            let src = exchange_name(src);
            let dtype = if *kind == "q" { "queue" } else { "exchange" };
            let found: Vec<Value> = shapes::all_bindings(snap)
                .iter()
                .filter(|b| {
                    b.vhost == *v && b.source == src && b.destination_type == dtype && b.destination == *dst
                })
                .map(shapes::binding)
                .filter(|b| {
                    rest.first()
                        .is_none_or(|k| shapes::props_match(b["properties_key"].as_str().unwrap_or(""), k))
                })
                .collect();
            match rest.first() {
                None => list(found, call),
                Some(_) => one(found.into_iter().next()),
            }
        }
        ["vhosts"] => list(
            snap.vhosts
                .iter()
                .filter(|v| who.sees_vhost(&v.name))
                .map(|v| shapes::vhost(m, snap, &v.name, rates))
                .collect(),
            call,
        ),
        ["vhosts", v] => {
            visible_vhost(who, snap, v)?;
            Ok(Reply::json(&shapes::vhost(m, snap, v, rates)))
        }
        ["vhosts", v, "permissions"] => {
            need_admin(who)?;
            visible_vhost(who, snap, v)?;
            list(
                snap.permissions
                    .iter()
                    .filter(|p| p.vhost == *v)
                    .map(shapes::permission)
                    .collect(),
                call,
            )
        }
        ["users"] => {
            need_admin(who)?;
            list(snap.users.iter().map(shapes::user).collect(), call)
        }
        ["users", name] => {
            need_admin(who)?;
            one(snap.users.iter().find(|u| u.name == *name).map(shapes::user))
        }
        ["users", name, "permissions"] => {
            need_admin(who)?;
            if !snap.users.iter().any(|u| u.name == *name) {
                return Err(not_found());
            }
            list(
                snap.permissions
                    .iter()
                    .filter(|p| p.user == *name)
                    .map(shapes::permission)
                    .collect(),
                call,
            )
        }
        ["permissions"] => {
            need_admin(who)?;
            list(snap.permissions.iter().map(shapes::permission).collect(), call)
        }
        ["permissions", v, user] => {
            need_admin(who)?;
            one(snap
                .permissions
                .iter()
                .find(|p| p.vhost == *v && p.user == *user)
                .map(shapes::permission))
        }
        ["policies"] => list(
            snap.policies
                .iter()
                .filter(|p| who.sees_vhost(&p.vhost))
                .map(shapes::policy)
                .collect(),
            call,
        ),
        ["policies", v] => {
            visible_vhost(who, snap, v)?;
            list(
                snap.policies
                    .iter()
                    .filter(|p| p.vhost == *v)
                    .map(shapes::policy)
                    .collect(),
                call,
            )
        }
        ["policies", v, name] => {
            visible_vhost(who, snap, v)?;
            one(snap
                .policies
                .iter()
                .find(|p| p.vhost == *v && p.name == *name)
                .map(shapes::policy))
        }
        ["definitions"] => {
            need_admin(who)?;
            Ok(Reply::json(&super::definitions::export(snap, None)))
        }
        ["definitions", v] => {
            need_admin(who)?;
            visible_vhost(who, snap, v)?;
            Ok(Reply::json(&super::definitions::export(snap, Some(v))))
        }
        ["aliveness-test", v] => {
            visible_vhost(who, snap, v)?;
            write::aliveness(m, who, v)
        }
        ["healthchecks", "node", node] if *node != m.node => Err(not_found()),
        ["healthchecks", "node"]
        | ["healthchecks", "node", _]
        | ["health", "checks", "alarms"]
        | ["health", "checks", "local-alarms"] => {
            let st = &m.admin.stats;
            let on = |a: &std::sync::atomic::AtomicBool| a.load(std::sync::atomic::Ordering::Relaxed);
            let alarms: Vec<Value> = [("memory", on(&st.memory_alarm)), ("disk", on(&st.disk_alarm))]
                .into_iter()
                .filter(|(_, set)| *set)
                .map(|(resource, _)| json!({ "node": m.node, "resource": resource }))
                .collect();
            if !alarms.is_empty() {
                let mut r = Reply::json(&json!({
                    "status": "failed",
                    "reason": "resource alarm(s) in effect in the cluster",
                    "alarms": alarms,
                }));
                r.status = 503;
                return Ok(r);
            }
            Ok(Reply::json(&json!({ "status": "ok" })))
        }
        ["health", "checks", "port-listener", port] => {
            let ok = port.parse::<u16>().ok() == Some(m.admin.amqp_addr.port())
                || port.parse::<u16>().ok() == Some(m.listen.port());
            health(ok, &format!("No active listener on port {port}"))
        }
        ["health", "checks", "protocol-listener", proto] => {
            let ok = matches!(*proto, "amqp" | "amqp091" | "amqp0-9-1" | "http");
            health(ok, &format!("No active listener for protocol {proto}"))
        }
        ["health", "checks", "virtual-hosts"] => Ok(Reply::json(&json!({ "status": "ok" }))),
        ["health", "checks", "node-is-quorum-critical"]
        | ["health", "checks", "node-is-mirror-sync-critical"] => Ok(Reply::json(&json!({ "status": "ok" }))),
        ["health", "checks", "certificate-expiration", ..] => Ok(Reply::json(&json!({ "status": "ok" }))),
        _ => Err(not_found()),
    }
}

fn health(ok: bool, reason: &str) -> Res {
    if ok {
        Ok(Reply::json(&json!({ "status": "ok" })))
    } else {
        let mut r = Reply::json(&json!({ "status": "failed", "reason": reason }));
        r.status = 503;
        Ok(r)
    }
}

fn overview(m: &Mgmt, who: &Who, snap: &BrokerSnapshot) -> Value {
    let visible = |v: &str| who.sees_vhost(v);
    let queues: Vec<_> = snap.queues.iter().filter(|q| visible(&q.vhost)).collect();
    let (ready, unacked): (u64, u64) = queues.iter().fold((0, 0), |(r, u), q| {
        (r + q.messages_ready, u + q.messages_unacknowledged)
    });
    let mut counters = crate::admin::QueueCounters::default();
    for q in &queues {
        counters.add(&q.counters);
    }
    let total = m.rates.total();
    let (publish_in, confirm_rate) = m.rates.publish_confirm();
    let routed: u64 = snap.shards.iter().map(|s| s.routed).sum();
    let confirmed: u64 = snap.connections.iter().map(|c| c.confirmed).sum();
    let mut stats = shapes::message_stats(&counters, &total);
    stats["publish"] = json!(routed);
    stats["publish_details"] = json!({ "rate": (publish_in * 10.0).round() / 10.0 });
    stats["confirm"] = json!(confirmed);
    stats["confirm_details"] = json!({ "rate": (confirm_rate * 10.0).round() / 10.0 });
    let exchange_types: Vec<Value> = ["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|t| json!({ "name": t, "description": format!("AMQP {t} exchange, as per the AMQP specification"), "enabled": true }))
        .collect();
    let r1 = |x: f64| json!({ "rate": (x * 10.0).round() / 10.0 });
    json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "product_name": "warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "3.10.8",
        "cluster_name": m.node,
        "node": m.node,
        "exchange_types": exchange_types,
        "disable_stats": false,
        "statistics_db_event_queue": 0,
        "sample_retention_policies": { "global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600] },
        "enable_queue_totals": false,
        "message_stats": stats,
        "queue_totals": {
            "messages": ready + unacked, "messages_details": r1(total.messages),
            "messages_ready": ready, "messages_ready_details": r1(total.messages_ready),
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": r1(total.messages_unacked),
        },
        "object_totals": {
            "connections": snap.connections.iter().filter(|c| who.sees_user_objects(&c.user)).count(),
            "channels": snap.channels.iter().filter(|c| who.sees_user_objects(&c.user)).count(),
            "exchanges": snap.exchanges.iter().filter(|e| visible(&e.vhost)).count(),
            "queues": queues.len(),
            "consumers": snap.consumers.iter().filter(|c| visible(&c.vhost)).count(),
        },
        "listeners": listeners(m),
        "contexts": [{ "node": m.node, "description": "RabbitMQ Management", "path": "/", "port": m.listen.port().to_string() }],
    })
}

/// As RabbitMQ names them: amqp, amqp/ssl, http, https.
fn listeners(m: &Mgmt) -> Value {
    let one = |protocol: &str, a: std::net::SocketAddr| json!({ "node": m.node, "protocol": protocol, "ip_address": a.ip().to_string(), "port": a.port() });
    let mut out = vec![one("amqp", m.admin.amqp_addr)];
    if let Some(a) = m.admin.amqps_addr {
        out.push(one("amqp/ssl", a));
    }
    out.push(one("http", m.listen));
    if let Some(a) = m.listen_tls {
        out.push(one("https", a));
    }
    Value::Array(out)
}

/// Every node of the cluster: this one with its figures, the others as
/// the cluster sees them (RabbitMQ shows each node's own figures; warren
/// shows name, type and state for the others).
fn nodes(m: &Mgmt, snap: &BrokerSnapshot) -> Vec<Value> {
    let me = node(m, snap);
    let Ok(status) = m.admin.cluster(crate::admin::ClusterCmd::Status) else {
        return vec![me];
    };
    let mut out = Vec::new();
    for n in status["nodes"].as_array().into_iter().flatten() {
        if n["name"] == m.node.as_str() {
            let mut me = me.clone();
            me["type"] = n["type"].clone();
            me["running"] = json!(true);
            me["app_running"] = n["app_running"].clone();
            out.push(me);
        } else {
            out.push(json!({
                "name": n["name"],
                "type": n["type"],
                "running": n["running"],
                "app_running": n["app_running"],
                "partitions": [],
            }));
        }
    }
    if out.is_empty() {
        out.push(me);
    }
    out
}

fn node(m: &Mgmt, snap: &BrokerSnapshot) -> Value {
    let uptime = m.admin.started.elapsed().map_or(0, |d| d.as_millis() as u64);
    json!({
        "name": m.node,
        "type": "disc",
        "running": true,
        "app_running": m.admin.app_running(),
        "os_pid": std::process::id().to_string(),
        "mem_used": crate::shard::allocated(),
        "mem_limit": m.admin.config.limits.memory_high_watermark,
        "mem_alarm": m.admin.stats.memory_alarm.load(std::sync::atomic::Ordering::Relaxed),
        "disk_free_alarm": m.admin.stats.disk_alarm.load(std::sync::atomic::Ordering::Relaxed),
        "disk_free": m.admin.stats.disk_free.load(std::sync::atomic::Ordering::Relaxed),
        "disk_free_limit": m.admin.stats.disk_free_limit.load(std::sync::atomic::Ordering::Relaxed),
        "fd_used": open_fds(),
        "fd_total": fd_limit(),
        "sockets_used": snap.connections.len(),
        "processors": m.admin.shards(),
        "uptime": uptime,
        "rates_mode": "basic",
        "partitions": [],
        "warren_shards": snap.shards,
    })
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}
