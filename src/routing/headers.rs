//! The headers exchange's matching rule, after RabbitMQ's
//! `rabbit_exchange_type_headers` (3.10 and later, which added the
//! `-with-x` variants).
//!
//! RabbitMQ sorts both the binding's arguments and the message's headers by
//! key and merges them. Entries with equal keys therefore pair up in order:
//! the n-th binding entry for a key is compared with the n-th header for that
//! key. Matching each binding entry against the header at the same occurrence
//! index gives the same answer without sorting the headers (which would cost
//! an allocation per message).

use super::erlang::{erl_eq, type_name, write_term};
use crate::protocol::{FieldTable, FieldValue};

/// The `x-match` modes. Anything unrecognised means `All`: RabbitMQ's
/// `parse_x_match/1` falls back to `all` for bindings made before it
/// validated the argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    /// RabbitMQ reads the first `x-match` entry (`rabbit_misc:table_lookup`)
    /// and accepts only a `longstr` (`S`), not a byte array.
    fn of(args: &FieldTable) -> XMatch {
        match args.get("x-match") {
            Some(FieldValue::LongStr(s)) => match s.as_bytes() {
                b"any" => XMatch::Any,
                b"all-with-x" => XMatch::AllWithX,
                b"any-with-x" => XMatch::AnyWithX,
                _ => XMatch::All,
            },
            _ => XMatch::All,
        }
    }
}

/// Whether a message with `headers` (`None`: the message has no headers
/// property, which matches like an empty table) matches a headers-exchange
/// binding with `binding_args`.
///
/// - `x-match` is `all` (the default), `any`, `all-with-x` or `any-with-x`.
/// - The `x-match` entry itself never takes part. Other entries whose key
///   starts with `x-` take part only under the `-with-x` modes.
/// - A binding entry of type void (`V`) matches when the header is present,
///   whatever its value (RabbitMQ: "a 'no value' in a pattern field is
///   supposed to mean simple presence").
/// - Values compare as Erlang's `==` on RabbitMQ's decoded terms: the type
///   tag is ignored at the top level (`I 1` matches `l 1`, `d 1.0` and
///   `T 1`; `S "a"` matches `x "a"`) but not inside tables and arrays.
/// - `all` with no entries left matches every message; `any` with none
///   matches no message.
///
/// Pure function; the arguments need not be sorted.
pub fn headers_match(binding_args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let sorted = binding_args
        .0
        .windows(2)
        .all(|w| w[0].0.as_bytes() <= w[1].0.as_bytes());
    let headers = headers.map_or(&[][..], |h| &h.0[..]);
    if sorted {
        match_with(binding_args, headers, |i| {
            // Equal keys sit next to each other.
            let key = binding_args.0[i].0.as_bytes();
            binding_args.0[..i]
                .iter()
                .rev()
                .take_while(|(k, _)| k.as_bytes() == key)
                .count()
        })
    } else {
        match_with(binding_args, headers, |i| {
            let key = binding_args.0[i].0.as_bytes();
            binding_args.0[..i]
                .iter()
                .filter(|(k, _)| k.as_bytes() == key)
                .count()
        })
    }
}

/// `occurrence(i)`: how many entries before entry `i` have its key, in the
/// order a stable sort by key would leave them.
fn match_with(
    args: &FieldTable,
    headers: &[(crate::protocol::ShortStr, FieldValue)],
    occurrence: impl Fn(usize) -> usize,
) -> bool {
    let mode = XMatch::of(args);
    let all = matches!(mode, XMatch::All | XMatch::AllWithX);
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    for (i, (key, want)) in args.iter().enumerate() {
        let key = key.as_bytes();
        if key == b"x-match" || (!with_x && key.starts_with(b"x-")) {
            continue;
        }
        let n = occurrence(i);
        let matched = headers
            .iter()
            .filter(|(k, _)| k.as_bytes() == key)
            .nth(n)
            .is_some_and(|(_, got)| matches!(want, FieldValue::Void) || erl_eq(want, got));
        if matched != all {
            // A miss decides `all`, a hit decides `any`.
            return matched;
        }
    }
    all
}

/// RabbitMQ's `validate_binding/2` for headers exchanges: the text of the
/// 406 PRECONDITION_FAILED it closes the channel with, without the
/// `PRECONDITION_FAILED - ` prefix.
pub(crate) fn validate(args: &FieldTable) -> Result<(), String> {
    let Some(value) = args.get("x-match") else {
        return Ok(());
    };
    let mut text = String::new();
    match value {
        FieldValue::LongStr(s) => match s.as_bytes() {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => return Ok(()),
            _ => {
                text.push_str("Invalid x-match field value ");
                write_term(&mut text, value);
                text.push_str("; expected all, any, all-with-x, or any-with-x");
            }
        },
        _ => {
            text.push_str("Invalid x-match field type ");
            text.push_str(type_name(value));
            text.push_str(" (value ");
            write_term(&mut text, value);
            text.push_str("); expected longstr");
        }
    }
    Err(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LongStr, ShortStr};
    use bytes::Bytes;

    fn t(entries: &[(&'static str, FieldValue)]) -> FieldTable {
        entries
            .iter()
            .map(|(k, v)| (ShortStr::from(*k), v.clone()))
            .collect()
    }
    fn s(v: &'static str) -> FieldValue {
        FieldValue::LongStr(LongStr::from_static(v))
    }
    fn m(args: &[(&'static str, FieldValue)], headers: Option<&[(&'static str, FieldValue)]>) -> bool {
        let h = headers.map(t);
        headers_match(&t(args), h.as_ref())
    }

    // The cases below were each run against RabbitMQ 3.10.8 first; the
    // expected outcome is what it routed.

    #[test]
    fn empty_all_matches_everything_and_empty_any_nothing() {
        let headers = [("x-foo", s("1")), ("a", s("b"))];
        for h in [None, Some(&headers[..])] {
            assert!(m(&[], h));
            assert!(m(&[("x-match", s("all"))], h));
            assert!(!m(&[("x-match", s("any"))], h));
            // `x-` entries do not count as entries for `any`, even when the
            // message carries the same header.
            assert!(!m(&[("x-match", s("any")), ("x-foo", s("1"))], h));
        }
    }

    #[test]
    fn x_entries_are_ignored_unless_with_x() {
        let with_x_foo = [("a", s("1")), ("x-foo", s("bar"))];
        let without = [("a", s("1"))];
        let all = [("x-match", s("all")), ("x-foo", s("bar")), ("a", s("1"))];
        let all_x = [("x-match", s("all-with-x")), ("x-foo", s("bar")), ("a", s("1"))];
        let any_x = [("x-match", s("any-with-x")), ("x-foo", s("bar"))];
        let any = [("x-match", s("any")), ("x-foo", s("bar"))];
        assert!(m(&all, Some(&without)));
        assert!(!m(&all_x, Some(&without)));
        assert!(!m(&any_x, Some(&without)));
        assert!(!m(&any, Some(&without)));
        assert!(m(&all, Some(&with_x_foo)));
        assert!(m(&all_x, Some(&with_x_foo)));
        assert!(m(&any_x, Some(&with_x_foo)));
        assert!(!m(&any, Some(&with_x_foo)));
    }

    #[test]
    fn the_x_match_entry_never_has_to_match() {
        // The message has no `x-match` header, yet `all-with-x` matches.
        assert!(m(
            &[("x-match", s("all-with-x")), ("a", s("1"))],
            Some(&[("a", s("1"))])
        ));
    }

    #[test]
    fn void_matches_presence() {
        let h = [("a", FieldValue::I32(12345))];
        assert!(m(&[("a", FieldValue::Void)], Some(&h)));
        assert!(m(&[("a", FieldValue::Void), ("x-match", s("any"))], Some(&h)));
        assert!(!m(&[("a", FieldValue::Void), ("b", s("2"))], Some(&h)));
        assert!(!m(&[("a", FieldValue::Void)], None));
        // A void header only matches a void (presence) binding entry.
        let void = [("a", FieldValue::Void)];
        assert!(m(&[("a", FieldValue::Void)], Some(&void)));
        assert!(!m(&[("a", s("v"))], Some(&void)));
    }

    #[test]
    fn values_compare_as_erlang_terms() {
        let long1 = [("a", FieldValue::I64(1))];
        assert!(m(&[("a", FieldValue::I32(1))], Some(&long1)));
        assert!(m(&[("a", FieldValue::F64(1.0))], Some(&long1)));
        assert!(m(&[("a", FieldValue::Timestamp(1))], Some(&long1)));
        assert!(!m(&[("a", s("1"))], Some(&long1)));
        assert!(!m(&[("a", FieldValue::Bool(true))], Some(&long1)));
        let bytes = [("a", FieldValue::ByteArray(Bytes::from_static(b"xy")))];
        assert!(m(&[("a", s("xy"))], Some(&bytes)));
        let yes = [("a", FieldValue::Bool(true))];
        assert!(!m(&[("a", FieldValue::I32(1))], Some(&yes)));
    }

    #[test]
    fn any_needs_one_and_all_needs_every() {
        let any = |a, b| [("x-match", s("any")), ("a", s(a)), ("b", s(b))];
        assert!(m(&any("1", "2"), Some(&[("b", s("2"))])));
        assert!(!m(&any("9", "9"), Some(&[("b", s("2"))])));
        let h = [("a", s("1")), ("c", s("3"))];
        assert!(!m(&[("a", s("1")), ("b", s("2"))], Some(&h)));
        assert!(m(&[("a", s("1"))], Some(&h)));
    }

    #[test]
    fn repeated_keys_pair_up_in_order() {
        // RabbitMQ's merge pairs the n-th binding entry for a key with the
        // n-th header for it (both lists stably sorted by key). Every case
        // here was also sent to RabbitMQ 3.10.8 as hand-encoded tables.
        let h = [("a", s("1")), ("a", s("2"))];
        assert!(m(&[("a", s("1")), ("a", s("2"))], Some(&h)));
        assert!(!m(&[("a", s("2")), ("a", s("1"))], Some(&h)));
        assert!(m(&[("a", s("1"))], Some(&h)));
        assert!(!m(&[("a", s("2"))], Some(&h)));
        assert!(!m(&[("a", s("1")), ("a", s("2")), ("a", s("3"))], Some(&h)));
        // Unsorted arguments pair the same way once RabbitMQ sorts them.
        assert!(m(
            &[("a", s("1")), ("b", s("x")), ("a", s("2"))],
            Some(&[("b", s("x")), ("a", s("1")), ("a", s("2"))])
        ));
        assert!(m(
            &[("x-match", s("any")), ("a", s("9")), ("b", s("x")), ("a", s("2"))],
            Some(&[("a", s("1")), ("a", s("2"))])
        ));
    }

    #[test]
    fn unknown_x_match_means_all() {
        let h = [("a", s("1"))];
        assert!(!m(
            &[("x-match", s("foo")), ("a", s("1")), ("b", s("2"))],
            Some(&h)
        ));
        // A byte array is not a longstr: `any` sent as `x` is read as `all`.
        let bytes_any = ("x-match", FieldValue::ByteArray(Bytes::from_static(b"any")));
        assert!(!m(&[bytes_any.clone(), ("a", s("1")), ("b", s("2"))], Some(&h)));
        assert!(m(&[bytes_any, ("a", s("1"))], Some(&h)));
    }

    #[test]
    fn validation_texts_match_rabbitmq() {
        let v = |x: FieldValue| validate(&t(&[("x-match", x)]));
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(v(FieldValue::LongStr(LongStr::from_static(ok))), Ok(()));
        }
        assert_eq!(validate(&t(&[("a", s("b"))])), Ok(()));
        // Reply texts from RabbitMQ 3.10.8, less "PRECONDITION_FAILED - ".
        let value = |shown: &str| {
            Err(format!(
                "Invalid x-match field value {shown}; expected all, any, all-with-x, or any-with-x"
            ))
        };
        assert_eq!(v(s("foo")), value(r#"<<"foo">>"#));
        assert_eq!(v(s("ALL")), value(r#"<<"ALL">>"#));
        assert_eq!(v(s("")), value("<<>>"));
        assert_eq!(v(s("café")), value(r#"<<"café">>"#));
        assert_eq!(v(s(r#"a"b\c"#)), value(r#"<<"a\"b\\c">>"#));
        let ty = |shown: &str| Err(format!("Invalid x-match field type {shown}); expected longstr"));
        assert_eq!(v(FieldValue::I32(1)), ty("signedint (value 1"));
        assert_eq!(
            v(FieldValue::ByteArray(Bytes::from_static(b"all"))),
            ty(r#"binary (value <<"all">>"#)
        );
        assert_eq!(
            v(FieldValue::ByteArray(Bytes::from_static(&[1, 2]))),
            ty("binary (value <<1,2>>")
        );
        assert_eq!(v(FieldValue::Void), ty("void (value undefined"));
        assert_eq!(v(FieldValue::Bool(true)), ty("bool (value true"));
        assert_eq!(v(FieldValue::F64(1.5)), ty("double (value 1.5"));
        assert_eq!(v(FieldValue::Timestamp(5)), ty("timestamp (value 5"));
        assert_eq!(
            v(FieldValue::Array(vec![s("all")])),
            ty(r#"array (value [{longstr,<<"all">>}]"#)
        );
        let table = FieldValue::Table(t(&[("k", s("v"))]));
        assert_eq!(v(table), ty(r#"table (value [{<<"k">>,longstr,<<"v">>}]"#));
    }
}
