//! Requests and replies of the management API, independent of the HTTP
//! server: a parsed [`Call`] in, a [`Reply`] out.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;

/// One API request, path already split and percent-decoded.
pub struct Call {
    pub method: Method,
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Call {
    pub fn query_flag(&self, name: &str) -> bool {
        self.query.get(name).is_some_and(|v| v == "true")
    }

    /// The body as a JSON object (`{}` when empty).
    pub fn json(&self) -> Result<serde_json::Value, Reply> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(serde_json::Value::Object(Default::default()));
        }
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            Ok(_) => Err(bad_request("JSON object expected")),
            Err(e) => Err(bad_request(&format!("malformed JSON: {e}"))),
        }
    }
}

/// Splits a raw path into percent-decoded segments; `%2F` inside a segment
/// (the default vhost) stays inside it.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// `a=b&c=d`, decoded (`+` is a space).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

pub type Res = Result<Reply, Reply>;

impl Reply {
    pub fn json(v: &impl Serialize) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// 201 for a new object, 204 for a replaced one (as RabbitMQ answers PUT).
    pub fn created_or_updated(created: bool) -> Reply {
        Reply::empty(if created { 201 } else { 204 })
    }

    pub fn text(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn error(status: u16, error: &str, reason: &str) -> Reply {
        let mut r = Reply::json(&serde_json::json!({ "error": error, "reason": reason }));
        r.status = status;
        r
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

pub fn bad_request(reason: &str) -> Reply {
    Reply::error(400, "bad_request", reason)
}

pub fn not_found() -> Reply {
    Reply::error(404, "Object Not Found", "Not Found")
}

/// 401 with the challenge browsers and clients expect.
pub fn not_authorised(reason: &str) -> Reply {
    Reply::error(401, "not_authorised", reason)
        .with_header("www-authenticate", "Basic realm=\"RabbitMQ Management\"".into())
}

/// An authenticated user without the rights for this call.
pub fn forbidden(reason: &str) -> Reply {
    Reply::error(401, "not_authorised", reason)
}

pub fn method_not_allowed() -> Reply {
    Reply::error(405, "method_not_allowed", "Method Not Allowed")
}

/// A broker error as RabbitMQ's management API reports it.
pub fn from_amqp(e: &crate::protocol::AmqpError) -> Reply {
    use crate::protocol::error::reply;
    match e.code {
        reply::ACCESS_REFUSED | reply::NOT_ALLOWED => forbidden(&e.reply_text()),
        reply::NOT_FOUND => Reply::error(404, "not_found", &e.reply_text()),
        reply::INTERNAL_ERROR => Reply::error(500, "internal_error", &e.reply_text()),
        _ => bad_request(&e.reply_text()),
    }
}

/// Stricter than RabbitMQ's (`script-src 'self' 'unsafe-eval'
/// 'unsafe-inline'; object-src 'self'`, which its UI's inline handlers
/// need): warren's UI is one script and one stylesheet of its own, with no
/// inline code or style, so nothing else may run, load or frame it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, self.body).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(self.content_type) {
            h.insert("content-type", v);
        }
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        // No foreign or inline code, no framing (clickjacking), no
        // content-type sniffing of API answers.
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_before_decoding() {
        assert_eq!(
            split_path("/api/queues/%2F/a%20b/"),
            ["api", "queues", "/", "a b"]
        );
        assert_eq!(
            split_path("/api/bindings/v/e/x/q/y/%252A.k"),
            ["api", "bindings", "v", "e", "x", "q", "y", "%2A.k"]
        );
        assert!(split_path("/").is_empty());
    }

    #[test]
    fn query_strings_decode_plus_and_percent() {
        let q = parse_query(Some("if-empty=true&name=a+b%21&flag"));
        assert_eq!(q.get("if-empty").map(String::as_str), Some("true"));
        assert_eq!(q.get("name").map(String::as_str), Some("a b!"));
        assert_eq!(q.get("flag").map(String::as_str), Some(""));
        assert!(parse_query(None).is_empty());
    }

    #[test]
    fn amqp_errors_map_to_rabbitmq_http_codes() {
        use crate::protocol::AmqpError;
        assert_eq!(from_amqp(&AmqpError::access_refused("x")).status, 401);
        assert_eq!(from_amqp(&AmqpError::not_allowed("x")).status, 401);
        assert_eq!(from_amqp(&AmqpError::not_found("x")).status, 404);
        assert_eq!(from_amqp(&AmqpError::precondition("x")).status, 400);
        assert_eq!(from_amqp(&AmqpError::resource_locked("x")).status, 400);
        assert_eq!(from_amqp(&AmqpError::internal("x")).status, 500);
    }
}
