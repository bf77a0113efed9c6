//! The guarantees the simulation checks, from what clients saw and what
//! the broker did (the simulation sees every delivery the broker makes):
//!
//! * at-least-once: every persistent message confirmed (acked) on a
//!   durable queue is eventually consumed, whatever crashed meanwhile;
//! * per-channel order: one consumer channel gets the first deliveries of
//!   one publisher's messages in publish order;
//! * no resurrected acks: a message a consumer acked is never delivered
//!   again, unless the broker crashed after the ack;
//! * prefetch: a consumer never holds more unacked deliveries than its
//!   prefetch;
//! * length limits: a queue with `x-max-length` L, probed by a publisher
//!   that publishes N and gets at once, gives exactly the last L, oldest
//!   first (drop-head applied as each publish arrives);
//! * TTL: nothing is delivered after it expired.

use std::collections::BTreeMap;

/// A message's identity: (publisher, sequence number), carried in its body.
pub type MsgId = (u32, u64);

/// The body that carries a message's identity.
pub fn body_of(id: MsgId) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&id.0.to_le_bytes());
    b[4..].copy_from_slice(&id.1.to_le_bytes());
    b
}

/// The identity in a body, if it is one of ours.
pub fn id_of(body: &[u8]) -> Option<MsgId> {
    (body.len() == 12).then(|| {
        (
            u32::from_le_bytes(body[..4].try_into().expect("4")),
            u64::from_le_bytes(body[4..].try_into().expect("8")),
        )
    })
}

#[derive(Debug, Default, Clone)]
struct Msg {
    /// Must survive crashes once confirmed.
    durable: bool,
    confirmed: bool,
    /// When the confirm arrived (µs).
    confirmed_at: u64,
    nacked: bool,
    acked_at: Option<u64>,
    deliveries: u32,
    /// Broker time (ms) it was published, and its TTL (ms), if any.
    published_ms: u64,
    ttl_ms: Option<u64>,
}

/// What the simulation found wrong.
#[derive(Debug, Clone)]
pub struct Violation(pub String);

/// Counts for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub probes: u64,
}

#[derive(Default)]
pub struct Checker {
    msgs: BTreeMap<MsgId, Msg>,
    /// Last first-delivery seq per (consumer session, publisher).
    order: BTreeMap<(u64, u32), u64>,
    /// Broker crashes, in simulated time (µs).
    crashes: Vec<u64>,
    pub counts: Counts,
    pub violations: Vec<Violation>,
    /// How late a delivery may be counted against its TTL (ms): the most a
    /// publish may travel between shards before its queue takes it.
    pub ttl_slack_ms: u64,
}

impl Checker {
    fn fail(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(Violation(what));
        }
    }

    pub fn published(&mut self, id: MsgId, durable: bool, published_ms: u64, ttl_ms: Option<u64>) {
        self.counts.published += 1;
        self.msgs.insert(
            id,
            Msg {
                durable,
                published_ms,
                ttl_ms,
                ..Default::default()
            },
        );
    }

    /// The broker took the message at broker time `now_ms` (its session
    /// processed it, then its queue's owner enqueued it: the last call
    /// counts for the TTL check).
    pub fn arrived(&mut self, id: MsgId, now_ms: u64) {
        if let Some(m) = self.msgs.get_mut(&id) {
            m.published_ms = now_ms;
        }
    }

    pub fn confirmed(&mut self, id: MsgId, ok: bool, now: u64) {
        let Some(m) = self.msgs.get_mut(&id) else {
            return self.fail(format!("confirm for a message never published: {id:?}"));
        };
        if m.confirmed || m.nacked {
            return self.fail(format!("message {id:?} confirmed twice"));
        }
        if ok {
            m.confirmed = true;
            m.confirmed_at = now;
            self.counts.confirmed += 1;
        } else {
            m.nacked = true;
            self.counts.nacked += 1;
        }
    }

    pub fn crashed(&mut self, now: u64) {
        self.crashes.push(now);
    }

    /// A consumer channel (identified by `session`, unique per connection
    /// and channel) got a message.
    pub fn delivered(&mut self, session: u64, id: MsgId, redelivered: bool, now: u64) {
        self.counts.delivered += 1;
        if redelivered {
            self.counts.redelivered += 1;
        }
        let crashes = &self.crashes;
        let Some(m) = self.msgs.get_mut(&id) else {
            return self.fail(format!("delivery of a message never published: {id:?}"));
        };
        m.deliveries += 1;
        if let Some(at) = m.acked_at {
            let crash_since = crashes.iter().any(|&c| c >= at);
            if !crash_since {
                return self.fail(format!(
                    "message {id:?} acked at {at} µs delivered again at {now} µs with no crash between (redelivered={redelivered})"
                ));
            }
        }
        if !redelivered {
            let last = self.order.entry((session, id.0)).or_insert(0);
            if id.1 <= *last && *last != 0 {
                let prev = *last;
                return self.fail(format!(
                    "order: consumer session {session} got {id:?} after seq {prev} of the same publisher, both first deliveries"
                ));
            }
            *last = id.1;
        }
    }

    /// The broker handed `id` to a consumer (or a get) at broker time
    /// `now_ms`: it must not have expired.
    pub fn broker_delivered(&mut self, id: MsgId, now_ms: u64) {
        let slack = self.ttl_slack_ms;
        if let Some(m) = self.msgs.get(&id)
            && let Some(ttl) = m.ttl_ms
            && now_ms > m.published_ms + ttl + slack
        {
            let late = now_ms - m.published_ms;
            self.fail(format!(
                "TTL: message {id:?} with a TTL of {ttl} ms delivered {late} ms after its publish"
            ));
        }
    }

    pub fn acked(&mut self, id: MsgId, now: u64) {
        self.counts.acked += 1;
        if let Some(m) = self.msgs.get_mut(&id) {
            m.acked_at = Some(now);
        }
    }

    pub fn prefetch_exceeded(&mut self, session: u64, held: usize, prefetch: u16) {
        self.fail(format!(
            "prefetch: consumer session {session} holds {held} unacked deliveries with a prefetch of {prefetch}"
        ));
    }

    /// A probe of a length-limited queue: `published` in one write, then a
    /// get; `got` is what the get returned, `left` its message count.
    pub fn probe(&mut self, limit: u32, published: &[MsgId], got: Option<MsgId>, left: u32) {
        self.counts.probes += 1;
        let keep = published.len().min(limit as usize);
        let expect = published.get(published.len() - keep).copied();
        if got != expect || left as usize != keep.saturating_sub(1) {
            self.fail(format!(
                "length limit {limit}: after {} publishes a get returned {got:?} with {left} left; expected {expect:?} with {} left",
                published.len(),
                keep.saturating_sub(1)
            ));
        }
    }

    /// The end: every confirmed durable message was consumed.
    pub fn finish(&mut self) {
        let lost: Vec<(MsgId, u64, u32)> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.durable && m.confirmed && m.acked_at.is_none())
            .map(|(id, m)| (*id, m.confirmed_at, m.deliveries))
            .take(5)
            .collect();
        if !lost.is_empty() {
            let n = self
                .msgs
                .values()
                .filter(|m| m.durable && m.confirmed && m.acked_at.is_none())
                .count();
            let crashes = &self.crashes;
            self.fail(format!(
                "at-least-once: {n} confirmed persistent message(s) never consumed, e.g. (id, confirmed at µs, deliveries) {lost:?}; crashes at {crashes:?} µs"
            ));
        }
    }

    /// Confirmed durable messages not consumed yet.
    pub fn outstanding(&self) -> usize {
        self.msgs
            .values()
            .filter(|m| m.durable && m.confirmed && m.acked_at.is_none())
            .count()
    }
}
