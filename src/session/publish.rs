//! Assembling `basic.publish` + content header + body frames into a
//! [`Message`].
//!
//! While a publish completes within one read chunk, its parts are only byte
//! ranges of that chunk and the message becomes a zero-copy slice of it. If
//! the chunk ends first, the parts still pending are detached (sliced out)
//! and the message is assembled by copying once.

use crate::message::{Message, MessageBuilder};
use crate::protocol::AmqpError;
use bytes::Bytes;

/// Part of a pending publish: a range of the current chunk, or detached.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    Chunk { start: u32, len: u32 },
    Owned(Bytes),
}

impl Part {
    pub(crate) fn chunk(start: usize, len: usize) -> Part {
        Part::Chunk {
            start: start as u32,
            len: len as u32,
        }
    }

    pub(crate) fn get<'a>(&'a self, chunk: &'a [u8]) -> &'a [u8] {
        match self {
            Part::Chunk { start, len } => &chunk[*start as usize..(*start + *len) as usize],
            Part::Owned(b) => b,
        }
    }

    fn range(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Part::Chunk { start, len } => Some(*start as usize..(*start + *len) as usize),
            Part::Owned(_) => None,
        }
    }

    fn detach(&mut self, chunk: &Bytes) {
        if let Some(r) = self.range() {
            *self = Part::Owned(chunk.slice(r));
        }
    }
}

#[derive(Debug)]
pub(crate) struct PublishHead {
    pub exchange: Part,
    pub routing_key: Part,
    pub mandatory: bool,
}

pub(crate) enum Body {
    None,
    /// One body frame carrying the whole body.
    Single(Part),
    Building(MessageBuilder),
}

/// A channel's publish in progress.
pub(crate) enum Assembly {
    Idle,
    /// `basic.publish` seen; the content header must come next.
    AwaitHeader(PublishHead),
    /// Header seen; body frames until `body_size` bytes arrived.
    AwaitBody {
        head: PublishHead,
        props: Part,
        persistent: bool,
        priority: u8,
        expiration: u32,
        body_size: u64,
        body: Body,
    },
}

impl Assembly {
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, Assembly::Idle)
    }

    /// The frame that arrived is not the one this state waits for (a
    /// method, or content of the wrong kind): RabbitMQ's 505, naming
    /// `basic.publish` when content was under way.
    #[cold]
    pub(crate) fn interrupted(&self) -> AmqpError {
        let text = match self {
            Assembly::Idle => {
                return AmqpError::unexpected_frame("expected method frame, got non method frame instead");
            }
            Assembly::AwaitHeader(_) => {
                "expected content header for class 60, got non content header frame instead"
            }
            Assembly::AwaitBody { .. } => "expected content body, got non content body frame instead",
        };
        AmqpError::unexpected_frame(text).with_method(60, 40)
    }

    /// Before the chunk the parts point into is released.
    pub(crate) fn detach(&mut self, chunk: &Bytes) {
        match self {
            Assembly::AwaitHeader(h) => {
                h.exchange.detach(chunk);
                h.routing_key.detach(chunk);
            }
            Assembly::AwaitBody {
                head, props, body, ..
            } => {
                head.exchange.detach(chunk);
                head.routing_key.detach(chunk);
                props.detach(chunk);
                if let Body::Single(p) = body {
                    p.detach(chunk);
                }
            }
            Assembly::Idle => {}
        }
    }
}

/// A content header after `basic.publish` that is not basic's, or has a
/// weight (which must be 0): RabbitMQ's 505.
#[cold]
pub(crate) fn wrong_header(p: &[u8]) -> AmqpError {
    let class = u16::from_be_bytes([p[0], p[1]]);
    let weight = u16::from_be_bytes([p[2], p[3]]);
    let text = if weight != 0 {
        "expected content header for class 60, got non content header frame instead".to_string()
    } else {
        format!("expected content header for class 60, got one for class {class} instead")
    };
    AmqpError::unexpected_frame(text).with_method(60, 40)
}

/// Builds the message once all parts are present. Zero-copy when every part
/// lies in `chunk`.
pub(crate) fn finish(
    chunk: &Bytes,
    head: PublishHead,
    props: Part,
    persistent: bool,
    priority: u8,
    expiration: u32,
    body: Body,
) -> Message {
    let mut msg = match body {
        Body::Building(b) => b.finish(),
        Body::None | Body::Single(_) => {
            let body_part = match &body {
                Body::Single(p) => Some(p),
                _ => None,
            };
            let ranges = (
                head.exchange.range(),
                head.routing_key.range(),
                props.range(),
                body_part.map_or(Some(0..0), |p| p.range()),
            );
            match ranges {
                (Some(e), Some(r), Some(p), Some(b)) => {
                    let b = if b.is_empty() { p.end..p.end } else { b };
                    Message::from_ranges(chunk.clone(), e, r, p, b)
                }
                _ => Message::assemble(
                    head.exchange.get(chunk),
                    head.routing_key.get(chunk),
                    props.get(chunk),
                    body_part.map_or(&[][..], |p| p.get(chunk)),
                ),
            }
        }
    };
    msg.persistent = persistent;
    msg.priority = priority;
    msg.expiration = expiration;
    msg
}

/// Starts a copying assembly for a body split over several frames.
pub(crate) fn builder(chunk: &Bytes, head: &PublishHead, props: &Part, body_size: u64) -> MessageBuilder {
    MessageBuilder::new(
        head.exchange.get(chunk),
        head.routing_key.get(chunk),
        props.get(chunk),
        body_size as usize,
    )
}
