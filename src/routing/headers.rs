//! Headers-exchange matching, as RabbitMQ's `rabbit_exchange_type_headers`:
//! `x-match` is `all` (the default), `any`, `all-with-x` or `any-with-x`;
//! plain `all`/`any` ignore binding arguments whose names start with `x-`;
//! a binding value of type void matches any value of a present header;
//! values compare by value (integers of different widths are equal).

use crate::protocol::{FieldTable, FieldValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

fn mode(args: &FieldTable) -> Mode {
    match args.get("x-match").and_then(|v| v.as_bytes()) {
        Some(b"any") => Mode::Any,
        Some(b"all-with-x") => Mode::AllWithX,
        Some(b"any-with-x") => Mode::AnyWithX,
        _ => Mode::All,
    }
}

/// Equal as RabbitMQ compares header values (Erlang `==` on the values).
pub fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    let float = |v: &FieldValue| match *v {
        FieldValue::F32(f) => Some(f as f64),
        FieldValue::F64(f) => Some(f),
        _ => v.as_i64().map(|i| i as f64),
    };
    if let (Some(x), Some(y)) = (float(a), float(b)) {
        return x == y;
    }
    match (a, b) {
        (FieldValue::LongStr(x), FieldValue::ByteArray(y)) | (FieldValue::ByteArray(y), FieldValue::LongStr(x)) => {
            x.as_bytes() == &y[..]
        }
        _ => a == b,
    }
}

/// Does a message with `headers` match a binding with `args`?
pub fn headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let m = mode(args);
    let with_x = matches!(m, Mode::AllWithX | Mode::AnyWithX);
    let any = matches!(m, Mode::Any | Mode::AnyWithX);
    let empty = FieldTable::new();
    let headers = headers.unwrap_or(&empty);
    for (k, v) in args.iter() {
        let key = k.as_bytes();
        if key == b"x-match" || (!with_x && key.starts_with(b"x-")) {
            continue;
        }
        let hit = match headers.get_bytes(key) {
            None => false,
            Some(h) => matches!(v, FieldValue::Void) || same_value(v, h),
        };
        if any && hit {
            return true;
        }
        if !any && !hit {
            return false;
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ShortStr;

    fn t(pairs: &[(&'static str, FieldValue)]) -> FieldTable {
        pairs.iter().map(|(k, v)| (ShortStr::from_static(k), v.clone())).collect()
    }
    fn s(v: &'static str) -> FieldValue {
        FieldValue::from(v)
    }

    #[test]
    fn all_and_any() {
        let all = t(&[("x-match", s("all")), ("a", s("1")), ("b", FieldValue::I32(2))]);
        assert!(headers_match(&all, Some(&t(&[("a", s("1")), ("b", FieldValue::I64(2)), ("c", s("z"))]))));
        assert!(!headers_match(&all, Some(&t(&[("a", s("1"))]))));
        assert!(!headers_match(&all, None));
        let any = t(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(headers_match(&any, Some(&t(&[("b", s("2"))]))));
        assert!(!headers_match(&any, Some(&t(&[("b", s("3"))]))));
        assert!(headers_match(&t(&[]), None), "all with no arguments matches");
        assert!(!headers_match(&t(&[("x-match", s("any"))]), None), "any with nothing to match does not");
    }

    #[test]
    fn x_arguments_and_void() {
        let all = t(&[("x-tenant", s("a")), ("f", s("pdf"))]);
        assert!(headers_match(&all, Some(&t(&[("f", s("pdf"))]))));
        let allx = t(&[("x-match", s("all-with-x")), ("x-tenant", s("a"))]);
        assert!(!headers_match(&allx, Some(&t(&[("f", s("pdf"))]))));
        assert!(headers_match(&allx, Some(&t(&[("x-tenant", s("a"))]))));
        let anyx = t(&[("x-match", s("any-with-x")), ("x-tenant", s("a"))]);
        assert!(headers_match(&anyx, Some(&t(&[("x-tenant", s("a"))]))));
        let present = t(&[("k", FieldValue::Void)]);
        assert!(headers_match(&present, Some(&t(&[("k", FieldValue::Bool(false))]))));
        assert!(!headers_match(&present, Some(&t(&[]))));
    }
}
