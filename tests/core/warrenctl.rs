//! warrenctl against a running broker: every command, its output in
//! rabbitmqctl's shape, and the exit codes scripts rely on.

use crate::common::{self, http, wait_for};
use serde_json::json;
use std::process::Command;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(port: u16, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
        .args(["--node", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .output()
        .expect("warrenctl runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(port: u16, args: &[&str]) -> String {
    let o = ctl(port, args);
    assert_eq!(o.code, 0, "warrenctl {args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

#[track_caller]
fn fails(port: u16, args: &[&str], code: i32, message: &str) {
    let o = ctl(port, args);
    assert_eq!(o.code, code, "warrenctl {args:?}: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(message),
        "warrenctl {args:?}: stderr {:?} lacks {message:?}",
        o.stderr
    );
}

#[test]
fn users_vhosts_permissions_and_policies() {
    let b = common::start_with_mgmt(1);
    let port: u16 = b.base.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        ok(port, &["add_user", "bob", "pw"]),
        "Adding user \"bob\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! See 'warrenctl help set_permissions' to learn more.\n"
    );
    fails(
        port,
        &["add_user", "bob", "pw"],
        70,
        "User \"bob\" already exists",
    );
    fails(port, &["add_user", "bob"], 64, "add_user takes USER PASSWORD");
    assert_eq!(
        ok(port, &["list_users"]),
        "Listing users ...\nuser\ttags\nbob\t[]\nguest\t[administrator]\n"
    );
    assert_eq!(
        ok(port, &["-q", "list_users"]),
        "bob\t[]\nguest\t[administrator]\n"
    );
    ok(port, &["set_user_tags", "bob", "management", "policymaker"]);
    assert!(ok(port, &["list_users"]).contains("bob\t[management, policymaker]\n"));
    assert_eq!(ok(port, &["add_vhost", "v1"]), "Adding vhost \"v1\" ...\n");
    assert_eq!(ok(port, &["list_vhosts"]), "Listing vhosts ...\nname\n/\nv1\n");
    assert_eq!(
        ok(
            port,
            &["set_permissions", "-p", "v1", "bob", "^bob-.*", ".*", ".*"]
        ),
        "Setting permissions for user \"bob\" in vhost \"v1\" ...\n"
    );
    fails(
        port,
        &["set_permissions", "-p", "v1", "nobody", ".*", ".*", ".*"],
        67,
        "User \"nobody\" does not exist",
    );
    fails(
        port,
        &["set_permissions", "-p", "nope", "bob", ".*", ".*", ".*"],
        70,
        "Virtual host 'nope' does not exist",
    );
    let perms = ok(port, &["list_permissions", "-p", "v1"]);
    assert!(
        perms.starts_with("Listing permissions for vhost \"v1\" ...\nuser\tconfigure\twrite\tread\n"),
        "{perms}"
    );
    assert!(perms.contains("bob\t^bob-.*\t.*\t.*\n"), "{perms}");
    assert_eq!(
        ok(port, &["list_user_permissions", "bob"]),
        "Listing permissions for user \"bob\" ...\nvhost\tconfigure\twrite\tread\nv1\t^bob-.*\t.*\t.*\n"
    );
    fails(
        port,
        &["list_user_permissions", "nobody"],
        67,
        "User \"nobody\" does not exist",
    );
    // the password works, then changes
    let (s, _) = http(
        "GET",
        &format!("{}/api/whoami", b.base),
        Some(("bob", "pw")),
        None,
    );
    assert_eq!(s, 200);
    ok(port, &["change_password", "bob", "pw2"]);
    assert_eq!(
        http(
            "GET",
            &format!("{}/api/whoami", b.base),
            Some(("bob", "pw")),
            None
        )
        .0,
        401
    );
    assert_eq!(
        http(
            "GET",
            &format!("{}/api/whoami", b.base),
            Some(("bob", "pw2")),
            None
        )
        .0,
        200
    );
    fails(port, &["change_password", "nobody", "x"], 67, "does not exist");
    assert_eq!(
        ok(port, &["clear_permissions", "-p", "v1", "bob"]),
        "Clearing permissions for user \"bob\" in vhost \"v1\" ...\n"
    );
    assert!(!ok(port, &["list_permissions", "-p", "v1"]).contains("bob"));
    // policies
    assert_eq!(
        ok(
            port,
            &[
                "set_policy",
                "-p",
                "v1",
                "--apply-to",
                "queues",
                "--priority",
                "3",
                "lim",
                "^q",
                r#"{"max-length":5}"#
            ]
        ),
        "Setting policy \"lim\" for pattern \"^q\" to \"{\"max-length\":5}\" with priority \"3\" for vhost \"v1\" ...\n"
    );
    fails(
        port,
        &["set_policy", "bad", "^q", "{not json"],
        65,
        "not valid JSON",
    );
    fails(
        port,
        &["set_policy", "bad", "^q", r#"{"max-length":"x"}"#],
        65,
        "",
    );
    assert_eq!(
        ok(port, &["list_policies", "-p", "v1"]),
        "Listing policies for vhost \"v1\" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\nv1\tlim\t^q\tqueues\t{\"max-length\":5}\t3\n"
    );
    ok(port, &["clear_policy", "-p", "v1", "lim"]);
    assert!(!ok(port, &["list_policies", "-p", "v1"]).contains("lim"));
    // deletions
    assert_eq!(ok(port, &["delete_vhost", "v1"]), "Deleting vhost \"v1\" ...\n");
    fails(
        port,
        &["delete_vhost", "v1"],
        70,
        "Virtual host 'v1' does not exist",
    );
    assert_eq!(ok(port, &["delete_user", "bob"]), "Deleting user \"bob\" ...\n");
    fails(port, &["delete_user", "bob"], 67, "User \"bob\" does not exist");
    // bad credentials, unknown command, broker not reachable
    let o = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
        .args([
            "--port",
            &port.to_string(),
            "--node",
            "127.0.0.1",
            "--password",
            "wrong",
            "list_users",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(77));
    fails(port, &["frobnicate"], 64, "unknown command 'frobnicate'");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fails(closed, &["list_users"], 69, "unable to perform an operation");
}

#[test]
fn queues_exchanges_bindings_connections_and_definitions() {
    let b = common::start_with_mgmt(2);
    let port: u16 = b.base.rsplit(':').next().unwrap().parse().unwrap();
    let url = |p: &str| format!("{}{p}", b.base);
    let g = Some(("guest", "guest"));
    http(
        "PUT",
        &url("/api/queues/%2F/jobs"),
        g,
        Some(json!({"durable": true})),
    );
    http(
        "PUT",
        &url("/api/exchanges/%2F/events"),
        g,
        Some(json!({"type": "fanout"})),
    );
    http(
        "POST",
        &url("/api/bindings/%2F/e/events/q/jobs"),
        g,
        Some(json!({"routing_key": "rk"})),
    );
    for _ in 0..4 {
        http(
            "POST",
            &url("/api/exchanges/%2F/events/publish"),
            g,
            Some(json!({"routing_key": "", "payload": "x", "payload_encoding": "string", "properties": {}})),
        );
    }
    assert_eq!(
        ok(port, &["list_queues"]),
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\njobs\t4\n"
    );
    assert_eq!(
        ok(
            port,
            &[
                "-q",
                "list_queues",
                "name",
                "messages_ready",
                "consumers",
                "durable"
            ]
        ),
        "jobs\t4\t0\ttrue\n"
    );
    let ex = ok(port, &["list_exchanges"]);
    assert!(
        ex.starts_with("Listing exchanges for vhost / ...\nname\ttype\n"),
        "{ex}"
    );
    assert!(
        ex.contains("\tdirect\n") && ex.contains("events\tfanout\n") && ex.contains("amq.topic\ttopic\n"),
        "{ex}"
    );
    assert_eq!(
        ok(port, &["list_bindings"]),
        "Listing bindings for vhost /...\nsource_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n\
         \texchange\tjobs\tqueue\tjobs\t[]\nevents\texchange\tjobs\tqueue\trk\t[]\n"
    );
    // connections, channels, consumers
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = rt.block_on(b.broker.connect());
    let _consumer = rt.block_on(async {
        let ch = conn.create_channel().await.unwrap();
        ch.basic_qos(2, Default::default()).await.unwrap();
        ch.basic_consume(
            "jobs".into(),
            "worker-1".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap()
    });
    wait_for("consumer listed", || {
        ok(port, &["-q", "list_consumers"])
            .contains("worker-1")
            .then_some(())
    });
    let conns = ok(port, &["list_connections"]);
    assert!(
        conns.starts_with("Listing connections ...\nuser\tpeer_host\tpeer_port\tstate\nguest\t127.0.0.1\t"),
        "{conns}"
    );
    assert!(conns.ends_with("\trunning\n"), "{conns}");
    let chans = ok(
        port,
        &["-q", "list_channels", "user", "consumer_count", "prefetch_count"],
    );
    assert_eq!(chans, "guest\t1\t2\n");
    let cons = ok(
        port,
        &[
            "-q",
            "list_consumers",
            "queue_name",
            "consumer_tag",
            "ack_required",
            "prefetch_count",
        ],
    );
    assert_eq!(cons, "jobs\tworker-1\ttrue\t2\n");
    // Dropping the consumer drops lapin's last handle of its channel, which
    // lapin then closes itself: the connection's close may find it
    // closing already (lapin's error, not the broker's).
    drop(_consumer);
    let _ = rt.block_on(conn.close(200, "bye".into()));
    wait_for("messages back", || {
        (ok(port, &["-q", "list_queues", "messages_ready"]) == "4\n").then_some(())
    });
    // purge and delete
    assert_eq!(
        ok(port, &["purge_queue", "jobs"]),
        "Purging queue 'jobs' in vhost '/' ...\n"
    );
    assert_eq!(ok(port, &["-q", "list_queues", "messages"]), "0\n");
    fails(port, &["purge_queue", "nope"], 69, "not_found");
    fails(port, &["delete_queue", "nope"], 64, "Queue not found");
    // definitions out, queue deleted, definitions in: the queue is back
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    ok(port, &["export_definitions", path]);
    let defs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(defs["queues"][0]["name"], "jobs");
    assert_eq!(
        ok(port, &["delete_queue", "jobs"]),
        "Deleting queue 'jobs' on vhost '/' ...\nQueue was successfully deleted with 0 messages\n"
    );
    assert_eq!(ok(port, &["-q", "list_queues"]), "");
    ok(port, &["import_definitions", path]);
    assert_eq!(
        ok(port, &["-q", "list_queues", "name", "durable"]),
        "jobs\ttrue\n"
    );
    fails(
        port,
        &["import_definitions", "/nonexistent/defs.json"],
        65,
        "/nonexistent/defs.json",
    );
    let stdout = ok(port, &["export_definitions", "-"]);
    assert!(serde_json::from_str::<serde_json::Value>(&stdout).is_ok());
}

#[test]
fn status_cluster_status_stop_and_reset() {
    let (_tmp, dir) = common::temp_data_dir();
    let handle = common::start_in(&dir, 1);
    let mgmt = common::mgmt_for(
        &handle,
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::time::Duration::from_secs(5),
    );
    let port = mgmt.addr().port();
    http(
        "PUT",
        &format!("http://127.0.0.1:{port}/api/queues/%2F/keepme"),
        Some(("guest", "guest")),
        Some(json!({"durable": true})),
    );
    let status = ok(port, &["status"]);
    assert!(status.starts_with("Status of node warren@"), "{status}");
    for part in [
        "Runtime",
        "OS PID: ",
        "Memory",
        "Total memory used: ",
        "Listeners",
        "protocol: amqp",
        "Queue count: 1",
    ] {
        assert!(status.contains(part), "status lacks {part:?}:\n{status}");
    }
    let cs = ok(port, &["cluster_status"]);
    assert!(
        cs.contains("Running Nodes\n\nwarren@") && cs.contains("Alarms\n\n(none)"),
        "{cs}"
    );
    fails(
        port,
        &["reset", "--data-dir", dir.to_str().unwrap()],
        64,
        "requires the broker to be stopped",
    );
    let o = ok(port, &["stop"]);
    assert!(o.starts_with("Stopping and halting node warren@"), "{o}");
    drop(mgmt);
    handle.shutdown();
    fails(port, &["status"], 69, "unable to perform an operation");
    fails(port, &["reset"], 64, "reset needs --data-dir");
    let o = ok(port, &["reset", "--data-dir", dir.to_str().unwrap()]);
    assert!(o.starts_with("Resetting node "), "{o}");
    // after a reset, the broker starts empty (default vhost and user only)
    let handle = common::start_in(&dir, 1);
    let snap = handle.admin().snapshot().unwrap();
    assert!(snap.queues.is_empty());
    assert_eq!(
        snap.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["guest"]
    );
    handle.shutdown();
}

/// The limits commands, in rabbitmqctl 3.10.8's words and exit codes
/// (each output below was captured from rabbitmqctl against RabbitMQ
/// 3.10.8): `set_vhost_limits` replaces the set, `set_user_limits` adds to
/// it; the limits are enforced once set.
#[test]
fn vhost_and_user_limits() {
    let b = common::start_with_mgmt(1);
    let port: u16 = b.base.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        ok(port, &["list_vhost_limits"]),
        "Listing limits for vhost \"/\" ...\n\n"
    );
    fails(
        port,
        &["clear_vhost_limits"],
        69,
        "Error:\nParameter does not exist",
    );
    assert_eq!(
        ok(
            port,
            &["set_vhost_limits", r#"{"max-connections": 10, "max-queues": 5}"#]
        ),
        "Setting vhost limits to \"{\"max-connections\": 10, \"max-queues\": 5}\" for vhost \"/\" ...\n"
    );
    assert_eq!(
        ok(port, &["list_vhost_limits"]),
        "Listing limits for vhost \"/\" ...\n{\"max-connections\":10,\"max-queues\":5}\n"
    );
    assert_eq!(
        ok(port, &["list_vhost_limits", "-p", "/", "-q"]),
        "{\"max-connections\":10,\"max-queues\":5}\n"
    );
    assert_eq!(
        ok(port, &["list_vhost_limits", "--global"]),
        "Listing limits for all vhosts ...\nvhost\tlimits\n/\t{\"max-connections\":10,\"max-queues\":5}\n"
    );
    // Replaced whole.
    ok(port, &["set_vhost_limits", r#"{"max-queues": 1}"#]);
    assert_eq!(ok(port, &["-q", "list_vhost_limits"]), "{\"max-queues\":1}\n");
    fails(
        port,
        &["set_vhost_limits", r#"{"max-queues":"x","max-connections":"y"}"#],
        69,
        "Error:\nValidation failed\n\nmax-queues should be a number, actually was <<\"x\">>\nmax-connections should be a number, actually was <<\"y\">>\n",
    );
    fails(
        port,
        &["set_vhost_limits", r#"{"max-foo":1}"#],
        69,
        "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,1}] in limits\n",
    );
    fails(
        port,
        &["set_vhost_limits", "garbage"],
        69,
        "JSON decoding error. Reason: badarg",
    );
    fails(
        port,
        &["set_vhost_limits", "-p", "nope", r#"{"max-queues":1}"#],
        65,
        "Virtual host 'nope' does not exist",
    );
    fails(
        port,
        &["list_vhost_limits", "-p", "nope"],
        65,
        "Virtual host 'nope' does not exist",
    );
    fails(port, &["set_vhost_limits"], 64, "set_vhost_limits takes");
    // Enforced: one queue.
    let (s, _) = http(
        "PUT",
        &format!("{}/api/queues/%2F/one", b.base),
        Some(("guest", "guest")),
        Some(json!({})),
    );
    assert_eq!(s, 201);
    let (s, body) = http(
        "PUT",
        &format!("{}/api/queues/%2F/two", b.base),
        Some(("guest", "guest")),
        Some(json!({})),
    );
    assert_eq!(s, 400);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .ends_with("cannot declare queue 'two': queue limit in vhost '/' (1) is reached"),
        "{body}"
    );
    assert_eq!(
        ok(port, &["clear_vhost_limits"]),
        "Clearing vhost \"/\" limits ...\n"
    );
    assert_eq!(
        ok(port, &["list_vhost_limits", "--global"]),
        "Listing limits for all vhosts ...\n\n"
    );

    ok(port, &["add_user", "bob", "pw"]);
    assert_eq!(
        ok(port, &["list_user_limits"]),
        "Listing limits for user \"guest\" ...\n{}\n"
    );
    assert_eq!(
        ok(
            port,
            &[
                "set_user_limits",
                "bob",
                r#"{"max-connections": 2, "max-channels": 3}"#
            ]
        ),
        "Setting user limits to \"{\"max-connections\": 2, \"max-channels\": 3}\" for user \"bob\" ...\n"
    );
    // Added to, not replaced.
    ok(port, &["set_user_limits", "bob", r#"{"max-connections": 5}"#]);
    assert_eq!(
        ok(port, &["list_user_limits", "--user", "bob"]),
        "Listing limits for user \"bob\" ...\n{\"max-channels\":3,\"max-connections\":5}\n"
    );
    assert_eq!(
        ok(port, &["list_user_limits", "--global"]),
        "Listing limits for all users ...\nuser\tlimits\nbob\t{\"max-channels\":3,\"max-connections\":5}\n"
    );
    fails(
        port,
        &["set_user_limits", "bob", r#"{"max-channels":"x"}"#],
        69,
        "Error:\nmax-channels should be a number, actually was <<\"x\">>",
    );
    fails(
        port,
        &["set_user_limits", "bob", r#"{"max-foo":1}"#],
        69,
        "Unrecognised terms [{<<\"max-foo\">>,1}] in user-limits",
    );
    fails(
        port,
        &["set_user_limits", "nobody", r#"{"max-channels":1}"#],
        69,
        "{:no_such_user, \"nobody\"}",
    );
    fails(
        port,
        &["list_user_limits", "--user", "nobody"],
        69,
        "{:no_such_user, \"nobody\"}",
    );
    fails(
        port,
        &["clear_user_limits", "bob"],
        64,
        "clear_user_limits takes USER LIMIT|all",
    );
    assert_eq!(
        ok(port, &["clear_user_limits", "bob", "max-channels"]),
        "Clearing \"max-channels\" limit for user \"bob\" ...\n"
    );
    assert_eq!(
        ok(port, &["-q", "list_user_limits", "--user", "bob"]),
        "{\"max-connections\":5}\n"
    );
    ok(port, &["clear_user_limits", "bob", "max-bogus"]);
    assert_eq!(
        ok(port, &["clear_user_limits", "bob", "all"]),
        "Clearing all limits for user \"bob\" ...\n"
    );
    assert_eq!(ok(port, &["-q", "list_user_limits", "--user", "bob"]), "{}\n");
    fails(
        port,
        &["clear_user_limits", "nobody", "all"],
        69,
        "{:no_such_user, \"nobody\"}",
    );
    // Enforced: guest may open no channel at all.
    ok(port, &["set_user_limits", "guest", r#"{"max-channels": 0}"#]);
    let addr = b.broker.handle.amqp_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = common::connect(&format!("amqp://guest:guest@{addr}/%2f")).await;
        let err = c.create_channel().await.unwrap_err();
        assert!(
            err.to_string().contains(
                "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (0)"
            ),
            "{err}"
        );
    });
}

/// `set_disk_free_limit` as rabbitmqctl's: absolute (with its units) or
/// relative to RAM; the alarm follows the new limit.
#[test]
fn set_disk_free_limit_moves_the_alarm() {
    let m = common::start_with_mgmt(1);
    let port = m._mgmt.addr().port();
    let node = |field: &str| {
        let (_, nodes) = http(
            "GET",
            &format!("http://127.0.0.1:{port}/api/nodes"),
            Some(("guest", "guest")),
            None,
        );
        nodes[0][field].clone()
    };
    let out = ok(port, &["set_disk_free_limit", "1000000GB"]);
    assert!(
        out.contains("Setting disk free limit on warren@") && out.contains(" to 1000000GB bytes ..."),
        "{out}"
    );
    assert_eq!(node("disk_free_limit"), json!(1_000_000_000_000_000u64));
    wait_for("the disk alarm", || {
        (node("disk_free_alarm") == json!(true)).then_some(())
    });
    for cmd in ["status", "cluster_status"] {
        let out = ok(port, &[cmd]);
        assert!(
            out.contains("Alarms\n\nFree disk space alarm on node warren@"),
            "{out}"
        );
    }
    let out = ok(port, &["set_disk_free_limit", "mem_relative", "0.0"]);
    assert!(out.contains(" to 0.0 times the total RAM ..."), "{out}");
    assert_eq!(node("disk_free_limit"), json!(0));
    wait_for("the alarm to clear", || {
        (node("disk_free_alarm") == json!(false)).then_some(())
    });
    ok(port, &["set_disk_free_limit", "50MB"]);
    assert_eq!(node("disk_free_limit"), json!(50_000_000));
    fails(port, &["set_disk_free_limit", "1TB"], 64, "bad argument");
    fails(
        port,
        &["set_disk_free_limit", "mem_relative", "x"],
        64,
        "bad argument",
    );
}
