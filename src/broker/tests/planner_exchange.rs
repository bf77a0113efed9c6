//! `exchange.declare`, `exchange.delete` and `exchange.bind`/`unbind` through
//! the control-plane planner.

use super::*;
use crate::protocol::reply::{ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED};
use ExchangeKind::{Direct, Fanout, Headers, Topic};

#[test]
fn add_vhost_creates_the_standard_exchanges_with_fresh_ids() {
    let w = World::new();
    let v = w.vhost;
    assert_eq!(v, VhostId(1));
    let mut got: Vec<_> = w
        .topo
        .exchanges()
        .filter(|e| e.def.vhost == v)
        .map(|e| {
            let d = &e.def;
            (
                d.id.0,
                d.name.as_str().into_owned(),
                d.kind,
                d.durable,
                d.auto_delete,
                d.internal,
            )
        })
        .collect();
    got.sort_by_key(|e| e.0);
    let want = vec![
        (1, "".to_string(), Direct, true, false, false),
        (2, "amq.direct".to_string(), Direct, true, false, false),
        (3, "amq.fanout".to_string(), Fanout, true, false, false),
        (4, "amq.topic".to_string(), Topic, true, false, false),
        (5, "amq.headers".to_string(), Headers, true, false, false),
        (6, "amq.match".to_string(), Headers, true, false, false),
        (7, "amq.rabbitmq.trace".to_string(), Topic, true, false, true),
    ];
    assert_eq!(got, want);
}

#[test]
fn add_vhost_twice_is_refused_and_a_second_vhost_gets_the_next_ids() {
    let mut w = World::new();
    assert!(w.cp.add_vhost(&w.topo, "/").is_none());
    let changes = w.cp.add_vhost(&w.topo, "v2").expect("new");
    assert_eq!(changes.len(), 8);
    match &changes[0] {
        Change::AddVhost { id, name, .. } => assert_eq!((id.0, name.as_str()), (2, "v2")),
        other => panic!("{other:?}"),
    }
    let ids: Vec<_> = changes[1..]
        .iter()
        .map(|c| match c {
            Change::DeclareExchange(d) => (d.id.0, d.vhost.0),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, (8..=14).map(|i| (i, 2)).collect::<Vec<_>>());
}

#[test]
fn declare_new_exchange_allocates_the_next_id() {
    let mut w = World::new();
    let plan = w
        .plan(
            XDecl::new("x", Topic)
                .durable()
                .auto_delete()
                .args(table(&[("alternate-exchange", ls("ae"))])),
        )
        .unwrap();
    let Plan::Apply { changes, reply } = &plan else {
        panic!("{plan:?}")
    };
    assert!(matches!(reply, Reply::ExchangeDeclareOk));
    assert_eq!(changes.len(), 1);
    let Change::DeclareExchange(d) = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        (
            d.id,
            d.vhost,
            d.name.as_str().into_owned(),
            d.kind,
            d.durable,
            d.auto_delete,
            d.internal
        ),
        (ExchangeId(8), w.vhost, "x".to_string(), Topic, true, true, false)
    );
    assert_eq!(d.args, table(&[("alternate-exchange", ls("ae"))]));
    w.apply_all(changes);
    // The next one gets the next id.
    let plan = w.plan(XDecl::new("y", Direct)).unwrap();
    assert_eq!(describe(&plan), "apply [declare x9 y] then ExchangeDeclareOk");
}

#[test]
fn redeclare_equivalent_exchange_changes_nothing() {
    let mut w = World::new();
    let decl = XDecl::new("x", Headers)
        .durable()
        .internal()
        .args(table(&[("alternate-exchange", ls("ae")), ("foo", ls("bar"))]));
    w.run(decl.clone()).unwrap();
    let v = w.topo.version();
    assert_eq!(
        describe(&w.plan(decl.clone()).unwrap()),
        "reply ExchangeDeclareOk"
    );
    // Arguments RabbitMQ does not compare may differ.
    let other_args = decl.args(table(&[("alternate-exchange", ls("ae")), ("foo", ls("baz"))]));
    assert_eq!(describe(&w.plan(other_args).unwrap()), "reply ExchangeDeclareOk");
    assert_eq!(w.topo.version(), v);
}

#[test]
fn redeclare_inequivalent_exchange_is_406() {
    let mut w = World::new();
    w.run(XDecl::new("x", Direct)).unwrap();
    let cases = [
        (
            XDecl::new("x", Fanout),
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'",
        ),
        (
            XDecl::new("x", Direct).durable(),
            "inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            XDecl::new("x", Direct).auto_delete(),
            "inequivalent arg 'auto_delete' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            XDecl::new("x", Direct).internal(),
            "inequivalent arg 'internal' for exchange 'x' in vhost '/': received 'true' but current is 'false'",
        ),
        (
            XDecl::new("x", Direct).args(table(&[("alternate-exchange", ls("ae"))])),
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received the value 'ae' of type 'longstr' but current is none",
        ),
    ];
    for (decl, text) in cases {
        assert_amqp_err(
            w.plan(decl),
            PRECONDITION_FAILED,
            &format!("PRECONDITION_FAILED - {text}"),
        );
    }
}

#[test]
fn redeclare_with_a_different_alternate_exchange_is_406() {
    let mut w = World::new();
    w.run(XDecl::new("x", Direct).args(table(&[("alternate-exchange", ls("a"))])))
        .unwrap();
    assert_amqp_err(
        w.plan(XDecl::new("x", Direct).args(table(&[("alternate-exchange", ls("b"))]))),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received 'b' but current is 'a'",
    );
    assert_amqp_err(
        w.plan(XDecl::new("x", Direct)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received none but current is the value 'a' of type 'longstr'",
    );
}

#[test]
fn inequivalence_names_the_requesters_vhost() {
    let mut w = World::new();
    let v2 = w.add_vhost("v2");
    w.topo.apply(&Change::SetPermissions {
        user: "guest".into(),
        vhost: v2,
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    });
    let who = GUEST.in_vhost(v2);
    w.run_as(who, XDecl::new("x", Direct)).unwrap();
    assert_amqp_err(
        w.plan_as(who, XDecl::new("x", Topic)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost 'v2': received 'topic' but current is 'direct'",
    );
    // The same name in `/` is another exchange.
    assert_amqp_err(
        w.plan(XDecl::new("x", Direct).passive()),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'x' in vhost '/'",
    );
}

#[test]
fn reserved_amq_prefix_is_403_for_new_exchanges_only() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(XDecl::new("amq.foo", Direct)),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'",
    );
    // Redeclaring a standard exchange as it is succeeds; otherwise 406.
    assert_eq!(
        describe(&w.plan(XDecl::new("amq.direct", Direct).durable()).unwrap()),
        "reply ExchangeDeclareOk"
    );
    assert_amqp_err(
        w.plan(XDecl::new("amq.direct", Direct)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': received 'false' but current is 'true'",
    );
}

#[test]
fn default_exchange_cannot_be_declared_even_passively() {
    let mut w = World::new();
    for decl in [XDecl::new("", Direct), XDecl::new("", Direct).passive()] {
        assert_amqp_err(
            w.plan(decl),
            ACCESS_REFUSED,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
    }
}

#[test]
fn passive_declare_checks_existence_only() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(XDecl::new("x", Direct).passive()),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'x' in vhost '/'",
    );
    w.declare_exchange("x", Direct);
    // Type and flags are not compared on a passive declare.
    let plan = w
        .plan(XDecl::new("x", Fanout).passive().durable().internal())
        .unwrap();
    assert_eq!(describe(&plan), "reply ExchangeDeclareOk");
    assert_eq!(
        describe(&w.plan(XDecl::new("amq.topic", Direct).passive()).unwrap()),
        "reply ExchangeDeclareOk"
    );
}

#[test]
fn unknown_exchange_arguments_are_accepted() {
    let mut w = World::new();
    let plan = w
        .plan(XDecl::new("x", Direct).args(table(&[("x-whatever", FieldValue::I32(5)), ("foo", ls("bar"))])))
        .unwrap();
    assert_eq!(describe(&plan), "apply [declare x8 x] then ExchangeDeclareOk");
}

#[test]
fn alternate_exchange_must_be_a_string() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(XDecl::new("x", Direct).args(table(&[("alternate-exchange", FieldValue::I32(5))]))),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'x' in vhost '/'",
    );
}

#[test]
fn alternate_exchange_of_the_wrong_type_is_refused() {
    // The code and the fact that nothing is declared, whatever the text.
    let mut w = World::new();
    let r = w.plan(XDecl::new("x", Direct).args(table(&[("alternate-exchange", FieldValue::I32(5))])));
    assert_eq!(
        r.map(|p| describe(&p)).map_err(|e| e.code),
        Err(PRECONDITION_FAILED)
    );
}

// ---- exchange.delete ----

#[test]
fn delete_missing_exchange_is_ok() {
    let mut w = World::new();
    assert_eq!(
        describe(&w.plan(exchange_delete("nope", false)).unwrap()),
        "reply ExchangeDeleteOk"
    );
    assert_eq!(
        describe(&w.plan(exchange_delete("nope", true)).unwrap()),
        "reply ExchangeDeleteOk"
    );
}

#[test]
fn delete_default_and_system_exchanges_is_403() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(exchange_delete("", false)),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    );
    for name in ["amq.direct", "amq.topic", "amq.rabbitmq.trace"] {
        assert_amqp_err(
            w.plan(exchange_delete(name, false)),
            ACCESS_REFUSED,
            &format!("ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' not allowed"),
        );
    }
}

#[test]
fn delete_missing_amq_exchange_is_403() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(exchange_delete("amq.nope", false)),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - deletion of system exchange 'amq.nope' in vhost '/' not allowed",
    );
}

#[test]
fn delete_exchange_removes_its_bindings_both_ways() {
    let mut w = World::new();
    w.declare_exchange("x", Direct);
    w.declare_exchange("up", Fanout);
    w.declare_exchange("down", Fanout);
    w.declare_queue("q");
    w.bind_queue("q", "x", "k");
    w.bind_exchange("x", "up", "");
    w.bind_exchange("down", "x", "k2");
    let x = w.xid("x");
    let plan = w.run(exchange_delete("x", false)).unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [delete x{}] then ExchangeDeleteOk", x.0)
    );
    assert!(!w.has_exchange("x"));
    assert_eq!(w.bindings_of("up"), vec![]);
    assert!(w.topo.bindings_to(Dest::Queue(w.qid("q"))).is_empty());
    assert!(w.topo.bindings_to(Dest::Exchange(w.xid("down"))).is_empty());
}

#[test]
fn delete_if_unused_refuses_an_exchange_with_bindings() {
    let mut w = World::new();
    w.declare_exchange("x", Direct);
    w.declare_queue("q");
    w.bind_queue("q", "x", "k");
    assert_amqp_err(
        w.plan(exchange_delete("x", true)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use",
    );
    w.run(queue_unbind("q", "x", "k", FieldTable::new())).unwrap();
    let x = w.xid("x");
    assert_eq!(
        describe(&w.plan(exchange_delete("x", true)).unwrap()),
        format!("apply [delete x{}] then ExchangeDeleteOk", x.0)
    );
}

#[test]
fn delete_if_unused_ignores_bindings_to_the_exchange() {
    let mut w = World::new();
    w.declare_exchange("src", Direct);
    w.declare_exchange("dst", Direct);
    w.bind_exchange("dst", "src", "k");
    let dst = w.xid("dst");
    let plan = w.run(exchange_delete("dst", true)).unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [delete x{}] then ExchangeDeleteOk", dst.0)
    );
    assert_eq!(w.bindings_of("src"), vec![]);
}

#[test]
fn delete_exchange_cascades_to_auto_delete_sources() {
    // a (auto-delete) -> b (auto-delete) -> x; deleting x leaves b without
    // bindings, which leaves a without bindings.
    let mut w = World::new();
    w.declare_exchange("x", Direct);
    w.run(XDecl::new("b", Fanout).auto_delete()).unwrap();
    w.run(XDecl::new("a", Fanout).auto_delete()).unwrap();
    w.run(XDecl::new("keep", Fanout).auto_delete()).unwrap();
    w.declare_queue("q");
    w.bind_exchange("x", "b", "");
    w.bind_exchange("b", "a", "");
    // `keep` loses one of two bindings: it stays.
    w.bind_exchange("x", "keep", "");
    w.bind_queue("q", "keep", "");
    let (x, a, b) = (w.xid("x"), w.xid("a"), w.xid("b"));
    let plan = w.run(exchange_delete("x", false)).unwrap();
    assert_eq!(
        describe(&plan),
        format!(
            "apply [delete x{}, delete x{}, delete x{}] then ExchangeDeleteOk",
            x.0, b.0, a.0
        )
    );
    assert!(!w.has_exchange("a") && !w.has_exchange("b"));
    assert_eq!(
        w.bindings_of("keep"),
        vec![(String::new(), Dest::Queue(w.qid("q")))]
    );
}

// ---- exchange.bind / exchange.unbind ----

#[test]
fn exchange_bind_applies_once() {
    let mut w = World::new();
    w.declare_exchange("src", Topic);
    w.declare_exchange("dst", Fanout);
    let (src, dst) = (w.xid("src"), w.xid("dst"));
    let plan = w
        .run(exchange_bind("dst", "src", "a.*", FieldTable::new()))
        .unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [bind x{} -a.*-> x{}] then ExchangeBindOk", src.0, dst.0)
    );
    let v = w.topo.version();
    let again = w
        .plan(exchange_bind("dst", "src", "a.*", FieldTable::new()))
        .unwrap();
    assert_eq!(describe(&again), "reply ExchangeBindOk");
    assert_eq!(w.topo.version(), v);
    // An exchange may be bound to itself.
    let plan = w
        .plan(exchange_bind("src", "src", "k", FieldTable::new()))
        .unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [bind x{} -k-> x{}] then ExchangeBindOk", src.0, src.0)
    );
}

#[test]
fn exchange_bind_missing_ends_are_404() {
    let mut w = World::new();
    w.declare_exchange("x", Direct);
    assert_amqp_err(
        w.plan(exchange_bind("nope", "x", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'nope' in vhost '/'",
    );
    assert_amqp_err(
        w.plan(exchange_bind("x", "nope", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'nope' in vhost '/'",
    );
}

#[test]
fn exchange_bind_both_missing_names_the_source() {
    let mut w = World::new();
    assert_amqp_err(
        w.plan(exchange_bind("dst", "src", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'src' in vhost '/'",
    );
}

#[test]
fn exchange_bind_with_the_default_exchange_is_403() {
    let mut w = World::new();
    w.declare_exchange("x", Direct);
    for (dst, src) in [("x", ""), ("", "x"), ("", "nope")] {
        assert_amqp_err(
            w.plan(exchange_bind(dst, src, "k", FieldTable::new())),
            ACCESS_REFUSED,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
        assert_amqp_err(
            w.plan(exchange_unbind(dst, src, "k", FieldTable::new())),
            ACCESS_REFUSED,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
    }
}

#[test]
fn exchange_bind_to_a_headers_exchange_validates_x_match() {
    let mut w = World::new();
    w.declare_exchange("h", Headers);
    w.declare_exchange("d", Direct);
    assert_amqp_err(
        w.plan(exchange_bind("d", "h", "", table(&[("x-match", ls("foo"))]))),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x",
    );
    // A direct source does not look at x-match.
    let (h, d) = (w.xid("h"), w.xid("d"));
    assert_eq!(
        describe(
            &w.plan(exchange_bind("h", "d", "", table(&[("x-match", ls("foo"))])))
                .unwrap()
        ),
        format!("apply [bind x{} --> x{}] then ExchangeBindOk", d.0, h.0)
    );
}

#[test]
fn exchange_unbind_of_missing_things_is_ok() {
    let mut w = World::new();
    w.declare_exchange("a", Direct);
    w.declare_exchange("b", Direct);
    for (dst, src) in [("nope1", "nope2"), ("a", "nope"), ("nope", "a"), ("a", "b")] {
        assert_eq!(
            describe(&w.plan(exchange_unbind(dst, src, "k", FieldTable::new())).unwrap()),
            "reply ExchangeUnbindOk",
            "{dst} <- {src}"
        );
    }
}

#[test]
fn exchange_unbind_removes_the_binding_and_auto_deletes_the_source() {
    let mut w = World::new();
    w.run(XDecl::new("src", Direct).auto_delete()).unwrap();
    w.declare_exchange("dst", Direct);
    w.bind_exchange("dst", "src", "k1");
    w.bind_exchange("dst", "src", "k2");
    let (src, dst) = (w.xid("src"), w.xid("dst"));
    let plan = w
        .run(exchange_unbind("dst", "src", "k1", FieldTable::new()))
        .unwrap();
    assert_eq!(
        describe(&plan),
        format!("apply [unbind x{} -k1-> x{}] then ExchangeUnbindOk", src.0, dst.0)
    );
    assert!(w.has_exchange("src"));
    let plan = w
        .run(exchange_unbind("dst", "src", "k2", FieldTable::new()))
        .unwrap();
    assert_eq!(
        describe(&plan),
        format!(
            "apply [unbind x{} -k2-> x{}, delete x{}] then ExchangeUnbindOk",
            src.0, dst.0, src.0
        )
    );
    assert!(!w.has_exchange("src"));
    assert!(w.has_exchange("dst"));
}
