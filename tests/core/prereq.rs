//! What some tests need besides Rust crates (a browser, the Go toolchain,
//! Python clients), installed by `tests/deps.sh` on first use.
//!
//! A test whose prerequisite is missing says SKIP and passes on a
//! developer's machine, but fails in CI (`CI=true`): a CI run that did not
//! run a test must not look green.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/deps.sh` once per test process.
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| match Command::new(root().join("tests/deps.sh")).output() {
        Ok(o) if !o.stderr.is_empty() => eprintln!("{}", String::from_utf8_lossy(&o.stderr).trim()),
        Ok(_) => {}
        Err(e) => eprintln!("cannot run tests/deps.sh: {e}"),
    });
}

/// A prerequisite is missing: fail in CI, skip elsewhere. Returns `None`
/// so callers can `let Some(x) = ... else { return }`.
pub fn missing<T>(test: &str, what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {what} is missing (CI=true: a prerequisite must not be skipped; see tests/deps.sh)");
    }
    eprintln!("SKIPPED {test}: {what} is missing (tests/deps.sh installs it)");
    None
}

/// `PYTHONPATH` under which the clients of tests/clients/requirements.txt
/// import, or `None` after reporting them missing.
pub fn python_path(test: &str) -> Option<String> {
    let deps = root().join("target").join("pydeps");
    let works = |pp: &Path| {
        Command::new("python3")
            .args(["-c", "import pika, aiormq, kombu, amqpstorm"])
            .env("PYTHONPATH", pp)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works(&deps) {
        install();
    }
    if works(&deps) {
        Some(deps.display().to_string())
    } else {
        missing(test, "the Python clients (pika, aiormq, kombu, amqpstorm)")
    }
}

/// The environment for `go run` with Debian's amqp091-go (GOPATH mode), or
/// `None` after reporting it missing.
pub fn go_env(test: &str) -> Option<Vec<(&'static str, String)>> {
    let gopath = Path::new("/usr/share/gocode");
    let ready = || {
        gopath.join("src/github.com/rabbitmq/amqp091-go").is_dir()
            && Command::new("go")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !ready() {
        install();
    }
    if !ready() {
        return missing(
            test,
            "the Go toolchain with amqp091-go (golang-go, golang-github-rabbitmq-amqp091-go-dev)",
        );
    }
    let cache = root().join("target").join("gocache");
    Some(vec![
        ("GO111MODULE", "off".into()),
        ("GOPATH", gopath.display().to_string()),
        ("GOCACHE", cache.display().to_string()),
    ])
}

/// Paths of chromium and chromedriver, or `None` after reporting them missing.
pub fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let (chromium, driver) = (
        PathBuf::from("/usr/bin/chromium"),
        PathBuf::from("/usr/bin/chromedriver"),
    );
    if !(chromium.exists() && driver.exists()) {
        install();
    }
    if chromium.exists() && driver.exists() {
        Some((chromium, driver))
    } else {
        missing(test, "a browser (Debian's chromium and chromium-driver)")
    }
}
