//! Message rates, as RabbitMQ's management plugin shows them: counters
//! sampled every few seconds, rates from the last two samples. Per-object
//! diffs (an object missing from either sample has no rate) so a closed
//! connection or deleted queue never makes a rate go negative.

use crate::admin::{BrokerSnapshot, QueueCounters};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
pub struct QueueRates {
    pub publish: f64,
    pub deliver: f64,
    pub get: f64,
    pub ack: f64,
    pub redeliver: f64,
    pub messages: f64,
    pub messages_ready: f64,
    pub messages_unacked: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ConnRates {
    pub recv_oct: f64,
    pub send_oct: f64,
    pub confirm: f64,
}

#[derive(Default)]
struct QueueSample {
    counters: QueueCounters,
    ready: u64,
    unacked: u64,
}

#[derive(Default)]
struct Sample {
    queues: HashMap<(String, String), QueueSample>,
    conns: HashMap<String, (u64, u64, u64)>,
    routed: u64,
}

#[derive(Default)]
struct Table {
    prev: Option<(Instant, Sample)>,
    queues: HashMap<(String, String), QueueRates>,
    vhosts: HashMap<String, QueueRates>,
    total: QueueRates,
    conns: HashMap<String, ConnRates>,
    publish_in: f64,
    confirm: f64,
}

/// The latest rates, shared by every request.
#[derive(Default)]
pub struct Rates {
    table: Mutex<Table>,
}

fn per_sec(now: u64, then: u64, dt: f64) -> f64 {
    now.saturating_sub(then) as f64 / dt
}

fn signed(now: u64, then: u64, dt: f64) -> f64 {
    (now as f64 - then as f64) / dt
}

impl Rates {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn queue(&self, vhost: &str, name: &str) -> QueueRates {
        self.table()
            .queues
            .get(&(vhost.to_string(), name.to_string()))
            .copied()
            .unwrap_or_default()
    }

    pub fn vhost(&self, name: &str) -> QueueRates {
        self.table().vhosts.get(name).copied().unwrap_or_default()
    }

    pub fn total(&self) -> QueueRates {
        self.table().total
    }

    pub fn connection(&self, name: &str) -> ConnRates {
        self.table().conns.get(name).copied().unwrap_or_default()
    }

    /// Messages published into the broker per second, and confirmed.
    pub fn publish_confirm(&self) -> (f64, f64) {
        let t = self.table();
        (t.publish_in, t.confirm)
    }

    pub fn record(&self, snap: &BrokerSnapshot) {
        let now = Instant::now();
        let mut cur = Sample {
            routed: snap.shards.iter().map(|s| s.routed).sum(),
            ..Default::default()
        };
        for q in &snap.queues {
            cur.queues.insert(
                (q.vhost.clone(), q.name.clone()),
                QueueSample {
                    counters: q.counters,
                    ready: q.messages_ready,
                    unacked: q.messages_unacknowledged,
                },
            );
        }
        for c in &snap.connections {
            cur.conns
                .insert(c.name.clone(), (c.recv_oct, c.send_oct, c.confirmed));
        }
        let mut t = self.table();
        if let Some((then, prev)) = &t.prev {
            let dt = now.duration_since(*then).as_secs_f64().max(0.001);
            let mut queues = HashMap::new();
            let mut vhosts: HashMap<String, QueueRates> = HashMap::new();
            let mut total = QueueRates::default();
            for (k, q) in &cur.queues {
                let Some(p) = prev.queues.get(k) else { continue };
                let (c, pc) = (&q.counters, &p.counters);
                let r = QueueRates {
                    publish: per_sec(c.published, pc.published, dt),
                    deliver: per_sec(c.delivered, pc.delivered, dt),
                    get: per_sec(c.get, pc.get, dt),
                    ack: per_sec(c.acked, pc.acked, dt),
                    redeliver: per_sec(c.redelivered, pc.redelivered, dt),
                    messages: signed(q.ready + q.unacked, p.ready + p.unacked, dt),
                    messages_ready: signed(q.ready, p.ready, dt),
                    messages_unacked: signed(q.unacked, p.unacked, dt),
                };
                for acc in [vhosts.entry(k.0.clone()).or_default(), &mut total] {
                    acc.publish += r.publish;
                    acc.deliver += r.deliver;
                    acc.get += r.get;
                    acc.ack += r.ack;
                    acc.redeliver += r.redeliver;
                    acc.messages += r.messages;
                    acc.messages_ready += r.messages_ready;
                    acc.messages_unacked += r.messages_unacked;
                }
                queues.insert(k.clone(), r);
            }
            let mut conns = HashMap::new();
            let mut confirm = 0.0;
            for (k, c) in &cur.conns {
                let Some(p) = prev.conns.get(k) else { continue };
                let r = ConnRates {
                    recv_oct: per_sec(c.0, p.0, dt),
                    send_oct: per_sec(c.1, p.1, dt),
                    confirm: per_sec(c.2, p.2, dt),
                };
                confirm += r.confirm;
                conns.insert(k.clone(), r);
            }
            t.publish_in = per_sec(cur.routed, prev.routed, dt);
            t.confirm = confirm;
            t.queues = queues;
            t.vhosts = vhosts;
            t.total = total;
            t.conns = conns;
        }
        t.prev = Some((now, cur));
    }
}

/// Samples the broker every `interval` until the management plane stops.
pub async fn sampler(m: Arc<super::Mgmt>, interval: Duration) {
    loop {
        let m2 = m.clone();
        let snap = tokio::task::spawn_blocking(move || m2.admin.snapshot()).await;
        if let Ok(Ok(snap)) = snap {
            m.rates.record(&snap);
        }
        tokio::time::sleep(interval).await;
    }
}
