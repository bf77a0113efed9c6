//! The real Python client, pika, against warren: the RabbitMQ tutorial
//! flows, and a conformance script whose expected output was captured
//! from RabbitMQ itself.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `PYTHONPATH` under which `import pika` works, installing pika into
/// `target/pydeps` if needed; `None` (and a SKIP line) if that is
/// impossible here.
fn pika_path() -> Option<&'static str> {
    static PATH: OnceLock<Option<String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let deps = root().join("target").join("pydeps");
        let works = |pp: &Path| {
            Command::new("python3")
                .args(["-c", "import pika"])
                .env("PYTHONPATH", pp)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works(&deps) {
            return Some(deps.display().to_string());
        }
        let install = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&deps)
            .arg("pika>=1.3,<2")
            .output();
        match install {
            Ok(o) if o.status.success() && works(&deps) => Some(deps.display().to_string()),
            Ok(o) => {
                eprintln!(
                    "SKIP pika tests: cannot install pika: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIP pika tests: no python3 ({e})");
                None
            }
        }
    })
    .as_deref()
}

fn run_script(script: &str, port: u16) -> String {
    let Some(pp) = pika_path() else {
        return String::new();
    };
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
    let b = common::start(2);
    let out = run_script("tutorials.py", b.handle.amqp_addr().port());
    if pika_path().is_some() {
        assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 7, "{out}");
    }
}

#[test]
fn pika_behaves_like_rabbitmq() {
    let b = common::start(2);
    let out = run_script("conformance.py", b.handle.amqp_addr().port());
    if pika_path().is_none() {
        return;
    }
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
