//! A queue's behaviour settings, from its `x-` arguments and the policy
//! that applies to it (arguments win, as in RabbitMQ).

/// What happens when a queue is full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready message.
    #[default]
    DropHead,
    /// Refuse the new message (nack to confirming publishers).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// Why a message left a queue without being acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Rejected,
    Expired,
    MaxLen,
    /// A quorum queue's message returned more than `x-delivery-limit` times.
    DeliveryLimit,
}

impl DeadReason {
    /// The name in the `x-death` header.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Expired => "expired",
            DeadReason::MaxLen => "maxlen",
            DeadReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Effective settings of a queue. Owned by the queue's shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-max-length` (ready messages).
    pub max_length: Option<u64>,
    /// `x-max-length-bytes` (ready message bodies).
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// `x-max-priority` (0: not a priority queue). Fixed at declare.
    pub max_priority: u8,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
}

impl QueueConfig {
    /// A length limit that drops from the head when exceeded.
    pub fn overflow_drops_head(&self) -> bool {
        self.overflow == Overflow::DropHead && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }
}
