//! Scenarios without messages: connection churn, queue churn, idle
//! connections.

use crate::args::{Args, Uri};
use crate::conn::{Conn, Error, Result};
use crate::stats::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use warren::protocol::methods::{QueueDeclare, QueueDelete};
use warren::protocol::{Method, ShortStr};

/// Opens and closes connections until stopped.
pub fn connections(uri: &Uri, shared: &Shared) -> Result<()> {
    while !crate::STOP.load(Relaxed) {
        let c = Conn::open(uri, "warren-perf churn")?;
        c.close()?;
        shared.c.connections.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// Declares and deletes queues on one channel until stopped.
pub fn queues(uri: &Uri, worker: usize, shared: &Shared) -> Result<()> {
    let mut c = Conn::open(uri, "warren-perf queue churn")?;
    c.open_channel(1)?;
    let mut i = 0u64;
    while !crate::STOP.load(Relaxed) {
        let name = ShortStr::from_string_lossy(&format!("perf-churn-{worker}-{i}"));
        let m = c.call(
            1,
            &Method::QueueDeclare(QueueDeclare {
                queue: name.clone(),
                ..Default::default()
            }),
        )?;
        if !matches!(m, Method::QueueDeclareOk(_)) {
            return Err(Error::Protocol(format!(
                "expected queue.declare-ok, got {}",
                m.name()
            )));
        }
        let m = c.call(
            1,
            &Method::QueueDelete(QueueDelete {
                queue: name,
                ..Default::default()
            }),
        )?;
        if !matches!(m, Method::QueueDeleteOk(_)) {
            return Err(Error::Protocol(format!(
                "expected queue.delete-ok, got {}",
                m.name()
            )));
        }
        shared.c.queues.fetch_add(1, Relaxed);
        i += 1;
    }
    c.close()
}

/// Opens `args.connections` connections (one channel each), says so, and
/// holds them until stopped.
pub fn idle(uri: &Uri, args: &Args, shared: Arc<Shared>) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        if crate::STOP.load(Relaxed) {
            break;
        }
        let opened = Conn::open(uri, "warren-perf idle").and_then(|mut c| c.open_channel(1).map(|()| c));
        match opened {
            Ok(c) => conns.push(c),
            // Keep what the broker accepted (e.g. its file descriptor limit).
            Err(e) if !conns.is_empty() => {
                eprintln!(
                    "warren-perf: connection {} failed, holding {}: {e}",
                    conns.len() + 1,
                    conns.len()
                );
                break;
            }
            Err(e) => return Err(e),
        }
        shared.c.connections.fetch_add(1, Relaxed);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"type": "ready", "connections": conns.len()})
        );
    } else {
        println!("ready: {} connections open", conns.len());
    }
    Ok(conns)
}
