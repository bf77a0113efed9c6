//! Unit tests of the routing layer through its public API.

use super::*;
use crate::protocol::{FieldValue, LongStr, ShortStr};
use bytes::Bytes;

fn k(s: &str) -> ShortStr {
    ShortStr::new(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}
fn t(entries: &[(&'static str, FieldValue)]) -> FieldTable {
    entries
        .iter()
        .map(|(k, v)| (ShortStr::from(*k), v.clone()))
        .collect()
}
fn s(v: &'static str) -> FieldValue {
    FieldValue::LongStr(LongStr::from_static(v))
}
fn none() -> FieldTable {
    FieldTable::new()
}
fn route<D: Copy + Eq + std::hash::Hash + Ord + std::fmt::Debug>(
    b: &Bindings<D>,
    key: &str,
    headers: Option<&FieldTable>,
) -> Vec<D> {
    let mut out = Vec::new();
    b.route(key.as_bytes(), headers, &mut out);
    let n = out.len();
    out.sort();
    out.dedup();
    assert_eq!(n, out.len(), "a destination came out twice for {key:?}");
    out
}

/// Live RabbitMQ 3.10.8: each routing key was published to a topic exchange
/// with one queue bound per pattern below; these are the patterns whose
/// queue received the message.
#[test]
fn topic_matches_rabbitmq_on_empty_words_and_wildcards() {
    let patterns = [
        "", "#", "*", "#.#", "*.#", "#.*", ".", "*.*", "a", "a.", ".a", "a.#", "#.a", "a.*", "*.a", "#.",
        ".#", "*.", ".*", "a.#.b", "a.*.b", "a.b", "a..b", "#.#.a", "a.#.#",
    ];
    let seen: &[(&str, &[&str])] = &[
        ("", &["", "#", "#.#"]),
        (
            "a",
            &["#", "*", "#.#", "*.#", "#.*", "a", "a.#", "#.a", "#.#.a", "a.#.#"],
        ),
        (
            "a.",
            &[
                "#", "#.#", "*.#", "#.*", "*.*", "a.", "a.#", "a.*", "#.", "*.", "a.#.#",
            ],
        ),
        (
            ".a",
            &[
                "#", "#.#", "*.#", "#.*", "*.*", ".a", "#.a", "*.a", ".#", ".*", "#.#.a",
            ],
        ),
        (
            ".",
            &["#", "#.#", "*.#", "#.*", ".", "*.*", "#.", ".#", "*.", ".*"],
        ),
        ("..", &["#", "#.#", "*.#", "#.*", "#.", ".#"]),
        (
            "a.b",
            &[
                "#", "#.#", "*.#", "#.*", "*.*", "a.#", "a.*", "a.#.b", "a.b", "a.#.#",
            ],
        ),
        (
            "a..b",
            &["#", "#.#", "*.#", "#.*", "a.#", "a.#.b", "a.*.b", "a..b", "a.#.#"],
        ),
        (
            "a.x.b",
            &["#", "#.#", "*.#", "#.*", "a.#", "a.#.b", "a.*.b", "a.#.#"],
        ),
        ("#", &["#", "*", "#.#", "*.#", "#.*"]),
        ("*", &["#", "*", "#.#", "*.#", "#.*"]),
    ];
    let mut b = Bindings::new(ExchangeKind::Topic);
    let mut trie = TopicTrie::new();
    for (i, p) in patterns.iter().enumerate() {
        assert!(b.bind(&k(p), &none(), i));
        assert!(trie.bind(&k(p), &none(), i));
    }
    for (key, want) in seen {
        let mut want: Vec<usize> = want
            .iter()
            .map(|w| patterns.iter().position(|p| p == w).unwrap())
            .collect();
        want.sort();
        assert_eq!(route(&b, key, None), want, "routing key {key:?}");
        let mut out = Vec::new();
        trie.route(key.as_bytes(), &mut out);
        out.sort();
        assert_eq!(out, want, "trie, routing key {key:?}");
    }
}

#[test]
fn topic_literal_words_are_whole_words() {
    let mut b = Bindings::new(ExchangeKind::Topic);
    b.bind(&k("a*.b"), &none(), 1);
    b.bind(&k("a#"), &none(), 2);
    b.bind(&k("stock.*.nyse"), &none(), 3);
    assert_eq!(route(&b, "a*.b", None), [1]);
    assert_eq!(route(&b, "ax.b", None), [0; 0]);
    assert_eq!(route(&b, "a#", None), [2]);
    assert_eq!(route(&b, "a", None), [0; 0]);
    assert_eq!(route(&b, "stock.usd.nyse", None), [3]);
    assert_eq!(route(&b, "stock.nyse", None), [0; 0]);
    assert_eq!(route(&b, "stock.usd.eur.nyse", None), [0; 0]);
}

#[test]
fn topic_survives_many_hashes() {
    // A recursive matcher explores exponentially many ways to split the key
    // among the `#`s; the state-set walk stays linear in the key's words.
    let pattern = std::iter::repeat_n("#", 40).collect::<Vec<_>>().join(".") + ".end";
    let mut b = Bindings::new(ExchangeKind::Topic);
    b.bind(&k(&pattern), &none(), 1);
    b.bind(&k("#.x.#.y.#.z.#"), &none(), 2);
    let long = std::iter::repeat_n("w", 120).collect::<Vec<_>>().join(".");
    assert_eq!(route(&b, &long, None), [0; 0]);
    assert_eq!(route(&b, &(long.clone() + ".end"), None), [1]);
    assert_eq!(route(&b, &format!("x.{long}.y.{long}.z"), None), [2]);
}

#[test]
fn topic_dedups_across_patterns_and_unbind_prunes_the_trie() {
    let mut trie = TopicTrie::new();
    let keys = ["a.b.c", "a.*.c", "#", "a.#", "#.c", "*.*.*", "x.y", "", "a..c"];
    for key in keys {
        assert!(trie.bind(&k(key), &none(), 7u32));
    }
    assert!(trie.bind(&k("a.b.c"), &t(&[("q", s("1"))]), 7));
    assert!(!trie.bind(&k("a.b.c"), &none(), 7));
    let mut out = vec![99];
    trie.route(b"a.b.c", &mut out);
    assert_eq!(
        out,
        [99, 7],
        "earlier entries of `out` stay, the match comes once"
    );
    assert_eq!(trie.len(), keys.len() + 1);
    assert!(trie.node_count() > 1);
    assert!(trie.unbind(&k("a.b.c"), &t(&[("q", s("1"))]), 7));
    for key in keys {
        assert!(trie.unbind(&k(key), &none(), 7), "{key}");
        assert!(!trie.unbind(&k(key), &none(), 7), "{key}");
    }
    assert_eq!(trie.node_count(), 1, "only the root is left");
    assert!(trie.is_empty());
    assert_eq!(trie.interned_words(), 0, "no word is still interned");
    // Freed nodes are reused and the trie still routes correctly.
    trie.bind(&k("a.b"), &none(), 1);
    let mut out = Vec::new();
    trie.route(b"a.b", &mut out);
    assert_eq!(out, [1]);
}

#[test]
fn topic_nodes_with_many_children_switch_to_a_map_and_back() {
    let mut b = Bindings::new(ExchangeKind::Topic);
    for i in 0..100u32 {
        b.bind(&k(&format!("w{i}.x")), &none(), i);
    }
    for i in 0..100u32 {
        assert_eq!(route(&b, &format!("w{i}.x"), None), [i]);
    }
    for i in 0..95u32 {
        assert!(b.unbind(&k(&format!("w{i}.x")), &none(), i));
    }
    for i in 95..100u32 {
        assert_eq!(route(&b, &format!("w{i}.x"), None), [i]);
    }
    assert_eq!(route(&b, "w3.x", None), [0u32; 0]);
}

#[test]
fn direct_is_exact_byte_equality() {
    let mut b = Bindings::new(ExchangeKind::Direct);
    b.bind(&k("a.b"), &none(), 1);
    b.bind(&k(""), &none(), 2);
    b.bind(&k("#"), &none(), 3);
    b.bind(&k("a.b"), &none(), 4);
    assert_eq!(route(&b, "a.b", None), [1, 4]);
    assert_eq!(route(&b, "", None), [2]);
    assert_eq!(route(&b, "A.b", None), [0; 0]);
    assert_eq!(route(&b, "a.b.c", None), [0; 0]);
    assert_eq!(
        route(&b, "x", None),
        [0; 0],
        "`#` is literal in a direct exchange"
    );
    assert_eq!(route(&b, "#", None), [3]);
}

#[test]
fn direct_binding_twice_with_different_arguments_delivers_once() {
    // Live RabbitMQ 3.10.8: one queue bound to one key with `{p:1}`, `{p:2}`
    // and no arguments: three bindings, one copy of the message.
    let mut b = Bindings::new(ExchangeKind::Direct);
    assert!(b.bind(&k("k"), &t(&[("p", s("1"))]), 1));
    assert!(b.bind(&k("k"), &t(&[("p", s("2"))]), 1));
    assert!(b.bind(&k("k"), &none(), 1));
    assert_eq!(b.len(), 3);
    assert_eq!(route(&b, "k", None), [1]);
    assert!(b.unbind(&k("k"), &none(), 1));
    assert!(b.unbind(&k("k"), &t(&[("p", s("1"))]), 1));
    assert_eq!(route(&b, "k", None), [1]);
    assert!(b.has_destination(1));
    assert!(b.unbind(&k("k"), &t(&[("p", s("2"))]), 1));
    assert_eq!(route(&b, "k", None), [0; 0]);
    assert!(!b.has_destination(1));
    assert!(b.is_empty());
}

#[test]
fn fanout_ignores_the_key_and_delivers_once() {
    let mut b = Bindings::new(ExchangeKind::Fanout);
    b.bind(&k(""), &none(), 1);
    b.bind(&k("x"), &none(), 1);
    b.bind(&k("y"), &none(), 2);
    assert_eq!(b.len(), 3);
    for key in ["", "x", "anything.at.all"] {
        assert_eq!(route(&b, key, None), [1, 2]);
    }
    assert!(b.unbind(&k("x"), &none(), 1));
    assert_eq!(route(&b, "", None), [1, 2]);
    assert!(b.unbind(&k(""), &none(), 1));
    assert_eq!(route(&b, "", None), [2]);
}

#[test]
fn fanout_with_many_queues_under_one_key() {
    let mut b = Bindings::new(ExchangeKind::Fanout);
    for q in 0..1000u32 {
        assert!(b.bind(&k(""), &none(), q));
    }
    assert!(!b.bind(&k(""), &none(), 500));
    assert_eq!(route(&b, "", None).len(), 1000);
    for q in (0..1000u32).filter(|q| q % 2 == 0) {
        assert_eq!(b.remove_destination(q), 1);
    }
    assert_eq!(
        route(&b, "", None),
        (0..1000).filter(|q| q % 2 == 1).collect::<Vec<_>>()
    );
    assert_eq!(b.len(), 500);
}

#[test]
fn headers_exchange_routes_each_queue_once_and_ignores_the_key() {
    let mut b = Bindings::new(ExchangeKind::Headers);
    b.bind(&k(""), &t(&[("a", s("1"))]), 1);
    b.bind(&k(""), &t(&[("b", s("2"))]), 1);
    b.bind(
        &k("other"),
        &t(&[("x-match", s("any")), ("a", s("1")), ("z", s("9"))]),
        1,
    );
    b.bind(&k(""), &t(&[("a", s("1")), ("b", s("2"))]), 2);
    b.bind(&k(""), &none(), 3);
    b.bind(&k(""), &t(&[("x-match", s("any"))]), 4);
    let ab = t(&[("b", s("2")), ("a", s("1"))]);
    assert_eq!(route(&b, "ignored", Some(&ab)), [1, 2, 3]);
    assert_eq!(route(&b, "", Some(&t(&[("a", s("1"))]))), [1, 3]);
    assert_eq!(route(&b, "", None), [3]);
}

#[test]
fn identity_sorts_arguments_and_keeps_types() {
    // Live RabbitMQ 3.10.8: binding `{a,b}` then `{b,a}` lists one binding,
    // unbinding `{b,a}` removes it; `{a: I 1}` and `{a: l 1}` are two.
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let mut b = Bindings::new(kind);
        let ab = t(&[("a", s("1")), ("b", s("2"))]);
        let ba = t(&[("b", s("2")), ("a", s("1"))]);
        assert!(b.bind(&k("k"), &ab, 1), "{kind:?}");
        assert!(!b.bind(&k("k"), &ba, 1), "{kind:?}");
        assert!(b.contains(&k("k"), &ba, 1));
        assert!(!b.contains(&k("k"), &ba, 2));
        assert!(!b.contains(&k("j"), &ba, 1));
        assert!(b.bind(&k("k"), &t(&[("a", FieldValue::I32(1))]), 1));
        assert!(b.bind(&k("k"), &t(&[("a", FieldValue::I64(1))]), 1));
        assert!(!b.bind(&k("k"), &t(&[("a", FieldValue::I64(1))]), 1));
        assert_eq!(b.len(), 3);
        assert!(!b.unbind(&k("k"), &t(&[("a", s("9"))]), 1));
        assert!(!b.unbind(&k("k"), &ba, 2));
        assert!(!b.unbind(&k("nope"), &ba, 1));
        assert!(b.unbind(&k("k"), &ba, 1));
        assert!(!b.contains(&k("k"), &ab, 1));
        assert_eq!(b.len(), 2);
        let listed: Vec<_> = b
            .iter()
            .map(|(key, args, d)| (key.to_string(), args.clone(), d))
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|(key, _, d)| key == "k" && *d == 1));
    }
}

#[test]
fn iter_lists_arguments_sorted_by_key() {
    let mut b = Bindings::new(ExchangeKind::Headers);
    b.bind(
        &k("k"),
        &t(&[("z", s("1")), ("x-match", s("any")), ("a", s("2"))]),
        5,
    );
    let (key, args, dest) = b.iter().next().unwrap();
    assert_eq!((key.as_bytes(), dest), (&b"k"[..], 5));
    let names: Vec<_> = args.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["a", "x-match", "z"]);
}

#[test]
fn remove_destination_removes_every_binding_of_it() {
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let mut b = Bindings::new(kind);
        b.bind(&k("a.b"), &none(), 1);
        b.bind(&k("a.b"), &t(&[("p", s("1"))]), 1);
        b.bind(&k("a.*"), &none(), 1);
        b.bind(&k("#"), &none(), 1);
        b.bind(&k("a.b"), &none(), 2);
        b.bind(&k("#"), &none(), 3);
        assert_eq!(b.len(), 6);
        let mut dests = b.destinations().to_vec();
        dests.sort();
        assert_eq!(dests, [1, 2, 3]);
        assert_eq!(b.remove_destination(1), 4, "{kind:?}");
        assert_eq!(b.remove_destination(1), 0);
        assert_eq!(b.remove_destination(9), 0);
        assert!(!b.has_destination(1));
        assert!(b.has_destination(2) && b.has_destination(3));
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().count(), 2);
        assert!(b.iter().all(|(_, _, d)| d != 1));
        let mut dests = b.destinations().to_vec();
        dests.sort();
        assert_eq!(dests, [2, 3]);
        if kind != ExchangeKind::Headers {
            assert!(!route(&b, "a.b", None).contains(&1));
        }
        assert_eq!(b.remove_destination(2), 1);
        assert_eq!(b.remove_destination(3), 1);
        assert!(b.is_empty());
        assert_eq!(b.iter().count(), 0);
    }
}

#[test]
fn validate_checks_only_headers_exchanges() {
    let bad = t(&[("x-match", s("foo"))]);
    assert!(validate_binding_args(ExchangeKind::Headers, &bad).is_err());
    for kind in [ExchangeKind::Direct, ExchangeKind::Fanout, ExchangeKind::Topic] {
        assert_eq!(validate_binding_args(kind, &bad), Ok(()));
    }
    assert_eq!(validate_binding_args(ExchangeKind::Headers, &none()), Ok(()));
}

#[test]
fn an_enum_destination_like_the_brokers_works() {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Dest {
        Queue(u32),
        Exchange(u32),
    }
    let mut b = Bindings::new(ExchangeKind::Topic);
    b.bind(&k("a.#"), &none(), Dest::Queue(1));
    b.bind(&k("#"), &none(), Dest::Exchange(1));
    b.bind(&k("*.b"), &none(), Dest::Queue(1));
    assert_eq!(route(&b, "a.b", None), [Dest::Queue(1), Dest::Exchange(1)]);
}
