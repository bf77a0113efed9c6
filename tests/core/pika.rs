//! The real Python client, pika, against warren: the RabbitMQ tutorial
//! flows, and a conformance script whose expected output was captured
//! from RabbitMQ itself.

use crate::common;
use crate::prereq::root;
use std::process::Command;

fn run_script(pp: &str, script: &str, port: u16) -> String {
    let out = Command::new("python3")
        .arg(root().join("tests/pika").join(script))
        .arg(port.to_string())
        .env("PYTHONPATH", pp)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn pika_tutorials() {
    let Some(pp) = crate::prereq::python_path("pika_tutorials") else {
        return;
    };
    let b = common::start(2);
    let out = run_script(&pp, "tutorials.py", b.handle.amqp_addr().port());
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 7, "{out}");
}

#[test]
fn pika_behaves_like_rabbitmq() {
    let Some(pp) = crate::prereq::python_path("pika_behaves_like_rabbitmq") else {
        return;
    };
    let b = common::start(2);
    let out = run_script(&pp, "conformance.py", b.handle.amqp_addr().port());
    let expected = std::fs::read_to_string(root().join("tests/pika/conformance.expected")).unwrap();
    let mut diffs = Vec::new();
    for (want, got) in expected.lines().zip(out.lines()) {
        if want != got {
            diffs.push(format!("rabbitmq: {want}\nwarren:   {got}"));
        }
    }
    assert_eq!(
        expected.lines().count(),
        out.lines().count(),
        "scenario count differs:\n{out}"
    );
    assert!(
        diffs.is_empty(),
        "differences from RabbitMQ:\n{}",
        diffs.join("\n")
    );
}
