//! `x-` arguments of queues and exchanges: validation at declare time and
//! the equivalence RabbitMQ checks on redeclare (only the arguments it knows;
//! others may differ freely).

use crate::protocol::{AmqpError, FieldTable, FieldValue, ShortStr};

/// Queue arguments RabbitMQ compares on redeclare (`rabbit_amqqueue`).
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
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-version",
];

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
        FieldValue::Bool(b) => b.to_string(),
        other => match other.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// Same meaning for RabbitMQ: integers compare by value whatever their width.
fn same(a: &FieldValue, b: &FieldValue) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
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
            _ => false,
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

/// Type and range checks RabbitMQ applies to queue arguments at declare.
pub fn validate_queue_args(args: &FieldTable, name: &ShortStr, vhost: &str) -> Result<(), AmqpError> {
    for (k, v) in args.iter() {
        let key = k.as_str();
        let int = |min: i64, max: i64| -> Result<(), AmqpError> {
            match v.as_i64() {
                Some(i) if i < min => Err(invalid(&key, name, vhost, format!("{{value_negative,{i}}}"))),
                Some(i) if i > max => Err(invalid(
                    &key,
                    name,
                    vhost,
                    format!("{{value_too_large,{i},{max}}}"),
                )),
                Some(_) => Ok(()),
                None => Err(invalid(
                    &key,
                    name,
                    vhost,
                    format!("\"expected integer, got {}\"", type_name(v)),
                )),
            }
        };
        let string = || -> Result<(), AmqpError> {
            match v {
                FieldValue::LongStr(_) => Ok(()),
                _ => Err(invalid(
                    &key,
                    name,
                    vhost,
                    format!("{{unacceptable_type,{}}}", type_name(v)),
                )),
            }
        };
        match &*key {
            "x-message-ttl" => int(0, u32::MAX as i64)?,
            "x-expires" => match v.as_i64() {
                Some(0) => return Err(invalid(&key, name, vhost, "{value_zero,0}".into())),
                _ => int(1, u32::MAX as i64)?,
            },
            "x-max-length" | "x-max-length-bytes" => int(0, i64::MAX)?,
            "x-max-priority" => int(0, 255)?,
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => string()?,
            "x-overflow" => {
                string()?;
                let ok = matches!(
                    v.as_bytes(),
                    Some(b"drop-head" | b"reject-publish" | b"reject-publish-dlx")
                );
                if !ok {
                    return Err(invalid(
                        &key,
                        name,
                        vhost,
                        format!("{{unacceptable_value,{}}}", show(v)),
                    ));
                }
            }
            "x-queue-type" => {
                string()?;
                if v.as_bytes() != Some(b"classic") {
                    return Err(AmqpError::precondition(format!(
                        "invalid arg 'x-queue-type' for queue '{name}' in vhost '{vhost}': only 'classic' queues are supported by warren"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks an exchange's arguments at declare.
pub fn validate_exchange_args(args: &FieldTable, name: &ShortStr, vhost: &str) -> Result<(), AmqpError> {
    if let Some(v) = args.get("alternate-exchange")
        && !matches!(v, FieldValue::LongStr(_))
    {
        return Err(AmqpError::precondition(format!(
            "invalid arg 'alternate-exchange' for exchange '{name}' in vhost '{vhost}': {{unacceptable_type,{}}}",
            type_name(v)
        )));
    }
    Ok(())
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

/// The policy keys warren applies, with RabbitMQ's checks.
pub fn validate_policy(def: &FieldTable) -> Result<(), String> {
    if def.is_empty() {
        return Err("a policy needs a definition".into());
    }
    for (k, v) in def.iter() {
        let key = k.as_str();
        let ok = match &*key {
            "message-ttl" | "max-length" | "max-length-bytes" => v.as_i64().is_some_and(|i| i >= 0),
            "expires" => v.as_i64().is_some_and(|i| i >= 1),
            "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => {
                matches!(v, FieldValue::LongStr(_))
            }
            "overflow" => matches!(
                v.as_bytes(),
                Some(b"drop-head" | b"reject-publish" | b"reject-publish-dlx")
            ),
            other => return Err(format!("unrecognised policy key '{other}'")),
        };
        if !ok {
            return Err(format!("invalid value for policy key '{key}'"));
        }
    }
    Ok(())
}
