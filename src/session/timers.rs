//! The connection's timers: handshake timeout, heartbeats both ways, the
//! close handshake's grace periods and the consumer timeout.
//!
//! The session never reads a clock. The runtime passes its time in
//! milliseconds (any monotonic origin) with the input it feeds, asks
//! [`Session::poll_timeout`] when the next timer is due, and calls
//! [`Session::handle_timeout`] once that time has come (quinn-proto's
//! shape), so every timer is tested on virtual time.

use super::Broker;
use super::connection::{Phase, Session};

/// How long we wait for `connection.close-ok` after sending
/// `connection.close`.
pub const CLOSE_TIMEOUT_MS: u64 = 3_000;
/// The longest we keep a socket open after answering the client's
/// `connection.close` while it reads our `close-ok` (RabbitMQ's
/// `CLOSING_TIMEOUT`; a shorter heartbeat interval shortens it).
pub const LINGER_MAX_MS: u64 = 30_000;

/// When things last happened, in the runtime's milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Timers {
    /// The TCP connection was accepted.
    pub started: u64,
    /// Bytes last arrived from the client.
    pub last_read: u64,
    /// Bytes last left for the client (or a heartbeat was queued).
    pub last_write: u64,
    /// We sent `connection.close` (Closing) or `close-ok` (Lingering).
    pub closing_since: u64,
    /// The consumer timeout is next checked.
    pub next_consumer_check: u64,
}

impl Timers {
    pub fn new(now: u64) -> Self {
        Timers {
            started: now,
            last_read: now,
            last_write: now,
            closing_since: 0,
            next_consumer_check: 0,
        }
    }
}

impl Session {
    /// Bytes arrived from the client at `now`.
    pub fn note_read(&mut self, now: u64) {
        self.now_ms = now;
        self.timers.last_read = now;
    }

    /// Bytes were written to the client at `now`.
    pub fn note_written(&mut self, now: u64) {
        self.timers.last_write = now;
    }

    fn heartbeat_ms(&self) -> u64 {
        self.heartbeat as u64 * 1000
    }

    /// How often the consumer timeout is checked: a quarter of it, within
    /// [100 ms, 60 s], so a delivery is caught at most 25% late.
    fn consumer_check_period(&self) -> u64 {
        (self.cfg.consumer_timeout_ms / 4).clamp(100, 60_000)
    }

    /// The linger after our `close-ok`: RabbitMQ's rule.
    fn linger_ms(&self) -> u64 {
        match self.heartbeat_ms() {
            0 => LINGER_MAX_MS,
            hb => hb.min(LINGER_MAX_MS),
        }
    }

    /// When [`Session::handle_timeout`] must next be called; `None` when no
    /// timer runs.
    pub fn poll_timeout(&self) -> Option<u64> {
        let t = &self.timers;
        match self.phase {
            Phase::Header | Phase::Start | Phase::Tune | Phase::Open => {
                Some(t.started + self.cfg.handshake_timeout_ms)
            }
            Phase::Running => {
                let hb = self.heartbeat_ms();
                let beats = (hb > 0).then(|| (t.last_read + 2 * hb).min(t.last_write + hb / 2));
                let consumers = (self.cfg.consumer_timeout_ms > 0).then_some(t.next_consumer_check);
                match (beats, consumers) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Closing => Some(t.closing_since + CLOSE_TIMEOUT_MS),
            Phase::Lingering => Some(t.closing_since + self.linger_ms()),
            Phase::Closed => None,
        }
    }

    /// Runs the timers due at `now`. A timer that is not due yet (the
    /// runtime may call early, or after its deadline moved) does nothing.
    pub fn handle_timeout(&mut self, now: u64, b: &mut impl Broker) {
        self.now_ms = now;
        let t = self.timers;
        match self.phase {
            Phase::Header | Phase::Start | Phase::Tune | Phase::Open => {
                if now >= t.started + self.cfg.handshake_timeout_ms {
                    self.abort("handshake timeout", b);
                }
            }
            Phase::Running => {
                let hb = self.heartbeat_ms();
                if hb > 0 && now >= t.last_read + 2 * hb {
                    // RabbitMQ drops the socket without a close frame.
                    let reason = format!("missed heartbeats from client, timeout: {}s", self.heartbeat);
                    self.abort(&reason, b);
                    return;
                }
                if hb > 0 && now >= t.last_write + hb / 2 {
                    // Anything already queued for the socket counts as a
                    // sign of life; otherwise a heartbeat frame.
                    if self.out.is_empty() {
                        self.write_heartbeat();
                    }
                    self.timers.last_write = now;
                }
                if self.cfg.consumer_timeout_ms > 0 && now >= t.next_consumer_check {
                    self.timers.next_consumer_check = now + self.consumer_check_period();
                    self.check_consumer_timeouts(b);
                }
            }
            Phase::Closing => {
                if now >= t.closing_since + CLOSE_TIMEOUT_MS {
                    self.abort("no close-ok from the client", b);
                }
            }
            Phase::Lingering => {
                if now >= t.closing_since + self.linger_ms() {
                    self.abort("client closed", b);
                }
            }
            Phase::Closed => {}
        }
    }
}
