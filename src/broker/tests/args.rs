//! Queue and exchange arguments: type names, equivalence on redeclare,
//! declare-time validation, effective settings with policies, and policy
//! definitions.

use super::super::args::{
    QueueExtras, check_exchange_equivalence, check_queue_equivalence, queue_settings, type_name,
    validate_exchange_args, validate_policy, validate_queue_args,
};
use super::*;
use crate::protocol::reply::PRECONDITION_FAILED;
use crate::queue::{Overflow, QueueConfig};

#[test]
fn type_names_are_rabbitmqs() {
    let cases = [
        (FieldValue::Bool(true), "bool"),
        (FieldValue::I8(1), "byte"),
        (FieldValue::U8(1), "unsignedbyte"),
        (FieldValue::I16(1), "short"),
        (FieldValue::U16(1), "unsignedshort"),
        (FieldValue::I32(1), "signedint"),
        (FieldValue::U32(1), "unsignedint"),
        (FieldValue::I64(1), "long"),
        (FieldValue::F32(1.0), "float"),
        (FieldValue::F64(1.0), "double"),
        (FieldValue::Decimal { scale: 1, value: 1 }, "decimal"),
        (ls("s"), "longstr"),
        (FieldValue::Array(vec![]), "array"),
        (FieldValue::Timestamp(1), "timestamp"),
        (FieldValue::Table(FieldTable::new()), "table"),
        (FieldValue::Void, "void"),
        (FieldValue::ByteArray(Bytes::from_static(b"b")), "binary"),
    ];
    for (v, name) in cases {
        assert_eq!(type_name(&v), name, "{v:?}");
    }
}

fn q_equiv(current: FieldTable, got: FieldTable) -> Result<(), AmqpError> {
    check_queue_equivalence(&current, &got, &ss("q"), "/")
}

#[test]
fn every_compared_queue_argument_is_compared() {
    let keys = [
        "x-expires",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-priority",
        "x-overflow",
        "x-queue-mode",
        "x-queue-type",
        "x-single-active-consumer",
        "x-queue-version",
    ];
    for key in keys {
        assert_amqp_err(
            q_equiv(
                table(&[(key, FieldValue::I32(1))]),
                table(&[(key, FieldValue::I32(2))]),
            ),
            PRECONDITION_FAILED,
            &format!(
                "PRECONDITION_FAILED - inequivalent arg '{key}' for queue 'q' in vhost '/': received '2' but current is '1'"
            ),
        );
        assert_eq!(
            q_equiv(
                table(&[(key, FieldValue::I32(1))]),
                table(&[(key, FieldValue::I64(1))])
            ),
            Ok(()),
            "{key}"
        );
    }
}

#[test]
fn other_queue_arguments_may_differ() {
    let current = table(&[("x-max-in-memory-length", FieldValue::I32(1)), ("foo", ls("a"))]);
    let got = table(&[("x-max-in-memory-length", FieldValue::I32(2)), ("bar", ls("b"))]);
    assert_eq!(q_equiv(current, got), Ok(()));
}

#[test]
fn equivalence_texts_for_missing_and_typed_values() {
    assert_amqp_err(
        q_equiv(
            FieldTable::new(),
            table(&[("x-single-active-consumer", FieldValue::Bool(false))]),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'q' in vhost '/': received the value 'false' of type 'bool' but current is none",
    );
    assert_amqp_err(
        q_equiv(
            table(&[("x-max-length-bytes", FieldValue::I64(5))]),
            FieldTable::new(),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length-bytes' for queue 'q' in vhost '/': received none but current is the value '5' of type 'long'",
    );
    // Both present with different types: values only (RabbitMQ prints the
    // same digits on both sides).
    assert_amqp_err(
        q_equiv(
            table(&[("x-message-ttl", FieldValue::I32(5))]),
            table(&[("x-message-ttl", ls("5"))]),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '5' but current is '5'",
    );
    assert_amqp_err(
        q_equiv(
            table(&[("x-single-active-consumer", FieldValue::Bool(true))]),
            table(&[("x-single-active-consumer", FieldValue::Bool(false))]),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'q' in vhost '/': received 'false' but current is 'true'",
    );
}

#[test]
fn the_first_inequivalent_argument_is_reported_in_rabbitmqs_order() {
    // Checked by changing every argument at once against RabbitMQ 3.10.8,
    // then restoring the one it named, and so on.
    let order = [
        ("x-expires", FieldValue::I32(100_000), FieldValue::I32(200_000)),
        ("x-message-ttl", FieldValue::I32(1000), FieldValue::I32(2000)),
        ("x-dead-letter-exchange", ls("d"), ls("e")),
        ("x-dead-letter-routing-key", ls("k"), ls("j")),
        ("x-max-length", FieldValue::I32(10), FieldValue::I32(11)),
        ("x-max-length-bytes", FieldValue::I32(1000), FieldValue::I32(1001)),
        ("x-max-priority", FieldValue::I32(5), FieldValue::I32(6)),
        ("x-overflow", ls("drop-head"), ls("reject-publish")),
        ("x-queue-mode", ls("default"), ls("lazy")),
    ];
    let current: FieldTable = order.iter().map(|(k, c, _)| (ss(k), c.clone())).collect();
    let mut got: FieldTable = order.iter().rev().map(|(k, _, g)| (ss(k), g.clone())).collect();
    for (key, cur, _) in order.iter() {
        let e = q_equiv(current.clone(), got.clone()).unwrap_err();
        assert!(
            e.text.starts_with(&format!("inequivalent arg '{key}' ")),
            "{key}: {}",
            e.text
        );
        got.insert(ss(key), cur.clone());
    }
    assert_eq!(q_equiv(current, got), Ok(()));
}

#[test]
fn queue_version_and_master_locator_as_rabbitmq_compares_them() {
    assert_amqp_err(
        q_equiv(
            table(&[
                ("x-single-active-consumer", FieldValue::Bool(true)),
                ("x-queue-version", FieldValue::I32(1)),
            ]),
            table(&[
                ("x-single-active-consumer", FieldValue::Bool(false)),
                ("x-queue-version", FieldValue::I32(2)),
            ]),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-version' for queue 'q' in vhost '/': received '2' but current is '1'",
    );
    assert_amqp_err(
        q_equiv(
            FieldTable::new(),
            table(&[("x-queue-master-locator", ls("min-masters"))]),
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-master-locator' for queue 'q' in vhost '/': received the value 'min-masters' of type 'longstr' but current is none",
    );
}

#[test]
fn exchange_equivalence_compares_only_the_alternate_exchange() {
    let x = ss("x");
    assert_eq!(
        check_exchange_equivalence(
            &table(&[("alternate-exchange", ls("a")), ("x-foo", FieldValue::I32(1))]),
            &table(&[("alternate-exchange", ls("a")), ("x-foo", FieldValue::I32(2))]),
            &x,
            "v"
        ),
        Ok(())
    );
    assert_amqp_err(
        check_exchange_equivalence(
            &FieldTable::new(),
            &table(&[("alternate-exchange", ls("a"))]),
            &x,
            "v",
        ),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost 'v': received the value 'a' of type 'longstr' but current is none",
    );
}

#[test]
fn validate_exchange_args_checks_the_alternate_exchange_type() {
    let x = ss("x");
    assert_eq!(
        validate_exchange_args(&table(&[("alternate-exchange", ls("a"))]), &x, "/"),
        Ok(())
    );
    assert_eq!(
        validate_exchange_args(&table(&[("anything", FieldValue::Void)]), &x, "/"),
        Ok(())
    );
    let e = validate_exchange_args(&table(&[("alternate-exchange", FieldValue::Bool(true))]), &x, "/")
        .unwrap_err();
    assert_eq!(e.code, PRECONDITION_FAILED);
}

#[test]
fn validate_queue_args_bounds() {
    let q = ss("q");
    let v = |k: &str, val: FieldValue| validate_queue_args(&table(&[(k, val)]), &q, "/");
    // Edges that are accepted.
    assert_eq!(v("x-message-ttl", FieldValue::I32(0)), Ok(()));
    assert_eq!(v("x-message-ttl", FieldValue::U32(u32::MAX)), Ok(()));
    assert_eq!(v("x-expires", FieldValue::I32(1)), Ok(()));
    assert_eq!(v("x-max-length", FieldValue::I64(i64::MAX)), Ok(()));
    assert_eq!(v("x-max-priority", FieldValue::U8(0)), Ok(()));
    assert_eq!(v("x-max-priority", FieldValue::I16(255)), Ok(()));
    for o in ["drop-head", "reject-publish", "reject-publish-dlx"] {
        assert_eq!(v("x-overflow", ls(o)), Ok(()), "{o}");
    }
    // Any integer width is an integer.
    assert_eq!(v("x-max-length", FieldValue::I8(3)), Ok(()));
    assert_amqp_err(
        v("x-max-length", FieldValue::I8(-3)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-3}",
    );
    // A float is not an integer.
    assert_amqp_err(
        v("x-message-ttl", FieldValue::F64(1.5)),
        PRECONDITION_FAILED,
        "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got double\"",
    );
    // The dead-letter exchange must be a longstr, not a byte array.
    let e = v(
        "x-dead-letter-exchange",
        FieldValue::ByteArray(Bytes::from_static(b"d")),
    )
    .unwrap_err();
    assert_eq!(e.code, PRECONDITION_FAILED);
}

// ---- effective settings ----

#[test]
fn queue_settings_from_arguments() {
    let args = table(&[
        ("x-message-ttl", FieldValue::I32(1000)),
        ("x-max-length", FieldValue::I64(10)),
        ("x-max-length-bytes", FieldValue::U16(2048)),
        ("x-overflow", ls("reject-publish-dlx")),
        ("x-max-priority", FieldValue::I32(10)),
        ("x-single-active-consumer", FieldValue::Bool(true)),
        ("x-dead-letter-exchange", ls("dlx")),
        ("x-dead-letter-routing-key", ls("dlk")),
        ("x-expires", FieldValue::I32(60_000)),
    ]);
    let (cfg, extras) = queue_settings(&args, None);
    assert_eq!(
        cfg,
        QueueConfig {
            message_ttl: Some(1000),
            max_length: Some(10),
            max_length_bytes: Some(2048),
            overflow: Overflow::RejectPublishDlx,
            max_priority: 10,
            single_active_consumer: true,
        }
    );
    assert_eq!(
        extras,
        QueueExtras {
            dead_letter_exchange: Some(ss("dlx")),
            dead_letter_routing_key: Some(ss("dlk")),
            expires: Some(60_000),
        }
    );
}

#[test]
fn queue_settings_defaults() {
    let (cfg, extras) = queue_settings(&FieldTable::new(), None);
    assert_eq!(cfg, QueueConfig::default());
    assert_eq!(cfg.overflow, Overflow::DropHead);
    assert_eq!(extras, QueueExtras::default());
}

#[test]
fn arguments_win_over_policy_and_policy_fills_the_rest() {
    let args = table(&[
        ("x-message-ttl", FieldValue::I32(1000)),
        ("x-dead-letter-exchange", ls("arg-dlx")),
    ]);
    let policy = table(&[
        ("message-ttl", FieldValue::I32(5)),
        ("max-length", FieldValue::I32(7)),
        ("max-length-bytes", FieldValue::I32(70)),
        ("overflow", ls("reject-publish")),
        ("dead-letter-exchange", ls("pol-dlx")),
        ("dead-letter-routing-key", ls("pol-key")),
        ("expires", FieldValue::I32(9000)),
    ]);
    let (cfg, extras) = queue_settings(&args, Some(&policy));
    assert_eq!(
        cfg,
        QueueConfig {
            message_ttl: Some(1000),
            max_length: Some(7),
            max_length_bytes: Some(70),
            overflow: Overflow::RejectPublish,
            max_priority: 0,
            single_active_consumer: false,
        }
    );
    assert_eq!(
        extras,
        QueueExtras {
            dead_letter_exchange: Some(ss("arg-dlx")),
            dead_letter_routing_key: Some(ss("pol-key")),
            expires: Some(9000),
        }
    );
}

#[test]
fn policy_keys_for_arguments_only_are_ignored() {
    // x-max-priority and x-single-active-consumer are arguments only.
    let policy = table(&[
        ("max-priority", FieldValue::I32(5)),
        ("single-active-consumer", FieldValue::Bool(true)),
    ]);
    let (cfg, _) = queue_settings(&FieldTable::new(), Some(&policy));
    assert_eq!((cfg.max_priority, cfg.single_active_consumer), (0, false));
}

// ---- policy definitions ----

#[test]
fn validate_policy_accepts_what_rabbitmq_accepts() {
    let ok = [
        table(&[("expires", FieldValue::I32(1))]),
        table(&[("message-ttl", FieldValue::I32(0))]),
        table(&[("message-ttl", FieldValue::I64(315_360_000_001))]),
        table(&[
            ("max-length", FieldValue::I32(0)),
            ("max-length-bytes", FieldValue::I32(0)),
        ]),
        table(&[("overflow", ls("reject-publish-dlx"))]),
        table(&[
            ("dead-letter-exchange", ls("d")),
            ("dead-letter-routing-key", ls("k")),
        ]),
        table(&[("dead-letter-routing-key", ls("k"))]),
        table(&[("alternate-exchange", ls("ae"))]),
    ];
    for def in ok {
        assert_eq!(validate_policy(&def), Ok(()), "{def:?}");
    }
}

#[test]
fn validate_policy_texts_as_rabbitmq() {
    let cases = [
        (FieldTable::new(), "no policy provided"),
        (
            table(&[("expires", FieldValue::I32(0))]),
            "0 is not a valid queue expiry",
        ),
        (
            table(&[("message-ttl", FieldValue::I32(-1))]),
            "-1 is not a valid message TTL",
        ),
        (
            table(&[("max-length", ls("5"))]),
            "<<\"5\">> is not a valid maximum length",
        ),
        (
            table(&[("overflow", ls("bogus"))]),
            "<<\"bogus\">> is not a valid overflow value",
        ),
        (
            table(&[("dead-letter-exchange", FieldValue::I32(5))]),
            "5 is not a valid dead letter exchange name",
        ),
        (
            table(&[("foo", FieldValue::I32(1))]),
            "[{<<\"foo\">>,1}] are not recognised policy settings",
        ),
    ];
    for (def, text) in cases {
        assert_eq!(validate_policy(&def), Err(text.to_string()), "{def:?}");
    }
}

#[test]
fn validate_policy_accepts_rabbitmq_keys_warren_ignores() {
    assert_eq!(validate_policy(&table(&[("queue-mode", ls("lazy"))])), Ok(()));
    assert_eq!(validate_policy(&table(&[("ha-mode", ls("all"))])), Ok(()));
}

#[test]
fn validate_policy_checks_the_keys_warren_ignores_as_rabbitmq() {
    // Each text checked against RabbitMQ 3.10.8's HTTP API.
    let ok = [
        table(&[("ha-mode", ls("exactly")), ("ha-params", FieldValue::I64(2))]),
        table(&[
            ("ha-mode", ls("nodes")),
            ("ha-params", array(&["rabbit@a"])),
            ("ha-sync-mode", ls("automatic")),
            ("ha-promote-on-failure", ls("when-synced")),
        ]),
        table(&[("queue-master-locator", ls("min-masters"))]),
        table(&[("max-age", ls("10D")), ("queue-version", FieldValue::I64(2))]),
        table(&[
            ("delivery-limit", FieldValue::I64(3)),
            ("dead-letter-strategy", ls("at-least-once")),
        ]),
    ];
    for def in ok {
        assert_eq!(validate_policy(&def), Ok(()), "{def:?}");
    }
    let cases = [
        (
            table(&[
                ("foo", FieldValue::I64(1)),
                ("bar", ls("x")),
                ("message-ttl", FieldValue::I64(5)),
            ]),
            "[{<<\"bar\">>,<<\"x\">>},{<<\"foo\">>,1}] are not recognised policy settings",
        ),
        // The first bad key in name order, before unknown keys.
        (
            table(&[
                ("message-ttl", FieldValue::I64(-1)),
                ("expires", FieldValue::I64(0)),
                ("foo", FieldValue::I64(1)),
            ]),
            "0 is not a valid queue expiry",
        ),
        (
            table(&[("ha-mode", ls("bogus"))]),
            "<<\"bogus\">> is not a valid ha-mode value",
        ),
        (
            table(&[("ha-params", FieldValue::I64(1))]),
            "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown",
        ),
        (
            table(&[("ha-mode", ls("exactly"))]),
            "ha-mode=\"exactly\" takes an integer, none given",
        ),
        (
            table(&[
                ("ha-mode", ls("nodes")),
                (
                    "ha-params",
                    FieldValue::Array(vec![FieldValue::I64(1), ls("a"), FieldValue::Bool(true)]),
                ),
            ]),
            "ha-mode=\"nodes\" takes a list of strings, [1,true] was not a string",
        ),
        (
            table(&[("ha-mode", ls("all")), ("ha-sync-mode", ls("x"))]),
            "ha-sync-mode must be \"manual\" or \"automatic\", got <<\"x\">>",
        ),
        (
            table(&[("queue-master-locator", ls("x"))]),
            "<<\"x\">> invalid queue-master-locator value",
        ),
        (
            table(&[("max-age", ls("0D"))]),
            "<<\"0D\">> is not a valid max age",
        ),
        (
            table(&[("max-age", ls("10D")), ("queue-version", FieldValue::I64(3))]),
            "3 is not a valid queue-version value",
        ),
        // Values as Erlang prints what RabbitMQ decoded from JSON.
        (
            table(&[("overflow", ls("\u{20ac}"))]),
            "<<226,130,172>> is not a valid overflow value",
        ),
        (
            table(&[("overflow", ls("a\"b\\\\c"))]),
            "<<\"a\\\"b\\\\\\\\c\">> is not a valid overflow value",
        ),
        (
            table(&[("max-length", FieldValue::F64(1e20))]),
            "1.0e20 is not a valid maximum length",
        ),
        (
            table(&[("message-ttl", FieldValue::Bool(true))]),
            "true is not a valid message TTL",
        ),
        (
            table(&[("dead-letter-exchange", FieldValue::Void)]),
            "null is not a valid dead letter exchange name",
        ),
        (
            table(&[("dead-letter-exchange", table_value(&[("a", FieldValue::I64(1))]))]),
            "#{<<\"a\">> => 1} is not a valid dead letter exchange name",
        ),
        (
            table(&[(
                "foo",
                FieldValue::Array(vec![FieldValue::I64(104), FieldValue::I64(105)]),
            )]),
            "[{<<\"foo\">>,\"hi\"}] are not recognised policy settings",
        ),
    ];
    for (def, text) in cases {
        assert_eq!(validate_policy(&def), Err(text.to_string()), "{def:?}");
    }
}

fn array(v: &[&str]) -> FieldValue {
    FieldValue::Array(v.iter().map(|s| ls(s)).collect())
}

fn table_value(entries: &[(&str, FieldValue)]) -> FieldValue {
    FieldValue::Table(table(entries))
}
