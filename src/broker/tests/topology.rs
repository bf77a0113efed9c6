//! The replicated topology on its own: `apply`, `route`, lookups,
//! policies, users and permissions, and the version counter.

use super::super::topology::{PolicyDef, QueueDef, RouteError, RouteScratch, decode_headers};
use super::super::users::Access;
use super::*;
use crate::protocol::BasicProperties;
use ExchangeKind::{Direct, Fanout, Headers, Topic};

/// Routes a publish; returns the queue names (sorted) and whether the
/// route may be cached.
fn route(w: &World, exchange: &str, key: &str, props: &[u8]) -> Result<(Vec<String>, bool), RouteError> {
    let mut scratch = RouteScratch::default();
    let mut out = vec![(QueueId(999), 99)];
    let routed = w.topo.route(
        w.vhost,
        exchange.as_bytes(),
        key.as_bytes(),
        props,
        &mut scratch,
        &mut out,
    )?;
    let mut names: Vec<String> = out
        .iter()
        .map(|(q, owner)| {
            let def = w.topo.queue(*q).expect("routed to a live queue");
            assert_eq!(def.owner, *owner, "owner shard of {}", def.name);
            def.name.as_str().into_owned()
        })
        .collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "each queue once: {names:?}");
    Ok((names, routed.by_key_only))
}

/// Queue names reached, by key only.
fn to(w: &World, exchange: &str, key: &str) -> Vec<String> {
    let (names, by_key_only) = route(w, exchange, key, &no_props()).expect("routes");
    assert!(by_key_only);
    names
}

fn no_props() -> Vec<u8> {
    BasicProperties::default().to_bytes().to_vec()
}

fn with_headers(h: FieldTable) -> Vec<u8> {
    BasicProperties {
        headers: Some(h),
        ..Default::default()
    }
    .to_bytes()
    .to_vec()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn queues(w: &mut World, names: &[&str]) {
    for n in names {
        w.declare_queue(n);
    }
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let mut w = World::new();
    w.run_as(GUEST.on(CONN_A, 3), QDecl::new("q")).unwrap();
    assert_eq!(route(&w, "", "q", &no_props()), Ok((names(&["q"]), true)));
    assert_eq!(route(&w, "", "nope", &no_props()), Ok((vec![], true)));
}

#[test]
fn missing_exchange_vhost_and_internal_exchange_are_errors() {
    let mut w = World::new();
    w.run(XDecl::new("i", Direct).internal()).unwrap();
    assert_eq!(route(&w, "nope", "k", &no_props()), Err(RouteError::NoExchange));
    assert_eq!(route(&w, "i", "k", &no_props()), Err(RouteError::Internal));
    assert_eq!(
        route(&w, "amq.rabbitmq.trace", "k", &no_props()),
        Err(RouteError::Internal)
    );
    let mut scratch = RouteScratch::default();
    let mut out = Vec::new();
    assert_eq!(
        w.topo.route(
            VhostId(77),
            b"amq.direct",
            b"k",
            &no_props(),
            &mut scratch,
            &mut out
        ),
        Err(RouteError::NoExchange)
    );
}

#[test]
fn direct_routes_by_exact_key() {
    let mut w = World::new();
    queues(&mut w, &["a", "b", "c"]);
    w.bind_queue("a", "amq.direct", "k");
    w.bind_queue("b", "amq.direct", "k");
    w.bind_queue("c", "amq.direct", "other");
    // `a` twice under the same key with other arguments: still once.
    w.run(queue_bind("a", "amq.direct", "k", table(&[("z", ls("1"))])))
        .unwrap();
    assert_eq!(to(&w, "amq.direct", "k"), names(&["a", "b"]));
    assert_eq!(to(&w, "amq.direct", "other"), names(&["c"]));
    assert_eq!(to(&w, "amq.direct", "K"), Vec::<String>::new());
    assert_eq!(to(&w, "amq.direct", ""), Vec::<String>::new());
}

#[test]
fn fanout_ignores_the_key() {
    let mut w = World::new();
    queues(&mut w, &["a", "b"]);
    w.bind_queue("a", "amq.fanout", "x");
    w.bind_queue("b", "amq.fanout", "y");
    w.bind_queue("b", "amq.fanout", "z");
    assert_eq!(to(&w, "amq.fanout", "anything"), names(&["a", "b"]));
}

#[test]
fn topic_wildcards() {
    let mut w = World::new();
    queues(&mut w, &["star", "hash", "all", "mid", "exact", "empty"]);
    w.bind_queue("star", "amq.topic", "a.*");
    w.bind_queue("hash", "amq.topic", "a.#");
    w.bind_queue("all", "amq.topic", "#");
    w.bind_queue("mid", "amq.topic", "*.b.#");
    w.bind_queue("exact", "amq.topic", "a.b");
    w.bind_queue("empty", "amq.topic", "");
    let cases: &[(&str, &[&str])] = &[
        ("a", &["all", "hash"]),
        ("a.b", &["all", "exact", "hash", "mid", "star"]),
        ("a.b.c", &["all", "hash", "mid"]),
        ("x.b", &["all", "mid"]),
        ("a.", &["all", "hash", "star"]),
        ("", &["all", "empty"]),
        ("b", &["all"]),
    ];
    for (key, want) in cases {
        assert_eq!(to(&w, "amq.topic", key), names(want), "key {key:?}");
    }
}

#[test]
fn headers_exchange_matching_modes() {
    let mut w = World::new();
    queues(&mut w, &["all", "any", "allx", "anyx", "none"]);
    let bind = |w: &mut World, q: &str, args: FieldTable| {
        w.run(queue_bind(q, "amq.headers", "", args)).unwrap();
    };
    bind(
        &mut w,
        "all",
        table(&[("x-match", ls("all")), ("a", ls("1")), ("b", ls("2"))]),
    );
    bind(
        &mut w,
        "any",
        table(&[("x-match", ls("any")), ("a", ls("1")), ("b", ls("2"))]),
    );
    bind(
        &mut w,
        "allx",
        table(&[("x-match", ls("all-with-x")), ("a", ls("1")), ("x-k", ls("v"))]),
    );
    bind(
        &mut w,
        "anyx",
        table(&[("x-match", ls("any-with-x")), ("x-k", ls("v"))]),
    );
    // No x-match: all. Void: presence only.
    bind(&mut w, "none", table(&[("c", FieldValue::Void)]));
    let h = |entries: &[(&str, FieldValue)]| with_headers(table(entries));
    let cases: Vec<(Vec<u8>, &[&str])> = vec![
        (h(&[("a", ls("1")), ("b", ls("2"))]), &["all", "any"]),
        (h(&[("a", ls("1"))]), &["any"]),
        // Integers match across widths; a string does not match an int.
        (h(&[("a", FieldValue::I32(1))]), &[]),
        (h(&[("a", ls("1")), ("x-k", ls("v"))]), &["allx", "any", "anyx"]),
        (h(&[("x-k", ls("v"))]), &["anyx"]),
        (h(&[("c", FieldValue::Bool(false))]), &["none"]),
        (h(&[]), &[]),
        (no_props(), &[]),
    ];
    for (props, want) in cases {
        let (got, by_key_only) = route(&w, "amq.headers", "ignored", &props).unwrap();
        assert_eq!(got, names(want), "{:?}", decode_headers(&props));
        assert!(!by_key_only, "a headers exchange decides by headers");
    }
}

#[test]
fn exchange_to_exchange_bindings_follow_cycles_once() {
    let mut w = World::new();
    queues(&mut w, &["qa", "qb", "qc"]);
    w.declare_exchange("a", Fanout);
    w.declare_exchange("b", Fanout);
    w.declare_exchange("c", Direct);
    // a -> b -> a (cycle), b -> c, a -> c; every exchange has a queue.
    w.bind_exchange("b", "a", "");
    w.bind_exchange("a", "b", "");
    w.bind_exchange("c", "b", "");
    w.bind_exchange("c", "a", "");
    w.bind_queue("qa", "a", "");
    w.bind_queue("qb", "b", "");
    w.bind_queue("qc", "c", "k");
    w.bind_queue("qa", "c", "k");
    assert_eq!(to(&w, "a", "k"), names(&["qa", "qb", "qc"]));
    assert_eq!(to(&w, "b", "other"), names(&["qa", "qb"]));
    assert_eq!(to(&w, "c", "k"), names(&["qa", "qc"]));
    // A self-binding is harmless.
    w.bind_exchange("c", "c", "k");
    assert_eq!(to(&w, "c", "k"), names(&["qa", "qc"]));
}

#[test]
fn headers_exchange_downstream_makes_the_route_uncacheable() {
    let mut w = World::new();
    w.declare_queue("q");
    w.declare_exchange("h", Headers);
    w.declare_exchange("d", Direct);
    w.bind_exchange("h", "d", "k");
    w.run(queue_bind("q", "h", "", table(&[("a", ls("1"))]))).unwrap();
    let props = with_headers(table(&[("a", ls("1"))]));
    assert_eq!(route(&w, "d", "k", &props), Ok((names(&["q"]), false)));
    // Not reaching the headers exchange: cacheable.
    assert_eq!(route(&w, "d", "other", &props), Ok((vec![], true)));
}

#[test]
fn internal_exchanges_route_when_reached_through_bindings() {
    let mut w = World::new();
    w.declare_queue("q");
    w.run(XDecl::new("i", Fanout).internal()).unwrap();
    w.bind_exchange("i", "amq.direct", "k");
    w.bind_queue("q", "i", "");
    assert_eq!(to(&w, "amq.direct", "k"), names(&["q"]));
}

#[test]
fn alternate_exchange_takes_what_routes_nowhere() {
    let mut w = World::new();
    queues(&mut w, &["main", "alt"]);
    w.declare_exchange("ae", Fanout);
    w.bind_queue("alt", "ae", "");
    w.run(XDecl::new("x", Direct).args(table(&[("alternate-exchange", ls("ae"))])))
        .unwrap();
    w.bind_queue("main", "x", "k");
    assert_eq!(to(&w, "x", "k"), names(&["main"]));
    assert_eq!(to(&w, "x", "other"), names(&["alt"]));
    // An alternate exchange that does not exist: routes nowhere.
    w.run(XDecl::new("y", Direct).args(table(&[("alternate-exchange", ls("nope"))])))
        .unwrap();
    assert_eq!(to(&w, "y", "k"), Vec::<String>::new());
}

#[test]
fn alternate_exchanges_chain_and_loops_end() {
    let mut w = World::new();
    w.declare_queue("q");
    // x1 -> ae1 (routes nowhere) -> ae2 (fanout to q); ae2's own AE is x1.
    w.run(XDecl::new("x1", Direct).args(table(&[("alternate-exchange", ls("ae1"))])))
        .unwrap();
    w.run(XDecl::new("ae1", Direct).args(table(&[("alternate-exchange", ls("ae2"))])))
        .unwrap();
    w.run(XDecl::new("ae2", Direct).args(table(&[("alternate-exchange", ls("x1"))])))
        .unwrap();
    assert_eq!(to(&w, "x1", "k"), Vec::<String>::new());
    w.bind_queue("q", "ae2", "k");
    assert_eq!(to(&w, "x1", "k"), names(&["q"]));
}

#[test]
fn alternate_exchange_from_a_policy_and_the_argument_wins() {
    let mut w = World::new();
    queues(&mut w, &["by-arg", "by-policy"]);
    w.declare_exchange("ae-arg", Fanout);
    w.declare_exchange("ae-pol", Fanout);
    w.bind_queue("by-arg", "ae-arg", "");
    w.bind_queue("by-policy", "ae-pol", "");
    w.declare_exchange("p", Direct);
    w.run(XDecl::new("pa", Direct).args(table(&[("alternate-exchange", ls("ae-arg"))])))
        .unwrap();
    w.topo.apply(&Change::SetPolicy(policy(
        w.vhost,
        "ae",
        "^p",
        "exchanges",
        0,
        table(&[("alternate-exchange", ls("ae-pol"))]),
    )));
    assert_eq!(to(&w, "p", "k"), names(&["by-policy"]));
    assert_eq!(to(&w, "pa", "k"), names(&["by-arg"]));
    let ex = w.topo.exchange(w.xid("p")).unwrap();
    assert_eq!(w.topo.alternate_exchange(ex), Some(Bytes::from_static(b"ae-pol")));
}

#[test]
fn routing_to_a_deleted_queue_stops_at_once() {
    let mut w = World::new();
    queues(&mut w, &["a", "b"]);
    w.bind_queue("a", "amq.fanout", "");
    w.bind_queue("b", "amq.fanout", "");
    w.run(queue_delete("a", false, false)).unwrap();
    assert_eq!(to(&w, "amq.fanout", ""), names(&["b"]));
    assert_eq!(to(&w, "", "a"), Vec::<String>::new());
}

// ---- apply, lookups, version ----

#[test]
fn version_bumps_on_every_change_even_a_no_op() {
    let mut w = World::new();
    let v0 = w.topo.version();
    // The vhost and its 7 exchanges, the guest user and its permissions.
    assert_eq!(v0, 10);
    let changes = [
        Change::Bind {
            source: ExchangeId(12345),
            dest: Dest::Queue(QueueId(1)),
            key: ss("k"),
            args: FieldTable::new(),
        },
        Change::DeleteQueue { id: QueueId(999) },
        Change::DeleteExchange { id: ExchangeId(999) },
        Change::DeleteUser {
            name: "nobody".into(),
        },
        Change::ClearPolicy {
            vhost: w.vhost,
            name: "none".into(),
        },
    ];
    for (i, c) in changes.iter().enumerate() {
        w.topo.apply(c);
        assert_eq!(w.topo.version(), v0 + 1 + i as u64);
    }
    w.declare_queue("q");
    assert_eq!(w.topo.version(), v0 + 6);
}

#[test]
fn lookups_by_name_and_id() {
    let mut w = World::new();
    w.run_as(GUEST.on(CONN_B, 2), QDecl::new("q").exclusive())
        .unwrap();
    let q = w.topo.queue_by_name(w.vhost, b"q").expect("q");
    assert_eq!((q.id, q.owner, q.exclusive), (QueueId(1), 2, Some(CONN_B)));
    assert_eq!(w.topo.queue_id(w.vhost, b"q"), Some(QueueId(1)));
    assert!(w.topo.queue_by_name(w.vhost, b"Q").is_none());
    assert!(w.topo.queue_by_name(VhostId(9), b"q").is_none());
    let ex = w.topo.exchange_by_name(w.vhost, b"amq.topic").expect("amq.topic");
    assert_eq!((ex.def.id, ex.def.kind), (ExchangeId(4), Topic));
    assert_eq!(w.topo.vhost_name(w.vhost), "/");
    assert_eq!(w.topo.vhost_name(VhostId(9)), "?");
    let vh = w.topo.vhost("/").unwrap();
    assert_eq!(vh.queue_ids().collect::<Vec<_>>(), vec![QueueId(1)]);
    let mut xs: Vec<_> = vh.exchange_ids().map(|e| e.0).collect();
    xs.sort();
    assert_eq!(xs, (1..=7).collect::<Vec<_>>());
}

#[test]
fn bindings_to_lists_every_source() {
    let mut w = World::new();
    w.declare_queue("q");
    w.bind_queue("q", "amq.direct", "k1");
    w.bind_queue("q", "amq.direct", "k2");
    w.bind_queue("q", "amq.fanout", "");
    let mut got: Vec<_> = w
        .topo
        .bindings_to(Dest::Queue(w.qid("q")))
        .into_iter()
        .map(|(x, k, a)| (x.0, k.as_str().into_owned(), a.len()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(2, "k1".into(), 0), (2, "k2".into(), 0), (3, String::new(), 0)]
    );
}

#[test]
fn delete_vhost_removes_everything_in_it() {
    let mut w = World::new();
    let v2 = w.add_vhost("v2");
    let guest_v2 = GUEST.in_vhost(v2);
    w.topo.apply(&Change::SetPermissions {
        user: "guest".into(),
        vhost: v2,
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    });
    w.run_as(guest_v2, QDecl::new("q2")).unwrap();
    w.run_as(guest_v2, XDecl::new("x2", Direct)).unwrap();
    w.topo.apply(&Change::SetPolicy(policy(
        v2,
        "p",
        ".*",
        "all",
        0,
        table(&[("max-length", FieldValue::I32(1))]),
    )));
    w.declare_queue("q1");
    let q2 = w.topo.queue_id(v2, b"q2").unwrap();
    w.topo.apply(&Change::DeleteVhost { id: v2 });
    assert!(w.topo.vhost("v2").is_none());
    assert!(w.topo.vhost_by_id(v2).is_none());
    assert!(w.topo.queue(q2).is_none());
    assert_eq!(w.topo.exchanges().filter(|e| e.def.vhost == v2).count(), 0);
    assert_eq!(w.topo.queues().filter(|q| q.vhost == v2).count(), 0);
    assert!(w.topo.permissions("guest", v2).is_none());
    assert_eq!(w.topo.policies().count(), 0);
    // `/` and the users are untouched.
    assert!(w.has_queue("q1"));
    assert_eq!(w.topo.exchanges().count(), 7);
    assert!(w.topo.permissions("guest", w.vhost).is_some());
    assert!(w.topo.user("guest").is_some());
}

#[test]
fn users_and_permissions_apply_and_removal() {
    let mut w = World::new();
    let user = User {
        name: "u".into(),
        password_hash: hash_password(b"a", [0; 4]),
        tags: vec!["monitoring".into()],
        counters: Default::default(),
    };
    w.topo.apply(&Change::PutUser(user.clone()));
    assert_eq!(w.topo.user("u"), Some(&user));
    assert!(user.has_tag("monitoring") && !user.has_tag("administrator"));
    // PutUser replaces.
    let replaced = User {
        tags: vec!["administrator".into()],
        ..user
    };
    w.topo.apply(&Change::PutUser(replaced.clone()));
    assert_eq!(w.topo.user("u"), Some(&replaced));
    assert_eq!(w.topo.users().count(), 2);
    w.topo.apply(&Change::SetPermissions {
        user: "u".into(),
        vhost: w.vhost,
        configure: "^c".into(),
        write: "".into(),
        read: ".*".into(),
    });
    let p = w.topo.permissions("u", w.vhost).unwrap();
    assert_eq!(
        (p.configure.as_str(), p.write.as_str(), p.read.as_str()),
        ("^c", "", ".*")
    );
    assert!(p.allows(Access::Configure, b"cq") && !p.allows(Access::Configure, b"q"));
    assert!(!p.allows(Access::Write, b"anything"));
    let mut all: Vec<_> = w
        .topo
        .all_permissions()
        .map(|(u, v, _)| (u.to_string(), v))
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![("guest".to_string(), w.vhost), ("u".to_string(), w.vhost)]
    );
    // Deleting the user removes its permissions.
    w.topo.apply(&Change::DeleteUser { name: "u".into() });
    assert!(w.topo.user("u").is_none());
    assert!(w.topo.permissions("u", w.vhost).is_none());
    assert!(w.topo.permissions("guest", w.vhost).is_some());
}

#[test]
fn an_invalid_permission_pattern_in_the_log_grants_nothing() {
    let mut w = World::new();
    w.topo.apply(&Change::SetPermissions {
        user: "guest".into(),
        vhost: w.vhost,
        configure: "(".into(),
        write: ".*".into(),
        read: ".*".into(),
    });
    let p = w.topo.permissions("guest", w.vhost).unwrap();
    for a in [Access::Configure, Access::Write, Access::Read] {
        assert!(!p.allows(a, b"q"), "{a:?}");
    }
}

#[test]
fn declare_exchange_and_queue_changes_replace_by_name() {
    // Replaying a change stream on a second copy gives the same topology.
    let mut w = World::new();
    let mut log: Vec<Change> = Vec::new();
    let mut run = |w: &mut World, req: Request| {
        if let Plan::Apply { changes, .. } = w.run(req).unwrap() {
            log.extend(changes);
        }
    };
    run(&mut w, QDecl::new("q").into());
    run(&mut w, XDecl::new("x", Topic).into());
    run(&mut w, queue_bind("q", "x", "a.#", FieldTable::new()));
    run(&mut w, queue_bind("q", "amq.fanout", "", FieldTable::new()));
    run(&mut w, queue_unbind("q", "amq.fanout", "", FieldTable::new()));
    let mut copy = World::new();
    copy.apply_all(&log);
    assert_eq!(copy.topo.version(), w.topo.version());
    assert_eq!(to(&copy, "x", "a.b"), names(&["q"]));
    assert_eq!(to(&copy, "amq.fanout", ""), Vec::<String>::new());
}

// ---- policies ----

fn policy(
    vhost: VhostId,
    name: &str,
    pattern: &str,
    apply_to: &str,
    priority: i64,
    def: FieldTable,
) -> PolicyDef {
    PolicyDef {
        vhost,
        name: name.into(),
        pattern: pattern.into(),
        apply_to: apply_to.into(),
        priority,
        definition: def,
    }
}

fn ttl(ms: i32) -> FieldTable {
    table(&[("message-ttl", FieldValue::I32(ms))])
}

#[test]
fn policies_match_by_pattern_kind_and_priority() {
    let mut w = World::new();
    let v = w.vhost;
    w.topo
        .apply(&Change::SetPolicy(policy(v, "low", "^o", "queues", 1, ttl(1))));
    w.topo.apply(&Change::SetPolicy(policy(
        v,
        "high",
        "^orders\\.",
        "all",
        5,
        ttl(5),
    )));
    w.topo
        .apply(&Change::SetPolicy(policy(v, "ex", "^o", "exchanges", 9, ttl(9))));
    let for_queue = |w: &World, n: &str| w.topo.policy_for(v, n.as_bytes(), true).cloned();
    let for_exchange = |w: &World, n: &str| w.topo.policy_for(v, n.as_bytes(), false).cloned();
    assert_eq!(for_queue(&w, "orders.eu"), Some(ttl(5)));
    assert_eq!(for_queue(&w, "other"), Some(ttl(1)));
    assert_eq!(for_queue(&w, "x-orders.eu"), None);
    assert_eq!(for_exchange(&w, "orders.eu"), Some(ttl(9)));
    assert_eq!(for_exchange(&w, "order"), Some(ttl(9)));
    // Patterns are unanchored regexes.
    w.topo
        .apply(&Change::SetPolicy(policy(v, "mid", "mid", "queues", 0, ttl(7))));
    assert_eq!(for_queue(&w, "a-mid-b"), Some(ttl(7)));
    // Another vhost's policies do not apply.
    assert_eq!(w.topo.policy_for(VhostId(2), b"orders.eu", true), None);
}

#[test]
fn set_policy_replaces_by_name_and_clear_removes() {
    let mut w = World::new();
    let v = w.vhost;
    w.topo
        .apply(&Change::SetPolicy(policy(v, "p", ".*", "queues", 0, ttl(1))));
    w.topo
        .apply(&Change::SetPolicy(policy(v, "p", "^a", "queues", 0, ttl(2))));
    assert_eq!(w.topo.policies().count(), 1);
    assert_eq!(w.topo.policy_for(v, b"b", true), None);
    assert_eq!(w.topo.policy_for(v, b"a", true), Some(&ttl(2)));
    w.topo.apply(&Change::ClearPolicy {
        vhost: v,
        name: "p".into(),
    });
    assert_eq!(w.topo.policies().count(), 0);
    assert_eq!(w.topo.policy_for(v, b"a", true), None);
}

#[test]
fn a_policy_with_an_invalid_pattern_matches_nothing() {
    let mut w = World::new();
    let v = w.vhost;
    w.topo
        .apply(&Change::SetPolicy(policy(v, "bad", "(", "all", 0, ttl(1))));
    assert_eq!(w.topo.policies().count(), 1);
    assert_eq!(w.topo.policy_for(v, b"(", true), None);
}

#[test]
fn local_queue_counts_follow_declares_moves_and_deletes() {
    let mut w = World::new();
    let v2 = w.add_vhost("v2");
    let def = |id: u64, vhost, owner, node| {
        Change::DeclareQueue(QueueDef {
            id: QueueId(id),
            vhost,
            name: ShortStr::from_string_lossy(&format!("q{id}")),
            owner,
            node,
            durable: false,
            exclusive: None,
            auto_delete: false,
            args: FieldTable::new(),
            replicas: vec![],
            group: 0,
        })
    };
    let (v1, mut t) = (w.vhost, w.topo);
    t.apply(&def(1, v1, 0, 0));
    t.apply(&def(2, v1, 2, 0));
    t.apply(&def(3, v2, 2, 0));
    // Another node's queue is not this node's load.
    t.apply(&def(4, v1, 1, 7));
    assert_eq!(t.local_queues_by_shard(), [1, 0, 2]);
    // A queue whose leadership comes here counts; one that leaves does not.
    t.apply(&Change::QueueLeader {
        id: QueueId(4),
        node: 0,
    });
    t.apply(&Change::QueueLeader {
        id: QueueId(1),
        node: 7,
    });
    assert_eq!(t.local_queues_by_shard(), [0, 1, 2]);
    t.apply(&Change::DeleteQueue { id: QueueId(2) });
    t.apply(&Change::DeleteVhost { id: v2 });
    assert_eq!(t.local_queues_by_shard(), [0, 1]);
}
