//! Topology log failures: a failed append fails the operation with 541
//! and leaves the log as it was (later appends work); a failed sync fails
//! it too and refuses every later durable change until a restart.

use super::*;
use crate::admin::AdminOp;

/// An append that fails (I/O error) is rolled back: 541 for this
/// operation, nothing applied, and the next durable change is logged.
#[test]
fn failed_append_fails_the_operation_only() {
    let mut c = C::new(2);
    c.disk.set_faults(Faults {
        append_error: 1.0,
        ..Default::default()
    });
    c.request(chan(1, 1), declare("lost", true));
    assert_eq!(
        c.poll(),
        [
            "reply conn1.1/1: error 541 INTERNAL_ERROR - cannot write the topology log: simulated I/O error: write failed"
        ]
    );
    assert!(!c.has_queue("lost") && c.svc.is_idle());
    c.disk.set_faults(Faults::default());
    assert_eq!(
        c.run(2, chan(1, 1), declare("kept", true)),
        "reply conn1.1/1: declare-ok kept messages=0 consumers=0"
    );
    assert_eq!(c.logged_queues_after_power_loss(), ["kept"]);
}

/// A full disk: the same, with the OS's text; once there is room, the log
/// takes appends again and holds exactly what was committed.
#[test]
fn full_disk_fails_the_operation_without_poisoning_the_log() {
    let mut c = C::new(2);
    c.disk.set_capacity(Some(c.disk.used()));
    c.admin(AdminOp::AddVhost { name: "v2".into() });
    c.request(chan(1, 1), declare("q", true));
    assert_eq!(
        c.poll(),
        [
            "admin error 541 INTERNAL_ERROR - cannot write the topology log: No space left on device (os error 28)",
            "reply conn1.1/1: error 541 INTERNAL_ERROR - cannot write the topology log: No space left on device (os error 28)"
        ]
    );
    // Transient changes need no room.
    assert_eq!(
        c.run(2, chan(1, 1), declare("t", false)),
        "reply conn1.1/1: declare-ok t messages=0 consumers=0"
    );
    c.disk.set_capacity(None);
    assert_eq!(
        c.run(2, chan(1, 1), declare("q", true)),
        "reply conn1.1/1: declare-ok q messages=0 consumers=0"
    );
    assert_eq!(c.logged_queues_after_power_loss(), ["q"]);
}

/// A failed sync fails the operation (nothing applied) and every later
/// durable change; transient ones still go through.
#[test]
fn failed_sync_refuses_later_durable_changes() {
    let mut c = C::new(2);
    c.request(chan(1, 1), declare("q", true));
    assert_eq!(c.poll(), ["sync-log"]);
    assert!(!c.sync_log(true));
    assert_eq!(
        c.poll(),
        ["reply conn1.1/1: error 541 INTERNAL_ERROR - cannot sync the topology log"]
    );
    assert!(!c.has_queue("q"));
    let refused = "error 541 INTERNAL_ERROR - the topology log failed earlier; durable changes are refused until a restart";
    c.request(chan(1, 1), declare("q2", true));
    c.admin(AdminOp::AddVhost { name: "v2".into() });
    assert_eq!(
        c.poll(),
        [format!("reply conn1.1/1: {refused}"), format!("admin {refused}")]
    );
    assert_eq!(
        c.run(2, chan(1, 1), declare("t", false)),
        "reply conn1.1/1: declare-ok t messages=0 consumers=0"
    );
    assert!(c.svc.is_idle());
}

/// Completions that nothing waits for are ignored.
#[test]
fn stray_completions_are_ignored() {
    let mut c = C::new(2);
    c.svc.persisted(false);
    c.svc.persisted(true);
    c.svc.topology_applied(1);
    c.svc.owner_deleted(1, Ok(1));
    assert_eq!(c.poll(), Vec::<String>::new());
    assert!(c.svc.is_idle());
    // Not poisoned by the stray `persisted(false)`.
    assert_eq!(
        c.run(2, chan(1, 1), declare("q", true)),
        "reply conn1.1/1: declare-ok q messages=0 consumers=0"
    );
}

/// A restart (the log reopened) sees exactly the committed durable
/// topology, and ids continue after the recovered ones.
#[test]
fn reopened_log_resumes_ids() {
    let mut c = C::new(1);
    assert_eq!(
        c.run(1, chan(0, 1), declare("a", true)),
        "reply conn0.1/1: declare-ok a messages=0 consumers=0"
    );
    assert_eq!(
        c.run(1, chan(0, 1), declare("b", false)),
        "reply conn0.1/1: declare-ok b messages=0 consumers=0"
    );
    c.disk.crash_process();
    let (log, initial) = TopoLog::open(&c.disk, &log_dir()).unwrap();
    let mut topo = Topology::default();
    for ch in &initial {
        topo.apply(ch);
    }
    assert!(topo.queue_by_name(c.vhost, b"a").is_some());
    assert!(topo.queue_by_name(c.vhost, b"b").is_none(), "transient");
    let mut svc = ControlService::new(1, Some(log), &topo);
    svc.submit(ControlMsg::Request {
        ch: chan(0, 1),
        vhost: c.vhost,
        user: "guest".into(),
        req: declare("c", false),
    });
    match svc.poll(&topo) {
        Some(Action::Apply(cs)) => assert_eq!(
            describe_change(&topo, &cs[0]),
            "declare-queue q2 c owner=0",
            "after the recovered q1 (the transient q2 did not survive)"
        ),
        other => panic!("{other:?}"),
    }
}
