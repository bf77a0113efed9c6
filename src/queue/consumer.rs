//! A consumer as its queue sees it: where deliveries go and how many it may
//! still receive.

use crate::ids::ConsumerRef;

/// What a channel asks for in `basic.consume`.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub cref: ConsumerRef,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos` with global=false); 0 = unlimited.
    pub prefetch: u32,
    /// Channel-wide prefetch (`basic.qos` global=true) is in force: every
    /// delivery needs a credit granted by the channel.
    pub channel_limited: bool,
    /// `x-priority` consumer argument: higher goes first.
    pub priority: i32,
}

/// Per-consumer dispatch state. Owned by the queue's shard.
#[derive(Debug)]
pub struct Consumer {
    pub spec: ConsumerSpec,
    /// Deliveries awaiting ack (ack mode only).
    pub unacked: u32,
    /// Deliveries not yet reported written to the socket (only for consumers
    /// tracked by the transport window; see [`Consumer::window_tracked`]).
    pub in_flight: u32,
    /// Credits granted by a channel-wide limit, unused so far.
    pub channel_credit: u32,
    /// A credit request is outstanding (to avoid asking twice).
    pub credit_requested: bool,
}

impl Consumer {
    pub fn new(spec: ConsumerSpec) -> Self {
        Consumer {
            spec,
            unacked: 0,
            in_flight: 0,
            channel_credit: 0,
            credit_requested: false,
        }
    }

    /// Consumers without a prefetch bound small enough to limit what sits in
    /// buffers are bounded by the transport window instead: the connection
    /// reports each written delivery back.
    pub fn window_tracked(&self, window: u32) -> bool {
        self.spec.no_ack || self.spec.prefetch == 0 || self.spec.prefetch > window
    }

    /// May this consumer receive one more delivery now (ignoring channel credit)?
    pub fn has_capacity(&self, window: u32) -> bool {
        if !self.spec.no_ack && self.spec.prefetch > 0 && self.unacked >= self.spec.prefetch {
            return false;
        }
        !(self.window_tracked(window) && self.in_flight >= window)
    }
}
