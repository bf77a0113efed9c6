//! The management API client behind warrenctl.

use serde_json::Value;
use std::time::Duration;

pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

/// What went wrong, with the exit code a script can rely on (sysexits, as
/// rabbitmqctl uses them).
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// A usage error: the usage line follows the message.
    pub usage: bool,
}

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_NOPERM: u8 = 77;

pub fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        usage: false,
    }
}

pub fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: EX_USAGE,
        message: message.into(),
        usage: true,
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub fn new(host: &str, port: u16, user: &str, pass: &str, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{pass}"),
        );
        Client {
            agent,
            base: format!("http://{host}:{port}/api"),
            auth: format!("Basic {auth}"),
        }
    }

    /// Sends a request; `Ok(None)` for 404, the JSON body otherwise.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Option<Value>, Failure> {
        let url = format!("{}{}", self.base, path);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &self.auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("authorization", &self.auth).call(),
            (m, b) => {
                let bytes = b.map(|v| v.to_string()).unwrap_or_default();
                let req = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req.header("authorization", &self.auth)
                    .content_type("application/json")
                    .send(bytes.as_bytes())
            }
        };
        let mut resp = result.map_err(|e| {
            fail(
                EX_UNAVAILABLE,
                format!(
                    "unable to perform an operation on the node at {}: {e}\n\nIs warren running, and is its management API on this address (--node/--port)?",
                    self.base.trim_end_matches("/api")
                ),
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let reason = || {
            json.as_ref()
                .and_then(|j| j.get("reason"))
                .and_then(|r| r.as_str())
                .unwrap_or(&text)
                .to_string()
        };
        match status {
            200..=299 => Ok(Some(json.unwrap_or(Value::Null))),
            404 => Ok(None),
            401 => Err(fail(EX_NOPERM, format!("access refused: {}", reason()))),
            400 => Err(fail(EX_DATAERR, reason())),
            _ => Err(fail(EX_SOFTWARE, format!("HTTP {status}: {}", reason()))),
        }
    }

    pub fn get(&self, path: &str) -> Result<Option<Value>, Failure> {
        self.call("GET", path, None)
    }

    pub fn list(&self, path: &str) -> Result<Vec<Value>, Failure> {
        match self.get(path)? {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(fail(EX_SOFTWARE, "unexpected answer from the broker")),
            None => Err(fail(EX_SOFTWARE, format!("{path}: not found"))),
        }
    }
}
