//! Permission checks the planner makes, as RabbitMQ's channel does them:
//! declare and delete need configure; binding needs write on the
//! destination and read on the source; passive declares need nothing.
//!
//! User `pu` may configure `^c`, write `^w` and read `^r` in `/`; the
//! resources are named for what `pu` may do with them. Every expectation
//! was checked with the same user against RabbitMQ 3.10.8.

use super::*;
use crate::protocol::reply::{ACCESS_REFUSED, NOT_FOUND};
use ExchangeKind::Direct;

const PU: Who = Who {
    user: "pu",
    conn: CONN_A,
    shard: 0,
    vhost: None,
};

fn world() -> World {
    let mut w = World::new();
    w.add_user("pu", "^c", "^w", "^r");
    for q in ["cq", "wq", "rq", "xq"] {
        w.declare_queue(q);
    }
    for x in ["cx", "wx", "rx", "xx"] {
        w.declare_exchange(x, Direct);
    }
    w
}

fn refused(kind: &str, name: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user 'pu'")
}

#[track_caller]
fn assert_refused(w: &mut World, req: impl Into<Request>, kind: &str, name: &str) {
    assert_amqp_err(w.plan_as(PU, req), ACCESS_REFUSED, &refused(kind, name));
}

#[track_caller]
fn assert_allowed(w: &mut World, req: impl Into<Request>) {
    let r = w.plan_as(PU, req);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn exchange_declare_needs_configure() {
    let mut w = world();
    assert_refused(&mut w, XDecl::new("wx", Direct), "exchange", "wx");
    assert_refused(&mut w, XDecl::new("wnew", Direct), "exchange", "wnew");
    // Permission is checked before the reserved prefix.
    assert_refused(&mut w, XDecl::new("amq.foo", Direct), "exchange", "amq.foo");
    assert_refused(
        &mut w,
        XDecl::new("amq.direct", Direct).durable(),
        "exchange",
        "amq.direct",
    );
    assert_allowed(&mut w, XDecl::new("cx", Direct));
    assert_allowed(&mut w, XDecl::new("cnew", Direct));
}

#[test]
fn passive_declares_need_no_permission() {
    let mut w = world();
    assert_allowed(&mut w, XDecl::new("wx", Direct).passive());
    assert_allowed(&mut w, QDecl::new("wq").passive());
    assert_amqp_err(
        w.plan_as(PU, XDecl::new("wnope", Direct).passive()),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'wnope' in vhost '/'",
    );
    assert_amqp_err(
        w.plan_as(PU, QDecl::new("wnope").passive()),
        NOT_FOUND,
        "NOT_FOUND - no queue 'wnope' in vhost '/'",
    );
}

#[test]
fn queue_declare_needs_configure() {
    let mut w = world();
    assert_refused(&mut w, QDecl::new("wq"), "queue", "wq");
    assert_refused(&mut w, QDecl::new("wnew"), "queue", "wnew");
    // A server-named queue is checked under its generated name.
    assert_refused(&mut w, QDecl::generated("amq.gen-xyz"), "queue", "amq.gen-xyz");
    assert_allowed(&mut w, QDecl::new("cq"));
    assert_allowed(&mut w, QDecl::new("cnew"));
}

#[test]
fn deletes_need_configure_even_for_missing_resources() {
    let mut w = world();
    assert_refused(&mut w, exchange_delete("wx", false), "exchange", "wx");
    assert_refused(&mut w, exchange_delete("wnope", false), "exchange", "wnope");
    assert_refused(&mut w, queue_delete("wq", false, false), "queue", "wq");
    assert_refused(&mut w, queue_delete("wnope", false, false), "queue", "wnope");
    assert_allowed(&mut w, exchange_delete("cx", false));
    assert_allowed(&mut w, queue_delete("cq", false, false));
}

#[test]
fn queue_bind_needs_write_on_the_queue_and_read_on_the_exchange() {
    let mut w = world();
    for bind in [queue_bind, queue_unbind] {
        assert_allowed(&mut w, bind("wq", "rx", "k", FieldTable::new()));
        assert_refused(&mut w, bind("rq", "rx", "k", FieldTable::new()), "queue", "rq");
        assert_refused(&mut w, bind("wq", "wx", "k", FieldTable::new()), "exchange", "wx");
        // The queue is checked first.
        assert_refused(&mut w, bind("xq", "xx", "k", FieldTable::new()), "queue", "xq");
    }
    // Permitted names that do not exist.
    assert_amqp_err(
        w.plan_as(PU, queue_bind("wq", "rnope", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no exchange 'rnope' in vhost '/'",
    );
    assert_amqp_err(
        w.plan_as(PU, queue_bind("wnope", "rx", "k", FieldTable::new())),
        NOT_FOUND,
        "NOT_FOUND - no queue 'wnope' in vhost '/'",
    );
}

#[test]
fn exchange_bind_needs_write_on_the_destination_and_read_on_the_source() {
    let mut w = world();
    for bind in [exchange_bind, exchange_unbind] {
        assert_allowed(&mut w, bind("wx", "rx", "k", FieldTable::new()));
        assert_refused(&mut w, bind("rx", "rx", "k", FieldTable::new()), "exchange", "rx");
        assert_refused(&mut w, bind("wx", "wx", "k", FieldTable::new()), "exchange", "wx");
        assert_refused(&mut w, bind("xx", "xx", "k", FieldTable::new()), "exchange", "xx");
        // The default exchange is checked as `amq.default`.
        assert_refused(
            &mut w,
            bind("", "rx", "k", FieldTable::new()),
            "exchange",
            "amq.default",
        );
    }
}

#[test]
fn a_user_without_permissions_in_the_vhost_gets_nothing() {
    let mut w = world();
    let v2 = w.add_vhost("v2");
    // guest has no permissions in v2.
    let who = GUEST.in_vhost(v2);
    assert_amqp_err(
        w.plan_as(who, QDecl::new("q")),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to queue 'q' in vhost 'v2' refused for user 'guest'",
    );
    assert_amqp_err(
        w.plan_as(who, XDecl::new("x", Direct)),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to exchange 'x' in vhost 'v2' refused for user 'guest'",
    );
    // A user that does not exist at all.
    assert_amqp_err(
        w.plan_as(GUEST.user("ghost"), QDecl::new("q")),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'ghost'",
    );
}

#[test]
fn empty_patterns_grant_nothing() {
    let mut w = world();
    w.add_user("none", "", "", "");
    assert_amqp_err(
        w.plan_as(GUEST.user("none"), QDecl::new("q")),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'none'",
    );
    assert_amqp_err(
        w.plan_as(GUEST.user("none"), queue_bind("wq", "rx", "", FieldTable::new())),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to queue 'wq' in vhost '/' refused for user 'none'",
    );
}

#[test]
fn permission_changes_take_effect_at_once() {
    let mut w = world();
    assert_refused(&mut w, QDecl::new("wq"), "queue", "wq");
    w.topo.apply(&Change::SetPermissions {
        user: "pu".into(),
        vhost: w.vhost,
        configure: "^w".into(),
        write: "".into(),
        read: "".into(),
    });
    assert_allowed(&mut w, QDecl::new("wq"));
    assert_refused(&mut w, QDecl::new("cq"), "queue", "cq");
    w.topo.apply(&Change::ClearPermissions {
        user: "pu".into(),
        vhost: w.vhost,
    });
    assert_refused(&mut w, QDecl::new("wq"), "queue", "wq");
}

#[test]
fn default_exchange_is_refused_before_permissions() {
    let mut w = world();
    let default = "ACCESS_REFUSED - operation not permitted on the default exchange";
    assert_amqp_err(w.plan_as(PU, XDecl::new("", Direct)), ACCESS_REFUSED, default);
    assert_amqp_err(w.plan_as(PU, exchange_delete("", false)), ACCESS_REFUSED, default);
    assert_amqp_err(
        w.plan_as(PU, queue_bind("wq", "", "k", FieldTable::new())),
        ACCESS_REFUSED,
        default,
    );
    assert_amqp_err(
        w.plan_as(PU, exchange_bind("wx", "", "k", FieldTable::new())),
        ACCESS_REFUSED,
        default,
    );
    // Write on the destination still comes first.
    assert_refused(
        &mut w,
        queue_bind("cq", "", "k", FieldTable::new()),
        "queue",
        "cq",
    );
}

#[test]
fn reserved_names_are_refused_before_permissions() {
    let mut w = world();
    assert_amqp_err(
        w.plan_as(PU, exchange_delete("amq.direct", false)),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
    );
    assert_amqp_err(
        w.plan_as(PU, QDecl::new("amq.foo")),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'",
    );
}

#[test]
fn dead_letter_and_alternate_exchanges_need_write_permission() {
    let mut w = world();
    // `dl` may configure and read anything, write only `^w`.
    w.add_user("dl", ".*", "^w", ".*");
    let dl = GUEST.user("dl");
    let refused_dl = |name: &str| {
        format!("ACCESS_REFUSED - access to exchange '{name}' in vhost '/' refused for user 'dl'")
    };
    let dlx = |x: &str| table(&[("x-dead-letter-exchange", ls(x))]);
    let ae = |x: &str| table(&[("alternate-exchange", ls(x))]);
    assert_amqp_err(
        w.plan_as(dl, QDecl::new("q1").args(dlx("rx"))),
        ACCESS_REFUSED,
        &refused_dl("rx"),
    );
    assert_amqp_err(
        w.plan_as(dl, QDecl::new("q1").args(dlx(""))),
        ACCESS_REFUSED,
        &refused_dl("amq.default"),
    );
    assert!(w.plan_as(dl, QDecl::new("q1").args(dlx("wx"))).is_ok());
    assert_amqp_err(
        w.plan_as(dl, XDecl::new("x1", Direct).args(ae("rx"))),
        ACCESS_REFUSED,
        &refused_dl("rx"),
    );
    assert_amqp_err(
        w.plan_as(dl, XDecl::new("x1", Direct).args(ae(""))),
        ACCESS_REFUSED,
        &refused_dl("amq.default"),
    );
    assert!(w.plan_as(dl, XDecl::new("x1", Direct).args(ae("wx"))).is_ok());
    // `pu` may configure `cnew` but not read it.
    assert_refused(&mut w, QDecl::new("cnew").args(dlx("wx")), "queue", "cnew");
    assert_refused(
        &mut w,
        XDecl::new("cnew", Direct).args(ae("wx")),
        "exchange",
        "cnew",
    );
}
