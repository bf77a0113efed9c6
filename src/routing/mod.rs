//! Exchanges and bindings: pure routing tables, replicated on every shard.

mod bindings;
pub mod headers;
pub mod topic;

pub use bindings::Bindings;
pub use headers::headers_match;
pub use topic::TopicTrie;

use crate::protocol::{FieldTable, FieldValue};

/// The exchange types warren implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &[u8]) -> Option<ExchangeKind> {
        Some(match s {
            b"direct" => ExchangeKind::Direct,
            b"fanout" => ExchangeKind::Fanout,
            b"topic" => ExchangeKind::Topic,
            b"headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Checks binding arguments as RabbitMQ does (only headers exchanges care):
/// returns the 406 text for an invalid `x-match`.
pub fn validate_binding_args(kind: ExchangeKind, args: &FieldTable) -> Result<(), String> {
    if kind != ExchangeKind::Headers {
        return Ok(());
    }
    match args.get("x-match") {
        None => Ok(()),
        Some(FieldValue::LongStr(s)) => match s.as_bytes() {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => Ok(()),
            other => Err(format!(
                "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                String::from_utf8_lossy(other)
            )),
        },
        Some(v) => Err(format!(
            "Invalid x-match field type {} (value {:?}); expected longstr",
            crate::broker::args::type_name(v),
            v
        )),
    }
}
