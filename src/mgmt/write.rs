//! The endpoints that change the broker: PUT, POST and DELETE.

use super::api::{exchange_name, need_admin, visible_vhost};
use super::auth::Who;
use super::http::*;
use super::{Mgmt, shapes};
use crate::admin::json::{json_to_props, json_to_table};
use crate::admin::{AdminOp, BrokerSnapshot, ClusterCmd, GetMode};
use crate::broker::request::Request;
use crate::protocol::{FieldTable, ShortStr};
use axum::http::Method;
use base64::Engine;
use serde_json::{Value, json};

pub fn short(s: &str) -> Result<ShortStr, Reply> {
    ShortStr::new(bytes::Bytes::copy_from_slice(s.as_bytes()))
        .ok_or_else(|| bad_request(&format!("name too long (255 bytes at most): {s}")))
}

fn flag(body: &Value, key: &str, default: bool) -> Result<bool, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(_) => Err(bad_request(&format!("{key} must be a boolean"))),
    }
}

fn text<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(&format!("{key} must be a string"))),
    }
}

fn arguments(body: &Value) -> Result<FieldTable, Reply> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(a) => json_to_table(a).map_err(|e| bad_request(&e)),
    }
}

/// Runs an AMQP-equivalent request as the caller (their permissions apply).
pub fn amqp(m: &Mgmt, who: &Who, vhost: &str, req: Request) -> Result<(), Reply> {
    m.admin
        .control(
            &who.name,
            AdminOp::Amqp {
                vhost: vhost.to_string(),
                req,
            },
        )
        .map_err(|e| from_amqp(&e))
}

pub(super) fn control(m: &Mgmt, who: &Who, op: AdminOp) -> Result<(), Reply> {
    m.admin.control(&who.name, op).map_err(|e| from_amqp(&e))
}

pub fn handle(m: &Mgmt, call: &Call, who: &Who, snap: &BrokerSnapshot, p: &[&str]) -> Res {
    if let Some(r) = super::limits::write(m, call, who, snap, p) {
        return r;
    }
    let method = &call.method;
    match (method, p) {
        (&Method::PUT, ["vhosts", v]) => {
            need_admin(who)?;
            let exists = snap.vhosts.iter().any(|x| x.name == *v);
            if !exists {
                control(m, who, AdminOp::AddVhost { name: v.to_string() })?;
                // RabbitMQ's API grants the creator full permissions on it.
                control(
                    m,
                    who,
                    AdminOp::SetPermissions {
                        user: who.name.clone(),
                        vhost: v.to_string(),
                        configure: ".*".into(),
                        write: ".*".into(),
                        read: ".*".into(),
                    },
                )?;
            }
            Ok(Reply::created_or_updated(!exists))
        }
        (&Method::DELETE, ["vhosts", v]) => {
            need_admin(who)?;
            if !snap.vhosts.iter().any(|x| x.name == *v) {
                return Err(not_found());
            }
            control(m, who, AdminOp::DeleteVhost { name: v.to_string() })?;
            Ok(Reply::empty(204))
        }
        (&Method::PUT, ["users", name]) => {
            need_admin(who)?;
            put_user(m, who, snap, name, &call.json()?)
        }
        (&Method::DELETE, ["users", name]) => {
            need_admin(who)?;
            if !snap.users.iter().any(|u| u.name == *name) {
                return Err(not_found());
            }
            control(
                m,
                who,
                AdminOp::DeleteUser {
                    name: name.to_string(),
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["users", "bulk-delete"]) => {
            need_admin(who)?;
            let body = call.json()?;
            let users = body
                .get("users")
                .and_then(|u| u.as_array())
                .ok_or_else(|| bad_request("users must be a list"))?;
            for u in users.iter().filter_map(|u| u.as_str()) {
                if snap.users.iter().any(|x| x.name == u) {
                    control(m, who, AdminOp::DeleteUser { name: u.to_string() })?;
                }
            }
            Ok(Reply::empty(204))
        }
        (&Method::PUT, ["permissions", v, user]) => {
            need_admin(who)?;
            if !snap.vhosts.iter().any(|x| x.name == *v) || !snap.users.iter().any(|u| u.name == *user) {
                return Err(bad_request("vhost or user not found"));
            }
            let body = call.json()?;
            let field = |k: &str| -> Result<String, Reply> {
                Ok(text(&body, k)?
                    .ok_or_else(|| bad_request(&format!("{k} is required")))?
                    .to_string())
            };
            let exists = snap.permissions.iter().any(|x| x.vhost == *v && x.user == *user);
            control(
                m,
                who,
                AdminOp::SetPermissions {
                    user: user.to_string(),
                    vhost: v.to_string(),
                    configure: field("configure")?,
                    write: field("write")?,
                    read: field("read")?,
                },
            )?;
            Ok(Reply::created_or_updated(!exists))
        }
        (&Method::DELETE, ["permissions", v, user]) => {
            need_admin(who)?;
            if !snap.permissions.iter().any(|x| x.vhost == *v && x.user == *user) {
                return Err(not_found());
            }
            control(
                m,
                who,
                AdminOp::ClearPermissions {
                    user: user.to_string(),
                    vhost: v.to_string(),
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::PUT, ["policies", v, name]) => {
            visible_vhost(who, snap, v)?;
            if !who.is_policymaker() {
                return Err(forbidden("Not policymaker user"));
            }
            let body = call.json()?;
            let exists = snap.policies.iter().any(|x| x.vhost == *v && x.name == *name);
            control(m, who, policy_op(v, name, &body)?)?;
            Ok(Reply::created_or_updated(!exists))
        }
        (&Method::DELETE, ["policies", v, name]) => {
            visible_vhost(who, snap, v)?;
            if !who.is_policymaker() {
                return Err(forbidden("Not policymaker user"));
            }
            control(
                m,
                who,
                AdminOp::ClearPolicy {
                    vhost: v.to_string(),
                    name: name.to_string(),
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::PUT, ["exchanges", v, name]) => {
            visible_vhost(who, snap, v)?;
            let body = call.json()?;
            let kind_s = text(&body, "type")?.ok_or_else(|| bad_request("type is required"))?;
            let kind = crate::routing::ExchangeKind::parse(kind_s.as_bytes())
                .ok_or_else(|| bad_request(&format!("invalid exchange type '{kind_s}'")))?;
            let exists = snap.exchanges.iter().any(|e| e.vhost == *v && e.name == *name);
            amqp(
                m,
                who,
                v,
                Request::ExchangeDeclare {
                    name: short(name)?,
                    kind,
                    passive: false,
                    durable: flag(&body, "durable", true)?,
                    auto_delete: flag(&body, "auto_delete", false)?,
                    internal: flag(&body, "internal", false)?,
                    args: arguments(&body)?,
                },
            )?;
            Ok(Reply::created_or_updated(!exists))
        }
        (&Method::DELETE, ["exchanges", v, name]) => {
            visible_vhost(who, snap, v)?;
            if !snap.exchanges.iter().any(|e| e.vhost == *v && e.name == *name) {
                return Err(not_found());
            }
            amqp(
                m,
                who,
                v,
                Request::ExchangeDelete {
                    name: short(name)?,
                    if_unused: call.query_flag("if-unused"),
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["exchanges", v, name, "publish"]) => {
            visible_vhost(who, snap, v)?;
            publish(m, who, v, exchange_name(name), &call.json()?)
        }
        (&Method::PUT, ["queues", v, name]) => {
            visible_vhost(who, snap, v)?;
            let body = call.json()?;
            let exists = snap.queue(v, name).is_some();
            amqp(
                m,
                who,
                v,
                Request::QueueDeclare {
                    name: short(name)?,
                    generated: false,
                    passive: false,
                    durable: flag(&body, "durable", true)?,
                    exclusive: false,
                    auto_delete: flag(&body, "auto_delete", false)?,
                    args: arguments(&body)?,
                },
            )?;
            Ok(Reply::created_or_updated(!exists))
        }
        (&Method::DELETE, ["queues", v, name]) => {
            visible_vhost(who, snap, v)?;
            if snap.queue(v, name).is_none() {
                return Err(not_found());
            }
            amqp(
                m,
                who,
                v,
                Request::QueueDelete {
                    queue: short(name)?,
                    if_unused: call.query_flag("if-unused"),
                    if_empty: call.query_flag("if-empty"),
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::DELETE, ["queues", v, name, "contents"]) => {
            visible_vhost(who, snap, v)?;
            if snap.queue(v, name).is_none() {
                return Err(not_found());
            }
            m.admin.purge(&who.name, v, name).map_err(|e| from_amqp(&e))?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["queues", v, name, "get"]) => {
            visible_vhost(who, snap, v)?;
            if snap.queue(v, name).is_none() {
                return Err(not_found());
            }
            get(m, who, v, name, &call.json()?)
        }
        (&Method::POST, ["queues", v, _, "actions"]) => {
            visible_vhost(who, snap, v)?;
            Err(bad_request(
                "classic queues have no actions in warren (no mirroring)",
            ))
        }
        (&Method::POST, ["bindings", v, "e", src, kind @ ("q" | "e"), dst]) => {
            visible_vhost(who, snap, v)?;
            let body = call.json()?;
            let key = text(&body, "routing_key")?.unwrap_or("").to_string();
            let args_json = body.get("arguments").cloned().unwrap_or(json!({}));
            let args = arguments(&body)?;
            let src = exchange_name(src);
            let req = if *kind == "q" {
                Request::QueueBind {
                    queue: short(dst)?,
                    exchange: short(src)?,
                    routing_key: short(&key)?,
                    args,
                }
            } else {
                Request::ExchangeBind {
                    destination: short(dst)?,
                    source: short(src)?,
                    routing_key: short(&key)?,
                    args,
                }
            };
            amqp(m, who, v, req)?;
            let props = shapes::properties_key(&key, &args_json);
            Ok(Reply::empty(201).with_header("location", props))
        }
        (&Method::DELETE, ["bindings", v, "e", src, kind @ ("q" | "e"), dst, props]) => {
            visible_vhost(who, snap, v)?;
            let src = exchange_name(src);
            let dtype = if *kind == "q" { "queue" } else { "exchange" };
            let b = snap
                .bindings
                .iter()
                .find(|b| {
                    b.vhost == *v
                        && b.source == src
                        && b.destination_type == dtype
                        && b.destination == *dst
                        && shapes::props_match(&shapes::properties_key(&b.routing_key, &b.arguments), props)
                })
                .ok_or_else(not_found)?;
            let args = json_to_table(&b.arguments).map_err(|e| bad_request(&e))?;
            let req = if *kind == "q" {
                Request::QueueUnbind {
                    queue: short(dst)?,
                    exchange: short(src)?,
                    routing_key: short(&b.routing_key)?,
                    args,
                }
            } else {
                Request::ExchangeUnbind {
                    destination: short(dst)?,
                    source: short(src)?,
                    routing_key: short(&b.routing_key)?,
                    args,
                }
            };
            amqp(m, who, v, req)?;
            Ok(Reply::empty(204))
        }
        (&Method::DELETE, ["connections", name]) => {
            let c = snap
                .connections
                .iter()
                .find(|c| c.name == *name)
                .filter(|c| who.is_admin() || c.user == who.name)
                .ok_or_else(not_found)?;
            let reason = call
                .headers
                .get("x-reason")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("Closed via management plugin")
                .to_string();
            if !m.admin.close_connection(&c.name, &reason) {
                return Err(not_found());
            }
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["definitions"]) => {
            need_admin(who)?;
            super::definitions::import(m, who, snap, &call.json()?, None)?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["definitions", v]) => {
            need_admin(who)?;
            visible_vhost(who, snap, v)?;
            super::definitions::import(m, who, snap, &call.json()?, Some(v))?;
            Ok(Reply::empty(204))
        }
        (&Method::PUT, ["warren", "disk-free-limit"]) => {
            need_admin(who)?;
            let body = call.json()?;
            let bytes = match (
                body.get("bytes").and_then(Value::as_u64),
                body.get("mem_relative").and_then(Value::as_f64),
            ) {
                (Some(b), None) => b,
                (None, Some(f)) if f >= 0.0 => (crate::config::physical_memory() as f64 * f) as u64,
                _ => return Err(bad_request("expected {\"bytes\": N} or {\"mem_relative\": F}")),
            };
            log::info!("disk free limit set to {bytes} bytes by '{}'", who.name);
            m.admin.set_disk_free_limit(bytes);
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["warren", "stop_app"]) => {
            need_admin(who)?;
            log::info!("stop_app requested through the management API by '{}'", who.name);
            let closed = m
                .admin
                .stop_app()
                .map_err(|e| Reply::error(500, "internal_error", &e))?;
            Ok(Reply::json(&serde_json::json!({ "closed": closed })))
        }
        (&Method::POST, ["warren", "start_app"]) => {
            need_admin(who)?;
            log::info!("start_app requested through the management API by '{}'", who.name);
            m.admin.start_app();
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["warren", "join_cluster"]) => {
            need_admin(who)?;
            let body = call.json()?;
            let node = node_arg(&body)?;
            let addr = body.get("address").and_then(Value::as_str).map(str::to_string);
            let ram = body.get("ram").and_then(Value::as_bool).unwrap_or(false);
            log::info!(
                "join_cluster {node} requested through the management API by '{}'",
                who.name
            );
            let v = m
                .admin
                .cluster(ClusterCmd::Join { node, addr, ram })
                .map_err(|e| bad_request(&e))?;
            Ok(Reply::json(&v))
        }
        (&Method::POST, ["warren", "forget_cluster_node"]) => {
            need_admin(who)?;
            let node = node_arg(&call.json()?)?;
            let v = m
                .admin
                .cluster(ClusterCmd::Forget { node })
                .map_err(|e| bad_request(&e))?;
            Ok(Reply::json(&v))
        }
        (&Method::POST, ["warren", "queues", v, q, "move"]) => {
            need_admin(who)?;
            visible_vhost(who, snap, v)?;
            let shard = call
                .json()?
                .get("shard")
                .and_then(Value::as_u64)
                .and_then(|s| crate::ids::ShardId::try_from(s).ok())
                .ok_or_else(|| bad_request("expected {\"shard\": N}"))?;
            log::info!(
                "queue '{q}' in vhost '{v}' moved to shard {shard} by '{}'",
                who.name
            );
            control(
                m,
                who,
                AdminOp::MoveQueue {
                    vhost: v.to_string(),
                    name: q.to_string(),
                    shard,
                },
            )?;
            Ok(Reply::empty(204))
        }
        (&Method::POST, ["warren", "quorum", how @ ("grow" | "shrink")]) => {
            need_admin(who)?;
            let body = call.json()?;
            let node = node_arg(&body)?;
            let grow = *how == "grow";
            let even = match (grow, body.get("strategy").and_then(Value::as_str)) {
                (false, _) | (true, Some("all")) => false,
                (true, Some("even")) => true,
                _ => {
                    return Err(bad_request(
                        "expected {\"node\": NAME, \"strategy\": \"all\"|\"even\"}",
                    ));
                }
            };
            log::info!(
                "quorum {how} {node} requested through the management API by '{}'",
                who.name
            );
            let v = m
                .admin
                .cluster(ClusterCmd::Replicas { node, grow, even })
                .map_err(|e| bad_request(&e))?;
            Ok(Reply::json(&v))
        }
        (&Method::POST, ["warren", "rename_cluster_node"]) => {
            need_admin(who)?;
            let body = call.json()?;
            let names: Vec<String> = body
                .get("nodes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if names.is_empty() || !names.len().is_multiple_of(2) {
                return Err(bad_request("expected {\"nodes\": [old1, new1, old2, new2, ...]}"));
            }
            let pairs: Vec<(String, String)> =
                names.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            log::info!(
                "rename_cluster_node {pairs:?} requested through the management API by '{}'",
                who.name
            );
            let v = m
                .admin
                .cluster(ClusterCmd::Rename { pairs })
                .map_err(|e| bad_request(&e))?;
            Ok(Reply::json(&v))
        }
        (&Method::POST, ["warren", "change_cluster_node_type"]) => {
            need_admin(who)?;
            let body = call.json()?;
            let ram = match body.get("type").and_then(Value::as_str) {
                Some("ram") => true,
                Some("disc" | "disk") => false,
                _ => return Err(bad_request("expected {\"type\": \"disc\"|\"ram\"}")),
            };
            let v = m
                .admin
                .cluster(ClusterCmd::ChangeType { ram })
                .map_err(|e| bad_request(&e))?;
            Ok(Reply::json(&v))
        }
        (&Method::POST, ["warren", "stop"]) => {
            need_admin(who)?;
            log::info!("stop requested through the management API by '{}'", who.name);
            m.admin.stop();
            Ok(Reply::empty(204))
        }
        _ => Err(method_not_allowed()),
    }
}

pub fn put_user(m: &Mgmt, who: &Who, snap: &BrokerSnapshot, name: &str, body: &Value) -> Res {
    if name.is_empty() || name.len() > 255 {
        return Err(bad_request("invalid user name"));
    }
    let existing = snap.users.iter().find(|u| u.name == name);
    let b64 = base64::engine::general_purpose::STANDARD;
    let hash = if let Some(p) = text(body, "password")? {
        let salt = crate::shard::random_salt();
        crate::broker::users::hash_password(p.as_bytes(), salt)
    } else if let Some(h) = text(body, "password_hash")? {
        if let Some(alg) = text(body, "hashing_algorithm")?
            && alg != crate::broker::users::HASHING_ALGORITHM
        {
            return Err(bad_request(&format!("unsupported hashing algorithm {alg}")));
        }
        let raw = b64
            .decode(h)
            .map_err(|_| bad_request("password_hash is not base64"))?;
        if !raw.is_empty() && raw.len() != 36 {
            return Err(bad_request("password_hash has the wrong length for SHA-256"));
        }
        raw
    } else if let Some(u) = existing {
        b64.decode(&u.password_hash).unwrap_or_default()
    } else {
        return Err(bad_request("password or password_hash must be set"));
    };
    let tags = parse_tags(body.get("tags"))?;
    let limits = super::limits::user_definition_limits(body)?;
    control(
        m,
        who,
        AdminOp::PutUser {
            name: name.to_string(),
            password_hash: hash,
            tags,
        },
    )?;
    super::limits::put_user_limits(m, who, name, limits)?;
    Ok(Reply::created_or_updated(existing.is_none()))
}

/// Tags as a list or a comma-separated string (both appear in the wild).
pub fn parse_tags(v: Option<&Value>) -> Result<Vec<String>, Reply> {
    let mut tags: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str())
            .map(|t| t.trim().to_string())
            .collect(),
        Some(_) => return Err(bad_request("tags must be a string or a list")),
    };
    tags.retain(|t| !t.is_empty());
    Ok(tags)
}

pub fn policy_op(vhost: &str, name: &str, body: &Value) -> Result<AdminOp, Reply> {
    let pattern = text(body, "pattern")?.ok_or_else(|| bad_request("pattern is required"))?;
    let definition = body
        .get("definition")
        .ok_or_else(|| bad_request("definition is required"))?;
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| bad_request("priority must be an integer"))?,
    };
    Ok(AdminOp::SetPolicy {
        vhost: vhost.to_string(),
        name: name.to_string(),
        pattern: pattern.to_string(),
        apply_to: text(body, "apply-to")?.unwrap_or("all").to_string(),
        priority,
        definition: json_to_table(definition).map_err(|e| bad_request(&e))?,
    })
}

fn publish(m: &Mgmt, who: &Who, vhost: &str, exchange: &str, body: &Value) -> Res {
    let key = text(body, "routing_key")?.ok_or_else(|| bad_request("routing_key is required"))?;
    let payload = text(body, "payload")?.ok_or_else(|| bad_request("payload is required"))?;
    let payload = match text(body, "payload_encoding")?.unwrap_or("string") {
        "string" => payload.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| bad_request("payload is not valid base64"))?,
        other => return Err(bad_request(&format!("invalid payload_encoding {other}"))),
    };
    let props = match body.get("properties") {
        None | Some(Value::Null) => Default::default(),
        Some(p) => json_to_props(p).map_err(|e| bad_request(&e))?,
    };
    let routed = m
        .admin
        .publish(&who.name, vhost, exchange, key, props, payload)
        .map_err(|e| from_amqp(&e))?;
    Ok(Reply::json(&json!({ "routed": routed })))
}

fn get(m: &Mgmt, who: &Who, vhost: &str, queue: &str, body: &Value) -> Res {
    let count = body
        .get("count")
        .and_then(|c| c.as_u64())
        .unwrap_or(1)
        .min(10_000) as u32;
    let mode = match text(body, "ackmode")?.ok_or_else(|| bad_request("ackmode is required"))? {
        "ack_requeue_true" | "reject_requeue_true" => GetMode::Requeue,
        "ack_requeue_false" | "reject_requeue_false" => GetMode::Remove,
        other => return Err(bad_request(&format!("invalid ackmode {other}"))),
    };
    let encoding = text(body, "encoding")?.unwrap_or("auto");
    if !matches!(encoding, "auto" | "base64") {
        return Err(bad_request("encoding must be auto or base64"));
    }
    let truncate = body.get("truncate").and_then(|t| t.as_u64()).map(|t| t as usize);
    let msgs = m
        .admin
        .get(&who.name, vhost, queue, count, mode)
        .map_err(|e| from_amqp(&e))?;
    let out: Vec<Value> = msgs
        .into_iter()
        .map(|msg| {
            let mut bytes = msg.payload.as_slice();
            if let Some(t) = truncate {
                bytes = &bytes[..bytes.len().min(t)];
            }
            let (payload, enc) = match std::str::from_utf8(bytes) {
                Ok(s) if encoding == "auto" => (s.to_string(), "string"),
                _ => (base64::engine::general_purpose::STANDARD.encode(bytes), "base64"),
            };
            json!({
                "payload_bytes": msg.payload_bytes,
                "redelivered": msg.redelivered,
                "exchange": msg.exchange,
                "routing_key": msg.routing_key,
                "message_count": msg.message_count,
                "properties": msg.properties,
                "payload": payload,
                "payload_encoding": enc,
            })
        })
        .collect();
    Ok(Reply::json(&out))
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it and
/// read the message back.
pub fn aliveness(m: &Mgmt, who: &Who, vhost: &str) -> Res {
    amqp(
        m,
        who,
        vhost,
        Request::QueueDeclare {
            name: short("aliveness-test")?,
            generated: false,
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: FieldTable::new(),
        },
    )?;
    let routed = m
        .admin
        .publish(
            &who.name,
            vhost,
            "",
            "aliveness-test",
            Default::default(),
            b"test_message".to_vec(),
        )
        .map_err(|e| from_amqp(&e))?;
    let got = m
        .admin
        .get(&who.name, vhost, "aliveness-test", 1, GetMode::Remove)
        .map_err(|e| from_amqp(&e))?;
    if routed && got.iter().any(|g| g.payload == b"test_message") {
        Ok(Reply::json(&json!({ "status": "ok" })))
    } else {
        let mut r = Reply::json(&json!({ "status": "failed", "reason": "message not read back" }));
        r.status = 503;
        Ok(r)
    }
}

/// The `{"node": NAME}` of a clustering request.
fn node_arg(body: &Value) -> Result<String, Reply> {
    body.get("node")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad_request("expected {\"node\": NAME}"))
}
