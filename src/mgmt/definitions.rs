//! Definitions export and import, in RabbitMQ's format (so a file exported
//! from RabbitMQ imports into warren and the other way round).

use super::Mgmt;
use super::auth::Who;
use super::http::{Reply, bad_request, from_amqp};
use super::limits::{Kind, validate, vhost_error};
use super::write::{amqp, parse_tags, policy_op, short};
use crate::admin::json::json_to_table;
use crate::admin::{AdminOp, BrokerSnapshot, LimitsOp};
use crate::broker::limits::{Limits, import_over_queue_limit, would_exceed_queues};
use crate::broker::request::Request;
use base64::Engine;
use serde_json::{Value, json};

pub fn export(snap: &BrokerSnapshot, vhost: Option<&str>) -> Value {
    let keep = |v: &str| vhost.is_none_or(|x| x == v);
    // Exclusive queues belong to a connection, and the default and `amq.*`
    // exchanges to the broker: RabbitMQ leaves them out.
    let queues: Vec<Value> = snap
        .queues
        .iter()
        .filter(|q| keep(&q.vhost) && !q.exclusive)
        .map(|q| json!({ "name": q.name, "vhost": q.vhost, "durable": q.durable, "auto_delete": q.auto_delete, "arguments": q.arguments }))
        .collect();
    let exchanges: Vec<Value> = snap
        .exchanges
        .iter()
        .filter(|e| keep(&e.vhost) && !e.name.is_empty() && !e.name.starts_with("amq."))
        .map(|e| json!({ "name": e.name, "vhost": e.vhost, "type": e.kind, "durable": e.durable, "auto_delete": e.auto_delete, "internal": e.internal, "arguments": e.arguments }))
        .collect();
    let exclusive: Vec<(&str, &str)> = snap
        .queues
        .iter()
        .filter(|q| q.exclusive)
        .map(|q| (q.vhost.as_str(), q.name.as_str()))
        .collect();
    let bindings: Vec<Value> = snap
        .bindings
        .iter()
        .filter(|b| keep(&b.vhost) && !b.source.is_empty())
        .filter(|b| !(b.destination_type == "queue" && exclusive.contains(&(b.vhost.as_str(), b.destination.as_str()))))
        .map(|b| json!({ "source": b.source, "vhost": b.vhost, "destination": b.destination, "destination_type": b.destination_type, "routing_key": b.routing_key, "arguments": b.arguments }))
        .collect();
    let policies: Vec<Value> = snap
        .policies
        .iter()
        .filter(|p| keep(&p.vhost))
        .map(super::shapes::policy)
        .collect();
    let mut out = json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "parameters": super::limits::parameters(snap, keep),
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    if vhost.is_none() {
        out["users"] = snap.users.iter().map(super::shapes::user).collect();
        out["vhosts"] = snap.vhosts.iter().map(|v| json!({ "name": v.name })).collect();
        out["permissions"] = snap.permissions.iter().map(super::shapes::permission).collect();
        out["topic_permissions"] = json!([]);
        out["global_parameters"] = json!([]);
    }
    out
}

fn list<'a>(defs: &'a Value, key: &str) -> Result<&'a [Value], Reply> {
    match defs.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(bad_request(&format!("{key} must be a list"))),
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Result<&'a str, Reply> {
    v.get(key)
        .and_then(|x| x.as_str())
        .ok_or_else(|| bad_request(&format!("definition without a string '{key}': {v}")))
}

fn b(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(|x| x.as_bool()).unwrap_or(default)
}

fn args(v: &Value) -> Result<crate::protocol::FieldTable, Reply> {
    match v.get("arguments") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(a) => json_to_table(a).map_err(|e| bad_request(&e)),
    }
}

/// Imports definitions, in dependency order. With `only_vhost`, every
/// object goes to that vhost (RabbitMQ's per-vhost import).
pub fn import(
    m: &Mgmt,
    who: &Who,
    snap: &BrokerSnapshot,
    defs: &Value,
    only_vhost: Option<&str>,
) -> Result<(), Reply> {
    let control = |op: AdminOp| m.admin.control(&who.name, op).map_err(|e| from_amqp(&e));
    let vhost_of = |v: &Value| -> Result<String, Reply> {
        match only_vhost {
            Some(x) => Ok(x.to_string()),
            None => Ok(s(v, "vhost")?.to_string()),
        }
    };
    // Limits are checked before anything is imported.
    let vhost_limits = parameters_of(defs, only_vhost)?;
    if only_vhost.is_none() {
        for u in list(defs, "users")? {
            super::limits::user_definition_limits(u)?;
        }
    }
    let mut known_vhosts: Vec<String> = snap.vhosts.iter().map(|v| v.name.clone()).collect();
    if only_vhost.is_none() {
        for v in list(defs, "vhosts")? {
            let name = s(v, "name")?;
            if !known_vhosts.iter().any(|k| k == name) {
                control(AdminOp::AddVhost {
                    name: name.to_string(),
                })?;
                known_vhosts.push(name.to_string());
            }
        }
        for u in list(defs, "users")? {
            let name = s(u, "name")?;
            let hash = match u.get("password_hash").and_then(|h| h.as_str()) {
                Some(h) => base64::engine::general_purpose::STANDARD
                    .decode(h)
                    .map_err(|_| bad_request(&format!("user {name}: password_hash is not base64")))?,
                None => match u.get("password").and_then(|p| p.as_str()) {
                    Some(p) => crate::broker::users::hash_password(p.as_bytes(), crate::shard::random_salt()),
                    None => Vec::new(),
                },
            };
            if let Some(alg) = u.get("hashing_algorithm").and_then(|a| a.as_str())
                && alg != crate::broker::users::HASHING_ALGORITHM
            {
                return Err(bad_request(&format!(
                    "user {name}: unsupported hashing algorithm {alg}"
                )));
            }
            let limits = super::limits::user_definition_limits(u)?;
            control(AdminOp::PutUser {
                name: name.to_string(),
                password_hash: hash,
                tags: parse_tags(u.get("tags"))?,
            })?;
            super::limits::put_user_limits(m, who, name, limits)?;
        }
        for p in list(defs, "permissions")? {
            control(AdminOp::SetPermissions {
                user: s(p, "user")?.to_string(),
                vhost: s(p, "vhost")?.to_string(),
                configure: s(p, "configure")?.to_string(),
                write: s(p, "write")?.to_string(),
                read: s(p, "read")?.to_string(),
            })?;
        }
    }
    check_queue_limits(snap, defs, only_vhost)?;
    for p in list(defs, "policies")? {
        control(policy_op(&vhost_of(p)?, s(p, "name")?, p)?)?;
    }
    for e in list(defs, "exchanges")? {
        let kind_s = s(e, "type")?;
        let kind = crate::routing::ExchangeKind::parse(kind_s.as_bytes())
            .ok_or_else(|| bad_request(&format!("invalid exchange type '{kind_s}'")))?;
        amqp(
            m,
            who,
            &vhost_of(e)?,
            Request::ExchangeDeclare {
                name: short(s(e, "name")?)?,
                kind,
                passive: false,
                durable: b(e, "durable", true),
                auto_delete: b(e, "auto_delete", false),
                internal: b(e, "internal", false),
                args: args(e)?,
            },
        )?;
    }
    for q in list(defs, "queues")? {
        amqp(
            m,
            who,
            &vhost_of(q)?,
            Request::QueueDeclare {
                name: short(s(q, "name")?)?,
                generated: false,
                passive: false,
                durable: b(q, "durable", true),
                exclusive: false,
                auto_delete: b(q, "auto_delete", false),
                args: args(q)?,
            },
        )?;
    }
    for x in list(defs, "bindings")? {
        let vhost = vhost_of(x)?;
        let req = match s(x, "destination_type")? {
            "queue" => Request::QueueBind {
                queue: short(s(x, "destination")?)?,
                exchange: short(s(x, "source")?)?,
                routing_key: short(x.get("routing_key").and_then(|k| k.as_str()).unwrap_or(""))?,
                args: args(x)?,
            },
            "exchange" => Request::ExchangeBind {
                destination: short(s(x, "destination")?)?,
                source: short(s(x, "source")?)?,
                routing_key: short(x.get("routing_key").and_then(|k| k.as_str()).unwrap_or(""))?,
                args: args(x)?,
            },
            other => return Err(bad_request(&format!("invalid destination_type {other}"))),
        };
        amqp(m, who, &vhost, req)?;
    }
    // Vhost limits go last: RabbitMQ imports them before the queues, but
    // does not hold an import's queues to them (only `queue.declare` is),
    // which here is the same as setting them after.
    for (vhost, limits) in vhost_limits {
        control(AdminOp::VhostLimits {
            vhost,
            op: LimitsOp::Set(limits),
        })?;
    }
    Ok(())
}

/// The `vhost-limits` parameters of a definitions file, validated as
/// RabbitMQ's `add_parameter` does (its text, then ` (vhost/component/name)`).
/// Parameters of other components (plugins warren does not have) are
/// skipped.
fn parameters_of(defs: &Value, only_vhost: Option<&str>) -> Result<Vec<(String, Limits)>, Reply> {
    let mut out = Vec::new();
    for p in list(defs, "parameters")? {
        if p.get("component").and_then(|c| c.as_str()) != Some("vhost-limits") {
            continue;
        }
        let vhost = match only_vhost {
            Some(v) => v.to_string(),
            None => s(p, "vhost")?.to_string(),
        };
        let name = p.get("name").and_then(|n| n.as_str()).unwrap_or("limits");
        let value = p.get("value").cloned().unwrap_or(Value::Null);
        let limits = validate(Kind::Vhost, &value)
            .map_err(|e| bad_request(&format!("{} ({vhost}/vhost-limits/{name})", vhost_error(&e))))?;
        out.push((vhost, limits));
    }
    Ok(out)
}

/// RabbitMQ's `validate_limits`: the queues a file adds to a vhost (those
/// not there yet) may not take it past its queue limit; checked before
/// anything else is imported, against the limits in force.
fn check_queue_limits(snap: &BrokerSnapshot, defs: &Value, only_vhost: Option<&str>) -> Result<(), Reply> {
    let mut adding: std::collections::BTreeMap<String, u64> = Default::default();
    for q in list(defs, "queues")? {
        let vhost = match only_vhost {
            Some(v) => v.to_string(),
            None => s(q, "vhost")?.to_string(),
        };
        let name = s(q, "name")?;
        if snap.queue(&vhost, name).is_none() {
            *adding.entry(vhost).or_default() += 1;
        }
    }
    for (vhost, n) in adding {
        let Some(v) = snap.vhosts.iter().find(|v| v.name == vhost) else {
            continue;
        };
        let existing = snap.queues.iter().filter(|q| q.vhost == vhost).count() as u64;
        let limits = v.limits.clone().map(Limits);
        if let Some(limit) = would_exceed_queues(limits.as_ref(), existing, n) {
            return Err(bad_request(&import_over_queue_limit(&vhost, n, limit, existing)));
        }
    }
    Ok(())
}
