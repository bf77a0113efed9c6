//! Property tests: the trie against a plain recursive matcher, the headers
//! rule against a literal port of RabbitMQ's merge, and whole binding tables
//! against a naive model under random bind/unbind/remove sequences.

use super::args::{canonical, identical};
use super::erlang::erl_eq;
use super::*;
use crate::protocol::{FieldValue, LongStr, ShortStr};
use bytes::Bytes;
use proptest::prelude::*;

fn k(s: &str) -> ShortStr {
    ShortStr::new(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}

/// Words as RabbitMQ splits them (none for the empty key).
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        vec![]
    } else {
        s.split('.').collect()
    }
}

/// The obvious recursive definition; exponential with many `#`, so only fed
/// short patterns.
fn ref_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|i| ref_match(rest, &key[i..])),
        Some((w, rest)) => !key.is_empty() && (*w == "*" || *w == key[0]) && ref_match(rest, &key[1..]),
    }
}

/// Small alphabet so that patterns and keys collide often; includes empty
/// words, `*` and `#` in keys, and words such as `a*` that are literal.
fn topic_key() -> impl Strategy<Value = String> {
    "[ab.*#]{0,8}"
}

fn sorted_unique(mut v: Vec<u32>) -> (Vec<u32>, bool) {
    let n = v.len();
    v.sort();
    v.dedup();
    let unique = v.len() == n;
    (v, unique)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trie_agrees_with_the_recursive_matcher(
        patterns in prop::collection::vec(topic_key(), 1..24),
        keys in prop::collection::vec(topic_key(), 1..12),
    ) {
        let mut trie = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.bind(&k(p), &FieldTable::new(), i as u32 % 7);
        }
        for key in &keys {
            let mut out = Vec::new();
            trie.route(key.as_bytes(), &mut out);
            let (got, unique) = sorted_unique(out);
            prop_assert!(unique, "duplicate destination for {:?}", key);
            let want: Vec<u32> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| ref_match(&words(p), &words(key)))
                .map(|(i, _)| i as u32 % 7)
                .collect();
            prop_assert_eq!(got, sorted_unique(want).0, "key {:?}", key);
        }
    }
}

/// Keys that start with `x-` or are `x-match` exercise the skipping rules.
fn header_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "x-k", "x-match"])
}

fn header_value() -> impl Strategy<Value = FieldValue> {
    prop::sample::select(vec![
        FieldValue::LongStr(LongStr::from_static("1")),
        FieldValue::LongStr(LongStr::from_static("any")),
        FieldValue::LongStr(LongStr::from_static("all")),
        FieldValue::LongStr(LongStr::from_static("any-with-x")),
        FieldValue::LongStr(LongStr::from_static("all-with-x")),
        FieldValue::ByteArray(Bytes::from_static(b"any")),
        FieldValue::I32(1),
        FieldValue::I64(1),
        FieldValue::F64(1.0),
        FieldValue::I32(2),
        FieldValue::Void,
    ])
}

fn header_table() -> impl Strategy<Value = FieldTable> {
    prop::collection::vec((header_key(), header_value()), 0..6)
        .prop_map(|v| v.into_iter().map(|(k, v)| (ShortStr::from(k), v)).collect())
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// `rabbit_exchange_type_headers:headers_match/5`, clause for clause, on
/// both tables sorted by key as RabbitMQ sorts them.
fn rabbit_headers_match(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let by_key = |a: &(ShortStr, FieldValue), b: &(ShortStr, FieldValue)| a.0.as_bytes().cmp(b.0.as_bytes());
    let mut p = args.0.clone();
    p.sort_by(by_key);
    let mut d = headers.map(|h| h.0.clone()).unwrap_or_default();
    d.sort_by(by_key);
    let mode = match p.iter().find(|(k, _)| k.as_bytes() == b"x-match").map(|(_, v)| v) {
        Some(FieldValue::LongStr(s)) if s.as_bytes() == b"any" => Mode::Any,
        Some(FieldValue::LongStr(s)) if s.as_bytes() == b"all-with-x" => Mode::AllWithX,
        Some(FieldValue::LongStr(s)) if s.as_bytes() == b"any-with-x" => Mode::AnyWithX,
        _ => Mode::All,
    };
    merge(&p, &d, true, false, mode)
}

fn merge(
    p: &[(ShortStr, FieldValue)],
    d: &[(ShortStr, FieldValue)],
    all_m: bool,
    any_m: bool,
    mode: Mode,
) -> bool {
    let is_all = matches!(mode, Mode::All | Mode::AllWithX);
    if !all_m && is_all {
        return false;
    }
    if any_m && !is_all {
        return true;
    }
    let Some(((pk, pv), p_rest)) = p.split_first() else {
        return if is_all { all_m } else { any_m };
    };
    let pk = pk.as_bytes();
    if pk == b"x-match" {
        return merge(p_rest, d, all_m, any_m, mode);
    }
    if pk.starts_with(b"x-") && matches!(mode, Mode::All | Mode::Any) {
        return merge(p_rest, d, all_m, any_m, mode);
    }
    let Some(((dk, dv), d_rest)) = d.split_first() else {
        return merge(&[], &[], false, any_m, mode);
    };
    let dk = dk.as_bytes();
    if pk > dk {
        return merge(p, d_rest, all_m, any_m, mode);
    }
    if pk < dk {
        return merge(p_rest, d, false, any_m, mode);
    }
    if matches!(pv, FieldValue::Void) || erl_eq(pv, dv) {
        merge(p_rest, d_rest, all_m, true, mode)
    } else {
        merge(p_rest, d_rest, false, any_m, mode)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn headers_match_agrees_with_rabbitmqs_merge(
        args in header_table(),
        headers in prop::option::of(header_table()),
    ) {
        prop_assert_eq!(
            headers_match(&args, headers.as_ref()),
            rabbit_headers_match(&args, headers.as_ref())
        );
    }
}

/// Argument tables for the model test. Some are reorderings of others (same
/// binding) and some differ only in a type tag (different bindings).
fn arg_pool() -> Vec<FieldTable> {
    let s = |v: &'static str| FieldValue::LongStr(LongStr::from_static(v));
    let t = |e: Vec<(&'static str, FieldValue)>| e.into_iter().map(|(k, v)| (ShortStr::from(k), v)).collect();
    vec![
        FieldTable::new(),
        t(vec![("x-match", s("any")), ("a", s("1"))]),
        t(vec![("a", s("1")), ("x-match", s("any"))]),
        t(vec![("a", FieldValue::I32(1))]),
        t(vec![("a", FieldValue::I64(1))]),
        t(vec![("a", s("1")), ("b", s("2"))]),
        t(vec![("b", s("2")), ("a", s("1"))]),
        t(vec![("x-match", s("all-with-x")), ("x-k", s("v"))]),
    ]
}

/// Which pool entries are the same binding arguments.
const ARG_CLASS: [usize; 8] = [0, 1, 1, 3, 4, 5, 5, 7];

const KEY_POOL: [&str; 7] = ["", "a", "a.b", "a.*", "#", "*.b", "a..b"];

fn message_headers() -> Vec<Option<FieldTable>> {
    let s = |v: &'static str| FieldValue::LongStr(LongStr::from_static(v));
    let t = |e: Vec<(&'static str, FieldValue)>| {
        Some(e.into_iter().map(|(k, v)| (ShortStr::from(k), v)).collect())
    };
    vec![
        None,
        t(vec![("a", s("1"))]),
        t(vec![("a", FieldValue::I64(1)), ("b", s("2"))]),
        t(vec![("x-k", s("v"))]),
        t(vec![("b", s("2")), ("a", s("1"))]),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Bind(usize, usize, u32),
    Unbind(usize, usize, u32),
    RemoveDest(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let dest = 0u32..5;
    prop_oneof![
        4 => (0..KEY_POOL.len(), 0..ARG_CLASS.len(), dest.clone()).prop_map(|(k, a, d)| Op::Bind(k, a, d)),
        3 => (0..KEY_POOL.len(), 0..ARG_CLASS.len(), dest.clone()).prop_map(|(k, a, d)| Op::Unbind(k, a, d)),
        1 => dest.prop_map(Op::RemoveDest),
    ]
}

fn kind() -> impl Strategy<Value = ExchangeKind> {
    prop::sample::select(vec![
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bindings_agree_with_a_naive_model(kind in kind(), ops in prop::collection::vec(op(), 1..60)) {
        let pool = arg_pool();
        let mut b = Bindings::new(kind);
        // The model: a set of (key index, argument class, destination).
        let mut model: Vec<(usize, usize, u32)> = Vec::new();
        for op in ops {
            match op {
                Op::Bind(ki, ai, d) => {
                    let id = (ki, ARG_CLASS[ai], d);
                    let new = !model.contains(&id);
                    if new {
                        model.push(id);
                    }
                    prop_assert_eq!(b.bind(&k(KEY_POOL[ki]), &pool[ai], d), new, "{:?}", op);
                }
                Op::Unbind(ki, ai, d) => {
                    let id = (ki, ARG_CLASS[ai], d);
                    let had = model.contains(&id);
                    model.retain(|m| *m != id);
                    prop_assert_eq!(b.unbind(&k(KEY_POOL[ki]), &pool[ai], d), had, "{:?}", op);
                }
                Op::RemoveDest(d) => {
                    let had = model.iter().filter(|m| m.2 == d).count();
                    model.retain(|m| m.2 != d);
                    prop_assert_eq!(b.remove_destination(d), had);
                }
            }
            prop_assert_eq!(b.len(), model.len());
            for d in 0..5 {
                prop_assert_eq!(b.has_destination(d), model.iter().any(|m| m.2 == d));
            }
            let mut listed: Vec<(usize, usize, u32)> = b
                .iter()
                .map(|(key, args, d)| {
                    let ki = KEY_POOL.iter().position(|p| p.as_bytes() == key.as_bytes()).unwrap();
                    let ai = (0..pool.len()).find(|&i| identical(args, &canonical(&pool[i]))).unwrap();
                    (ki, ARG_CLASS[ai], d)
                })
                .collect();
            listed.sort();
            let mut want = model.clone();
            want.sort();
            prop_assert_eq!(listed, want);
            for (rk, headers) in KEY_POOL.iter().zip(message_headers().iter().cycle()) {
                let mut out = vec![];
                b.route(rk.as_bytes(), headers.as_ref(), &mut out);
                let (got, unique) = sorted_unique(out);
                prop_assert!(unique, "duplicate destination");
                let want: Vec<u32> = model
                    .iter()
                    .filter(|(ki, ai, _)| {
                        let key = KEY_POOL[*ki];
                        match kind {
                            ExchangeKind::Direct => key == *rk,
                            ExchangeKind::Fanout => true,
                            ExchangeKind::Topic => ref_match(&words(key), &words(rk)),
                            ExchangeKind::Headers => rabbit_headers_match(&pool[*ai], headers.as_ref()),
                        }
                    })
                    .map(|m| m.2)
                    .collect();
                prop_assert_eq!(got, sorted_unique(want).0, "{:?} {:?} {:?}", kind, rk, headers);
            }
        }
    }
}
