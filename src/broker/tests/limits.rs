//! `max-queues` in the planner: only a new queue counts, checked where
//! RabbitMQ's `rabbit_channel` checks it (after the name, the configure
//! permission and the lookup of an existing queue; before the dead-letter
//! permissions and the arguments); and the limits' place in the topology.

use super::*;
use crate::broker::limits::{Limits, MAX_QUEUES};
use crate::protocol::reply::{ACCESS_REFUSED, PRECONDITION_FAILED};

const FULL: &str = "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (2) is reached";

fn limit_queues(w: &mut World, n: i64) {
    let vhost = w.vhost;
    w.apply_all(&[Change::SetVhostLimits {
        vhost,
        limits: Some(Limits::from([(MAX_QUEUES, n)])),
    }]);
}

#[test]
fn the_queue_past_the_limit_is_refused_and_a_delete_frees_a_slot() {
    let mut w = World::new();
    limit_queues(&mut w, 2);
    w.declare_queue("a");
    // Exclusive and server-named queues count like any other.
    w.run_as(GUEST.on(CONN_B, 1), QDecl::new("b").exclusive())
        .unwrap();
    assert_amqp_err(w.run(QDecl::new("c")), PRECONDITION_FAILED, FULL);
    assert_amqp_err(
        w.run(QDecl::generated("amq.gen-x")),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - cannot declare queue 'amq.gen-x': queue limit in vhost '/' (2) is reached",
    );
    // An existing queue may still be declared, passively or not.
    assert!(matches!(w.run(QDecl::new("a")), Ok(Plan::DeclareExisting { .. })));
    assert!(matches!(
        w.run(QDecl::new("a").passive()),
        Ok(Plan::DeclareExisting { .. })
    ));
    w.run(queue_delete("a", false, false)).unwrap();
    w.declare_queue("c");
    assert!(w.has_queue("c"));
}

#[test]
fn negative_means_no_limit_and_zero_refuses_every_new_queue() {
    let mut w = World::new();
    limit_queues(&mut w, -1);
    for i in 0..5 {
        w.declare_queue(&format!("q{i}"));
    }
    limit_queues(&mut w, 0);
    assert_amqp_err(
        w.run(QDecl::new("c")),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (0) is reached",
    );
    // A limit under the count refuses new queues and leaves the others.
    assert!(w.has_queue("q4"));
    assert!(matches!(
        w.run(QDecl::new("q4")),
        Ok(Plan::DeclareExisting { .. })
    ));
}

#[test]
fn the_limit_is_checked_after_permissions_and_equivalence_and_before_arguments() {
    let mut w = World::new();
    w.add_user("ro", "^x$", ".*", ".*");
    limit_queues(&mut w, 1);
    w.declare_queue("a");
    // No configure permission: 403 first.
    assert_amqp_err(
        w.run_as(GUEST.user("ro"), QDecl::new("c")),
        ACCESS_REFUSED,
        "ACCESS_REFUSED - access to queue 'c' in vhost '/' refused for user 'ro'",
    );
    // An existing queue declared inequivalently: its 406, not the limit's.
    assert_amqp_err(
        w.run(QDecl::new("a").durable()),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'a' in vhost '/': received 'true' but current is 'false'",
    );
    // A new queue with a bad argument: the limit's 406 comes first.
    let bad = table(&[("x-max-length", ls("many"))]);
    assert_amqp_err(
        w.run(QDecl::new("c").args(bad)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (1) is reached",
    );
}

#[test]
fn the_limit_is_per_vhost() {
    let mut w = World::new();
    limit_queues(&mut w, 1);
    w.declare_queue("a");
    let v2 = w.add_vhost("v2");
    w.apply_all(&[Change::SetPermissions {
        user: "guest".into(),
        vhost: v2,
        configure: ".*".into(),
        write: ".*".into(),
        read: ".*".into(),
    }]);
    w.run_as(GUEST.in_vhost(v2), QDecl::new("a")).unwrap();
    w.run_as(GUEST.in_vhost(v2), QDecl::new("b")).unwrap();
}

#[test]
fn limits_go_with_their_vhost_or_user() {
    let mut w = World::new();
    let v2 = w.add_vhost("v2");
    let l = Limits::from([(MAX_QUEUES, 3)]);
    w.apply_all(&[Change::SetVhostLimits {
        vhost: v2,
        limits: Some(l.clone()),
    }]);
    assert_eq!(w.topo.vhost("v2").unwrap().limits, Some(l));
    w.apply_all(&[Change::DeleteVhost { id: v2 }]);
    let v2 = w.add_vhost("v2");
    assert_eq!(w.topo.vhost_by_id(v2).unwrap().limits, None);

    w.add_user("u", ".*", ".*", ".*");
    let ul = Limits::from([("max-channels", 2)]);
    w.apply_all(&[Change::SetUserLimits {
        user: "u".into(),
        limits: ul.clone(),
    }]);
    assert_eq!(w.topo.user_limits("u"), &ul);
    // Replacing the user keeps them (RabbitMQ's put_user without limits).
    w.add_user("u", ".*", ".*", ".*");
    assert_eq!(w.topo.user_limits("u"), &ul);
    assert_eq!(w.topo.all_user_limits().count(), 1);
    w.apply_all(&[Change::DeleteUser { name: "u".into() }]);
    w.add_user("u", ".*", ".*", ".*");
    assert!(w.topo.user_limits("u").is_empty());
    // Limits of a user that does not exist are not kept.
    w.apply_all(&[Change::SetUserLimits {
        user: "nobody".into(),
        limits: ul,
    }]);
    assert!(w.topo.user_limits("nobody").is_empty());
}
