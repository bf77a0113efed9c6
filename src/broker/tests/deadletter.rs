//! Dead-lettering: the `x-death` history, `x-first-death-*`, routing keys,
//! `CC`/`BCC` and cycle detection, against what RabbitMQ 3.10.8 delivered
//! for the same messages.

use super::super::deadletter::{cc_keys, dead_letter, is_cycle};
use super::*;
use crate::message::Message;
use crate::protocol::BasicProperties;
use crate::queue::DeadReason;

fn msg(exchange: &str, key: &str, props: BasicProperties) -> Message {
    Message::assemble(exchange.as_bytes(), key.as_bytes(), &props.to_bytes(), b"body")
        .with_properties_from_raw()
}

fn props_of(m: &Message) -> BasicProperties {
    BasicProperties::decode(&m.props_bytes()).expect("valid properties")
}

fn headers_of(m: &Message) -> FieldTable {
    props_of(m).headers.unwrap_or_default()
}

fn deaths(m: &Message) -> Vec<FieldTable> {
    match headers_of(m).get("x-death") {
        Some(FieldValue::Array(a)) => a.iter().map(|v| v.as_table().expect("a table").clone()).collect(),
        other => panic!("x-death is {other:?}"),
    }
}

fn keys(v: &[&str]) -> Vec<Bytes> {
    v.iter().map(|k| Bytes::copy_from_slice(k.as_bytes())).collect()
}

fn array(v: &[&str]) -> FieldValue {
    FieldValue::Array(v.iter().map(|s| ls(s)).collect())
}

/// An entry with its keys sorted, to compare regardless of order.
fn sorted(t: &FieldTable) -> FieldTable {
    let mut t = t.clone();
    t.0.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn first_death_headers(m: &Message) -> (FieldValue, FieldValue, FieldValue) {
    let h = headers_of(m);
    let get = |k: &str| h.get(k).cloned().unwrap_or_else(|| panic!("no {k}"));
    (
        get("x-first-death-reason"),
        get("x-first-death-queue"),
        get("x-first-death-exchange"),
    )
}

#[test]
fn first_death_writes_the_entry_rabbitmq_writes() {
    // RabbitMQ: published to amq.direct with key rk and CC [cc1, rk2],
    // rejected from dlsrc (no dead-letter routing key).
    let h = table(&[("CC", array(&["cc1", "rk2"])), ("h", FieldValue::I32(1))]);
    let m = msg(
        "amq.direct",
        "rk",
        BasicProperties {
            headers: Some(h),
            content_type: Some(ss("text/plain")),
            delivery_mode: Some(2),
            priority: Some(3),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"dlsrc", DeadReason::Rejected, b"pdlx", None, 1_795_981_546);
    assert_eq!(d.routing_keys, keys(&["rk", "cc1", "rk2"]));
    assert_eq!(d.msg.exchange(), b"pdlx");
    assert_eq!(d.msg.routing_key(), b"rk");
    assert_eq!(d.msg.body(), b"body");
    assert!(d.msg.persistent);
    assert_eq!(d.msg.priority, 3);
    let p = props_of(&d.msg);
    assert_eq!(p.content_type, Some(ss("text/plain")));
    assert_eq!(p.delivery_mode, Some(2));
    let entry = table(&[
        ("count", FieldValue::I64(1)),
        ("reason", ls("rejected")),
        ("queue", ls("dlsrc")),
        ("time", FieldValue::Timestamp(1_795_981_546)),
        ("exchange", ls("amq.direct")),
        ("routing-keys", array(&["rk", "cc1", "rk2"])),
    ]);
    assert_eq!(deaths(&d.msg), vec![entry]);
    let h = headers_of(&d.msg);
    assert_eq!(h.get("CC"), Some(&array(&["cc1", "rk2"])));
    assert_eq!(h.get("h"), Some(&FieldValue::I32(1)));
    assert_eq!(
        first_death_headers(&d.msg),
        (ls("rejected"), ls("dlsrc"), ls("amq.direct"))
    );
}

#[test]
fn expired_message_keeps_its_expiration_in_the_entry() {
    // RabbitMQ: published to the default exchange with expiration 10 and
    // CC [c], expired in dlexp.
    let m = msg(
        "",
        "dlexp",
        BasicProperties {
            headers: Some(table(&[("CC", array(&["c"]))])),
            expiration: Some(ss("10")),
            ..Default::default()
        },
    );
    assert_eq!(m.ttl(), Some(10));
    let d = dead_letter(&m, b"dlexp", DeadReason::Expired, b"pdlx", None, 7);
    assert_eq!(d.msg.ttl(), None);
    assert_eq!(props_of(&d.msg).expiration, None);
    let entry = table(&[
        ("count", FieldValue::I64(1)),
        ("reason", ls("expired")),
        ("queue", ls("dlexp")),
        ("time", FieldValue::Timestamp(7)),
        ("exchange", ls("")),
        ("routing-keys", array(&["dlexp", "c"])),
        ("original-expiration", ls("10")),
    ]);
    assert_eq!(deaths(&d.msg), vec![entry]);
    assert_eq!(d.routing_keys, keys(&["dlexp", "c"]));
    assert_eq!(first_death_headers(&d.msg), (ls("expired"), ls("dlexp"), ls("")));
}

#[test]
fn maxlen_reason() {
    let m = msg("x", "k", BasicProperties::default());
    let d = dead_letter(&m, b"q", DeadReason::MaxLen, b"dlx", None, 1);
    assert_eq!(deaths(&d.msg)[0].get("reason"), Some(&ls("maxlen")));
    assert_eq!(first_death_headers(&d.msg).0, ls("maxlen"));
}

#[test]
fn rejected_message_loses_its_expiration_too() {
    let m = msg(
        "amq.direct",
        "rk",
        BasicProperties {
            expiration: Some(ss("60000")),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"dlsrc", DeadReason::Rejected, b"pdlx", None, 1);
    assert_eq!(d.msg.ttl(), None);
    assert_eq!(props_of(&d.msg).expiration, None);
    assert_eq!(deaths(&d.msg)[0].get("original-expiration"), Some(&ls("60000")));
}

#[test]
fn dead_letter_routing_key_replaces_the_keys() {
    let m = msg(
        "amq.direct",
        "rk",
        BasicProperties {
            headers: Some(table(&[
                ("CC", array(&["cc1", "rk2"])),
                ("h", FieldValue::I32(1)),
            ])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"dlsrc2", DeadReason::Rejected, b"pdlx", Some(b"newkey"), 1);
    assert_eq!(d.routing_keys, keys(&["newkey"]));
    assert_eq!(d.msg.routing_key(), b"newkey");
    // The entry records the keys it was published with.
    assert_eq!(
        deaths(&d.msg)[0].get("routing-keys"),
        Some(&array(&["rk", "cc1", "rk2"]))
    );
}

#[test]
fn dead_letter_routing_key_drops_the_cc_header() {
    let m = msg(
        "amq.direct",
        "rk",
        BasicProperties {
            headers: Some(table(&[("CC", array(&["cc1"])), ("h", FieldValue::I32(1))])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"q", DeadReason::Rejected, b"dlx", Some(b"newkey"), 1);
    let h = headers_of(&d.msg);
    assert_eq!(h.get("CC"), None);
    assert_eq!(h.get("h"), Some(&FieldValue::I32(1)));
}

#[test]
fn dead_letter_routing_key_may_be_empty() {
    let m = msg("x", "rk", BasicProperties::default());
    let d = dead_letter(&m, b"q", DeadReason::Rejected, b"", Some(b""), 1);
    assert_eq!(d.routing_keys, keys(&[""]));
    assert_eq!(d.msg.exchange(), b"");
    assert_eq!(d.msg.routing_key(), b"");
}

#[test]
fn re_dead_lettering_counts_per_queue_and_reason() {
    // RabbitMQ: dlq1 (rejects) -> dlq2 (expires) -> dlq1, twice round.
    let m = msg("", "dlq1", BasicProperties::default());
    let d1 = dead_letter(&m, b"dlq1", DeadReason::Rejected, b"", Some(b"dlq2"), 100);
    let d2 = dead_letter(&d1.msg, b"dlq2", DeadReason::Expired, b"", Some(b"dlq1"), 101);
    let ds = deaths(&d2.msg);
    assert_eq!(ds.len(), 2);
    assert_eq!(
        sorted(&ds[0]),
        sorted(&table(&[
            ("count", FieldValue::I64(1)),
            ("exchange", ls("")),
            ("queue", ls("dlq2")),
            ("reason", ls("expired")),
            ("routing-keys", array(&["dlq2"])),
            ("time", FieldValue::Timestamp(101)),
        ]))
    );
    let d3 = dead_letter(&d2.msg, b"dlq1", DeadReason::Rejected, b"", Some(b"dlq2"), 200);
    let d4 = dead_letter(&d3.msg, b"dlq2", DeadReason::Expired, b"", Some(b"dlq1"), 201);
    let ds = deaths(&d4.msg);
    let summary: Vec<_> = ds
        .iter()
        .map(|e| {
            (
                e.get("queue").cloned(),
                e.get("reason").cloned(),
                e.get("count").cloned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(ls("dlq2")), Some(ls("expired")), Some(FieldValue::I64(2))),
            (Some(ls("dlq1")), Some(ls("rejected")), Some(FieldValue::I64(2))),
        ]
    );
    // The first death stays the first.
    assert_eq!(first_death_headers(&d4.msg), (ls("rejected"), ls("dlq1"), ls("")));
    // Another reason from the same queue is another entry, in front.
    let d5 = dead_letter(&d4.msg, b"dlq1", DeadReason::Expired, b"", None, 300);
    let ds = deaths(&d5.msg);
    assert_eq!(ds.len(), 3);
    assert_eq!(
        (ds[0].get("queue"), ds[0].get("reason"), ds[0].get("count")),
        (Some(&ls("dlq1")), Some(&ls("expired")), Some(&FieldValue::I64(1)))
    );
}

#[test]
fn re_dead_lettering_keeps_the_first_time() {
    let m = msg("", "dlq1", BasicProperties::default());
    let d1 = dead_letter(&m, b"dlq1", DeadReason::Rejected, b"", Some(b"dlq2"), 100);
    let d2 = dead_letter(&d1.msg, b"dlq2", DeadReason::Expired, b"", Some(b"dlq1"), 101);
    let d3 = dead_letter(&d2.msg, b"dlq1", DeadReason::Rejected, b"", Some(b"dlq2"), 200);
    assert_eq!(
        sorted(&deaths(&d3.msg)[0]),
        sorted(&table(&[
            ("count", FieldValue::I64(2)),
            ("exchange", ls("")),
            ("queue", ls("dlq1")),
            ("reason", ls("rejected")),
            ("routing-keys", array(&["dlq1"])),
            ("time", FieldValue::Timestamp(100)),
        ]))
    );
}

#[test]
fn later_deaths_sort_the_headers_and_the_new_entry_and_reverse_the_rest() {
    // RabbitMQ 3.10.8, for a message published with headers z, a, CC, m and
    // an x-death of three entries (a, b, c), rejected from a queue with a
    // dead-letter routing key: headers sorted (CC gone), the new entry's keys
    // sorted, the older entries in reverse order, no x-first-death-*.
    let old = |q: &str| {
        FieldValue::Table(table(&[
            ("count", FieldValue::I32(1)),
            ("reason", ls("expired")),
            ("queue", ls(q)),
            ("time", FieldValue::Timestamp(5)),
            ("exchange", ls("")),
            ("routing-keys", array(&[q])),
        ]))
    };
    let h = table(&[
        ("z", FieldValue::I32(1)),
        ("a", FieldValue::I32(2)),
        ("CC", array(&["nothing"])),
        ("x-death", FieldValue::Array(vec![old("a"), old("b"), old("c")])),
        ("m", ls("x")),
    ]);
    let m = msg(
        "",
        "dlt_q",
        BasicProperties {
            headers: Some(h),
            expiration: Some(ss("60000")),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"dlt_q", DeadReason::Rejected, b"", Some(b"dlt_out"), 9);
    let h = headers_of(&d.msg);
    let names: Vec<_> = h.iter().map(|(k, _)| k.as_str().into_owned()).collect();
    assert_eq!(names, vec!["a", "m", "x-death", "z"]);
    let ds = deaths(&d.msg);
    assert_eq!(
        ds[0],
        table(&[
            ("count", FieldValue::I64(1)),
            ("exchange", ls("")),
            ("original-expiration", ls("60000")),
            ("queue", ls("dlt_q")),
            ("reason", ls("rejected")),
            ("routing-keys", array(&["dlt_q", "nothing"])),
            ("time", FieldValue::Timestamp(9)),
        ])
    );
    let rest: Vec<_> = ds[1..].iter().map(|e| e.get("queue").cloned()).collect();
    assert_eq!(rest, vec![Some(ls("c")), Some(ls("b")), Some(ls("a"))]);
    // The first death sorts the headers too, but not its entry.
    let m = msg(
        "",
        "q2",
        BasicProperties {
            headers: Some(table(&[
                ("z", FieldValue::I32(1)),
                ("a", FieldValue::I32(2)),
                ("CC", array(&["n"])),
            ])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"q2", DeadReason::Rejected, b"", None, 9);
    let h = headers_of(&d.msg);
    let names: Vec<_> = h.iter().map(|(k, _)| k.as_str().into_owned()).collect();
    assert_eq!(
        names,
        vec![
            "CC",
            "a",
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
            "z"
        ]
    );
    let keys: Vec<_> = deaths(&d.msg)[0]
        .iter()
        .map(|(k, _)| k.as_str().into_owned())
        .collect();
    assert_eq!(
        keys,
        vec!["count", "reason", "queue", "time", "exchange", "routing-keys"]
    );
}

#[test]
fn duplicate_entries_are_merged_with_their_count() {
    // Entries from before RabbitMQ grouped them (rabbitmq-server#78): one
    // per (queue, reason), a missing count set to how many there were.
    let e = |q: &str| FieldValue::Table(table(&[("queue", ls(q)), ("reason", ls("expired"))]));
    let m = msg(
        "x",
        "k",
        BasicProperties {
            headers: Some(table(&[(
                "x-death",
                FieldValue::Array(vec![e("a"), e("b"), e("a")]),
            )])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"a", DeadReason::Expired, b"dlx", None, 5);
    let summary: Vec<_> = deaths(&d.msg)
        .iter()
        .map(|t| (t.get("queue").cloned(), t.get("count").cloned()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(ls("a")), Some(FieldValue::I64(3))),
            (Some(ls("b")), Some(FieldValue::I64(1))),
        ]
    );
}

#[test]
fn a_count_missing_from_a_forged_entry_starts_at_one() {
    let forged = table(&[("queue", ls("q")), ("reason", ls("expired"))]);
    let m = msg(
        "x",
        "k",
        BasicProperties {
            headers: Some(table(&[(
                "x-death",
                FieldValue::Array(vec![FieldValue::Table(forged)]),
            )])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"q", DeadReason::Expired, b"dlx", None, 5);
    let ds = deaths(&d.msg);
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].get("count"), Some(&FieldValue::I64(1)));
}

// ---- CC / BCC ----

#[test]
fn cc_and_bcc_keys_are_the_longstrs_of_an_array() {
    let h = table(&[
        ("CC", array(&["a", "b"])),
        ("BCC", array(&["c"])),
        ("other", array(&["z"])),
    ]);
    assert_eq!(cc_keys(&h, "CC"), keys(&["a", "b"]));
    assert_eq!(cc_keys(&h, "BCC"), keys(&["c"]));
    assert_eq!(
        cc_keys(&h, "cc"),
        Vec::<Bytes>::new(),
        "header names are case-sensitive"
    );
    assert_eq!(cc_keys(&table(&[("CC", ls("a"))]), "CC"), Vec::<Bytes>::new());
    let mixed = table(&[(
        "CC",
        FieldValue::Array(vec![ls("a"), FieldValue::I32(1), ls("b")]),
    )]);
    assert_eq!(cc_keys(&mixed, "CC"), keys(&["a", "b"]));
}

#[test]
fn cc_byte_arrays_are_not_keys() {
    let h = table(&[(
        "CC",
        FieldValue::Array(vec![ls("a"), FieldValue::ByteArray(Bytes::from_static(b"b"))]),
    )]);
    assert_eq!(cc_keys(&h, "CC"), keys(&["a"]));
}

#[test]
fn bcc_is_not_a_dead_letter_key() {
    // BCC is stripped at publish, so a queued message has none; one that
    // somehow has it still routes only by key and CC.
    let m = msg(
        "x",
        "k",
        BasicProperties {
            headers: Some(table(&[("BCC", array(&["b"])), ("CC", array(&["c"]))])),
            ..Default::default()
        },
    );
    let d = dead_letter(&m, b"q", DeadReason::Rejected, b"dlx", None, 1);
    assert_eq!(d.routing_keys, keys(&["k", "c"]));
}

// ---- cycles ----

#[test]
fn cycle_detection() {
    let m = msg("", "a", BasicProperties::default());
    // a expires into b: back to a would be a fully automatic cycle.
    let to_b = dead_letter(&m, b"a", DeadReason::Expired, b"", Some(b"b"), 1);
    assert!(is_cycle(&to_b.msg, b"a"));
    assert!(!is_cycle(&to_b.msg, b"b"));
    // b expires into c: a and b are in the history.
    let to_c = dead_letter(&to_b.msg, b"b", DeadReason::MaxLen, b"", Some(b"c"), 2);
    assert!(is_cycle(&to_c.msg, b"a"));
    assert!(is_cycle(&to_c.msg, b"b"));
    assert!(!is_cycle(&to_c.msg, b"c"));
    // A rejection anywhere on the way back breaks the cycle.
    let rejected = dead_letter(&to_c.msg, b"c", DeadReason::Rejected, b"", Some(b"a"), 3);
    assert!(!is_cycle(&rejected.msg, b"a"));
    assert!(!is_cycle(&rejected.msg, b"c"));
    // A rejection older than the last visit to the target does not.
    let r0 = dead_letter(&m, b"a", DeadReason::Rejected, b"", Some(b"b"), 1);
    let e1 = dead_letter(&r0.msg, b"b", DeadReason::Expired, b"", Some(b"a"), 2);
    assert!(!is_cycle(&e1.msg, b"a"), "the rejection at a is on the way");
    let e2 = dead_letter(&e1.msg, b"a", DeadReason::Expired, b"", Some(b"b"), 3);
    assert!(is_cycle(&e2.msg, b"a"), "a expired since it rejected");
}

#[test]
fn messages_without_history_never_cycle() {
    assert!(!is_cycle(&msg("", "a", BasicProperties::default()), b"a"));
    let other_headers = BasicProperties {
        headers: Some(table(&[("x-death", ls("not an array"))])),
        ..Default::default()
    };
    assert!(!is_cycle(&msg("", "a", other_headers), b"a"));
}

#[test]
fn a_foreign_x_death_entry_breaks_the_cycle() {
    let m = msg("", "a", BasicProperties::default());
    let to_b = dead_letter(&m, b"a", DeadReason::Expired, b"", Some(b"b"), 1);
    let mut h = headers_of(&to_b.msg);
    let Some(FieldValue::Array(mut ds)) = h.remove("x-death") else {
        panic!("no x-death")
    };
    ds.insert(0, ls("client junk"));
    h.insert(ss("x-death"), FieldValue::Array(ds));
    let forged = msg(
        "",
        "b",
        BasicProperties {
            headers: Some(h),
            ..Default::default()
        },
    );
    assert!(!is_cycle(&forged, b"a"));
}
