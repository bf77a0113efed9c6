//! Declaring and deleting the queues (and exchange) a run uses.

use crate::args::Args;
use crate::conn::{Conn, Error, Result};
use warren::protocol::methods::{ExchangeDeclare, ExchangeDelete, QueueBind, QueueDeclare, QueueDelete};
use warren::protocol::{FieldTable, FieldValue, LongStr, Method, ShortStr};

fn ss(s: &str) -> ShortStr {
    ShortStr::from_string_lossy(s)
}

fn expect(m: Method, what: &str, ok: fn(&Method) -> bool) -> Result<()> {
    if ok(&m) {
        Ok(())
    } else {
        Err(Error::Protocol(format!("expected {what}, got {}", m.name())))
    }
}

/// Whether the run declares (and later deletes) its exchange.
pub fn owns_exchange(args: &Args) -> Option<&str> {
    match args.exchange.as_deref() {
        Some(e) if !e.is_empty() && !e.starts_with("amq.") => Some(e),
        _ => None,
    }
}

/// The key producers publish with and queues are bound with.
pub fn routing_key(args: &Args, queue: &str) -> String {
    args.routing_key.clone().unwrap_or_else(|| queue.to_string())
}

/// Declares the run's exchange (if it owns one) on channel 1 of `conn`.
pub fn declare_exchange(conn: &mut Conn, args: &Args) -> Result<()> {
    if let Some(e) = owns_exchange(args) {
        let m = conn.call(
            1,
            &Method::ExchangeDeclare(ExchangeDeclare {
                exchange: ss(e),
                kind: ss(args.kind.name()),
                durable: args.persistent,
                ..Default::default()
            }),
        )?;
        expect(m, "exchange.declare-ok", |m| {
            matches!(m, Method::ExchangeDeclareOk(_))
        })?;
    }
    Ok(())
}

fn queue_arguments(args: &Args) -> FieldTable {
    let mut t = FieldTable::new();
    if args.quorum {
        t.0.push((ss("x-queue-type"), FieldValue::LongStr(LongStr::from("quorum"))));
    }
    t
}

/// Declares `queues` on channel `ch` of `conn`, and binds them to the
/// run's exchange.
pub fn declare_queues(conn: &mut Conn, ch: u16, args: &Args, queues: &[String]) -> Result<()> {
    for q in queues {
        let m = conn.call(
            ch,
            &Method::QueueDeclare(QueueDeclare {
                queue: ss(q),
                durable: args.persistent || args.quorum,
                arguments: queue_arguments(args),
                ..Default::default()
            }),
        )?;
        expect(m, "queue.declare-ok", |m| matches!(m, Method::QueueDeclareOk(_)))?;
        if let Some(e) = args.exchange.as_deref().filter(|e| !e.is_empty()) {
            let m = conn.call(
                ch,
                &Method::QueueBind(QueueBind {
                    queue: ss(q),
                    exchange: ss(e),
                    routing_key: ss(&routing_key(args, q)),
                    ..Default::default()
                }),
            )?;
            expect(m, "queue.bind-ok", |m| matches!(m, Method::QueueBindOk(_)))?;
        }
    }
    Ok(())
}

/// Deletes the queues (and the exchange if this run declared it).
pub fn delete(conn: &mut Conn, args: &Args, queues: &[String]) -> Result<()> {
    for q in queues {
        let m = conn.call(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: ss(q),
                ..Default::default()
            }),
        )?;
        expect(m, "queue.delete-ok", |m| matches!(m, Method::QueueDeleteOk(_)))?;
    }
    if let Some(e) = owns_exchange(args) {
        let m = conn.call(
            1,
            &Method::ExchangeDelete(ExchangeDelete {
                exchange: ss(e),
                ..Default::default()
            }),
        )?;
        expect(m, "exchange.delete-ok", |m| {
            matches!(m, Method::ExchangeDeleteOk(_))
        })?;
    }
    Ok(())
}
