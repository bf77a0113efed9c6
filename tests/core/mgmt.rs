//! The management HTTP API: RabbitMQ's field names, status codes, objects
//! created and removed through it, rates, definitions, metrics, and the
//! rights that users' tags give.

use crate::common::{self, http, http_text, wait_for};
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const G: Option<(&str, &str)> = Some(("guest", "guest"));

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Fields of RabbitMQ's answers that warren does not produce, and why.
/// Everything else RabbitMQ returns must be there.
const NOT_APPLICABLE: &[&str] = &[
    // Erlang VM internals.
    "garbage_collection",
    "reductions",
    "reductions_details",
    "erlang_version",
    "erlang_full_version",
    "backing_queue_status",
    "recoverable_slaves_details",
    // Statistics warren does not keep: per-channel message stats, RAM/paged-out
    // split (warren keeps an index entry in RAM and the body in the segment),
    // idle time, consumer utilisation, detailed (per-object pair) rates,
    // churn rates and frame counts.
    "idle_since",
    "messages_ram",
    "messages_ready_ram",
    "messages_unacknowledged_ram",
    "message_bytes_ram",
    "messages_paged_out",
    "message_bytes_paged_out",
    "messages_persistent",
    "message_bytes_persistent",
    "memory",
    "consumer_capacity",
    "consumer_utilisation",
    "deliveries",
    "incoming",
    "outgoing",
    "churn_rates",
    "recv_cnt",
    "send_cnt",
    "send_pend",
    "message_stats@channel",
    "deliver_no_ack",
    "deliver_no_ack_details",
    "get_empty",
    "get_empty_details",
    "get_no_ack",
    "get_no_ack_details",
    "release_series_support_status",
    // Definitions: RabbitMQ's cluster id parameter has no meaning for one node.
    "global_parameters@definitions",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn api_fields_match_rabbitmq() {
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/rabbitmq_api_fields.json")).unwrap();
    let b = common::start_with_mgmt(2);
    let base = &b.base;
    let rt = rt();
    let (s, _) = http(
        "PUT",
        &format!("{base}/api/policies/%2F/fixpol"),
        G,
        Some(
            json!({"pattern": "^fixq$", "definition": {"max-length": 100}, "apply-to": "queues", "priority": 1}),
        ),
    );
    assert_eq!(s, 201);
    let conn = rt.block_on(b.broker.connect());
    let _consumer = rt.block_on(async {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        ch.queue_declare("fixq".into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "fixq".into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            "fixq".into(),
            Default::default(),
            b"hi",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let ch2 = conn.create_channel().await.unwrap();
        ch2.basic_qos(5, Default::default()).await.unwrap();
        ch2.basic_consume(
            "fixq".into(),
            "ctag".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
    });
    let get = |p: &str| {
        let (s, v) = http("GET", &format!("{base}{p}"), G, None);
        assert_eq!(s, 200, "{p}: {v}");
        v
    };
    wait_for("consumer listed", || {
        (get("/api/consumers").as_array().unwrap().len() == 1).then_some(())
    });
    let mut ours: Vec<(&str, Value)> = vec![
        ("overview", get("/api/overview")),
        ("queue", get("/api/queues/%2F/fixq")),
        (
            "queues_item",
            get("/api/queues")
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["name"] == "fixq")
                .unwrap()
                .clone(),
        ),
        (
            "queue_message_stats",
            get("/api/queues/%2F/fixq")["message_stats"].clone(),
        ),
        ("exchange", get("/api/exchanges/%2F/amq.direct")),
        ("binding", get("/api/bindings/%2F")[0].clone()),
        ("connection", get("/api/connections")[0].clone()),
        ("channel", get("/api/channels")[0].clone()),
        ("consumer", get("/api/consumers")[0].clone()),
        ("vhost", get("/api/vhosts/%2F")),
        ("user", get("/api/users/guest")),
        ("permission", get("/api/permissions/%2F/guest")),
        ("policy", get("/api/policies/%2F/fixpol")),
        ("whoami", get("/api/whoami")),
        ("definitions", get("/api/definitions")),
    ];
    let (s, r) = http(
        "POST",
        &format!("{base}/api/exchanges/%2F/amq.default/publish"),
        G,
        Some(
            json!({"routing_key": "fixq-get", "payload": "x", "payload_encoding": "string", "properties": {}}),
        ),
    );
    assert_eq!(s, 200);
    ours.push(("publish", r));
    http(
        "PUT",
        &format!("{base}/api/queues/%2F/fixq-get"),
        G,
        Some(json!({})),
    );
    http(
        "POST",
        &format!("{base}/api/exchanges/%2F/amq.default/publish"),
        G,
        Some(
            json!({"routing_key": "fixq-get", "payload": "x", "payload_encoding": "string", "properties": {}}),
        ),
    );
    let (_, got) = http(
        "POST",
        &format!("{base}/api/queues/%2F/fixq-get/get"),
        G,
        Some(json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})),
    );
    ours.push(("get_item", got[0].clone()));
    ours.push(("aliveness", get("/api/aliveness-test/%2F")));

    let mut missing = Vec::new();
    for (name, v) in &ours {
        let theirs: BTreeSet<String> = fixture["fields"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let have = keys(v);
        for k in theirs.difference(&have) {
            let scoped = format!("{k}@{name}");
            if !NOT_APPLICABLE.contains(&k.as_str()) && !NOT_APPLICABLE.contains(&scoped.as_str()) {
                missing.push(format!("{name}.{k}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields RabbitMQ returns and warren does not: {missing:?}"
    );
    let q = get("/api/queues/%2F/fixq");
    assert_eq!(q["policy"], "fixpol");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 100}));
    assert_eq!(q["messages_unacknowledged"], 1);
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "ctag");
    assert_eq!(q["consumer_details"][0]["prefetch_count"], 5);
    let node = get(&format!(
        "/api/nodes/{}",
        get("/api/overview")["node"].as_str().unwrap()
    ));
    for k in [
        "name",
        "type",
        "running",
        "mem_used",
        "mem_limit",
        "mem_alarm",
        "fd_used",
        "fd_total",
        "os_pid",
        "uptime",
        "processors",
        "partitions",
        "disk_free_alarm",
        "rates_mode",
    ] {
        assert!(node.get(k).is_some(), "node.{k} missing: {node}");
    }
}

#[test]
fn objects_created_listed_and_removed_through_the_api() {
    let b = common::start_with_mgmt(2);
    let base = &b.base;
    let url = |p: &str| format!("{base}{p}");
    // vhosts
    assert_eq!(http("PUT", &url("/api/vhosts/v1"), G, None).0, 201);
    assert_eq!(http("PUT", &url("/api/vhosts/v1"), G, None).0, 204);
    assert_eq!(http("GET", &url("/api/vhosts/v1"), G, None).1["name"], "v1");
    // exchanges and queues, 201 then 204 on an identical redeclare
    let ex =
        json!({"type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}});
    assert_eq!(
        http("PUT", &url("/api/exchanges/v1/logs"), G, Some(ex.clone())).0,
        201
    );
    assert_eq!(http("PUT", &url("/api/exchanges/v1/logs"), G, Some(ex)).0, 204);
    let (s, e) = http(
        "PUT",
        &url("/api/exchanges/v1/logs"),
        G,
        Some(json!({"type": "direct", "durable": true})),
    );
    assert_eq!(s, 400, "{e}");
    assert!(
        e["reason"].as_str().unwrap().contains("PRECONDITION_FAILED"),
        "{e}"
    );
    let (s, e) = http(
        "PUT",
        &url("/api/exchanges/v1/bad"),
        G,
        Some(json!({"type": "nope"})),
    );
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")));
    let q = json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 10}});
    assert_eq!(http("PUT", &url("/api/queues/v1/errors"), G, Some(q)).0, 201);
    let (s, e) = http("PUT", &url("/api/queues/v1/x"), G, Some(json!("not an object")));
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")));
    let (s, e) = http_text("PUT", &url("/api/queues/v1/x"), G, None);
    assert_eq!(s, 201, "{e}");
    // bindings: POST answers the properties key in Location; GET and DELETE by it
    let (s, _) = http(
        "POST",
        &url("/api/bindings/v1/e/logs/q/errors"),
        G,
        Some(json!({"routing_key": "*.error", "arguments": {}})),
    );
    assert_eq!(s, 201);
    let (s, bs) = http("GET", &url("/api/bindings/v1/e/logs/q/errors"), G, None);
    assert_eq!(s, 200);
    assert_eq!(bs.as_array().unwrap().len(), 1);
    let props = bs[0]["properties_key"].as_str().unwrap().to_string();
    assert_eq!(props, "%2A.error");
    let (s, one) = http(
        "GET",
        &url(&format!("/api/bindings/v1/e/logs/q/errors/{props}")),
        G,
        None,
    );
    assert_eq!((s, one["routing_key"].as_str()), (200, Some("*.error")));
    let (_, qb) = http("GET", &url("/api/queues/v1/errors/bindings"), G, None);
    let routing: Vec<&str> = qb
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["routing_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        routing,
        ["errors", "*.error"],
        "default binding first, as RabbitMQ lists them"
    );
    // publish through the exchange, read back, purge
    for i in 0..3 {
        let (s, r) = http(
            "POST",
            &url("/api/exchanges/v1/logs/publish"),
            G,
            Some(
                json!({"routing_key": "app.error", "payload": format!("m{i}"), "payload_encoding": "string",
                        "properties": {"delivery_mode": 2, "headers": {"k": "v"}}}),
            ),
        );
        assert_eq!((s, r["routed"].as_bool()), (200, Some(true)));
    }
    let (_, r) = http(
        "POST",
        &url("/api/exchanges/v1/logs/publish"),
        G,
        Some(
            json!({"routing_key": "app.info", "payload": "x", "payload_encoding": "string", "properties": {}}),
        ),
    );
    assert_eq!(r["routed"], false);
    let (s, msgs) = http(
        "POST",
        &url("/api/queues/v1/errors/get"),
        G,
        Some(json!({"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000})),
    );
    assert_eq!(s, 200);
    assert_eq!(msgs[0]["payload"], "m0");
    assert_eq!(msgs[0]["routing_key"], "app.error");
    assert_eq!(msgs[0]["properties"]["delivery_mode"], 2);
    assert_eq!(msgs[0]["properties"]["headers"]["k"], "v");
    assert_eq!(msgs[1]["message_count"], 1);
    let ready =
        |b: &str| http("GET", &format!("{b}/api/queues/v1/errors"), G, None).1["messages_ready"].clone();
    assert_eq!(wait_for("requeued", || (ready(base) == 3).then_some(3)), 3);
    let (_, msgs) = http(
        "POST",
        &url("/api/queues/v1/errors/get"),
        G,
        Some(json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"})),
    );
    assert_eq!(
        (msgs[0]["payload"].as_str(), msgs[0]["payload_encoding"].as_str()),
        (Some("bTA="), Some("base64"))
    );
    assert_eq!(
        http("DELETE", &url("/api/queues/v1/errors/contents"), G, None).0,
        204
    );
    assert_eq!(ready(base), 0);
    // rates appear once the sampler has seen traffic
    let publish_rate = || {
        http("GET", &url("/api/queues/v1/errors"), G, None).1["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .unwrap()
    };
    wait_for("rate back to zero", || (publish_rate() == 0.0).then_some(()));
    for i in 0..20 {
        http(
            "POST",
            &url("/api/exchanges/v1/logs/publish"),
            G,
            Some(
                json!({"routing_key": "a.error", "payload": format!("r{i}"), "payload_encoding": "string", "properties": {}}),
            ),
        );
    }
    wait_for("publish rate reported", || {
        let q = http("GET", &url("/api/queues/v1/errors"), G, None).1;
        (q["message_stats"]["publish"] == 23).then_some(())
    });
    // Publish on: the sampler (every 200 ms here) reports a non-zero rate.
    wait_for("publish rate reported", || {
        http(
            "POST",
            &url("/api/exchanges/v1/logs/publish"),
            G,
            Some(
                json!({"routing_key": "a.error", "payload": "more", "payload_encoding": "string", "properties": {}}),
            ),
        );
        (publish_rate() > 0.0).then_some(())
    });
    // delete binding, queue (if-empty refused while it holds messages), exchange, vhost
    assert_eq!(
        http(
            "DELETE",
            &url(&format!("/api/bindings/v1/e/logs/q/errors/{props}")),
            G,
            None
        )
        .0,
        204
    );
    assert_eq!(
        http(
            "DELETE",
            &url(&format!("/api/bindings/v1/e/logs/q/errors/{props}")),
            G,
            None
        )
        .0,
        404
    );
    let (s, e) = http("DELETE", &url("/api/queues/v1/errors?if-empty=true"), G, None);
    assert_eq!(s, 400, "{e}");
    assert_eq!(http("DELETE", &url("/api/queues/v1/errors"), G, None).0, 204);
    assert_eq!(http("GET", &url("/api/queues/v1/errors"), G, None).0, 404);
    assert_eq!(http("DELETE", &url("/api/exchanges/v1/logs"), G, None).0, 204);
    assert_eq!(http("DELETE", &url("/api/vhosts/v1"), G, None).0, 204);
    assert_eq!(http("GET", &url("/api/vhosts/v1"), G, None).0, 404);
    // errors as RabbitMQ words them
    let (s, e) = http("GET", &url("/api/queues/%2F/nope"), G, None);
    assert_eq!(
        (s, e["error"].as_str(), e["reason"].as_str()),
        (404, Some("Object Not Found"), Some("Not Found"))
    );
    let (s, e) = http("GET", &url("/api/overview"), Some(("guest", "wrong")), None);
    assert_eq!(
        (s, e["error"].as_str(), e["reason"].as_str()),
        (401, Some("not_authorised"), Some("Login failed"))
    );
    assert_eq!(http("GET", &url("/api/overview"), None, None).0, 401);
    assert_eq!(
        http("GET", &url("/api/aliveness-test/%2F"), G, None).1["status"],
        "ok"
    );
    assert_eq!(
        http("GET", &url("/api/healthchecks/node"), G, None).1["status"],
        "ok"
    );
    assert_eq!(
        http("GET", &url("/api/health/checks/alarms"), G, None).1["status"],
        "ok"
    );
    let amqp_port = b.broker.handle.amqp_addr().port();
    assert_eq!(
        http(
            "GET",
            &url(&format!("/api/health/checks/port-listener/{amqp_port}")),
            G,
            None
        )
        .0,
        200
    );
    assert_eq!(
        http("GET", &url("/api/health/checks/port-listener/1"), G, None).0,
        503
    );
    // pagination
    let (_, page) = http("GET", &url("/api/exchanges?page=1&page_size=2"), G, None);
    assert_eq!(
        (page["item_count"].as_u64(), page["page_size"].as_u64()),
        (Some(2), Some(2))
    );
}

#[test]
fn connections_are_listed_and_closed_through_the_api() {
    let b = common::start_with_mgmt(2);
    let rt = rt();
    let conn = rt.block_on(b.broker.connect());
    let _ch = rt.block_on(conn.create_channel()).unwrap();
    let url = |p: &str| format!("{}{p}", b.base);
    let list = wait_for("connection listed", || {
        let (_, l) = http("GET", &url("/api/connections"), G, None);
        (l.as_array().unwrap().len() == 1).then_some(l)
    });
    let c = &list[0];
    assert_eq!(
        (c["user"].as_str(), c["vhost"].as_str(), c["protocol"].as_str()),
        (Some("guest"), Some("/"), Some("AMQP 0-9-1"))
    );
    assert_eq!(c["client_properties"]["product"], "lapin");
    let name = c["name"].as_str().unwrap().to_string();
    let (_, chans) = http("GET", &url("/api/channels"), G, None);
    assert_eq!(chans[0]["connection_details"]["name"], name.as_str());
    let enc = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert_eq!(
        http("GET", &url(&format!("/api/connections/{enc}")), G, None).1["name"],
        name.as_str()
    );
    assert_eq!(
        http("DELETE", &url(&format!("/api/connections/{enc}")), G, None).0,
        204
    );
    wait_for("client sees the close", || {
        (!conn.status().connected()).then_some(())
    });
    assert_eq!(
        http("DELETE", &url(&format!("/api/connections/{enc}")), G, None).0,
        404
    );
}

#[test]
fn definitions_export_and_import_round_trip() {
    let a = common::start_with_mgmt(1);
    let url = |b: &common::MgmtBroker, p: &str| format!("{}{p}", b.base);
    http("PUT", &url(&a, "/api/vhosts/prod"), G, None);
    http(
        "PUT",
        &url(&a, "/api/users/alice"),
        G,
        Some(json!({"password": "alice-pw", "tags": "monitoring"})),
    );
    http(
        "PUT",
        &url(&a, "/api/permissions/prod/alice"),
        G,
        Some(json!({"configure": "^a", "write": ".*", "read": ".*"})),
    );
    http(
        "PUT",
        &url(&a, "/api/exchanges/prod/ev"),
        G,
        Some(json!({"type": "fanout", "durable": true})),
    );
    http(
        "PUT",
        &url(&a, "/api/queues/prod/q1"),
        G,
        Some(json!({"durable": true, "arguments": {"x-message-ttl": 5000}})),
    );
    http(
        "POST",
        &url(&a, "/api/bindings/prod/e/ev/q/q1"),
        G,
        Some(json!({"routing_key": "", "arguments": {}})),
    );
    http(
        "PUT",
        &url(&a, "/api/policies/prod/lim"),
        G,
        Some(json!({"pattern": "^q", "definition": {"max-length": 7}, "apply-to": "queues", "priority": 2})),
    );
    let (s, defs) = http("GET", &url(&a, "/api/definitions"), G, None);
    assert_eq!(s, 200);
    let text = defs.to_string();
    assert!(!text.contains("alice-pw"), "a password in plain text: {text}");

    let b = common::start_with_mgmt(1);
    assert_eq!(
        http("POST", &url(&b, "/api/definitions"), G, Some(defs.clone())).0,
        204
    );
    let (_, again) = http("GET", &url(&b, "/api/definitions"), G, None);
    for key in [
        "vhosts",
        "permissions",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        assert_eq!(again[key], defs[key], "{key} differs after import");
    }
    // alice keeps her password (the hash travelled) and her tag.
    let (s, me) = http("GET", &url(&b, "/api/whoami"), Some(("alice", "alice-pw")), None);
    assert_eq!((s, me["tags"].clone()), (200, json!(["monitoring"])));
}

#[test]
fn metrics_in_prometheus_format() {
    let b = common::start_with_mgmt(2);
    let url = |p: &str| format!("{}{p}", b.base);
    http(
        "PUT",
        &url("/api/queues/%2F/mq"),
        G,
        Some(json!({"durable": true})),
    );
    for _ in 0..3 {
        http(
            "POST",
            &url("/api/exchanges/%2F/amq.default/publish"),
            G,
            Some(
                json!({"routing_key": "mq", "payload": "x", "payload_encoding": "string", "properties": {"delivery_mode": 2}}),
            ),
        );
    }
    // Per queue only at /metrics/per-object, as RabbitMQ; /metrics sums
    // (its size must not grow with the number of queues).
    let (s, text) = http_text("GET", &url("/metrics/per-object"), None, None);
    assert_eq!(s, 200);
    assert!(
        text.contains("rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"mq\"} 3"),
        "{text}"
    );
    let (s, text) = http_text("GET", &url("/metrics"), None, None);
    assert_eq!(s, 200);
    assert!(!text.contains("queue=\"mq\""), "per-queue samples at /metrics");
    for line in [
        "rabbitmq_queues 1",
        "rabbitmq_queue_messages_ready 3",
        "rabbitmq_queue_messages_unacked 0",
        "rabbitmq_connections 0",
        "rabbitmq_channel_messages_published_total 3",
        "# TYPE warren_fsync_latency_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line || l.starts_with(line)),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("warren_shard_messages_routed_total{shard=\"0\"}"));
    // Whether shard 0 batches its wake-ups now: an idle shard does not
    // (its control chooses a window once a load comes, where the kernel
    // has io_uring min-wait).
    let batching = text
        .lines()
        .find_map(|l| l.strip_prefix("warren_shard_park_batching{shard=\"0\"} "))
        .expect("warren_shard_park_batching");
    assert!(batching == "1" || batching == "0", "{batching}");
    // And how long: one of the control's windows for the default longest.
    let window = text
        .lines()
        .find_map(|l| l.strip_prefix("warren_shard_park_window_microseconds{shard=\"0\"} "))
        .expect("warren_shard_park_window_microseconds");
    let longest = warren::config::DEFAULT_PARK_BATCHING.as_micros() as u64;
    let levels = warren::shard::batching::levels(longest);
    assert!(levels.iter().any(|l| l.to_string() == window), "{window}");
    assert_eq!(window != "0", batching == "1", "{window} {batching}");
    assert!(text.contains("warren_fsync_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    // Every sample line is `name{labels} value` with a number.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let v = l.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "not a sample: {l}");
    }
}

/// Tags decide what a management user may see and do.
#[test]
fn management_rights_follow_user_tags() {
    let b = common::start_with_mgmt(2);
    let url = |p: &str| format!("{}{p}", b.base);
    http("PUT", &url("/api/vhosts/secret"), G, None);
    for (user, tags) in [
        ("none", ""),
        ("mgmt", "management"),
        ("pol", "policymaker"),
        ("mon", "monitoring"),
        ("adm", "administrator"),
    ] {
        assert_eq!(
            http(
                "PUT",
                &url(&format!("/api/users/{user}")),
                G,
                Some(json!({"password": "pw", "tags": tags}))
            )
            .0,
            201
        );
        http(
            "PUT",
            &url(&format!("/api/permissions/%2F/{user}")),
            G,
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        );
    }
    let rt = rt();
    let _guest_conn = rt.block_on(b.broker.connect());
    wait_for("connection listed", || {
        (http("GET", &url("/api/connections"), G, None)
            .1
            .as_array()
            .unwrap()
            .len()
            == 1)
            .then_some(())
    });
    let status = |user: &str, method: &str, path: &str, body: Option<Value>| {
        http(method, &url(path), Some((user, "pw")), body).0
    };
    // (call, [none, mgmt, pol, mon, adm]) — 2xx allowed, 401 refused.
    let users = ["none", "mgmt", "pol", "mon", "adm"];
    let matrix: Vec<(&str, &str, Option<Value>, [bool; 5])> = vec![
        ("GET", "/api/overview", None, [false, true, true, true, true]),
        ("GET", "/api/queues/%2F", None, [false, true, true, true, true]),
        (
            "GET",
            "/api/queues/secret",
            None,
            [false, false, false, true, true],
        ),
        ("GET", "/api/nodes", None, [false, false, false, true, true]),
        ("GET", "/api/users", None, [false, false, false, false, true]),
        (
            "GET",
            "/api/permissions",
            None,
            [false, false, false, false, true],
        ),
        (
            "GET",
            "/api/definitions",
            None,
            [false, false, false, false, true],
        ),
        (
            "PUT",
            "/api/policies/%2F/p",
            Some(json!({"pattern": "^x", "definition": {"max-length": 1}})),
            [false, false, true, false, true],
        ),
        (
            "PUT",
            "/api/queues/%2F/tagged",
            Some(json!({"durable": false})),
            [false, true, true, true, true],
        ),
        (
            "PUT",
            "/api/vhosts/newvh",
            None,
            [false, false, false, false, true],
        ),
        (
            "PUT",
            "/api/users/newuser",
            Some(json!({"password": "x", "tags": ""})),
            [false, false, false, false, true],
        ),
    ];
    for (method, path, body, allowed) in matrix {
        for (user, ok) in users.iter().zip(allowed) {
            let s = status(user, method, path, body.clone());
            if ok {
                assert!(
                    (200..300).contains(&s),
                    "{user} {method} {path}: {s}, expected success"
                );
            } else {
                assert_eq!(s, 401, "{user} {method} {path}: expected 401");
            }
        }
    }
    let (_, e) = http("GET", &url("/api/overview"), Some(("none", "pw")), None);
    assert_eq!(e["reason"], "Not management user");
    // management users see only their own connections; monitoring sees all.
    let count = |user: &str| {
        http("GET", &url("/api/connections"), Some((user, "pw")), None)
            .1
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((count("mgmt"), count("mon"), count("adm")), (0, 1, 1));
    // a management user cannot close someone else's connection
    let (_, list) = http("GET", &url("/api/connections"), G, None);
    let name = percent_encoding::utf8_percent_encode(
        list[0]["name"].as_str().unwrap(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    assert_eq!(
        status("mgmt", "DELETE", &format!("/api/connections/{name}"), None),
        404
    );
}

/// Users' passwords are kept as salted SHA-256, never in plain text: not in
/// any answer, not in the data dir.
#[test]
fn passwords_are_hashed_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let handle = common::start_in(dir.path(), 1);
    let mgmt = common::mgmt_for(
        &handle,
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::time::Duration::from_secs(5),
    );
    let base = format!("http://{}", mgmt.addr());
    let secret = "Correct-Horse-Battery-Staple";
    assert_eq!(
        http(
            "PUT",
            &format!("{base}/api/users/carol"),
            G,
            Some(json!({"password": secret, "tags": "management"}))
        )
        .0,
        201
    );
    let (_, u) = http("GET", &format!("{base}/api/users/carol"), G, None);
    assert_eq!(u["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        u["password_hash"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(raw.len(), 36, "4-byte salt + SHA-256");
    let salt: [u8; 4] = raw[..4].try_into().unwrap();
    assert_eq!(warren::broker::users::hash_password(secret.as_bytes(), salt), raw);
    for p in ["/api/users", "/api/definitions", "/api/overview"] {
        assert!(
            !http_text("GET", &format!("{base}{p}"), G, None)
                .1
                .contains(secret)
        );
    }
    // a second user with the same password gets a different salt
    http(
        "PUT",
        &format!("{base}/api/users/dave"),
        G,
        Some(json!({"password": secret, "tags": ""})),
    );
    let (_, d) = http("GET", &format!("{base}/api/users/dave"), G, None);
    assert_ne!(d["password_hash"], u["password_hash"]);
    drop(mgmt);
    handle.shutdown();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "plain-text password in {}",
            entry.display()
        );
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `guest` may log in from loopback only, over AMQP and over HTTP.
#[test]
fn guest_is_refused_from_a_non_loopback_address() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!(
            "SKIPPED guest_is_refused_from_a_non_loopback_address: this machine has no non-loopback IPv4 address"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = warren::Config {
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port: 0,
        shards: 1,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let handle = warren::start(cfg).unwrap();
    let mgmt = common::mgmt_for(
        &handle,
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        std::time::Duration::from_secs(5),
    );
    let port = handle.amqp_addr().port();
    let remote = format!("http://{ip}:{}", mgmt.addr().port());
    let local = format!("http://127.0.0.1:{}", mgmt.addr().port());
    let (s, e) = http("GET", &format!("{remote}/api/overview"), G, None);
    assert_eq!(
        (s, e["reason"].as_str()),
        (401, Some("User can only log in via localhost"))
    );
    assert_eq!(http("GET", &format!("{local}/api/overview"), G, None).0, 200);
    http(
        "PUT",
        &format!("{local}/api/users/ops"),
        G,
        Some(json!({"password": "pw", "tags": "administrator"})),
    );
    http(
        "PUT",
        &format!("{local}/api/permissions/%2F/ops"),
        G,
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert_eq!(
        http(
            "GET",
            &format!("{remote}/api/overview"),
            Some(("ops", "pw")),
            None
        )
        .0,
        200
    );
    let rt = rt();
    let err = rt
        .block_on(lapin::Connection::connect(
            &format!("amqp://guest:guest@{ip}:{port}/%2f"),
            Default::default(),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("403"),
        "{err}"
    );
    rt.block_on(lapin::Connection::connect(
        &format!("amqp://ops:pw@{ip}:{port}/%2f"),
        Default::default(),
    ))
    .expect("a non-guest user connects from anywhere");
    rt.block_on(lapin::Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        Default::default(),
    ))
    .expect("guest connects from loopback");
    drop(mgmt);
    handle.shutdown();
}

fn non_loopback_ip() -> Option<std::net::Ipv4Addr> {
    // The address the kernel would use to reach a public address (no packet is sent).
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
        _ => None,
    }
}

/// Exclusive queues and vhost isolation are visible through the API too.
#[test]
fn exclusive_queue_shows_its_owner() {
    let b = common::start_with_mgmt(1);
    let rt = rt();
    let conn = rt.block_on(b.broker.connect());
    rt.block_on(async {
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "mine".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    });
    let (_, q) = http("GET", &format!("{}/api/queues/%2F/mine", b.base), G, None);
    assert_eq!(q["exclusive"], true);
    let (_, conns) = http("GET", &format!("{}/api/connections", b.base), G, None);
    assert_eq!(q["owner_pid_details"]["name"], conns[0]["name"]);
    let (_, defs) = http("GET", &format!("{}/api/definitions", b.base), G, None);
    assert!(
        defs["queues"].as_array().unwrap().is_empty(),
        "exclusive queues are not exported"
    );
}

/// Lists as RabbitMQ answers them (captured from RabbitMQ 3.10): `name`
/// filters paginated requests only, as a case-insensitive substring or
/// regex; a page past the end is empty; bad parameters are 400; `sort`.
#[test]
fn lists_filter_paginate_and_sort_as_rabbitmq() {
    let b = common::start_with_mgmt(2);
    let url = |p: &str| format!("{}{p}", b.base);
    for q in ["alpha", "beta", "alphabet", "gamma"] {
        assert_eq!(
            http("PUT", &url(&format!("/api/queues/%2f/{q}")), G, Some(json!({}))).0,
            201
        );
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_string())
            .collect()
    };
    let page = |q: &str| {
        let (status, v) = http("GET", &url(&format!("/api/queues?{q}")), G, None);
        assert_eq!(status, 200, "{q}: {v}");
        let head: Vec<u64> = [
            "filtered_count",
            "item_count",
            "page",
            "page_count",
            "page_size",
            "total_count",
        ]
        .iter()
        .map(|k| v[k].as_u64().unwrap())
        .collect();
        (head, names(&v["items"]))
    };
    // Without pagination, `name` is ignored (as in RabbitMQ).
    let (_, all) = http("GET", &url("/api/queues?name=alpha&sort=name"), G, None);
    assert_eq!(names(&all), ["alpha", "alphabet", "beta", "gamma"]);
    let (_, rev) = http("GET", &url("/api/queues?sort=name&sort_reverse=true"), G, None);
    assert_eq!(names(&rev), ["gamma", "beta", "alphabet", "alpha"]);
    assert_eq!(
        page("name=ALPHA&page=1&sort=name"),
        (
            vec![2, 2, 1, 1, 100, 4],
            vec!["alpha".to_string(), "alphabet".into()]
        )
    );
    assert_eq!(
        page("name=^AL&use_regex=true&page=1&sort=name"),
        (
            vec![2, 2, 1, 1, 100, 4],
            vec!["alpha".to_string(), "alphabet".into()]
        )
    );
    assert_eq!(
        page("name=a.p&use_regex=false&page=1"),
        (vec![0, 0, 1, 0, 100, 4], vec![])
    );
    assert_eq!(
        page("name=a&page=1&page_size=2&sort=name").0,
        vec![4, 2, 1, 2, 2, 4]
    );
    assert_eq!(
        page("name=a&page=3&page_size=2"),
        (vec![4, 0, 3, 2, 2, 4], vec![])
    );
    for (q, error) in [
        ("page=0", "invalid_pagination_parameters"),
        ("page=1&page_size=0", "invalid_pagination_parameters"),
        ("page=1&page_size=600", "invalid_pagination_parameters"),
        ("page=abc", "bad_request"),
        ("name=(&use_regex=true&page=1", "bad_request"),
    ] {
        let (status, v) = http("GET", &url(&format!("/api/queues?{q}")), G, None);
        assert_eq!((status, v["error"].as_str()), (400, Some(error)), "{q}: {v}");
    }
    let (_, v) = http("GET", &url("/api/queues?page=0"), G, None);
    assert_eq!(
        v["reason"],
        "Invalid pagination parameters: page number 0, page size undefined"
    );
}

/// On the default dual-stack listener, an IPv4 client's connection is named
/// as RabbitMQ names it, from the addresses the client sees, and found and
/// closed by that name; `client_properties` and `user_provided_name` are
/// shown; the node health check answers for this node only.
#[test]
fn connections_are_named_and_described_as_rabbitmq_does() {
    use crate::raw::{Raw, Target};
    use warren::protocol::methods::*;
    use warren::protocol::*;
    let dir = tempfile::tempdir().unwrap();
    let cfg = warren::Config {
        bind: std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        port: 0,
        shards: 2,
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let Ok(h) = warren::start(cfg) else {
        eprintln!("SKIPPED: no IPv6 on this machine");
        return;
    };
    let mgmt = common::mgmt_for(
        &h,
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::time::Duration::from_millis(200),
    );
    let url = |p: &str| format!("http://{}{p}", mgmt.addr());
    let t = Target {
        addr: std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), h.amqp_addr().port()),
        _broker: None,
    };
    let mut r = Raw::connect(&t);
    r.send(&PROTOCOL_HEADER);
    assert!(matches!(r.method(), Some(Method::ConnectionStart(_))));
    let mut props = crate::raw::client_properties();
    props.insert(
        "connection_name".into(),
        FieldValue::LongStr("billing worker".into()),
    );
    props.insert("product".into(), FieldValue::LongStr("raw test client".into()));
    r.send_method(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongStr::from_static("\0guest\0guest"),
            locale: "en_US".into(),
        }),
    );
    let Some(Method::ConnectionTune(tune)) = r.method() else {
        panic!("no tune")
    };
    r.send_method(
        0,
        Method::ConnectionTuneOk(ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        }),
    );
    r.send_method(
        0,
        Method::ConnectionOpen(ConnectionOpen {
            virtual_host: "/".into(),
            ..Default::default()
        }),
    );
    assert!(matches!(r.method(), Some(Method::ConnectionOpenOk(_))));
    let name = format!("{} -> {}", r.s.local_addr().unwrap(), r.s.peer_addr().unwrap());
    let enc = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).to_string();
    let c = wait_for("connection listed by its name", || {
        let (status, c) = http("GET", &url(&format!("/api/connections/{enc}")), G, None);
        (status == 200 && c["user"] == "guest").then_some(c)
    });
    assert_eq!(c["name"], name.as_str());
    assert_eq!(c["user_provided_name"], "billing worker");
    assert_eq!(c["client_properties"]["connection_name"], "billing worker");
    assert_eq!(c["client_properties"]["product"], "raw test client");
    assert_eq!(
        c["client_properties"]["capabilities"]["consumer_cancel_notify"],
        true
    );
    assert_eq!(
        (c["host"].as_str(), c["peer_host"].as_str()),
        (Some("127.0.0.1"), Some("127.0.0.1"))
    );
    assert_eq!(c["port"], h.amqp_addr().port());
    let (_, listed) = http("GET", &url("/api/connections"), G, None);
    assert_eq!(listed[0]["name"], name.as_str());
    // Health of this node, and of a node that is not this one.
    let (_, nodes) = http("GET", &url("/api/nodes"), G, None);
    let node = nodes[0]["name"].as_str().unwrap().to_string();
    let (status, v) = http("GET", &url(&format!("/api/healthchecks/node/{node}")), G, None);
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    assert_eq!(
        http("GET", &url("/api/healthchecks/node/rabbit@elsewhere"), G, None).0,
        404
    );
    // Closed by that name.
    assert_eq!(
        http("DELETE", &url(&format!("/api/connections/{enc}")), G, None).0,
        204
    );
    let (code, _) = r.expect_connection_close();
    assert_eq!(code, 320);
}

fn limited_mgmt(
    b: &common::Broker,
    max_connections: usize,
    request_timeout: std::time::Duration,
) -> warren::mgmt::MgmtHandle {
    warren::mgmt::start(
        b.handle.admin(),
        warren::mgmt::MgmtConfig {
            max_connections,
            request_timeout,
            ..warren::mgmt::MgmtConfig::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0)
        },
    )
    .expect("management plane starts")
}

/// Whether the server closed `s` (EOF or reset) before `patience` ran out.
fn closed_by_server(s: &mut std::net::TcpStream, patience: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(patience)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A request whose headers never complete is closed after the request
/// deadline (slowloris held 300 such connections open for good).
#[test]
fn half_sent_requests_are_closed() {
    use std::io::Write;
    let b = common::start(1);
    let m = limited_mgmt(&b, 64, std::time::Duration::from_secs(1));
    let mut s = std::net::TcpStream::connect(m.addr()).unwrap();
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(
        closed_by_server(&mut s, std::time::Duration::from_secs(30)),
        "a half-sent request still open after 30 s"
    );
}

/// Past the connection cap, new management connections are closed at once;
/// AMQP is not affected, and the API serves again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_connections_are_capped() {
    let b = common::start(1);
    let m = limited_mgmt(&b, 8, std::time::Duration::from_secs(600));
    let addr = m.addr();
    let idle: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let mut extra = std::net::TcpStream::connect(addr).unwrap();
    let extra_closed =
        tokio::task::spawn_blocking(move || closed_by_server(&mut extra, std::time::Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(extra_closed, "a connection past the cap was kept");
    let c = b.connect().await;
    c.create_channel().await.expect("AMQP still serves");
    drop(idle);
    let url = format!("http://{addr}/api/overview");
    let status = tokio::task::spawn_blocking(move || {
        wait_for("the API serving again", || {
            // The server may not have seen the idle sockets go yet: a
            // connection it still refuses is reset, which is a retry here.
            let (status, _) =
                std::panic::catch_unwind(|| http("GET", &url, Some(("guest", "guest")), None)).ok()?;
            (status == 200).then_some(status)
        })
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}

/// A request with a wrong password is refused before any shard is asked
/// for a snapshot (each one asks every shard; with 20 000 queues that was
/// 20 ms of every shard per unauthenticated request).
#[test]
fn a_wrong_password_costs_no_snapshot() {
    let b = common::start(2);
    let m = common::mgmt_for(
        &b.handle,
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::time::Duration::from_secs(3600),
    );
    let admin = b.handle.admin();
    // The rate sampler's first snapshot.
    wait_for("the first sample", || {
        (admin.snapshots_taken() >= 1).then_some(())
    });
    let before = admin.snapshots_taken();
    let url = format!("http://{}/api/queues", m.addr());
    for _ in 0..20 {
        let (status, _) = http("GET", &url, Some(("guest", "wrong")), None);
        assert_eq!(status, 401);
        let (status, _) = http("GET", &url, Some(("nobody", "guest")), None);
        assert_eq!(status, 401);
    }
    assert_eq!(admin.snapshots_taken(), before, "refused requests took snapshots");
    let (status, _) = http("GET", &url, Some(("guest", "guest")), None);
    assert_eq!(status, 200);
    assert_eq!(admin.snapshots_taken(), before + 1);
}

/// Every answer carries a strict Content-Security-Policy, `X-Frame-Options:
/// DENY` and `nosniff`: the UI page, its script, API answers and refusals
/// alike (the UI test in ui.rs runs the page under this policy).
#[test]
fn answers_carry_security_headers() {
    use std::io::{Read, Write};
    let b = common::start(1);
    let m = limited_mgmt(&b, 64, std::time::Duration::from_secs(10));
    for path in ["/", "/app.js", "/api/overview"] {
        let mut s = std::net::TcpStream::connect(m.addr()).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let head = answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self';")
                && head.contains("frame-ancestors 'none'"),
            "{path}: {head}"
        );
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{path}: {head}");
    }
}
