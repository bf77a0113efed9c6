//! Dead-lettering: the message republished to a queue's dead-letter
//! exchange, with the `x-death` history RabbitMQ writes
//! (`rabbit_dead_letter:make_msg/5`): one entry per (queue, reason), most
//! recent first, counting repeats (a repeat keeps the entry's first time,
//! exchange and routing keys); `x-first-death-*` set with the first entry;
//! a per-message `expiration` moved into a new entry as
//! `original-expiration`, whatever the reason; the `CC` header dropped when
//! a dead-letter routing key replaces the keys. Like RabbitMQ, the headers
//! come out sorted by name, and so does every entry but the very first.

use crate::message::Message;
use crate::protocol::{BasicProperties, FieldTable, FieldValue, LongStr, ShortStr};
use crate::queue::DeadReason;
use bytes::Bytes;

fn longstr(s: &[u8]) -> FieldValue {
    FieldValue::LongStr(LongStr::new(Bytes::copy_from_slice(s)))
}

fn key(s: &'static str) -> ShortStr {
    ShortStr::from_static(s)
}

/// Where a dead-lettered message goes, and what it becomes.
pub struct DeadLetter {
    pub msg: Message,
    /// The routing keys to route it with (the new key, or the original key
    /// and its `CC` keys).
    pub routing_keys: Vec<Bytes>,
}

/// The `CC` and `BCC` header values (sender-selected distribution): the
/// `longstr` entries of an array, as `rabbit_basic:header_routes`.
pub fn cc_keys(headers: &FieldTable, name: &str) -> Vec<Bytes> {
    match headers.get(name) {
        Some(FieldValue::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                FieldValue::LongStr(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Sorts a table by key, as Erlang's `lists:keysort/2` (stable, bytewise).
fn sort_table(t: &mut FieldTable) {
    t.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
}

/// An `x-death` entry's (queue, reason), compared by value as Erlang does
/// (a `longstr` and a byte array of the same bytes are equal).
fn same_value(a: Option<&FieldValue>, b: Option<&FieldValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_bytes(), y.as_bytes()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => false,
    }
}

fn same_event(a: &FieldTable, b: &FieldTable) -> bool {
    same_value(a.get("queue"), b.get("queue")) && same_value(a.get("reason"), b.get("reason"))
}

/// `rabbit_dead_letter:group_by_queue_and_reason`: one entry per (queue,
/// reason), the first of each, with a missing count set to how many there
/// were. RabbitMQ's fold leaves them in reverse order, which clients see:
/// re-dead-lettering reverses the entries behind the newest.
fn group_by_queue_and_reason(mut deaths: Vec<FieldValue>) -> Vec<FieldValue> {
    if deaths.len() <= 1 {
        return deaths;
    }
    // (index of the first entry of a group, entries in the group)
    let mut groups: Vec<(usize, i64)> = Vec::new();
    for i in 0..deaths.len() {
        let Some(t) = deaths[i].as_table() else {
            // Not an entry RabbitMQ could have written (its own fold
            // would fail on it): kept, alone.
            groups.push((i, 1));
            continue;
        };
        let seen = groups
            .iter()
            .any(|&(j, _)| deaths[j].as_table().is_some_and(|u| same_event(t, u)));
        if seen {
            continue;
        }
        let n = deaths[i..]
            .iter()
            .filter(|d| d.as_table().is_some_and(|u| same_event(t, u)))
            .count();
        groups.push((i, n as i64));
    }
    groups
        .into_iter()
        .rev()
        .map(|(i, n)| {
            let mut d = std::mem::replace(&mut deaths[i], FieldValue::Void);
            if let FieldValue::Table(t) = &mut d
                && t.get("count").is_none()
            {
                t.0.insert(0, (key("count"), FieldValue::I64(n)));
            }
            d
        })
        .collect()
}

/// `msg` with its `x-delivery-count` header set to `count` (a quorum
/// queue's redelivery), appended after its other headers as RabbitMQ does.
pub fn with_delivery_count(msg: &Message, count: u32) -> Message {
    let mut props = BasicProperties::decode(&msg.props_bytes()).unwrap_or_default();
    let mut headers = props.headers.take().unwrap_or_default();
    headers.remove("x-delivery-count");
    headers.insert(key("x-delivery-count"), FieldValue::I64(count as i64));
    props.headers = Some(headers);
    let mut out = Message::assemble(msg.exchange(), msg.routing_key(), &props.to_bytes(), msg.body())
        .with_properties_from_raw();
    out.persistent = msg.persistent;
    out
}

/// Builds the dead-lettered copy of `msg` leaving `queue` for `reason`.
pub fn dead_letter(
    msg: &Message,
    queue: &[u8],
    reason: DeadReason,
    dlx: &[u8],
    dlrk: Option<&[u8]>,
    now_secs: u64,
) -> DeadLetter {
    let mut props = BasicProperties::decode(&msg.props_bytes()).unwrap_or_default();
    let mut headers = props.headers.take().unwrap_or_default();
    // The keys the message was published with: its routing key and CC.
    let mut original_keys = vec![Bytes::copy_from_slice(msg.routing_key())];
    original_keys.extend(cc_keys(&headers, "CC"));
    let reason_bytes = reason.as_str().as_bytes();
    // The new entry, in RabbitMQ's key order.
    let mut entry = FieldTable::new();
    entry.insert(key("count"), FieldValue::I64(1));
    entry.insert(key("reason"), longstr(reason_bytes));
    entry.insert(key("queue"), longstr(queue));
    entry.insert(key("time"), FieldValue::Timestamp(now_secs));
    entry.insert(key("exchange"), longstr(msg.exchange()));
    entry.insert(
        key("routing-keys"),
        FieldValue::Array(original_keys.iter().map(|k| longstr(k)).collect()),
    );
    // Whatever the reason, a per-message TTL does not follow the message.
    if let Some(exp) = props.expiration.take() {
        entry.insert(key("original-expiration"), longstr(exp.as_bytes()));
    }
    let deaths = match headers.get("x-death") {
        None => {
            // The first death also gets top-level headers.
            for (k, v) in [
                ("x-first-death-reason", longstr(reason_bytes)),
                ("x-first-death-queue", longstr(queue)),
                ("x-first-death-exchange", longstr(msg.exchange())),
            ] {
                headers.insert(key(k), v);
            }
            vec![FieldValue::Table(entry)]
        }
        Some(FieldValue::Array(_)) => {
            let Some(FieldValue::Array(old)) = headers.remove("x-death") else {
                unreachable!("matched above")
            };
            let mut others = group_by_queue_and_reason(old);
            let same = |t: &FieldTable| {
                t.get("queue").and_then(|v| v.as_bytes()) == Some(queue)
                    && t.get("reason").and_then(|v| v.as_bytes()) == Some(reason_bytes)
            };
            let mut this = match others.iter().position(|d| d.as_table().is_some_and(same)) {
                // Only the count changes: the entry keeps the time,
                // exchange and keys of its first death.
                Some(i) => {
                    let FieldValue::Table(mut old) = others.remove(i) else {
                        unreachable!("matched a table")
                    };
                    match old.get("count").map(|c| c.as_i64().unwrap_or(0)) {
                        Some(n) => old.insert(key("count"), FieldValue::I64(n + 1)),
                        None => old.0.insert(0, (key("count"), FieldValue::I64(1))),
                    }
                    old
                }
                None => entry,
            };
            sort_table(&mut this);
            others.insert(0, FieldValue::Table(this));
            others
        }
        // Not an array (a client rewrote it): RabbitMQ starts over.
        Some(_) => vec![FieldValue::Table(entry)],
    };
    headers.insert(key("x-death"), FieldValue::Array(deaths));
    sort_table(&mut headers);
    let routing_keys = match dlrk {
        Some(k) => {
            headers.remove("CC");
            vec![Bytes::copy_from_slice(k)]
        }
        None => original_keys,
    };
    props.headers = Some(headers);
    let raw = props.to_bytes();
    let mut out = Message::assemble(
        dlx,
        routing_keys.first().map_or(&[][..], |k| &k[..]),
        &raw,
        msg.body(),
    )
    .with_properties_from_raw();
    out.persistent = msg.persistent;
    DeadLetter {
        msg: out,
        routing_keys,
    }
}

/// RabbitMQ drops a dead-lettered message that would return to a queue
/// already in its history with no rejection since (an automatic cycle;
/// `rabbit_dead_letter:is_cycle/2`). Anything on the way back that is not
/// an entry RabbitMQ wrote means a client touched the history: no cycle.
pub fn is_cycle(msg: &Message, target_queue: &[u8]) -> bool {
    let Ok(props) = BasicProperties::decode(&msg.props_bytes()) else {
        return false;
    };
    let Some(FieldValue::Array(deaths)) = props.headers.as_ref().and_then(|h| h.get("x-death")) else {
        return false;
    };
    let is_longstr =
        |v: Option<&FieldValue>, s: &[u8]| matches!(v, Some(FieldValue::LongStr(l)) if l.as_bytes() == s);
    for d in deaths {
        let Some(t) = d.as_table() else {
            return false;
        };
        if is_longstr(t.get("reason"), b"rejected") {
            return false;
        }
        if is_longstr(t.get("queue"), target_queue) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg_with(props: BasicProperties) -> Message {
        Message::assemble(b"orig-ex", b"orig-rk", &props.to_bytes(), b"body").with_properties_from_raw()
    }

    fn deaths(m: &Message) -> Vec<FieldTable> {
        let p = BasicProperties::decode(&m.props_bytes()).unwrap();
        match p.headers.unwrap().get("x-death") {
            Some(FieldValue::Array(a)) => a.iter().map(|v| v.as_table().unwrap().clone()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn x_death_entries_and_counts() {
        let mut h = FieldTable::new();
        h.insert("CC".into(), FieldValue::Array(vec![FieldValue::from("cc1")]));
        let m = msg_with(BasicProperties {
            headers: Some(h),
            expiration: Some("5000".into()),
            ..Default::default()
        });
        let d1 = dead_letter(&m, b"q1", DeadReason::Expired, b"dlx", None, 100);
        assert_eq!(d1.msg.exchange(), b"dlx");
        assert_eq!(
            d1.routing_keys,
            vec![Bytes::from_static(b"orig-rk"), Bytes::from_static(b"cc1")]
        );
        assert_eq!(d1.msg.ttl(), None, "expiration is removed");
        let e = &deaths(&d1.msg)[0];
        assert_eq!(e.get("reason").unwrap().as_bytes(), Some(&b"expired"[..]));
        assert_eq!(
            e.get("original-expiration").unwrap().as_bytes(),
            Some(&b"5000"[..])
        );
        assert_eq!(e.get("count"), Some(&FieldValue::I64(1)));
        // Again through another queue, then the first one again.
        let d2 = dead_letter(&d1.msg, b"q2", DeadReason::Rejected, b"dlx", Some(b"k2"), 200);
        let d3 = dead_letter(&d2.msg, b"q1", DeadReason::Expired, b"dlx", None, 300);
        let ds = deaths(&d3.msg);
        assert_eq!(ds.len(), 2);
        assert_eq!(ds[0].get("queue").unwrap().as_bytes(), Some(&b"q1"[..]));
        assert_eq!(ds[0].get("count"), Some(&FieldValue::I64(2)));
        let p = BasicProperties::decode(&d3.msg.props_bytes()).unwrap();
        let h = p.headers.unwrap();
        assert_eq!(h.get("x-first-death-queue").unwrap().as_bytes(), Some(&b"q1"[..]));
        assert_eq!(
            h.get("x-first-death-reason").unwrap().as_bytes(),
            Some(&b"expired"[..])
        );
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let m = msg_with(BasicProperties::default());
        let d = dead_letter(&m, b"q1", DeadReason::Expired, b"dlx", None, 1);
        assert!(is_cycle(&d.msg, b"q1"));
        assert!(!is_cycle(&d.msg, b"q2"));
        let r = dead_letter(&m, b"q1", DeadReason::Rejected, b"dlx", None, 1);
        assert!(!is_cycle(&r.msg, b"q1"), "a rejection breaks the cycle");
    }
}
