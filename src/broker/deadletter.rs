//! Dead-lettering: the message republished to a queue's dead-letter
//! exchange, with the `x-death` history RabbitMQ writes
//! (`rabbit_dead_letter`): one entry per (queue, reason), most recent
//! first, counting repeats; `x-first-death-*` set once; a per-message
//! `expiration` moved into the entry as `original-expiration`.

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

/// The `CC` and `BCC` header values (sender-selected distribution).
pub fn cc_keys(headers: &FieldTable, name: &str) -> Vec<Bytes> {
    match headers.get(name) {
        Some(FieldValue::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_bytes().map(Bytes::copy_from_slice))
            .collect(),
        _ => Vec::new(),
    }
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
    let mut entry = FieldTable::new();
    entry.insert(key("count"), FieldValue::I64(1));
    entry.insert(key("reason"), FieldValue::from(reason.as_str()));
    entry.insert(key("queue"), longstr(queue));
    entry.insert(key("time"), FieldValue::Timestamp(now_secs));
    entry.insert(key("exchange"), longstr(msg.exchange()));
    entry.insert(
        key("routing-keys"),
        FieldValue::Array(original_keys.iter().map(|k| longstr(k)).collect()),
    );
    if reason == DeadReason::Expired
        && let Some(exp) = props.expiration.take()
    {
        entry.insert(key("original-expiration"), longstr(exp.as_bytes()));
    }
    let mut deaths: Vec<FieldValue> = match headers.remove("x-death") {
        Some(FieldValue::Array(a)) => a,
        _ => Vec::new(),
    };
    let same = |t: &FieldTable| {
        t.get("queue").and_then(|v| v.as_bytes()) == Some(queue)
            && t.get("reason").and_then(|v| v.as_bytes()) == Some(reason.as_str().as_bytes())
    };
    match deaths.iter().position(|d| d.as_table().is_some_and(same)) {
        Some(i) => {
            let FieldValue::Table(mut old) = deaths.remove(i) else {
                unreachable!()
            };
            let count = old.get("count").and_then(|c| c.as_i64()).unwrap_or(0) + 1;
            old.insert(key("count"), FieldValue::I64(count));
            old.insert(key("time"), FieldValue::Timestamp(now_secs));
            deaths.insert(0, FieldValue::Table(old));
        }
        None => deaths.insert(0, FieldValue::Table(entry)),
    }
    headers.insert(key("x-death"), FieldValue::Array(deaths));
    for (k, v) in [
        ("x-first-death-reason", longstr(reason.as_str().as_bytes())),
        ("x-first-death-queue", longstr(queue)),
        ("x-first-death-exchange", longstr(msg.exchange())),
    ] {
        if headers.get(k).is_none() {
            headers.insert(key(k), v);
        }
    }
    let routing_keys = match dlrk {
        Some(k) => vec![Bytes::copy_from_slice(k)],
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
/// already in its history with no rejection since (an automatic cycle).
pub fn is_cycle(msg: &Message, target_queue: &[u8]) -> bool {
    let Ok(props) = BasicProperties::decode(&msg.props_bytes()) else {
        return false;
    };
    let Some(FieldValue::Array(deaths)) = props.headers.as_ref().and_then(|h| h.get("x-death")) else {
        return false;
    };
    for d in deaths {
        let Some(t) = d.as_table() else { continue };
        if t.get("reason").and_then(|v| v.as_bytes()) == Some(b"rejected") {
            return false;
        }
        if t.get("queue").and_then(|v| v.as_bytes()) == Some(target_queue) {
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
