//! Counters and latency histograms. Workers count with relaxed atomics once
//! per batch and keep their own histograms, merged into the shared ones
//! about every 100 ms; the reporter swaps them out once per second.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Monotonic nanoseconds since a process-wide instant (never 0).
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64 + 1
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

pub struct Hists {
    /// publish → deliver, ns.
    pub deliver: Histogram<u64>,
    /// publish → confirm, ns.
    pub confirm: Histogram<u64>,
}

impl Hists {
    pub fn new() -> Self {
        Hists {
            deliver: histogram(),
            confirm: histogram(),
        }
    }
    fn add(&mut self, o: &Hists) {
        let _ = self.deliver.add(&o.deliver);
        let _ = self.confirm.add(&o.confirm);
    }
}

#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub delivered: AtomicU64,
    pub connections: AtomicU64,
    pub queues: AtomicU64,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Snapshot {
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub delivered: u64,
    pub connections: u64,
    pub queues: u64,
}

impl Snapshot {
    fn minus(self, o: Snapshot) -> Snapshot {
        Snapshot {
            published: self.published - o.published,
            confirmed: self.confirmed - o.confirmed,
            nacked: self.nacked - o.nacked,
            returned: self.returned - o.returned,
            delivered: self.delivered - o.delivered,
            connections: self.connections - o.connections,
            queues: self.queues - o.queues,
        }
    }
}

pub struct Shared {
    pub c: Counters,
    hists: Mutex<Hists>,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            c: Counters::default(),
            hists: Mutex::new(Hists::new()),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.c;
        Snapshot {
            published: c.published.load(Relaxed),
            confirmed: c.confirmed.load(Relaxed),
            nacked: c.nacked.load(Relaxed),
            returned: c.returned.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            connections: c.connections.load(Relaxed),
            queues: c.queues.load(Relaxed),
        }
    }

    fn take_hists(&self) -> Hists {
        std::mem::replace(&mut *self.hists.lock().unwrap(), Hists::new())
    }
}

/// A worker's own histograms.
pub struct Local {
    pub h: Hists,
    dirty: bool,
    last_flush: u64,
}

const FLUSH_NS: u64 = 100_000_000;

impl Local {
    pub fn new() -> Self {
        Local {
            h: Hists::new(),
            dirty: false,
            last_flush: now_ns(),
        }
    }
    #[inline]
    pub fn deliver(&mut self, ns: u64) {
        self.h.deliver.saturating_record(ns.max(1));
        self.dirty = true;
    }
    #[inline]
    pub fn confirm(&mut self, ns: u64) {
        self.h.confirm.saturating_record(ns.max(1));
        self.dirty = true;
    }
    #[inline]
    pub fn maybe_flush(&mut self, shared: &Shared, now: u64) {
        if self.dirty && now.saturating_sub(self.last_flush) >= FLUSH_NS {
            self.flush(shared);
            self.last_flush = now;
        }
    }
    pub fn flush(&mut self, shared: &Shared) {
        if self.dirty {
            shared.hists.lock().unwrap().add(&self.h);
            self.h.deliver.reset();
            self.h.confirm.reset();
            self.dirty = false;
        }
    }
}

fn lat_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let us = |v: u64| (v as f64 / 100.0).round() / 10.0;
    json!({
        "p50": us(h.value_at_quantile(0.5)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": (h.mean() / 100.0).round() / 10.0,
        "count": h.len(),
    })
}

fn lat_text(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return String::new();
    }
    let us = |v: u64| v as f64 / 1000.0;
    format!(
        "  {name} µs p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    )
}

/// Prints one line per second and the summary.
pub struct Reporter {
    pub json: bool,
    pub scenario: &'static str,
    start: Instant,
    last_t: f64,
    last: Snapshot,
    total: Hists,
}

impl Reporter {
    pub fn new(json: bool, scenario: &'static str) -> Self {
        Reporter {
            json,
            scenario,
            start: Instant::now(),
            last_t: 0.0,
            last: Snapshot::default(),
            total: Hists::new(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Takes the interval's counts and histograms; prints them if `print`.
    pub fn tick(&mut self, shared: &Shared, print: bool) {
        let t = self.elapsed();
        let now = shared.snapshot();
        let d = now.minus(self.last);
        let h = shared.take_hists();
        let dt = (t - self.last_t).max(1e-9);
        self.last = now;
        self.last_t = t;
        self.total.add(&h);
        if !print {
            return;
        }
        let r = |n: u64| (n as f64 / dt).round() as u64;
        if self.json {
            let v = json!({
                "type": "tick",
                "t": (t * 1000.0).round() / 1000.0,
                "published": r(d.published),
                "confirmed": r(d.confirmed),
                "nacked": r(d.nacked),
                "returned": r(d.returned),
                "delivered": r(d.delivered),
                "connections": r(d.connections),
                "queues": r(d.queues),
                "latency_us": lat_json(&h.deliver),
                "confirm_latency_us": lat_json(&h.confirm),
            });
            println!("{v}");
            return;
        }
        let mut line = format!("{t:6.1}s");
        match self.scenario {
            "connection-churn" => line += &format!("  connections {}/s", r(d.connections)),
            "queue-churn" => line += &format!("  queues {}/s", r(d.queues)),
            _ => {
                line += &format!(
                    "  sent {}/s  confirmed {}/s  received {}/s",
                    r(d.published),
                    r(d.confirmed),
                    r(d.delivered)
                );
                if d.returned + d.nacked > 0 {
                    line += &format!("  returned {}/s  nacked {}/s", r(d.returned), r(d.nacked));
                }
                line += &lat_text("deliver", &h.deliver);
                line += &lat_text("confirm", &h.confirm);
            }
        }
        println!("{line}");
    }

    /// After the workers are gone: their last histogram samples (the counts
    /// were taken by the last tick, when the run stopped).
    pub fn collect_hists(&mut self, shared: &Shared) {
        let h = shared.take_hists();
        self.total.add(&h);
    }

    /// Final numbers (call [`Reporter::tick`] first to collect the rest).
    pub fn summary(&self, extra: Value) -> Value {
        let t = self.last_t.max(1e-9);
        let s = self.last;
        let r = |n: u64| (n as f64 / t).round() as u64;
        let mut v = json!({
            "type": "summary",
            "scenario": self.scenario,
            "elapsed_s": (t * 1000.0).round() / 1000.0,
            "published": s.published,
            "confirmed": s.confirmed,
            "nacked": s.nacked,
            "returned": s.returned,
            "delivered": s.delivered,
            "published_rate": r(s.published),
            "confirmed_rate": r(s.confirmed),
            "delivered_rate": r(s.delivered),
            "connections": s.connections,
            "connections_rate": r(s.connections),
            "queues": s.queues,
            "queues_rate": r(s.queues),
            "latency_us": lat_json(&self.total.deliver),
            "confirm_latency_us": lat_json(&self.total.confirm),
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        if self.json {
            println!("{v}");
        } else {
            println!("--- summary ({}, {:.1} s) ---", self.scenario, t);
            match self.scenario {
                "connection-churn" => println!("connections: {} ({}/s)", s.connections, r(s.connections)),
                "queue-churn" => println!("queues declared+deleted: {} ({}/s)", s.queues, r(s.queues)),
                _ => {
                    println!(
                        "sent {} ({}/s), confirmed {} ({}/s), received {} ({}/s)",
                        s.published,
                        r(s.published),
                        s.confirmed,
                        r(s.confirmed),
                        s.delivered,
                        r(s.delivered)
                    );
                    if s.returned + s.nacked > 0 {
                        println!("returned {}, nacked {}", s.returned, s.nacked);
                    }
                    let d = lat_text("publish→deliver latency", &self.total.deliver);
                    if !d.is_empty() {
                        println!("{}", d.trim_start());
                    }
                    let c = lat_text("publish→confirm latency", &self.total.confirm);
                    if !c.is_empty() {
                        println!("{}", c.trim_start());
                    }
                }
            }
        }
        v
    }
}
