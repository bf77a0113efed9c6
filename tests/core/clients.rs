//! Third-party clients against warren, in the shapes their users and their
//! own test suites use, each checked against RabbitMQ 3.10 first: the Go
//! client (amqp091-go, from Debian), aiormq, kombu and amqpstorm (PyPI).
//! The scripts live in tests/clients and print "ok NAME" per scenario.

use crate::common;
use crate::prereq::{go_env, python_path, root};
use std::process::Command;

fn check(name: &str, out: std::process::Output, scenarios: usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, scenarios, "{name}:\n{stdout}\n{stderr}");
}

fn python(test: &str, script: &str, scenarios: usize) {
    let Some(pp) = python_path(test) else { return };
    let b = common::start(2);
    let out = Command::new("python3")
        .arg(root().join("tests/clients").join(script))
        .arg(b.handle.amqp_addr().port().to_string())
        .env("PYTHONPATH", pp)
        .output()
        .expect("run python3");
    check(script, out, scenarios);
}

/// amqp091-go closing one connection from several goroutines at once.
#[test]
fn go_client_concurrent_close() {
    let Some(env) = go_env("go_client_concurrent_close") else {
        return;
    };
    let b = common::start(2);
    let out = Command::new("go")
        .arg("run")
        .arg(root().join("tests/clients/close_race.go"))
        .arg(&b.uri)
        .envs(env)
        .output()
        .expect("go run");
    check("close_race.go", out, 1);
}

/// aiormq: close with an error, channel 65535, nowait then qos, if-empty
/// after a get, pipelined declares.
#[test]
fn aiormq_shapes() {
    python("aiormq_shapes", "aiormq_compat.py", 5);
}

/// kombu deleting the queue it consumes; amqpstorm's large messages.
#[test]
fn kombu_and_amqpstorm_shapes() {
    python("kombu_and_amqpstorm_shapes", "kombu_compat.py", 2);
}
