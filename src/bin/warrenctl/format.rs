//! rabbitmqctl's table output: a header line of column names, then one
//! tab-separated line per row, values as rabbitmqctl prints them.

use serde_json::Value;

/// A value as rabbitmqctl shows it: strings bare, lists as `[a, b]`,
/// tables as Erlang-ish `[{"k",v}]`, null as nothing.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(cell).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "[{}]",
            o.iter()
                .map(|(k, v)| format!("{{\"{k}\",{}}}", v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Prints rows: `cols` are (header, JSON pointer) pairs.
pub fn table(header: bool, cols: &[(String, String)], rows: &[Value]) {
    if header {
        println!(
            "{}",
            cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join("\t")
        );
    }
    for r in rows {
        let line: Vec<String> = cols
            .iter()
            .map(|(_, ptr)| r.pointer(ptr).map(cell).unwrap_or_default())
            .collect();
        println!("{}", line.join("\t"));
    }
}

/// Column names a user asked for, mapped to JSON pointers (rabbitmqctl's
/// info keys where they differ from the API's field names).
pub fn columns(asked: &[String], default: &[&str], alias: &[(&str, &str)]) -> Vec<(String, String)> {
    let names: Vec<String> = if asked.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        asked.to_vec()
    };
    names
        .into_iter()
        .map(|n| {
            let ptr = alias
                .iter()
                .find(|(k, _)| *k == n)
                .map_or_else(|| format!("/{n}"), |(_, p)| p.to_string());
            (n, ptr)
        })
        .collect()
}
