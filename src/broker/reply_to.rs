//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC client
//! consumes from the pseudo-queue `amq.rabbitmq.reply-to` (no-ack) and
//! publishes requests with that `reply-to`; the broker replaces it with a
//! name that addresses the client's channel, and a reply published to the
//! default exchange under that name goes straight to the channel, through
//! no queue.
//!
//! The name carries the node, connection and channel, plus a random key
//! the channel holds while it consumes: a reply whose key does not match
//! (a guessed name, a channel that stopped consuming, a connection id
//! reused after a restart) is dropped.

use crate::ids::{ChannelRef, ConnId};
use crate::message::Message;
use crate::protocol::{AmqpError, BasicProperties, ShortStr};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The pseudo-queue a reply consumer consumes from, and the `reply-to` a
/// request asks for.
pub const PSEUDO_QUEUE: &[u8] = b"amq.rabbitmq.reply-to";
/// What the names this broker gives out start with.
const PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";
/// The random key's length, in url-safe base64 characters.
pub const KEY_LEN: usize = 22;
/// node (8) + connection (8) + channel (2) + channel epoch (4) bytes.
const ADDR_BYTES: usize = 22;

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The node's id; 0 outside a cluster.
    pub node: u64,
    pub ch: ChannelRef,
    pub key: [u8; KEY_LEN],
}

/// The keys of this node's live reply consumers, shared by its shards:
/// what a passive declare of a reply name checks, whichever shard the
/// consumer is on. Touched when a reply consumer starts or ends, never per
/// message; its size is bounded by the channels the node allows.
#[derive(Default, Debug)]
pub struct LiveReplies(std::sync::Mutex<std::collections::HashSet<[u8; KEY_LEN]>>);

impl LiveReplies {
    pub fn set(&self, key: [u8; KEY_LEN], live: bool) {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if live {
            keys.insert(key);
        } else {
            keys.remove(&key);
        }
    }

    pub fn contains(&self, key: &[u8; KEY_LEN]) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }
}

/// Whether a routing key or queue name is one of the names replies go to
/// (it may still name nobody).
pub fn is_reply_name(name: &[u8]) -> bool {
    name.starts_with(PREFIX)
}

/// The name a request's `reply-to` becomes.
pub fn name_for(node: u64, ch: ChannelRef, key: &[u8; KEY_LEN]) -> ShortStr {
    let mut addr = [0u8; ADDR_BYTES];
    addr[..8].copy_from_slice(&node.to_be_bytes());
    addr[8..16].copy_from_slice(&ch.conn.0.to_be_bytes());
    addr[16..18].copy_from_slice(&ch.channel.to_be_bytes());
    addr[18..22].copy_from_slice(&ch.epoch.to_be_bytes());
    let mut s = String::with_capacity(PREFIX.len() + 30 + 1 + KEY_LEN);
    s.push_str(std::str::from_utf8(PREFIX).expect("ascii"));
    URL_SAFE_NO_PAD.encode_string(addr, &mut s);
    s.push('.');
    s.push_str(std::str::from_utf8(key).unwrap_or(""));
    ShortStr::from_string_lossy(&s)
}

/// The channel a reply name addresses; `None` for anything this broker
/// did not give out.
pub fn target(name: &[u8]) -> Option<Target> {
    let rest = name.strip_prefix(PREFIX)?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (addr, key) = (&rest[..dot], &rest[dot + 1..]);
    let addr = URL_SAFE_NO_PAD.decode(addr).ok()?;
    if addr.len() != ADDR_BYTES || key.len() != KEY_LEN {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(addr[i..i + 8].try_into().expect("8 bytes"));
    Some(Target {
        node: u64_at(0),
        ch: ChannelRef {
            conn: ConnId(u64_at(8)),
            channel: u16::from_be_bytes([addr[16], addr[17]]),
            epoch: u32::from_be_bytes(addr[18..22].try_into().expect("4 bytes")),
        },
        key: key.try_into().ok()?,
    })
}

/// A request's properties, decoded, when they ask for a direct reply
/// (`reply-to` exactly `amq.rabbitmq.reply-to`). Reads the flags first,
/// so the usual message without `reply-to` costs two byte reads; a
/// request is decoded once, for [`readdressed`] to reuse.
pub fn reply_request(msg: &Message) -> Option<BasicProperties> {
    let props = msg.props();
    let has_reply_to = props.first().is_some_and(|b| b & 0x02 != 0);
    if !has_reply_to || !props.windows(PSEUDO_QUEUE.len()).any(|w| w == PSEUDO_QUEUE) {
        return None;
    }
    BasicProperties::decode(&msg.props_bytes())
        .ok()
        .filter(|p| p.reply_to.as_ref().is_some_and(|r| r.as_bytes() == PSEUDO_QUEUE))
}

/// The message with its properties `p` (decoded by [`reply_request`]),
/// their `reply-to` replaced by `name`.
pub fn readdressed(msg: &Message, mut p: BasicProperties, name: ShortStr) -> Message {
    p.reply_to = Some(name);
    let mut m = Message::assemble(msg.exchange(), msg.routing_key(), &p.to_bytes(), msg.body());
    m.persistent = msg.persistent;
    m.priority = msg.priority;
    m.expiration = msg.expiration;
    m
}

/// `basic.consume` of the pseudo-queue with acknowledgements.
pub fn must_not_ack() -> AmqpError {
    AmqpError::precondition("reply consumer cannot acknowledge")
}

/// A second reply consumer on one channel.
pub fn already_set() -> AmqpError {
    AmqpError::precondition("reply consumer already set")
}

/// A request asking for a direct reply on a channel with no reply consumer.
pub fn no_consumer() -> AmqpError {
    AmqpError::precondition("fast reply consumer does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> ChannelRef {
        ChannelRef {
            conn: ConnId::new(1, 77),
            channel: 513,
            epoch: 9,
        }
    }

    const KEY: &[u8; KEY_LEN] = b"abcdefghijklmnopqrstuv";

    #[test]
    fn a_name_leads_back_to_its_channel_and_key() {
        let name = name_for(0xfeed, ch(), KEY);
        assert!(is_reply_name(name.as_bytes()));
        assert_eq!(
            target(name.as_bytes()),
            Some(Target {
                node: 0xfeed,
                ch: ch(),
                key: *KEY
            })
        );
    }

    #[test]
    fn names_not_given_out_lead_nowhere() {
        let name = name_for(1, ch(), KEY);
        let s = name.as_bytes();
        for bad in [
            &b"amq.rabbitmq.reply-to"[..],
            b"amq.rabbitmq.reply-to.",
            b"amq.rabbitmq.reply-to.garbage",
            b"amq.rabbitmq.reply-to.AAAA.abcdefghijklmnopqrstuv",
            &s[..s.len() - 1],
            b"other",
        ] {
            assert_eq!(target(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_the_exact_pseudo_queue_asks_for_a_reply() {
        let msg = |p: BasicProperties| Message::assemble(b"", b"rpc", &p.to_bytes(), b"");
        let with = |r: &str| {
            msg(BasicProperties {
                reply_to: Some(ShortStr::from_string_lossy(r)),
                correlation_id: Some(ShortStr::from_string_lossy("c1")),
                ..Default::default()
            })
        };
        let p = reply_request(&with("amq.rabbitmq.reply-to")).expect("asks");
        assert_eq!(p.correlation_id, Some(ShortStr::from_string_lossy("c1")));
        assert!(reply_request(&with("amq.rabbitmq.reply-to.x")).is_none());
        assert!(reply_request(&with("my-queue")).is_none());
        let none = msg(BasicProperties {
            correlation_id: Some(ShortStr::from_string_lossy("amq.rabbitmq.reply-to")),
            ..Default::default()
        });
        assert!(reply_request(&none).is_none());
    }

    #[test]
    fn readdressing_keeps_everything_else() {
        let props = BasicProperties {
            reply_to: Some(ShortStr::from_string_lossy("amq.rabbitmq.reply-to")),
            correlation_id: Some(ShortStr::from_string_lossy("c1")),
            delivery_mode: Some(2),
            ..Default::default()
        };
        let mut m = Message::assemble(b"", b"rpc", &props.to_bytes(), b"body");
        m.persistent = true;
        let name = name_for(0, ch(), KEY);
        let asked = reply_request(&m).expect("asks");
        let r = readdressed(&m, asked, name.clone());
        let p = BasicProperties::decode(&r.props_bytes()).unwrap();
        assert_eq!(p.reply_to, Some(name));
        assert_eq!(p.correlation_id, props.correlation_id);
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(
            (r.exchange(), r.routing_key(), r.body(), r.persistent),
            (&b""[..], &b"rpc"[..], &b"body"[..], true)
        );
    }
}
