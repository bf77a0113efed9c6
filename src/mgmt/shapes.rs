//! The JSON shapes of RabbitMQ's management API, built from snapshots.

use super::rates::{QueueRates, Rates};
use crate::admin::*;
use serde_json::{Value, json};

fn rate(r: f64) -> Value {
    json!({ "rate": (r * 10.0).round() / 10.0 })
}

fn peer_of(conn: &ConnectionInfo) -> (String, u16) {
    (conn.peer_host.clone(), conn.peer_port)
}

pub fn message_stats(c: &QueueCounters, r: &QueueRates) -> Value {
    json!({
        "publish": c.published, "publish_details": rate(r.publish),
        "deliver": c.delivered.saturating_sub(c.get), "deliver_details": rate(r.deliver),
        "deliver_get": c.delivered, "deliver_get_details": rate(r.deliver),
        "get": c.get, "get_details": rate(r.get),
        "ack": c.acked, "ack_details": rate(r.ack),
        "redeliver": c.redelivered, "redeliver_details": rate(r.redeliver),
    })
}

/// The policy that applies to a queue or exchange: the highest-priority
/// one whose pattern matches, as RabbitMQ picks it.
pub fn effective_policy<'a>(
    policies: &'a [PolicyInfo],
    vhost: &str,
    name: &str,
    queue: bool,
) -> Option<&'a PolicyInfo> {
    policies
        .iter()
        .filter(|p| p.vhost == vhost)
        .filter(|p| p.apply_to == "all" || p.apply_to == if queue { "queues" } else { "exchanges" })
        .filter(|p| regex::Regex::new(&p.pattern).is_ok_and(|re| re.is_match(name)))
        .max_by_key(|p| p.priority)
}

pub fn queue(
    m: &super::Mgmt,
    snap: &BrokerSnapshot,
    q: &QueueInfo,
    consumers: Option<Vec<Value>>,
    rates: &Rates,
) -> Value {
    let r = rates.queue(&q.vhost, &q.name);
    let policy = effective_policy(&snap.policies, &q.vhost, &q.name, true);
    let messages = q.messages_ready + q.messages_unacknowledged;
    let mut v = json!({
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "owner_pid_details": q.owner.as_ref().map(|o| json!({ "name": o })),
        "arguments": q.arguments,
        "node": m.node,
        "state": "running",
        "type": if q.quorum.is_some() { "quorum" } else { "classic" },
        "policy": policy.map(|p| p.name.clone()),
        "operator_policy": Value::Null,
        "effective_policy_definition": policy.map_or(json!({}), |p| p.definition.clone()),
        "recoverable_slaves": Value::Null,
        "head_message_timestamp": Value::Null,
        "exclusive_consumer_tag": Value::Null,
        "single_active_consumer_tag": Value::Null,
        "consumers": q.consumers,
        "messages": messages,
        "messages_details": rate(r.messages),
        "messages_ready": q.messages_ready,
        "messages_ready_details": rate(r.messages_ready),
        "messages_unacknowledged": q.messages_unacknowledged,
        "messages_unacknowledged_details": rate(r.messages_unacked),
        "message_bytes": q.message_bytes_ready + q.message_bytes_unacknowledged,
        "message_bytes_ready": q.message_bytes_ready,
        "message_bytes_unacknowledged": q.message_bytes_unacknowledged,
        "message_stats": message_stats(&q.counters, &r),
        "warren_shard": q.shard,
        "warren_disk_bytes": q.disk_bytes,
    });
    if let Some(c) = consumers {
        v["consumer_details"] = Value::Array(c);
    }
    if let Some(h) = &q.home {
        v["node"] = json!(h);
    }
    if let Some(qi) = &q.quorum {
        v["leader"] = json!(qi.leader);
        v["members"] = json!(qi.members);
        v["online"] = json!(qi.online);
        if let Some(l) = &qi.leader {
            v["node"] = json!(l);
        }
        v["messages_persistent"] = json!(messages);
    }
    v
}

pub fn exchange(e: &ExchangeInfo) -> Value {
    json!({
        "name": e.name,
        "vhost": e.vhost,
        "type": e.kind,
        "durable": e.durable,
        "auto_delete": e.auto_delete,
        "internal": e.internal,
        "arguments": e.arguments,
        "user_who_performed_action": "rmq-internal",
    })
}

/// RabbitMQ's `properties_key`: the quoted routing key, or `~` for an empty
/// one, plus `~` and a digest of the arguments when there are any.
pub fn properties_key(routing_key: &str, arguments: &Value) -> String {
    let quote = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%5F", "_")
            .replace("%2E", ".")
    };
    let empty_args = arguments.as_object().is_none_or(|o| o.is_empty());
    if empty_args {
        if routing_key.is_empty() {
            "~".into()
        } else {
            quote(routing_key)
        }
    } else {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(arguments.to_string().as_bytes());
        let hash = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &digest[..12]);
        format!("{}~{}", quote(routing_key), hash)
    }
}

/// Whether a properties key from a URL names this binding. Clients send
/// the key as listed or quoted once more; the path is decoded once, so
/// both spellings are accepted.
pub fn props_match(listed: &str, from_url: &str) -> bool {
    listed == from_url || percent_encoding::percent_decode_str(listed).decode_utf8_lossy() == from_url
}

pub fn binding(b: &BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": b.arguments,
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// Every binding, with the default exchange's implicit one per queue first,
/// as RabbitMQ lists them.
pub fn all_bindings(snap: &BrokerSnapshot) -> Vec<BindingInfo> {
    let mut out: Vec<BindingInfo> = snap
        .queues
        .iter()
        .map(|q| BindingInfo {
            vhost: q.vhost.clone(),
            source: String::new(),
            destination: q.name.clone(),
            destination_type: "queue",
            routing_key: q.name.clone(),
            arguments: json!({}),
        })
        .collect();
    out.extend(snap.bindings.iter().filter(|b| !b.source.is_empty()).cloned());
    out
}

pub fn connection(m: &super::Mgmt, c: &ConnectionInfo, rates: &Rates) -> Value {
    let r = rates.connection(&c.name);
    let mut v = json!({
        "name": c.name,
        "node": m.node,
        "type": "network",
        "state": c.state,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": if c.auth_mechanism.is_empty() { "PLAIN" } else { c.auth_mechanism },
        "ssl": c.tls.is_some(),
        "ssl_protocol": c.tls.as_ref().map(|t| t.protocol.clone()),
        "ssl_key_exchange": Value::Null,
        "ssl_cipher": c.tls.as_ref().map(|t| t.cipher.clone()),
        "ssl_hash": Value::Null,
        "peer_cert_issuer": c.tls.as_ref().and_then(|t| t.cert.as_ref()).map(|p| p.issuer.clone()),
        "peer_cert_subject": c.tls.as_ref().and_then(|t| t.cert.as_ref()).map(|p| p.subject.clone()),
        "peer_cert_validity": Value::Null,
        "host": c.host,
        "port": c.port,
        "peer_host": c.peer_host,
        "peer_port": c.peer_port,
        "channels": c.channels,
        "channel_max": m.admin.config.limits.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": c.connected_at_ms,
        "client_properties": c.client_properties,
        "recv_oct": c.recv_oct,
        "recv_oct_details": rate(r.recv_oct),
        "send_oct": c.send_oct,
        "send_oct_details": rate(r.send_oct),
        "warren_shard": c.shard,
    });
    // The client's `connection_name`, shown only when it gave one.
    if let Some(n) = c.client_properties.get("connection_name").and_then(Value::as_str) {
        v["user_provided_name"] = n.into();
    }
    v
}

pub fn channel_name(conn: &str, number: u16) -> String {
    format!("{conn} ({number})")
}

pub fn channel(m: &super::Mgmt, ch: &ChannelInfo, conn: Option<&ConnectionInfo>) -> Value {
    let (peer_host, peer_port) = conn.map(peer_of).unwrap_or_default();
    json!({
        "name": channel_name(&ch.connection, ch.number),
        "number": ch.number,
        "node": m.node,
        "connection_details": { "name": ch.connection, "peer_host": peer_host, "peer_port": peer_port },
        "user": ch.user,
        "user_who_performed_action": ch.user,
        "vhost": ch.vhost,
        "state": "running",
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "pending_raft_commands": 0,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "consumer_count": ch.consumer_count,
    })
}

pub fn consumer(m: &super::Mgmt, c: &ConsumerInfo, conn: Option<&ConnectionInfo>) -> Value {
    let (peer_host, peer_port) = conn.map(peer_of).unwrap_or_default();
    json!({
        "consumer_tag": c.consumer_tag,
        "queue": { "name": c.queue, "vhost": c.vhost },
        "channel_details": {
            "name": channel_name(&c.connection, c.channel),
            "connection_name": c.connection,
            "number": c.channel,
            "node": m.node,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": conn.map(|c| c.user.clone()).unwrap_or_default(),
        },
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch_count,
        "arguments": {},
        "active": true,
        "activity_status": "up",
    })
}

pub fn user(u: &UserInfo) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": u.limits,
    })
}

pub fn permission(p: &PermissionInfo) -> Value {
    json!({ "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read })
}

pub fn policy(p: &PolicyInfo) -> Value {
    json!({
        "vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
        "definition": p.definition, "priority": p.priority,
    })
}

pub fn vhost(m: &super::Mgmt, snap: &BrokerSnapshot, name: &str, rates: &Rates) -> Value {
    let qs = snap.queues.iter().filter(|q| q.vhost == name);
    let (mut ready, mut unacked) = (0, 0);
    let mut counters = QueueCounters::default();
    for q in qs {
        ready += q.messages_ready;
        unacked += q.messages_unacknowledged;
        counters.add(&q.counters);
    }
    let r = rates.vhost(name);
    let conns = snap.connections.iter().filter(|c| c.vhost == name);
    let (recv, send) = conns.fold((0, 0), |(r, s), c| (r + c.recv_oct, s + c.send_oct));
    let (recv_rate, send_rate) = snap
        .connections
        .iter()
        .filter(|c| c.vhost == name)
        .map(|c| rates.connection(&c.name))
        .fold((0.0, 0.0), |(r, s), c| (r + c.recv_oct, s + c.send_oct));
    json!({
        "recv_oct": recv,
        "recv_oct_details": rate(recv_rate),
        "send_oct": send,
        "send_oct_details": rate(send_rate),
        "name": name,
        "description": if name == "/" { "Default virtual host" } else { "" },
        "tags": [],
        "metadata": { "description": if name == "/" { "Default virtual host" } else { "" }, "tags": [] },
        "default_queue_type": "classic",
        "tracing": false,
        "cluster_state": { m.node.clone(): "running" },
        "messages": ready + unacked,
        "messages_details": rate(r.messages),
        "messages_ready": ready,
        "messages_ready_details": rate(r.messages_ready),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": rate(r.messages_unacked),
        "message_stats": message_stats(&counters, &r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys_as_rabbitmq_writes_them() {
        assert_eq!(properties_key("", &json!({})), "~");
        assert_eq!(properties_key("orders.eu", &json!({})), "orders.eu");
        assert_eq!(properties_key("*.error", &json!({})), "%2A.error");
        assert_eq!(properties_key("a~b", &json!({})), "a%7Eb");
        let with_args = properties_key("k", &json!({"x-match": "all"}));
        assert!(with_args.starts_with("k~") && with_args.len() > 2, "{with_args}");
        assert_ne!(with_args, properties_key("k", &json!({"x-match": "any"})));
    }

    #[test]
    fn properties_keys_match_listed_or_quoted_again() {
        assert!(props_match("%2A.error", "%2A.error"));
        assert!(props_match("%2A.error", "*.error"));
        assert!(!props_match("%2A.error", "x.error"));
    }

    fn policy(name: &str, pattern: &str, apply_to: &str, priority: i64) -> PolicyInfo {
        PolicyInfo {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: apply_to.into(),
            priority,
            definition: json!({}),
        }
    }

    #[test]
    fn effective_policy_is_the_highest_priority_match() {
        let ps = vec![
            policy("low", "^q", "all", 0),
            policy("high", "^q", "queues", 5),
            policy("ex", "^q", "exchanges", 9),
            policy("bad", "(", "all", 99),
        ];
        assert_eq!(
            effective_policy(&ps, "/", "q1", true).map(|p| p.name.as_str()),
            Some("high")
        );
        assert_eq!(
            effective_policy(&ps, "/", "q1", false).map(|p| p.name.as_str()),
            Some("ex")
        );
        assert!(effective_policy(&ps, "/", "other", true).is_none());
        assert!(effective_policy(&ps, "v2", "q1", true).is_none());
    }
}
