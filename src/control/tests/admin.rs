//! Management operations through the control plane: validated first (with
//! the management API's error texts), then committed like any change and
//! answered on the management plane's channel.

use super::*;
use crate::admin::AdminOp;

fn policy(name: &str, pattern: &str, apply_to: &str, definition: FieldTable) -> AdminOp {
    AdminOp::SetPolicy {
        vhost: "/".into(),
        name: name.into(),
        pattern: pattern.into(),
        apply_to: apply_to.into(),
        priority: 0,
        definition,
    }
}

fn permissions(user: &str, vhost: &str, configure: &str) -> AdminOp {
    AdminOp::SetPermissions {
        user: user.into(),
        vhost: vhost.into(),
        configure: configure.into(),
        write: ".*".into(),
        read: ".*".into(),
    }
}

/// A new vhost: logged, applied with its standard exchanges, broadcast,
/// answered once every shard applied it.
#[test]
fn add_vhost_is_committed_and_answered() {
    let mut c = C::new(2);
    c.admin(AdminOp::AddVhost { name: "v2".into() });
    assert_eq!(c.poll(), ["sync-log"]);
    c.sync_log(false);
    let step = c.poll();
    assert_eq!(
        step[0],
        "apply [add-vhost v2, declare-exchange '', declare-exchange 'amq.direct', declare-exchange 'amq.fanout', declare-exchange 'amq.topic', declare-exchange 'amq.headers', declare-exchange 'amq.match', declare-exchange 'amq.rabbitmq.trace']"
    );
    assert_eq!(step.len(), 2);
    assert!(step[1].starts_with("send 1: topology [add-vhost v2, "));
    assert!(c.admin_rx[0].try_recv().is_err(), "not answered yet");
    c.all_applied(2);
    assert_eq!(c.poll(), ["admin ok"]);
    assert_eq!(c.admin_rx[0].try_recv(), Ok(Ok(())));
    let v2 = c.topo.vhost("v2").unwrap().id;
    assert_eq!(v2, VhostId(2));
    assert_eq!(c.topo.vhost_by_id(v2).unwrap().exchange_ids().count(), 7);
    // Again: it exists, nothing to do.
    c.admin(AdminOp::AddVhost { name: "v2".into() });
    assert_eq!(c.poll(), ["admin ok"]);
}

/// A policy with a bad definition, and the 406 it gets: the text of
/// `broker::args::validate_policy`.
fn policy_definition_error(definition: FieldTable) -> (AdminOp, String) {
    let why = crate::broker::args::validate_policy(&definition).unwrap_err();
    (
        policy("p", ".*", "all", definition),
        format!("406 PRECONDITION_FAILED - {why}"),
    )
}

/// Each validation error, answered at once, nothing committed.
#[test]
fn validation_errors() {
    let bad_regex = |p: &str| regex::Regex::new(p).unwrap_err().to_string();
    let cases: Vec<(AdminOp, String)> = vec![
        (
            AdminOp::AddVhost { name: String::new() },
            "406 PRECONDITION_FAILED - invalid vhost name".into(),
        ),
        (
            AdminOp::AddVhost {
                name: "v".repeat(256),
            },
            "406 PRECONDITION_FAILED - invalid vhost name".into(),
        ),
        (
            AdminOp::DeleteVhost { name: "nope".into() },
            "404 NOT_FOUND - vhost 'nope' not found".into(),
        ),
        (
            AdminOp::PutUser {
                name: String::new(),
                password_hash: vec![],
                tags: vec![],
            },
            "406 PRECONDITION_FAILED - user names cannot be empty".into(),
        ),
        (
            AdminOp::DeleteUser {
                name: "nobody".into(),
            },
            "404 NOT_FOUND - user 'nobody' not found".into(),
        ),
        (
            permissions("nobody", "/", ".*"),
            "404 NOT_FOUND - user 'nobody' not found".into(),
        ),
        (
            permissions("guest", "nope", ".*"),
            "404 NOT_FOUND - vhost 'nope' not found".into(),
        ),
        (
            permissions("guest", "/", "("),
            format!(
                "406 PRECONDITION_FAILED - invalid regular expression '(': {}",
                bad_regex("(")
            ),
        ),
        (
            policy("", ".*", "queues", table(&[("max-length", FieldValue::I32(1))])),
            "406 PRECONDITION_FAILED - policy names cannot be empty".into(),
        ),
        (
            policy("p", ".*", "bogus", table(&[("max-length", FieldValue::I32(1))])),
            "406 PRECONDITION_FAILED - invalid apply-to value 'bogus': expected queues, exchanges or all"
                .into(),
        ),
        (
            policy("p", "(", "queues", table(&[("max-length", FieldValue::I32(1))])),
            format!(
                "406 PRECONDITION_FAILED - invalid pattern '(': {}",
                bad_regex("(")
            ),
        ),
        // The definition's own checks (broker::args), passed through.
        policy_definition_error(FieldTable::new()),
        policy_definition_error(table(&[("foo", FieldValue::I32(1))])),
        policy_definition_error(table(&[("max-length", FieldValue::I32(-1))])),
        policy_definition_error(table(&[("overflow", ls("drop-tail"))])),
        (
            AdminOp::SetPolicy {
                vhost: "nope".into(),
                name: "p".into(),
                pattern: ".*".into(),
                apply_to: "all".into(),
                priority: 0,
                definition: table(&[("max-length", FieldValue::I32(1))]),
            },
            "404 NOT_FOUND - vhost 'nope' not found".into(),
        ),
        (
            AdminOp::ClearPolicy {
                vhost: "/".into(),
                name: "p".into(),
            },
            "404 NOT_FOUND - policy 'p' not found in vhost '/'".into(),
        ),
        (
            AdminOp::ClearPermissions {
                user: "guest".into(),
                vhost: "nope".into(),
            },
            "404 NOT_FOUND - vhost 'nope' not found".into(),
        ),
        (
            AdminOp::Amqp {
                vhost: "nope".into(),
                req: declare("q", false),
            },
            "404 NOT_FOUND - vhost 'nope' not found".into(),
        ),
        (
            AdminOp::Amqp {
                vhost: "/".into(),
                req: Request::QueueDeclare {
                    name: ss("q"),
                    generated: false,
                    passive: true,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    args: FieldTable::new(),
                },
            },
            "404 NOT_FOUND - no queue 'q' in vhost '/'".into(),
        ),
    ];
    let mut c = C::new(2);
    let expected: Vec<String> = cases.iter().map(|(_, e)| format!("admin error {e}")).collect();
    for (op, _) in cases {
        c.admin(op);
    }
    assert_eq!(c.poll(), expected);
    assert!(c.svc.is_idle());
    for rx in &c.admin_rx {
        assert!(matches!(rx.try_recv(), Ok(Err(_))));
    }
    assert_eq!(c.topo.vhosts().count(), 1);
}

/// Users, permissions and policies: each a durable change, committed.
#[test]
fn users_permissions_and_policies_are_committed() {
    let mut c = C::new(2);
    let ops = vec![
        (
            AdminOp::PutUser {
                name: "bob".into(),
                password_hash: vec![1, 2, 3],
                tags: vec!["management".into()],
            },
            "put-user bob",
        ),
        (permissions("bob", "/", "^bob-"), "set-permissions bob v1"),
        (
            policy("p", "^q", "queues", table(&[("max-length", FieldValue::I32(3))])),
            "set-policy p",
        ),
        (
            AdminOp::ClearPolicy {
                vhost: "/".into(),
                name: "p".into(),
            },
            "clear-policy p",
        ),
        (
            AdminOp::ClearPermissions {
                user: "bob".into(),
                vhost: "/".into(),
            },
            "clear-permissions bob v1",
        ),
        (AdminOp::DeleteUser { name: "bob".into() }, "delete-user bob"),
    ];
    for (op, change) in ops {
        c.admin(op);
        assert_eq!(c.poll(), ["sync-log"], "{change}");
        c.sync_log(false);
        assert_eq!(
            c.poll(),
            [
                format!("apply [{change}]"),
                format!("send 1: topology [{change}]")
            ]
        );
        c.all_applied(2);
        assert_eq!(c.poll(), ["admin ok"]);
    }
    assert!(c.topo.user("bob").is_none());
    assert_eq!(c.topo.policies().count(), 0);
}

/// Deleting a vhost is one change; the replicas drop what it held.
#[test]
fn delete_vhost() {
    let mut c = C::new(1);
    c.admin(AdminOp::AddVhost { name: "v2".into() });
    c.poll();
    c.sync_log(false);
    assert_eq!(c.poll().last().unwrap(), "admin ok");
    c.admin(AdminOp::DeleteVhost { name: "v2".into() });
    assert_eq!(c.poll(), ["sync-log"]);
    c.sync_log(false);
    assert_eq!(c.poll(), ["apply [delete-vhost v2]", "admin ok"]);
    assert!(c.topo.vhost("v2").is_none());
}

/// AMQP requests from the management plane: planned as the user, queues
/// placed on shard 0, deletes through the owner (directly), existing
/// queues simply acknowledged.
#[test]
fn amqp_requests_from_the_management_plane() {
    let mut c = C::new(2);
    let amqp = |req| AdminOp::Amqp {
        vhost: "/".into(),
        req,
    };
    c.admin(amqp(declare("m", false)));
    assert_eq!(
        c.poll(),
        [
            "apply [declare-queue q1 m owner=0]",
            "send 1: topology [declare-queue q1 m owner=0]"
        ]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["admin ok"]);
    c.admin(amqp(declare("m", false)));
    assert_eq!(c.poll(), ["admin ok"], "exists: no counts needed");
    c.put_queue("q", 1, false, None);
    c.admin(amqp(delete("q", false, true)));
    assert_eq!(c.poll(), ["send 1: owner-delete op=1 q2 if-empty"]);
    c.svc.owner_deleted(
        1,
        Err(AmqpError::precondition("queue 'q' in vhost '/' not empty")),
    );
    assert_eq!(
        c.poll(),
        ["admin error 406 PRECONDITION_FAILED - queue 'q' in vhost '/' not empty"]
    );
    c.admin(amqp(delete("q", false, false)));
    assert_eq!(c.poll(), ["send 1: owner-delete op=2 q2"]);
    c.svc.owner_deleted(2, Ok(4));
    assert_eq!(
        c.poll(),
        ["apply [delete-queue q2]", "send 1: topology [delete-queue q2]"]
    );
    c.all_applied(2);
    assert_eq!(c.poll(), ["admin ok"]);
    let answers: Vec<_> = c
        .admin_rx
        .iter()
        .map(|rx| rx.try_recv().unwrap().is_ok())
        .collect();
    assert_eq!(answers, [true, true, false, true]);
}

/// Runs a management operation on one shard: what it did, logged and
/// applied, ending with its answer.
fn run_admin(c: &mut C, op: AdminOp) -> Vec<String> {
    c.admin(op);
    let mut all = c.poll();
    if all.last().map(String::as_str) == Some("sync-log") {
        c.sync_log(false);
        all.extend(c.poll());
    }
    all
}

fn limits(pairs: &[(&str, i64)]) -> crate::broker::limits::Limits {
    crate::broker::limits::Limits(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
}

/// A vhost's limits as RabbitMQ's commands change them: set whole
/// (`set_vhost_limits`), one set or removed (the API; removing from a
/// vhost without limits leaves an empty set, as RabbitMQ's `clear_limit`
/// does), cleared (refused when there are none: "Parameter does not
/// exist"). Each is a logged change.
#[test]
fn vhost_limits_operations() {
    use crate::admin::LimitsOp::*;
    let mut c = C::new(1);
    let op = |op| AdminOp::VhostLimits {
        vhost: "/".into(),
        op,
    };
    assert_eq!(
        run_admin(&mut c, op(Clear)),
        ["admin error 404 NOT_FOUND - Parameter does not exist"]
    );
    assert_eq!(
        run_admin(&mut c, op(Remove("max-queues".into()))),
        [
            "sync-log",
            "apply [set-vhost-limits v1 Some(Limits({}))]",
            "admin ok"
        ]
    );
    run_admin(
        &mut c,
        op(Set(limits(&[("max-queues", 5), ("max-connections", 7)]))),
    );
    run_admin(&mut c, op(Merge(limits(&[("max-queues", -1)]))));
    let v = |c: &C| c.topo.vhost("/").unwrap().limits.clone();
    assert_eq!(v(&c), Some(limits(&[("max-connections", 7), ("max-queues", -1)])));
    run_admin(&mut c, op(Remove("max-connections".into())));
    assert_eq!(v(&c), Some(limits(&[("max-queues", -1)])));
    run_admin(&mut c, op(Set(limits(&[("max-connections", 1)]))));
    assert_eq!(v(&c), Some(limits(&[("max-connections", 1)])), "set replaces");
    assert_eq!(
        run_admin(&mut c, op(Clear)),
        ["sync-log", "apply [set-vhost-limits v1 None]", "admin ok"]
    );
    assert_eq!(v(&c), None);
    // Names are checked again here; a vhost must exist.
    assert_eq!(
        run_admin(&mut c, op(Merge(limits(&[("max-channels", 1)])))),
        ["admin error 406 PRECONDITION_FAILED - unknown limit 'max-channels'"]
    );
    assert_eq!(
        run_admin(
            &mut c,
            AdminOp::VhostLimits {
                vhost: "nope".into(),
                op: Clear
            }
        ),
        ["admin error 404 NOT_FOUND - vhost 'nope' not found"]
    );
    // The log has what the topology has.
    let (_, changes) = TopoLog::open(&c.disk, &log_dir()).unwrap();
    let mut back = Topology::default();
    for ch in &changes {
        back.apply(ch);
    }
    assert_eq!(back.vhost("/").unwrap().limits, None);
}

/// A user's limits: merged (`set_user_limits`), one removed, all cleared;
/// a user must exist; replacing the user (new password or tags) keeps them.
#[test]
fn user_limits_operations() {
    use crate::admin::LimitsOp::*;
    let mut c = C::new(1);
    let op = |op| AdminOp::UserLimits {
        user: "guest".into(),
        op,
    };
    run_admin(&mut c, op(Merge(limits(&[("max-connections", 2)]))));
    run_admin(&mut c, op(Merge(limits(&[("max-channels", 3)]))));
    assert_eq!(
        c.topo.user_limits("guest"),
        &limits(&[("max-channels", 3), ("max-connections", 2)])
    );
    run_admin(
        &mut c,
        AdminOp::PutUser {
            name: "guest".into(),
            password_hash: Vec::new(),
            tags: vec!["monitoring".into()],
        },
    );
    assert_eq!(c.topo.user_limits("guest").0.len(), 2, "kept by a new definition");
    run_admin(&mut c, op(Remove("max-channels".into())));
    assert_eq!(c.topo.user_limits("guest"), &limits(&[("max-connections", 2)]));
    run_admin(&mut c, op(Remove("max-bogus".into())));
    assert_eq!(c.topo.user_limits("guest"), &limits(&[("max-connections", 2)]));
    run_admin(&mut c, op(Clear));
    assert!(c.topo.user_limits("guest").is_empty());
    assert_eq!(
        run_admin(&mut c, op(Set(limits(&[("max-queues", 1)])))),
        ["admin error 406 PRECONDITION_FAILED - unknown limit 'max-queues'"]
    );
    assert_eq!(
        run_admin(
            &mut c,
            AdminOp::UserLimits {
                user: "nobody".into(),
                op: Clear
            }
        ),
        ["admin error 404 NOT_FOUND - user 'nobody' not found"]
    );
}
