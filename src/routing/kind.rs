//! The four exchange types RabbitMQ ships with.

/// An exchange's type. Plain data, copied freely; every shard's replica of an
/// exchange carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` field of `exchange.declare`. Case-sensitive, as
    /// RabbitMQ's exchange-type registry is (`"Direct"` is an unknown type).
    pub fn parse(s: &[u8]) -> Option<ExchangeKind> {
        match s {
            b"direct" => Some(ExchangeKind::Direct),
            b"fanout" => Some(ExchangeKind::Fanout),
            b"topic" => Some(ExchangeKind::Topic),
            b"headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    /// The name clients send and management tools list.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_is_case_sensitive() {
        for k in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ] {
            assert_eq!(ExchangeKind::parse(k.as_str().as_bytes()), Some(k));
        }
        assert_eq!(ExchangeKind::parse(b"Direct"), None);
        assert_eq!(ExchangeKind::parse(b"x-consistent-hash"), None);
        assert_eq!(ExchangeKind::parse(b""), None);
    }
}
