//! `x-` arguments of queues and exchanges: validation at declare time and
//! the equivalence RabbitMQ checks on redeclare (only the arguments it knows;
//! others may differ freely).

use crate::protocol::{AmqpError, FieldTable, FieldValue, ShortStr};

/// Queue arguments RabbitMQ compares on redeclare, in the order it compares
/// them: a classic queue's `queue_arguments` (`rabbit_classic_queue`).
const QUEUE_EQUIVALENT: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

/// Arguments of RabbitMQ's other queue types (quorum, stream) that a classic
/// queue refuses (`rabbit_amqqueue:check_arguments_key`).
const NOT_FOR_CLASSIC: &[&str] = &[
    "x-dead-letter-strategy",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-queue-leader-locator",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// The longest message TTL or queue expiry RabbitMQ accepts: ten years, ms
/// (`rabbit_misc:check_expiry`).
pub const MAX_EXPIRY_MS: i64 = 315_360_000_000;

/// RabbitMQ's name for a field type in error texts.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

fn show(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(s) => s.as_str().into_owned(),
        FieldValue::ByteArray(b) => String::from_utf8_lossy(b).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        other => match other.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// An integer of any width (and a timestamp), as Erlang sees the value.
fn int_value(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::Timestamp(t) => i64::try_from(*t).ok(),
        other => other.as_i64(),
    }
}

/// Same meaning for RabbitMQ (`rabbit_misc:assert_args_equivalence`): it
/// compares the values without their types, so integers compare by value
/// whatever their width, and a `longstr` equals a byte array of the same
/// bytes.
fn same(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (int_value(a), int_value(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_bytes(), b.as_bytes()) {
        return x == y;
    }
    match (a, b) {
        (FieldValue::F32(x), FieldValue::F64(y)) | (FieldValue::F64(y), FieldValue::F32(x)) => {
            f64::from(*x) == *y
        }
        _ => a == b,
    }
}

/// RabbitMQ's special case: a classic queue declared without `x-queue-type`
/// and one declared with `x-queue-type = classic` are the same
/// (`rabbit_misc:assert_field_equivalence`, rabbitmq-common#341).
fn classic_either_way(key: &str, c: Option<&FieldValue>, g: Option<&FieldValue>) -> bool {
    let classic =
        |v: Option<&FieldValue>| matches!(v, Some(FieldValue::LongStr(s)) if s.as_bytes() == b"classic");
    key == "x-queue-type" && ((c.is_none() && classic(g)) || (g.is_none() && classic(c)))
}

fn equivalence(
    known: &[&str],
    current: &FieldTable,
    got: &FieldTable,
    what: &str,
    name: &ShortStr,
    vhost: &str,
) -> Result<(), AmqpError> {
    for key in known {
        let (c, g) = (current.get(key), got.get(key));
        let ok = match (c, g) {
            (None, None) => true,
            (Some(c), Some(g)) => same(c, g),
            _ => classic_either_way(key, c, g),
        };
        if ok {
            continue;
        }
        // RabbitMQ names the types only when one side is missing.
        let (received, cur) = match (g, c) {
            (Some(g), Some(c)) => (format!("'{}'", show(g)), format!("'{}'", show(c))),
            _ => {
                let describe = |v: Option<&FieldValue>| match v {
                    Some(v) => format!("the value '{}' of type '{}'", show(v), type_name(v)),
                    None => "none".to_string(),
                };
                (describe(g), describe(c))
            }
        };
        return Err(AmqpError::precondition(format!(
            "inequivalent arg '{key}' for {what} '{name}' in vhost '{vhost}': received {received} but current is {cur}"
        )));
    }
    Ok(())
}

pub fn check_queue_equivalence(
    current: &FieldTable,
    got: &FieldTable,
    name: &ShortStr,
    vhost: &str,
) -> Result<(), AmqpError> {
    equivalence(QUEUE_EQUIVALENT, current, got, "queue", name, vhost)
}

pub fn check_exchange_equivalence(
    current: &FieldTable,
    got: &FieldTable,
    name: &ShortStr,
    vhost: &str,
) -> Result<(), AmqpError> {
    equivalence(&["alternate-exchange"], current, got, "exchange", name, vhost)
}

fn invalid(key: &str, name: &ShortStr, vhost: &str, why: String) -> AmqpError {
    AmqpError::precondition(format!(
        "invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {why}"
    ))
}

/// A resource-naming argument (`x-dead-letter-exchange`,
/// `alternate-exchange`): absent, or a `longstr`. RabbitMQ's channel checks
/// the type before anything else about a new queue or exchange
/// (`rabbit_misc:r_arg`), and names it in its own words.
fn exchange_name_arg<'a>(
    args: &'a FieldTable,
    key: &str,
    what: &str,
    name: &ShortStr,
    vhost: &str,
) -> Result<Option<&'a [u8]>, AmqpError> {
    match args.get(key) {
        None => Ok(None),
        Some(FieldValue::LongStr(s)) => Ok(Some(s.as_bytes())),
        Some(other) => Err(AmqpError::precondition(format!(
            "invalid type '{}' for arg '{key}' in {what} '{name}' in vhost '{vhost}'",
            type_name(other)
        ))),
    }
}

/// The dead-letter exchange a new queue names, if any (its type checked).
pub fn dead_letter_exchange_arg<'a>(
    args: &'a FieldTable,
    name: &ShortStr,
    vhost: &str,
) -> Result<Option<&'a [u8]>, AmqpError> {
    exchange_name_arg(args, "x-dead-letter-exchange", "queue", name, vhost)
}

/// The alternate exchange a new exchange names, if any (its type checked).
pub fn alternate_exchange_arg<'a>(
    args: &'a FieldTable,
    name: &ShortStr,
    vhost: &str,
) -> Result<Option<&'a [u8]>, AmqpError> {
    exchange_name_arg(args, "alternate-exchange", "exchange", name, vhost)
}

/// Why RabbitMQ refuses one queue argument, in its words (the Erlang term
/// it prints after "invalid arg ...: "); `None` when the value is fine.
/// The checks of `rabbit_amqqueue:declare_args/0`.
fn queue_arg_error(key: &str, v: &FieldValue, args: &FieldTable) -> Option<String> {
    let int = || -> Result<i64, String> {
        v.as_i64()
            .ok_or_else(|| format!("\"expected integer, got {}\"", type_name(v)))
    };
    let non_neg = || -> Result<i64, String> {
        let i = int()?;
        if i < 0 {
            return Err(format!("{{value_negative,{i}}}"));
        }
        Ok(i)
    };
    let expiry = |i: i64| -> Result<i64, String> {
        if i < 0 {
            Err(format!("{{value_negative,{i}}}"))
        } else if i > MAX_EXPIRY_MS {
            Err(format!("{{value_too_large,{i}}}"))
        } else {
            Ok(i)
        }
    };
    let unacceptable = || format!("{{unacceptable_type,{}}}", type_name(v));
    let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    let r: Result<(), String> = match key {
        "x-expires" => int().and_then(|i| {
            if i == 0 {
                Err("{value_zero,0}".to_string())
            } else {
                expiry(i).map(drop)
            }
        }),
        "x-message-ttl" => int().and_then(expiry).map(drop),
        "x-dead-letter-exchange" => match v {
            FieldValue::LongStr(_) => Ok(()),
            _ => Err(unacceptable()),
        },
        "x-dead-letter-routing-key" => match v {
            FieldValue::LongStr(_) if args.get("x-dead-letter-exchange").is_none() => {
                Err("routing_key_but_no_dlx_defined".to_string())
            }
            FieldValue::LongStr(_) => Ok(()),
            _ => Err(unacceptable()),
        },
        "x-max-length" | "x-max-length-bytes" => non_neg().map(drop),
        "x-max-priority" => non_neg().and_then(|i| {
            if i > 255 {
                Err(format!("{{max_value_exceeded,{i}}}"))
            } else {
                Ok(())
            }
        }),
        "x-overflow" => match v {
            FieldValue::LongStr(s)
                if matches!(
                    s.as_bytes(),
                    b"drop-head" | b"reject-publish" | b"reject-publish-dlx"
                ) =>
            {
                Ok(())
            }
            FieldValue::LongStr(_) => Err("invalid_overflow".to_string()),
            _ => Err(unacceptable()),
        },
        "x-queue-mode" => match v {
            FieldValue::LongStr(s) if matches!(s.as_bytes(), b"default" | b"lazy") => Ok(()),
            FieldValue::LongStr(s) => Err(format!("\"unsupported queue mode '{}'\"", text(s.as_bytes()))),
            _ => Err(unacceptable()),
        },
        "x-queue-version" => non_neg().and_then(|i| match i {
            1 | 2 => Ok(()),
            _ => Err(format!("\"unsupported queue version '{i}'\"")),
        }),
        "x-single-active-consumer" => match v {
            FieldValue::Bool(_) => Ok(()),
            _ => Err(unacceptable()),
        },
        "x-quorum-initial-group-size" => int().and_then(|i| match i {
            0 => Err("{value_zero,0}".to_string()),
            i if i < 0 => Err(format!("{{value_negative,{i}}}")),
            _ => Ok(()),
        }),
        "x-queue-type" => match v {
            FieldValue::LongStr(s) if matches!(s.as_bytes(), b"classic" | b"quorum" | b"stream") => Ok(()),
            FieldValue::LongStr(s) => Err(format!("\"unsupported queue type '{}'\"", text(s.as_bytes()))),
            _ => Err(unacceptable()),
        },
        _ => Ok(()),
    };
    r.err()
}

/// Arguments of the other queue types that a quorum queue refuses (as
/// RabbitMQ 3.10 does; anything else, even unknown, is taken).
const NOT_FOR_QUORUM: &[&str] = &[
    "x-max-priority",
    "x-queue-mode",
    "x-queue-version",
    "x-queue-master-locator",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// Whether a queue's arguments ask for a quorum queue.
pub fn is_quorum(args: &FieldTable) -> bool {
    args.get("x-queue-type").and_then(|v| v.as_bytes()) == Some(b"quorum")
}

/// A quorum queue's `x-delivery-limit` (or the policy's `delivery-limit`):
/// a message returned more times than this is dead-lettered. RabbitMQ does
/// not check the value: any integer counts (0 or less: at the first
/// return), anything else means no limit.
pub fn delivery_limit(args: &FieldTable, policy: Option<&FieldTable>) -> Option<i64> {
    args.get("x-delivery-limit").and_then(|v| v.as_i64()).or_else(|| {
        policy
            .and_then(|p| p.get("delivery-limit"))
            .and_then(|v| v.as_i64())
    })
}

/// A quorum queue's `x-quorum-initial-group-size` (None: the default).
/// Whether a classic queue asks to live where its declarer is
/// (`x-queue-master-locator: client-local`), whatever the broker's
/// placement; any other value (`min-masters`, `random`) is taken as
/// balanced.
pub fn wants_client_local(args: &FieldTable) -> bool {
    args.get("x-queue-master-locator").and_then(|v| v.as_bytes()) == Some(b"client-local")
}

pub fn initial_group_size(args: &FieldTable) -> Option<u64> {
    int_arg(args, "x-quorum-initial-group-size").filter(|&n| n > 0)
}

/// The checks RabbitMQ applies to a new queue's arguments, in its order:
/// the dead-letter exchange's type (`rabbit_channel`), then `x-queue-type`,
/// then every other argument in `declare_args/0` order (not the table's),
/// then arguments only other queue types take. Classic and quorum queues
/// are supported; `stream` is refused in warren's own words.
pub fn validate_queue_args(args: &FieldTable, name: &ShortStr, vhost: &str) -> Result<(), AmqpError> {
    dead_letter_exchange_arg(args, name, vhost)?;
    let quorum = is_quorum(args);
    if let Some(v) = args.get("x-queue-type") {
        if let Some(why) = queue_arg_error("x-queue-type", v, args) {
            return Err(invalid("x-queue-type", name, vhost, why));
        }
        if !matches!(v.as_bytes(), Some(b"classic" | b"quorum")) {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-queue-type' for queue '{name}' in vhost '{vhost}': only 'classic' and 'quorum' queues are supported by warren"
            )));
        }
    }
    // `declare_args/0` order, restricted to a classic queue's arguments:
    // the equivalence list up to `x-queue-type`.
    const CHECKED: &[&str] = QUEUE_EQUIVALENT.split_at(11).0;
    for key in CHECKED.iter().chain(["x-quorum-initial-group-size"].iter()) {
        if let Some(v) = args.get(key)
            && let Some(why) = queue_arg_error(key, v, args)
        {
            return Err(invalid(key, name, vhost, why));
        }
    }
    for (k, _) in args.iter() {
        let key = k.as_str();
        let refused = if quorum {
            NOT_FOR_QUORUM.contains(&&*key)
        } else {
            NOT_FOR_CLASSIC.contains(&&*key)
        };
        if refused {
            let kind = if quorum {
                "rabbit_quorum_queue"
            } else {
                "rabbit_classic_queue"
            };
            return Err(AmqpError::precondition(format!(
                "invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type {kind}"
            )));
        }
    }
    Ok(())
}

/// Checks an exchange's arguments at declare (RabbitMQ checks only the
/// alternate exchange's type).
pub fn validate_exchange_args(args: &FieldTable, name: &ShortStr, vhost: &str) -> Result<(), AmqpError> {
    alternate_exchange_arg(args, name, vhost).map(drop)
}

/// A queue's settings beyond the engine's: where dead letters go, and
/// when an unused queue is deleted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueExtras {
    pub dead_letter_exchange: Option<ShortStr>,
    pub dead_letter_routing_key: Option<ShortStr>,
    /// `x-expires`, ms.
    pub expires: Option<u64>,
}

fn int_arg(args: &FieldTable, key: &str) -> Option<u64> {
    args.get(key)
        .and_then(|v| v.as_i64())
        .filter(|v| *v >= 0)
        .map(|v| v as u64)
}

fn str_arg(args: &FieldTable, key: &str) -> Option<ShortStr> {
    args.get(key)
        .and_then(|v| v.as_bytes())
        .and_then(|b| ShortStr::new(bytes::Bytes::copy_from_slice(b)))
}

/// Effective settings from the queue's arguments and, for what the
/// arguments leave unset, a policy definition (RabbitMQ: arguments win).
pub fn queue_settings(
    args: &FieldTable,
    policy: Option<&FieldTable>,
) -> (crate::queue::QueueConfig, QueueExtras) {
    use crate::queue::{Overflow, QueueConfig};
    let empty = FieldTable::new();
    let pol = policy.unwrap_or(&empty);
    let int = |arg: &str, pkey: &str| int_arg(args, arg).or_else(|| int_arg(pol, pkey));
    let text = |arg: &str, pkey: &str| str_arg(args, arg).or_else(|| str_arg(pol, pkey));
    let overflow = match text("x-overflow", "overflow")
        .as_ref()
        .map(|s| s.as_bytes().to_vec())
        .as_deref()
    {
        Some(b"reject-publish") => Overflow::RejectPublish,
        Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
        _ => Overflow::DropHead,
    };
    let cfg = QueueConfig {
        message_ttl: int("x-message-ttl", "message-ttl"),
        max_length: int("x-max-length", "max-length"),
        max_length_bytes: int("x-max-length-bytes", "max-length-bytes"),
        overflow,
        max_priority: int_arg(args, "x-max-priority").map_or(0, |p| p.min(255) as u8),
        single_active_consumer: args
            .get("x-single-active-consumer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    };
    let extras = QueueExtras {
        dead_letter_exchange: text("x-dead-letter-exchange", "dead-letter-exchange"),
        dead_letter_routing_key: text("x-dead-letter-routing-key", "dead-letter-routing-key"),
        expires: int("x-expires", "expires"),
    };
    (cfg, extras)
}

/// A definition value as Erlang's `~p` prints the term RabbitMQ decodes
/// from JSON (binaries as `<<"...">>`, `null`, lists, maps), for policy
/// error texts. (Erlang wraps long terms over several lines; this does not.)
fn erlang_term(v: &FieldValue) -> String {
    /// Erlang's default printable range (Latin-1).
    fn printable(c: u8) -> bool {
        matches!(c, 32..=126 | 160..=255 | b'\n' | b'\r' | b'\t' | 0x0b | 0x08 | 0x0c | 0x1b)
    }
    fn binary(b: &[u8]) -> String {
        // `~p` shows a binary as text when every byte is printable.
        if b.is_empty() {
            return "<<>>".to_string();
        }
        if !b.iter().all(|&c| printable(c)) {
            let bytes: Vec<String> = b.iter().map(|c| c.to_string()).collect();
            return format!("<<{}>>", bytes.join(","));
        }
        // RabbitMQ sends the printed bytes as they are (UTF-8 stays UTF-8).
        let mut s: Vec<u8> = b"<<\"".to_vec();
        for &c in b {
            let escaped: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x0b => b"\\v",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x1b => b"\\e",
                _ => {
                    s.push(c);
                    continue;
                }
            };
            s.extend_from_slice(escaped);
        }
        s.extend_from_slice(b"\">>");
        String::from_utf8_lossy(&s).into_owned()
    }
    fn float(f: f64) -> String {
        let s = format!("{f:?}");
        match s.split_once('e') {
            Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
            _ => s,
        }
    }
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Void => "null".to_string(),
        FieldValue::LongStr(s) => binary(s.as_bytes()),
        FieldValue::ByteArray(b) => binary(b),
        FieldValue::F32(f) => float(f64::from(*f)),
        FieldValue::F64(f) => float(*f),
        FieldValue::Timestamp(t) => t.to_string(),
        FieldValue::Decimal { scale, value } => format!("{{decimal,{scale},{value}}}"),
        FieldValue::Array(a) => {
            // A list of printable character codes prints as a string.
            let chars: Option<Vec<u8>> = a
                .iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|i| u8::try_from(i).ok())
                        .filter(|&c| printable(c))
                })
                .collect();
            match chars {
                Some(s) if !s.is_empty() => {
                    let quoted = binary(&s);
                    format!("\"{}\"", &quoted[3..quoted.len() - 3])
                }
                _ => {
                    let items: Vec<String> = a.iter().map(erlang_term).collect();
                    format!("[{}]", items.join(","))
                }
            }
        }
        FieldValue::Table(t) => {
            let mut entries: Vec<&(ShortStr, FieldValue)> = t.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let items: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} => {}", binary(k.as_bytes()), erlang_term(v)))
                .collect();
            format!("#{{{}}}", items.join(","))
        }
        other => other
            .as_i64()
            .map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

/// The policy keys RabbitMQ's own validator (`rabbit_policies`) takes, with
/// the error text for a bad value (`None`: valid).
fn rabbit_policies_error(key: &str, v: &FieldValue) -> Option<Option<String>> {
    let bin = |ok: &[&[u8]]| match v.as_bytes() {
        Some(b) => ok.is_empty() || ok.contains(&b),
        None => false,
    };
    let int = |min: i64, max: i64| v.as_i64().is_some_and(|i| (min..=max).contains(&i));
    let (ok, what) = match key {
        "alternate-exchange" => (bin(&[]), "is not a valid alternate exchange name"),
        "dead-letter-exchange" => (bin(&[]), "is not a valid dead letter exchange name"),
        "dead-letter-routing-key" => (bin(&[]), "is not a valid dead letter routing key"),
        "dead-letter-strategy" => (
            bin(&[b"at-most-once", b"at-least-once"]),
            "is not a valid dead letter strategy",
        ),
        "message-ttl" => (int(0, i64::MAX), "is not a valid message TTL"),
        "expires" => (int(1, i64::MAX), "is not a valid queue expiry"),
        "max-length" => (int(0, i64::MAX), "is not a valid maximum length"),
        "max-length-bytes" => (int(0, i64::MAX), "is not a valid maximum length in bytes"),
        // (sic: RabbitMQ words both alike)
        "max-in-memory-length" | "max-in-memory-bytes" => {
            (int(0, i64::MAX), "is not a valid maximum memory in bytes")
        }
        "queue-mode" => (bin(&[b"default", b"lazy"]), "is not a valid queue-mode value"),
        "queue-version" => (int(1, 2), "is not a valid queue-version value"),
        "overflow" => (
            bin(&[b"drop-head", b"reject-publish", b"reject-publish-dlx"]),
            "is not a valid overflow value",
        ),
        "delivery-limit" => (int(0, i64::MAX), "is not a valid delivery limit"),
        "max-age" => (v.as_bytes().is_some_and(valid_max_age), "is not a valid max age"),
        "queue-leader-locator" => (
            bin(&[b"client-local", b"balanced", b"random", b"least-leaders"]),
            "is not a valid queue leader locator value",
        ),
        "initial-cluster-size" => (int(0, i64::MAX), "is not a valid cluster size"),
        "stream-max-segment-size-bytes" => (int(0, 3_000_000_000), "is not a valid segment size"),
        _ => return None,
    };
    Some((!ok).then(|| format!("{} {what}", erlang_term(v))))
}

/// `rabbit_amqqueue:check_max_age`: digits (more than zero) and a unit.
fn valid_max_age(b: &[u8]) -> bool {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let (n, unit) = b.split_at(digits);
    let positive = n.iter().any(|&c| c != b'0');
    positive && matches!(unit, b"Y" | b"M" | b"D" | b"h" | b"m" | b"s")
}

const MIRROR_KEYS: &[&str] = &[
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-sync-batch-size",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
];

/// Classic mirrored queue settings (`rabbit_mirror_queue_misc`): warren
/// has no mirrors, but takes and checks them as RabbitMQ does.
fn mirror_error(def: &[&(ShortStr, FieldValue)]) -> Option<String> {
    let get = |k: &str| {
        def.iter()
            .find(|(key, _)| key.as_bytes() == k.as_bytes())
            .map(|(_, v)| v)
    };
    let show = |v: Option<&FieldValue>| v.map_or_else(|| "none".to_string(), erlang_term);
    let one_of = |v: Option<&FieldValue>, ok: &[&[u8]]| {
        v.is_none_or(|v| v.as_bytes().is_some_and(|b| ok.contains(&b)))
    };
    let mode = get("ha-mode");
    if MIRROR_KEYS.iter().all(|k| get(k).is_none()) {
        return None;
    }
    let Some(mode) = mode else {
        return Some(
            "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown".into(),
        );
    };
    let params = get("ha-params");
    match mode.as_bytes() {
        Some(b"all") => {
            if params.is_some() {
                return Some("ha-mode=\"all\" does not take parameters".into());
            }
        }
        Some(b"exactly") => {
            if params.and_then(|p| p.as_i64()).is_none_or(|n| n <= 0) {
                return Some(format!(
                    "ha-mode=\"exactly\" takes an integer, {} given",
                    show(params)
                ));
            }
        }
        Some(b"nodes") => match params {
            Some(FieldValue::Array(a)) if a.is_empty() => {
                return Some("ha-mode=\"nodes\" list must be non-empty".into());
            }
            Some(FieldValue::Array(a)) => {
                let bad: Vec<&FieldValue> = a.iter().filter(|n| n.as_bytes().is_none()).collect();
                if !bad.is_empty() {
                    let items: Vec<String> = bad.into_iter().map(erlang_term).collect();
                    return Some(format!(
                        "ha-mode=\"nodes\" takes a list of strings, [{}] was not a string",
                        items.join(",")
                    ));
                }
            }
            other => return Some(format!("ha-mode=\"nodes\" takes a list, {} given", show(other))),
        },
        _ => return Some(format!("{} is not a valid ha-mode value", erlang_term(mode))),
    }
    let sync = get("ha-sync-mode");
    if !one_of(sync, &[b"automatic", b"manual"]) {
        return Some(format!(
            "ha-sync-mode must be \"manual\" or \"automatic\", got {}",
            show(sync)
        ));
    }
    let batch = get("ha-sync-batch-size");
    if batch.is_some_and(|b| b.as_i64().is_none_or(|n| n <= 0)) {
        return Some(format!(
            "ha-sync-batch-size takes an integer greater than 0, {} given",
            show(batch)
        ));
    }
    for key in ["ha-promote-on-shutdown", "ha-promote-on-failure"] {
        let v = get(key);
        if !one_of(v, &[b"always", b"when-synced"]) {
            return Some(format!(
                "{key} must be \"always\" or \"when-synced\", got {}",
                show(v)
            ));
        }
    }
    None
}

/// Checks a policy definition as RabbitMQ 3.10 does (`rabbit_policy`
/// validation with the validators `rabbit` registers), with its texts.
/// Every key RabbitMQ takes is accepted; warren applies `message-ttl`,
/// `expires`, `max-length`, `max-length-bytes`, `overflow`,
/// `dead-letter-exchange`, `dead-letter-routing-key` and
/// `alternate-exchange`, and ignores the rest (mirroring, queue modes and
/// versions, quorum and stream settings).
pub fn validate_policy(def: &FieldTable) -> Result<(), String> {
    if def.is_empty() {
        return Err("no policy provided".into());
    }
    // RabbitMQ sees the definition as a JSON map: keys in order, no duplicates.
    let mut terms: Vec<&(ShortStr, FieldValue)> = def.iter().collect();
    terms.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let dups: Vec<String> = terms
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| {
            erlang_term(&FieldValue::LongStr(crate::protocol::LongStr::new(
                w[0].0.bytes().clone(),
            )))
        })
        .collect();
    if !dups.is_empty() {
        return Err(format!("[{}] duplicate keys not allowed", dups.join(",")));
    }
    let mut unknown = Vec::new();
    for (k, v) in &terms {
        match rabbit_policies_error(&k.as_str(), v) {
            Some(Some(e)) => return Err(e),
            Some(None) => {}
            None => {
                let key = k.as_str();
                if !MIRROR_KEYS.contains(&&*key) && key != "queue-master-locator" {
                    unknown.push(format!(
                        "{{{},{}}}",
                        erlang_term(&FieldValue::LongStr(crate::protocol::LongStr::new(
                            k.bytes().clone()
                        ))),
                        erlang_term(v)
                    ));
                }
            }
        }
    }
    if let Some(e) = mirror_error(&terms) {
        return Err(e);
    }
    if let Some((_, v)) = terms
        .iter()
        .find(|(k, _)| k.as_bytes() == b"queue-master-locator")
        && !v
            .as_bytes()
            .is_some_and(|b| matches!(b, b"client-local" | b"min-masters" | b"random"))
    {
        return Err(format!("{} invalid queue-master-locator value", erlang_term(v)));
    }
    if !unknown.is_empty() {
        return Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(",")
        ));
    }
    Ok(())
}
