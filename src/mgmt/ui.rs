//! The web UI: a single page served from files embedded in the binary (no
//! CDN). It uses the same HTTP API as every other client.

use super::http::{Call, Reply, Res, not_found};

const INDEX: &str = include_str!("ui/index.html");
const APP: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

pub fn serve(call: &Call) -> Res {
    match call.segs.last().map(|s| s.as_str()) {
        None | Some("index.html") => Ok(Reply::text("text/html; charset=utf-8", INDEX)),
        Some("app.js") => Ok(Reply::text("application/javascript; charset=utf-8", APP)),
        Some("style.css") => Ok(Reply::text("text/css; charset=utf-8", STYLE)),
        _ => Err(not_found()),
    }
}
