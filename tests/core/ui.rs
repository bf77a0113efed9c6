//! The web UI in a real headless browser (Debian's chromium, driven over
//! WebDriver by chromedriver): log in, watch a queue fill, read and purge
//! it, publish from a form, add a user. `tests/deps.sh` installs the
//! browser; without one the test is skipped, saying so (and fails in CI).

use crate::common::{self, http, wait_for};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
            None,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver ready", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .and_then(|_| {
                    let (s, v) = http("GET", &format!("{base}/status"), None, None);
                    (s == 200 && v["value"]["ready"] == true).then_some(())
                })
        });
        let (s, v) = http(
            "POST",
            &format!("{base}/session"),
            None,
            Some(
                json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
                }}}}),
            ),
        );
        assert_eq!(s, 200, "new session: {v}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Driver { child, base, session }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = http(
            method,
            &format!("{}/session/{}{path}", self.base, self.session),
            None,
            body,
        );
        assert_eq!(s, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        wait_for(&format!("element {css}"), || {
            let (s, v) = http(
                "POST",
                &format!("{}/session/{}/element", self.base, self.session),
                None,
                Some(json!({"using": "css selector", "value": css})),
            );
            (s == 200).then(|| v["value"][ELEMENT].as_str().unwrap().to_string())
        })
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", "args": [css]})),
        );
        v.as_str().unwrap_or("").to_string()
    }

    fn wait_text(&self, css: &str, want: &str) {
        for _ in 0..200 {
            if self.text(css).contains(want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let body = self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.body.innerHTML;", "args": []})),
        );
        panic!(
            "{css} does not show {want:?} in 10 s; the page:\n{}",
            body.as_str().unwrap_or("")
        );
    }
}

#[test]
fn a_person_uses_the_management_ui() {
    if crate::prereq::browser("a_person_uses_the_management_ui").is_none() {
        return;
    }
    let b = common::start_with_mgmt(2);
    let g = Some(("guest", "guest"));
    let api = |p: &str| format!("{}{p}", b.base);
    let d = Driver::start();
    d.goto(&format!("{}/", b.base));
    // a wrong password is refused
    d.type_into("#login-user", "guest");
    d.type_into("#login-pass", "nope");
    d.click("#login-submit");
    d.wait_text("#login-error", "Login failed");
    d.type_into("#login-pass", "guest");
    d.click("#login-submit");
    d.wait_text("#whoami", "guest");
    d.wait_text("#total-exchanges", "7");
    // a queue fills: the queues page shows it
    http(
        "PUT",
        &api("/api/queues/%2F/uiq"),
        g,
        Some(json!({"durable": true})),
    );
    for i in 0..5 {
        http(
            "POST",
            &api("/api/exchanges/%2F/amq.default/publish"),
            g,
            Some(
                json!({"routing_key": "uiq", "payload": format!("hello-{i}"), "payload_encoding": "string", "properties": {}}),
            ),
        );
    }
    d.goto(&format!("{}/#/queues", b.base));
    d.wait_text("#queues-table", "uiq");
    // the queue page: get messages, then purge
    d.goto(&format!("{}/#/queue/%2F/uiq", b.base));
    d.wait_text("#queue-ready", "5");
    d.click("#get-submit");
    d.wait_text("#get-result", "hello-0");
    d.click("#purge");
    d.wait_text("#flash", "Queue purged");
    d.wait_text("#queue-ready", "0");
    // publish from the form
    d.type_into("#pub-payload", "from the browser");
    d.click("#pub-submit");
    d.wait_text("#flash", "Message published");
    wait_for("published message in the queue", || {
        (http("GET", &api("/api/queues/%2F/uiq"), g, None).1["messages_ready"] == 1).then_some(())
    });
    // add a user, a vhost and a permission from the admin page
    d.goto(&format!("{}/#/admin", b.base));
    d.type_into("#vhost-name", "ui-vhost");
    d.click("#add-vhost button");
    d.wait_text("#vhosts-table", "ui-vhost");
    d.type_into("#user-name", "ui-user");
    d.type_into("#user-pass", "ui-pass");
    d.type_into("#user-tags", "management");
    d.click("#add-user button");
    d.wait_text("#users-table", "ui-user");
    let (s, me) = http("GET", &api("/api/whoami"), Some(("ui-user", "ui-pass")), None);
    assert_eq!((s, me["tags"].clone()), (200, json!(["management"])));
    // the overview counts what exists
    d.goto(&format!("{}/#/overview", b.base));
    d.wait_text("#total-queues", "1");
    // and lists the nodes (here one, running)
    d.wait_text("#nodes-table", "warren@");
    d.wait_text("#nodes-table", "running");
}
