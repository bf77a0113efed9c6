//! Field tables as JSON, the way RabbitMQ's management API shows them.

use crate::protocol::{FieldTable, FieldValue, LongStr, ShortStr};
use base64::Engine;
use serde_json::{Map, Number, Value};

pub fn value_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(f) => Number::from_f64(*f as f64).map_or(Value::Null, Value::Number),
        FieldValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Decimal { scale, value } => {
            Number::from_f64(*value as f64 / 10f64.powi(*scale as i32)).map_or(Value::Null, Value::Number)
        }
        FieldValue::LongStr(s) => Value::String(s.as_str().into_owned()),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        FieldValue::Timestamp(t) => Value::Number((*t).into()),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
        FieldValue::ByteArray(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        other => other.as_i64().map_or(Value::Null, |i| Value::Number(i.into())),
    }
}

pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.iter() {
        m.insert(k.as_str().into_owned(), value_to_json(v));
    }
    Value::Object(m)
}

/// JSON arguments (from the HTTP API or definitions) as a field table, with
/// the types RabbitMQ picks: integers as `long`, strings as `longstr`.
pub fn json_to_table(v: &Value) -> Result<FieldTable, String> {
    let Value::Object(m) = v else {
        return Err("arguments must be a JSON object".into());
    };
    let mut t = FieldTable::new();
    for (k, v) in m {
        let key = ShortStr::new(bytes::Bytes::copy_from_slice(k.as_bytes()))
            .ok_or_else(|| format!("argument name too long: {k}"))?;
        t.insert(key, json_to_value(v)?);
    }
    Ok(t)
}

fn json_to_value(v: &Value) -> Result<FieldValue, String> {
    Ok(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(LongStr::from(s.clone())),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_to_value).collect::<Result<_, _>>()?),
        Value::Object(_) => FieldValue::Table(json_to_table(v)?),
    })
}

/// Message properties as the management API shows them.
pub fn props_to_json(p: &crate::protocol::BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortStr>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.as_str().into_owned()));
        }
    };
    s("content_type", &p.content_type);
    s("content_encoding", &p.content_encoding);
    s("correlation_id", &p.correlation_id);
    s("reply_to", &p.reply_to);
    s("expiration", &p.expiration);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("user_id", &p.user_id);
    s("app_id", &p.app_id);
    s("cluster_id", &p.cluster_id);
    if let Some(h) = &p.headers {
        m.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode {
        m.insert("delivery_mode".into(), Value::Number(d.into()));
    }
    if let Some(pr) = p.priority {
        m.insert("priority".into(), Value::Number(pr.into()));
    }
    if let Some(t) = p.timestamp {
        m.insert("timestamp".into(), Value::Number(t.into()));
    }
    Value::Object(m)
}

/// Properties from the management API's JSON (unknown keys are errors, as
/// in RabbitMQ).
pub fn json_to_props(v: &Value) -> Result<crate::protocol::BasicProperties, String> {
    let mut p = crate::protocol::BasicProperties::default();
    let Value::Object(m) = v else {
        return Err("properties must be a JSON object".into());
    };
    for (k, v) in m {
        let text = || -> Result<Option<ShortStr>, String> {
            let s = v
                .as_str()
                .ok_or_else(|| format!("property {k} must be a string"))?;
            Ok(Some(ShortStr::from_string_lossy(s)))
        };
        let int = |max: u64| -> Result<u64, String> {
            v.as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("property {k} must be an integer up to {max}"))
        };
        match k.as_str() {
            "content_type" => p.content_type = text()?,
            "content_encoding" => p.content_encoding = text()?,
            "correlation_id" => p.correlation_id = text()?,
            "reply_to" => p.reply_to = text()?,
            "expiration" => p.expiration = text()?,
            "message_id" => p.message_id = text()?,
            "type" => p.kind = text()?,
            "user_id" => p.user_id = text()?,
            "app_id" => p.app_id = text()?,
            "cluster_id" => p.cluster_id = text()?,
            "headers" => p.headers = Some(json_to_table(v)?),
            "delivery_mode" => p.delivery_mode = Some(int(2)? as u8),
            "priority" => p.priority = Some(int(255)? as u8),
            "timestamp" => p.timestamp = Some(int(u64::MAX)?),
            other => return Err(format!("unknown property {other}")),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_common_shapes() {
        let v = serde_json::json!({"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx", "nested": {"a": [1, "b", true, null]}});
        let t = json_to_table(&v).unwrap();
        assert_eq!(t.get("x-message-ttl"), Some(&FieldValue::I64(1000)));
        assert_eq!(table_to_json(&t), v);
    }
}
