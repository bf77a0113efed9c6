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
