//! Vhost limits (`max-connections`, `max-queues`) and user limits
//! (`max-connections`, `max-channels`), set through the management API and
//! enforced with RabbitMQ 3.10's codes and texts (each checked against a
//! RabbitMQ 3.10.8 broker), over brokers of two shards: connections and
//! channels are counted over every shard.

use crate::common::{self, http};
use crate::raw::{Raw, Target, client_properties};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use warren::protocol::methods::*;
use warren::protocol::{LongStr, PROTOCOL_HEADER, ShortStr};

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));

/// A `connection.close` as the client received it: code, text, class and
/// method.
type Close = (u16, String, u16, u16);

/// Opens a connection as `user` on `vhost`; the broker's `connection.close`
/// if it refuses.
fn open(addr: SocketAddr, user: &str, vhost: &str) -> Result<Raw, Close> {
    let mut r = Raw::connect(&Target { addr, _broker: None });
    r.send(&PROTOCOL_HEADER);
    assert!(matches!(r.method(), Some(Method::ConnectionStart(_))));
    r.send_method(
        0,
        Method::ConnectionStartOk(ConnectionStartOk {
            client_properties: client_properties(),
            mechanism: "PLAIN".into(),
            response: LongStr::new(bytes::Bytes::from(format!("\0{user}\0{user}"))),
            locale: "en_US".into(),
        }),
    );
    let Some(Method::ConnectionTune(t)) = r.method() else {
        panic!("no tune")
    };
    r.send_method(
        0,
        Method::ConnectionTuneOk(ConnectionTuneOk {
            channel_max: t.channel_max,
            frame_max: t.frame_max,
            heartbeat: 0,
        }),
    );
    r.send_method(
        0,
        Method::ConnectionOpen(ConnectionOpen {
            virtual_host: ShortStr::from_string_lossy(vhost),
            ..Default::default()
        }),
    );
    match r.method() {
        Some(Method::ConnectionOpenOk(_)) => Ok(r),
        Some(Method::ConnectionClose(c)) => Err(closed(&mut r, c)),
        other => panic!("unexpected answer to connection.open: {other:?}"),
    }
}

fn closed(r: &mut Raw, c: ConnectionClose) -> Close {
    r.send_method(0, Method::ConnectionCloseOk(ConnectionCloseOk {}));
    (c.reply_code, c.reply_text.to_string(), c.class_id, c.method_id)
}

/// Opens channel `n`: Ok, or the `connection.close` the broker sent.
fn open_channel(r: &mut Raw, n: u16) -> Result<(), Close> {
    r.send_method(n, Method::ChannelOpen(Default::default()));
    match r.method() {
        Some(Method::ChannelOpenOk(_)) => Ok(()),
        Some(Method::ConnectionClose(c)) => Err(closed(r, c)),
        other => panic!("unexpected answer to channel.open: {other:?}"),
    }
}

fn close_channel(r: &mut Raw, n: u16) {
    r.send_method(n, Method::ChannelClose(Default::default()));
    assert!(matches!(r.method(), Some(Method::ChannelCloseOk(_))));
}

/// Closes the connection and waits for `close-ok`: by then the broker has
/// given back its places.
fn close(mut r: Raw) {
    r.send_method(0, Method::ConnectionClose(Default::default()));
    assert!(matches!(r.method(), Some(Method::ConnectionCloseOk(_))));
}

/// What the calls below need of a broker: its management API.
trait Api {
    fn base(&self) -> &str;
}

impl Api for common::MgmtBroker {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Api for String {
    fn base(&self) -> &str {
        self
    }
}

fn api(b: &impl Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    http(method, &format!("{}/api{path}", b.base()), GUEST, body)
}

#[track_caller]
fn set(b: &impl Api, path: &str, value: i64) {
    let (status, body) = api(b, "PUT", path, Some(json!({ "value": value })));
    assert_eq!(status, 204, "PUT {path}: {body}");
}

/// A user `name` (password `name`) allowed everything in `/`.
fn add_user(b: &impl Api, name: &str) {
    let (s, _) = api(
        b,
        "PUT",
        &format!("/users/{name}"),
        Some(json!({ "password": name, "tags": "" })),
    );
    assert_eq!(s, 201);
    let (s, _) = api(
        b,
        "PUT",
        &format!("/permissions/%2F/{name}"),
        Some(json!({ "configure": ".*", "write": ".*", "read": ".*" })),
    );
    assert_eq!(s, 201);
}

/// Opens connections as `user` until each shard has at least one of them;
/// returns them with the shard each landed on (SO_REUSEPORT picks).
fn connections_on_every_shard(b: &common::MgmtBroker, user: &str) -> Vec<(Raw, usize)> {
    let h = &b.broker.handle;
    let mut conns = Vec::new();
    for _ in 0..200 {
        let before = h.connections_per_shard();
        let c = open(h.amqp_addr(), user, "/").expect("no limit yet");
        let after = h.connections_per_shard();
        let shard = (0..after.len()).find(|&s| after[s] > before[s]).expect("counted");
        conns.push((c, shard));
        let shards: std::collections::BTreeSet<usize> = conns.iter().map(|(_, s)| *s).collect();
        if shards.len() == after.len() {
            return conns;
        }
    }
    panic!("connections never reached every shard");
}

/// `max-connections` of a vhost counts the connections of every shard: with
/// as many open as the limit, spread over both shards (each alone under
/// it), the next is refused with 530 on `connection.open`, whichever shard
/// takes it; closing one (on either shard) frees a place; 0 refuses all.
#[test]
fn vhost_connection_limit_counts_every_shard() {
    let b = common::start_with_mgmt(2);
    let addr = b.broker.handle.amqp_addr();
    let mut conns = connections_on_every_shard(&b, "guest");
    let n = conns.len();
    set(&b, "/vhost-limits/%2F/max-connections", n as i64);
    let per = b.broker.handle.connections_per_shard();
    assert!(
        per.iter().all(|&k| 0 < k && k < n),
        "every shard under the limit alone: {per:?}"
    );
    let full = (
        530,
        format!(
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit ({n}) is reached"
        ),
        10,
        40,
    );
    for _ in 0..8 {
        assert_eq!(open(addr, "guest", "/").err(), Some(full.clone()));
    }
    // Closing the last one, on whichever shard it was, frees its place.
    let (last, _) = conns.pop().unwrap();
    close(last);
    let again = open(addr, "guest", "/").expect("a place was freed");
    assert_eq!(open(addr, "guest", "/").err(), Some(full));
    // A vhost without a limit is not affected.
    let (s, _) = api(&b, "PUT", "/vhosts/v2", None);
    assert_eq!(s, 201);
    let other = open(addr, "guest", "v2").expect("v2 has no limit");
    // 0 refuses every connection.
    set(&b, "/vhost-limits/v2/max-connections", 0);
    assert_eq!(
        open(addr, "guest", "v2").err(),
        Some((
            530,
            "NOT_ALLOWED - access to vhost 'v2' refused for user 'guest': connection limit (0) is reached"
                .into(),
            10,
            40
        ))
    );
    drop((conns, again, other));
}

/// lapin sees the refusal as RabbitMQ words it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_is_refused_at_the_vhost_connection_limit() {
    let b = tokio::task::block_in_place(|| common::start_with_mgmt(1));
    tokio::task::block_in_place(|| set(&b, "/vhost-limits/%2F/max-connections", 1));
    let first = b.broker.connect().await;
    let err = lapin::Connection::connect(&b.broker.uri, Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        ),
        "{err}"
    );
    first.close(200, "bye".into()).await.unwrap();
    let second = b.broker.connect().await;
    second.close(200, "bye".into()).await.unwrap();
}

/// `max-queues`: the declare past the limit is refused on its channel
/// (406, RabbitMQ's text) from a connection on either shard; an existing
/// queue may be declared again; deleting one frees a place; the
/// management API is held to it too; 0 refuses every new queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limit_refuses_new_queues_only() {
    let b = tokio::task::block_in_place(|| common::start_with_mgmt(2));
    tokio::task::block_in_place(|| set(&b, "/vhost-limits/%2F/max-queues", 2));
    let c0 = b.broker.connect_on_shard(0).await;
    let c1 = b.broker.connect_on_shard(1).await;
    let ch0 = c0.create_channel().await.unwrap();
    let ch1 = c1.create_channel().await.unwrap();
    let opts = QueueDeclareOptions::default();
    ch0.queue_declare("a".into(), opts, Default::default())
        .await
        .unwrap();
    ch1.queue_declare("b".into(), opts, Default::default())
        .await
        .unwrap();
    let full = |q: &str| {
        format!("PRECONDITION_FAILED - cannot declare queue '{q}': queue limit in vhost '/' (2) is reached")
    };
    let err = ch0
        .queue_declare("c".into(), opts, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&full("c")), "{err}");
    // A server-named queue is a new queue too.
    let ch1b = c1.create_channel().await.unwrap();
    let err = ch1b
        .queue_declare("".into(), opts, Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("queue limit in vhost '/' (2) is reached"),
        "{err}"
    );
    // Declaring an existing queue is fine, passively or not.
    let ch0 = c0.create_channel().await.unwrap();
    ch0.queue_declare("a".into(), opts, Default::default())
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..opts
    };
    ch0.queue_declare("b".into(), passive, Default::default())
        .await
        .unwrap();
    // The management plane is refused the same way.
    let (s, body) =
        tokio::task::block_in_place(|| api(&b, "PUT", "/queues/%2F/m", Some(json!({ "durable": false }))));
    assert_eq!(s, 400, "{body}");
    assert!(body["reason"].as_str().unwrap().contains(&full("m")), "{body}");
    // Deleting one frees a place.
    ch0.queue_delete("b".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let ch1 = c1.create_channel().await.unwrap();
    ch1.queue_declare("c".into(), opts, Default::default())
        .await
        .unwrap();
    let err = ch1
        .queue_declare("d".into(), opts, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&full("d")), "{err}");
    // Lifting the limit (negative) and setting 0.
    tokio::task::block_in_place(|| set(&b, "/vhost-limits/%2F/max-queues", -1));
    let ch1 = c1.create_channel().await.unwrap();
    ch1.queue_declare("d".into(), opts, Default::default())
        .await
        .unwrap();
    tokio::task::block_in_place(|| set(&b, "/vhost-limits/%2F/max-queues", 0));
    let err = ch1
        .queue_declare("e".into(), opts, Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot declare queue 'e': queue limit in vhost '/' (0) is reached"),
        "{err}"
    );
}

/// A user's `max-connections` and `max-channels` count over every shard;
/// the channel limit closes the connection (530, no method); a channel
/// that goes frees its place, for a connection on the other shard too;
/// other users are not affected.
#[test]
fn user_connection_and_channel_limits_count_every_shard() {
    let b = common::start_with_mgmt(2);
    let addr = b.broker.handle.amqp_addr();
    add_user(&b, "lim");
    let mut conns = connections_on_every_shard(&b, "lim");
    let n = conns.len();
    set(&b, "/user-limits/lim/max-connections", n as i64);
    set(&b, "/user-limits/lim/max-channels", 2);
    assert_eq!(
        open(addr, "lim", "/").err(),
        Some((
            530,
            format!(
                "NOT_ALLOWED - connection refused for user 'lim': user connection limit ({n}) is reached"
            ),
            10,
            40
        ))
    );
    let mut guest = open(addr, "guest", "/").expect("guest has no limit");
    for ch in 1..=3 {
        open_channel(&mut guest, ch).unwrap();
    }
    let x = conns.iter().position(|(_, s)| *s == 0).unwrap();
    let y = conns.iter().position(|(_, s)| *s == 1).unwrap();
    let (mut cx, mut cy) = if x < y {
        let (cy, _) = conns.swap_remove(y);
        let (cx, _) = conns.swap_remove(x);
        (cx, cy)
    } else {
        let (cx, _) = conns.swap_remove(x);
        let (cy, _) = conns.swap_remove(y);
        (cx, cy)
    };
    // A closed channel no longer counts.
    open_channel(&mut cx, 1).unwrap();
    close_channel(&mut cx, 1);
    open_channel(&mut cx, 1).unwrap();
    open_channel(&mut cy, 1).unwrap();
    let over = (
        530,
        "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (2)"
            .to_string(),
        0,
        0,
    );
    // One channel on each shard: the limit is reached for both.
    assert_eq!(open_channel(&mut cx, 2), Err(over.clone()));
    // The refused connection is gone with its channel: shard 1's
    // connection takes the place.
    open_channel(&mut cy, 2).expect("the place freed on shard 0");
    assert_eq!(open_channel(&mut cy, 3), Err(over));
    // Both connections are gone: new ones may come.
    let mut fresh = open(addr, "lim", "/").expect("connection places were freed");
    open_channel(&mut fresh, 1).unwrap();
    drop((guest, conns, fresh));
}

/// The limits API: RabbitMQ's shapes, status codes and validation texts
/// (`Validation failed`, Erlang terms and all), administrators only for
/// changes; the vhost-limits runtime parameter; users show their limits.
#[test]
fn limits_api() {
    let b = common::start_with_mgmt(1);
    add_user(&b, "lim");
    assert_eq!(api(&b, "GET", "/vhost-limits", None), (200, json!([])));
    assert_eq!(api(&b, "GET", "/vhost-limits/%2F", None), (200, json!([])));
    assert_eq!(api(&b, "GET", "/vhost-limits/nope", None).0, 404);
    set(&b, "/vhost-limits/%2F/max-queues", 5);
    set(&b, "/vhost-limits/%2F/max-connections", 10);
    let both = json!([{ "vhost": "/", "value": { "max-connections": 10, "max-queues": 5 } }]);
    assert_eq!(api(&b, "GET", "/vhost-limits", None), (200, both.clone()));
    assert_eq!(api(&b, "GET", "/vhost-limits/%2F", None), (200, both));
    let bad = |path: &str, body: Value| api(&b, "PUT", path, Some(body));
    assert_eq!(
        bad("/vhost-limits/%2F/max-queues", json!({ "value": "x" })),
        (
            400,
            json!({ "error": "bad_request", "reason": "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\n" })
        )
    );
    assert_eq!(
        bad("/vhost-limits/%2F/max-queues", json!({ "value": 3.5 })),
        (
            400,
            json!({ "error": "bad_request", "reason": "Validation failed\n\nmax-queues should be a number, actually was 3.5\n" })
        )
    );
    assert_eq!(
        bad("/vhost-limits/%2F/max-foo", json!({ "value": 3 })),
        (
            400,
            json!({ "error": "bad_request", "reason": "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,3}] in limits\n" })
        )
    );
    assert_eq!(
        bad("/vhost-limits/%2F/max-queues", json!({ "valu": 3 })),
        (
            400,
            json!({ "error": "bad_request", "reason": "[{key_missing,value}]" })
        )
    );
    assert_eq!(
        bad("/vhost-limits/nope/max-queues", json!({ "value": 3 })),
        (404, json!({ "error": "not_found", "reason": "vhost_not_found" }))
    );
    // Negative: no limit, kept as set.
    set(&b, "/vhost-limits/%2F/max-queues", -1);
    assert_eq!(
        api(&b, "GET", "/vhost-limits/%2F", None).1,
        json!([{ "vhost": "/", "value": { "max-connections": 10, "max-queues": -1 } }])
    );
    assert_eq!(
        api(&b, "DELETE", "/vhost-limits/%2F/max-connections", None).0,
        204
    );
    assert_eq!(api(&b, "DELETE", "/vhost-limits/%2F/max-bogus", None).0, 204);
    assert_eq!(api(&b, "DELETE", "/vhost-limits/%2F/max-queues", None).0, 204);
    // What RabbitMQ leaves: an empty set, listed as such only globally.
    assert_eq!(
        api(&b, "GET", "/vhost-limits", None).1,
        json!([{ "vhost": "/", "value": [] }])
    );
    assert_eq!(api(&b, "GET", "/vhost-limits/%2F", None).1, json!([]));

    // User limits.
    assert_eq!(api(&b, "GET", "/user-limits", None), (200, json!([])));
    assert_eq!(api(&b, "GET", "/user-limits/lim", None), (200, json!([])));
    assert_eq!(api(&b, "GET", "/user-limits/nobody", None).0, 404);
    set(&b, "/user-limits/lim/max-connections", 2);
    set(&b, "/user-limits/lim/max-channels", 3);
    let lim = json!([{ "user": "lim", "value": { "max-channels": 3, "max-connections": 2 } }]);
    assert_eq!(api(&b, "GET", "/user-limits", None), (200, lim.clone()));
    assert_eq!(api(&b, "GET", "/user-limits/lim", None), (200, lim));
    assert_eq!(
        api(&b, "GET", "/users/lim", None).1["limits"],
        json!({ "max-channels": 3, "max-connections": 2 })
    );
    assert_eq!(api(&b, "GET", "/users/guest", None).1["limits"], json!({}));
    assert_eq!(
        bad("/user-limits/lim/max-channels", json!({ "value": "x" })),
        (
            400,
            json!({ "error": "bad_request", "reason": "max-channels should be a number, actually was <<\"x\">>" })
        )
    );
    assert_eq!(
        bad("/user-limits/lim/max-foo", json!({ "value": 3 })),
        (
            400,
            json!({ "error": "bad_request", "reason": "Unrecognised terms [{<<\"max-foo\">>,3}] in user-limits" })
        )
    );
    assert_eq!(
        bad("/user-limits/nobody/max-channels", json!({ "value": 3 })),
        (
            400,
            json!({ "error": "bad_request", "reason": ["no_such_user", "nobody"] })
        )
    );
    let (s, body) = common::http_text(
        "PUT",
        &format!("{}/api/user-limits/lim/max-channels", b.base),
        GUEST,
        None,
    );
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            "{\"error\":\"bad_request\",\"reason\":\"[{key_missing,value}]\"}"
        )
    );
    assert_eq!(api(&b, "DELETE", "/user-limits/lim/max-channels", None).0, 204);
    assert_eq!(
        api(&b, "GET", "/user-limits/lim", None).1,
        json!([{ "user": "lim", "value": { "max-connections": 2 } }])
    );
    assert_eq!(api(&b, "DELETE", "/user-limits/nobody/max-channels", None).0, 404);
    // Setting limits takes an administrator; a policymaker may set a
    // vhost's through its runtime parameter; a management user may look.
    let (s, _) = api(
        &b,
        "PUT",
        "/users/pm",
        Some(json!({ "password": "pm", "tags": "policymaker" })),
    );
    assert_eq!(s, 201);
    let (s, _) = api(
        &b,
        "PUT",
        "/permissions/%2F/pm",
        Some(json!({ "configure": ".*", "write": ".*", "read": ".*" })),
    );
    assert_eq!(s, 201);
    let pm = Some(("pm", "pm"));
    let url = |p: &str| format!("{}/api{p}", b.base);
    assert_eq!(
        http(
            "PUT",
            &url("/vhost-limits/%2F/max-queues"),
            pm,
            Some(json!({ "value": 1 }))
        ),
        (
            401,
            json!({ "error": "not_authorised", "reason": "Not administrator user" })
        )
    );
    assert_eq!(
        http(
            "PUT",
            &url("/user-limits/pm/max-channels"),
            pm,
            Some(json!({ "value": 1 }))
        )
        .0,
        401
    );
    assert_eq!(http("GET", &url("/user-limits"), pm, None).0, 200);
    let param = url("/parameters/vhost-limits/%2F/limits");
    assert_eq!(
        http("PUT", &param, pm, Some(json!({ "value": { "max-queues": 4 } }))).0,
        204,
        "replaces the empty set"
    );
    assert_eq!(
        http("GET", &param, pm, None),
        (
            200,
            json!({ "value": { "max-queues": 4 }, "vhost": "/", "component": "vhost-limits", "name": "limits" })
        )
    );
    assert_eq!(
        http("GET", &url("/parameters"), pm, None).1,
        json!([{ "value": { "max-queues": 4 }, "vhost": "/", "component": "vhost-limits", "name": "limits" }])
    );
    assert_eq!(
        http(
            "PUT",
            &param,
            pm,
            Some(json!({ "value": { "max-queues": "x", "max-connections": "y" } }))
        ),
        (
            400,
            json!({ "error": "bad_request", "reason": "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\nmax-connections should be a number, actually was <<\"y\">>\n" })
        )
    );
    assert_eq!(http("DELETE", &param, pm, None).0, 204);
    assert_eq!(http("DELETE", &param, pm, None).0, 404, "nothing left to clear");
    assert_eq!(http("GET", &param, pm, None).0, 404);
    assert_eq!(api(&b, "GET", "/vhost-limits", None).1, json!([]));
    let (s, _) = api(
        &b,
        "PUT",
        "/users/mg",
        Some(json!({ "password": "mg", "tags": "management" })),
    );
    assert_eq!(s, 201);
    assert_eq!(
        http("GET", &param, Some(("mg", "mg")), None),
        (
            401,
            json!({ "error": "not_authorised", "reason": "User not authorised to access object" })
        )
    );
}

/// Limits are in the definitions as RabbitMQ's management API exports
/// them (vhost limits as `vhost-limits` parameters, users with their
/// `limits`) and come back from an import into another broker. An import
/// that would take a vhost past its queue limit is refused whole, with
/// RabbitMQ's text, before anything is imported.
#[test]
fn limits_in_definitions() {
    let a = common::start_with_mgmt(1);
    add_user(&a, "lim");
    set(&a, "/vhost-limits/%2F/max-queues", 2);
    set(&a, "/user-limits/lim/max-channels", 7);
    let (_, defs) = api(&a, "GET", "/definitions", None);
    assert_eq!(
        defs["parameters"],
        json!([{ "value": { "max-queues": 2 }, "vhost": "/", "component": "vhost-limits", "name": "limits" }])
    );
    let lim = defs["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "lim")
        .unwrap();
    assert_eq!(lim["limits"], json!({ "max-channels": 7 }));
    let (_, vdefs) = api(&a, "GET", "/definitions/%2F", None);
    assert_eq!(vdefs["parameters"], defs["parameters"]);

    let b = common::start_with_mgmt(1);
    let mut with_queues = defs.clone();
    with_queues["queues"] = json!([
        { "name": "q1", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} },
        { "name": "q2", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} },
        { "name": "q3", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} },
    ]);
    // The file's own limits apply after its queues (RabbitMQ does not hold
    // an import's queues to them).
    assert_eq!(api(&b, "POST", "/definitions", Some(with_queues.clone())).0, 204);
    assert_eq!(
        api(&b, "GET", "/vhost-limits", None).1,
        json!([{ "vhost": "/", "value": { "max-queues": 2 } }])
    );
    assert_eq!(
        api(&b, "GET", "/user-limits/lim", None).1,
        json!([{ "user": "lim", "value": { "max-channels": 7 } }])
    );
    assert_eq!(api(&b, "GET", "/queues/%2F", None).1.as_array().unwrap().len(), 3);
    // Now the limit is in force: importing more is refused whole.
    let mut more = json!({ "queues": [
        { "name": "q1", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} },
        { "name": "q4", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {} },
    ], "exchanges": [
        { "name": "x", "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {} },
    ] });
    let text = "Adding 1 queue(s) to virtual host \"/\" would exceed the limit of 2 queue(s).\n\nThis virtual host currently has 3 queue(s) defined.\n\nImport aborted!";
    assert_eq!(
        api(&b, "POST", "/definitions", Some(more.clone())),
        (400, json!({ "error": "bad_request", "reason": text }))
    );
    assert_eq!(
        api(&b, "GET", "/exchanges/%2F/x", None).0,
        404,
        "nothing imported"
    );
    for q in more["queues"].as_array_mut().unwrap() {
        q.as_object_mut().unwrap().remove("vhost");
    }
    assert_eq!(
        api(&b, "POST", "/definitions/%2F", Some(more)),
        (400, json!({ "error": "bad_request", "reason": text }))
    );
    // A bad value in a file: RabbitMQ's text and where it was.
    let bad = json!({ "parameters": [
        { "value": { "max-queues": "x" }, "vhost": "/", "component": "vhost-limits", "name": "limits" }
    ] });
    assert_eq!(
        api(&b, "POST", "/definitions", Some(bad)).1["reason"],
        "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\n (//vhost-limits/limits)"
    );
}

/// Limits are durable: after a restart the API shows them and the broker
/// enforces them.
#[test]
fn limits_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let with_mgmt = || {
        let h = common::start_in(dir.path(), 2);
        let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let m = common::mgmt_for(&h, localhost, std::time::Duration::from_millis(200));
        let base = format!("http://{}", m.addr());
        (h, m, base)
    };
    {
        let (_h, _m, base) = with_mgmt();
        add_user(&base, "lim");
        set(&base, "/vhost-limits/%2F/max-connections", 1);
        set(&base, "/user-limits/lim/max-channels", 0);
    }
    let (h, _m, base) = with_mgmt();
    assert_eq!(
        api(&base, "GET", "/vhost-limits", None).1,
        json!([{ "vhost": "/", "value": { "max-connections": 1 } }])
    );
    assert_eq!(
        api(&base, "GET", "/user-limits", None).1,
        json!([{ "user": "lim", "value": { "max-channels": 0 } }])
    );
    let mut c = open(h.amqp_addr(), "lim", "/").unwrap();
    assert_eq!(
        open(h.amqp_addr(), "guest", "/").err().map(|c| c.1),
        Some(
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached"
                .into()
        )
    );
    assert_eq!(
        open_channel(&mut c, 1).err().map(|c| c.1),
        Some(
            "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (0)"
                .into()
        )
    );
}
