//! Topic matching: a trie over binding-key words, with `*` (exactly one
//! word) and `#` (zero or more words), following RabbitMQ's
//! `rabbit_db_topic_exchange` semantics: keys split on `.`, the empty key has
//! zero words, and empty words are words (`a..b` has three).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

type NodeId = u32;

#[derive(Default)]
struct Node<D> {
    words: HashMap<Box<[u8]>, NodeId>,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    /// Destinations bound with a key ending here, with how many bindings
    /// (same key, different arguments) lead to each.
    dests: Vec<(D, u32)>,
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.star.is_none() && self.hash.is_none() && self.dests.is_empty()
    }
}

/// Splits a key into words as RabbitMQ does.
pub fn words(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty = key.is_empty();
    key.split(|&b| b == b'.').filter(move |_| !empty)
}

/// A topic binding trie. Replicated on every shard; routing cost grows with
/// the key's length and the matching bindings, not with the binding count.
pub struct TopicTrie<D> {
    nodes: Vec<Node<D>>,
    free: Vec<NodeId>,
    /// (node, word position) pairs already visited in the current route,
    /// so keys with many `#` do not blow up. Reused across calls.
    scratch: RefCell<Scratch>,
}

#[derive(Default)]
struct Scratch {
    words: Vec<(usize, usize)>,
    seen: Vec<(NodeId, u32)>,
    stack: Vec<(NodeId, u32)>,
}

impl<D: Copy + Eq + Hash + Ord> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Copy + Eq + Hash + Ord> TopicTrie<D> {
    pub fn new() -> Self {
        TopicTrie {
            nodes: vec![Node::<D> {
                words: HashMap::new(),
                star: None,
                hash: None,
                dests: Vec::new(),
            }],
            free: Vec::new(),
            scratch: RefCell::default(),
        }
    }

    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node {
                    words: HashMap::new(),
                    star: None,
                    hash: None,
                    dests: Vec::new(),
                });
                (self.nodes.len() - 1) as NodeId
            }
        }
    }

    /// Adds one binding of `key` to `dest`.
    pub fn bind(&mut self, key: &[u8], dest: D) {
        let mut n: NodeId = 0;
        for w in words(key) {
            let next = match w {
                b"*" => self.nodes[n as usize].star,
                b"#" => self.nodes[n as usize].hash,
                _ => self.nodes[n as usize].words.get(w).copied(),
            };
            n = match next {
                Some(x) => x,
                None => {
                    let x = self.alloc();
                    let node = &mut self.nodes[n as usize];
                    match w {
                        b"*" => node.star = Some(x),
                        b"#" => node.hash = Some(x),
                        _ => {
                            node.words.insert(w.into(), x);
                        }
                    }
                    x
                }
            };
        }
        let dests = &mut self.nodes[n as usize].dests;
        match dests.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, c)) => *c += 1,
            None => dests.push((dest, 1)),
        }
    }

    /// Removes one binding of `key` to `dest`; prunes emptied nodes.
    pub fn unbind(&mut self, key: &[u8], dest: D) -> bool {
        let mut path: Vec<(NodeId, &[u8])> = Vec::new();
        let mut n: NodeId = 0;
        for w in words(key) {
            let node = &self.nodes[n as usize];
            let next = match w {
                b"*" => node.star,
                b"#" => node.hash,
                _ => node.words.get(w).copied(),
            };
            let Some(x) = next else { return false };
            path.push((n, w));
            n = x;
        }
        let dests = &mut self.nodes[n as usize].dests;
        let Some(i) = dests.iter().position(|(d, _)| *d == dest) else {
            return false;
        };
        dests[i].1 -= 1;
        if dests[i].1 == 0 {
            dests.swap_remove(i);
        }
        // Prune from the leaf up.
        let mut child = n;
        while let Some((parent, w)) = path.pop() {
            if !self.nodes[child as usize].is_empty() {
                break;
            }
            let p = &mut self.nodes[parent as usize];
            match w {
                b"*" => p.star = None,
                b"#" => p.hash = None,
                _ => {
                    p.words.remove(w);
                }
            }
            self.nodes[child as usize].words.shrink_to_fit();
            self.free.push(child);
            child = parent;
        }
        true
    }

    /// Appends every destination matching `routing_key` (possibly with
    /// duplicates; the caller dedupes).
    pub fn route(&self, routing_key: &[u8], out: &mut Vec<D>) {
        let mut s = self.scratch.borrow_mut();
        let Scratch { words: ws, seen, stack } = &mut *s;
        ws.clear();
        seen.clear();
        stack.clear();
        if !routing_key.is_empty() {
            let mut start = 0;
            for (i, &b) in routing_key.iter().enumerate() {
                if b == b'.' {
                    ws.push((start, i));
                    start = i + 1;
                }
            }
            ws.push((start, routing_key.len()));
        }
        let nw = ws.len() as u32;
        stack.push((0, 0));
        while let Some((n, pos)) = stack.pop() {
            if seen.contains(&(n, pos)) {
                continue;
            }
            seen.push((n, pos));
            let node = &self.nodes[n as usize];
            if pos == nw {
                out.extend(node.dests.iter().map(|(d, _)| *d));
            } else {
                let (a, b) = ws[pos as usize];
                if let Some(&x) = node.words.get(&routing_key[a..b]) {
                    stack.push((x, pos + 1));
                }
                if let Some(x) = node.star {
                    stack.push((x, pos + 1));
                }
            }
            if let Some(h) = node.hash {
                // `#` swallows zero or more of the remaining words.
                for p in pos..=nw {
                    stack.push((h, p));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Word-by-word reference matcher.
    fn reference(pattern: &[&[u8]], key: &[&[u8]]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((p, rest)) if *p == b"#" => (0..=key.len()).any(|i| reference(rest, &key[i..])),
            Some((p, rest)) => match key.split_first() {
                None => false,
                Some((k, krest)) => (*p == b"*" || p == k) && reference(rest, krest),
            },
        }
    }

    fn matches(pattern: &str, key: &str) -> bool {
        let mut t = TopicTrie::new();
        t.bind(pattern.as_bytes(), 1u32);
        let mut out = vec![];
        t.route(key.as_bytes(), &mut out);
        !out.is_empty()
    }

    #[test]
    fn rabbitmq_semantics() {
        assert!(matches("#", ""));
        assert!(matches("#", "a.b.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("#.a", "a"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(matches("*", "a"));
        assert!(!matches("*", ""));
        assert!(!matches("*", "a.b"));
        assert!(matches("*.*", "a."));
        assert!(matches("a..b", "a..b"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("#.#", "a"));
        assert!(matches("*.#.*", "a.b"));
        assert!(!matches("*.#.*", "a"));
    }

    #[test]
    fn unbind_prunes() {
        let mut t = TopicTrie::new();
        t.bind(b"a.*.c", 1u32);
        t.bind(b"a.*.c", 1u32);
        t.bind(b"a.#", 2);
        assert!(t.unbind(b"a.*.c", 1));
        let mut out = vec![];
        t.route(b"a.b.c", &mut out);
        out.sort();
        assert_eq!(out, vec![1, 2]);
        assert!(t.unbind(b"a.*.c", 1));
        assert!(!t.unbind(b"a.*.c", 1));
        assert!(t.unbind(b"a.#", 2));
        assert!(t.nodes[0].is_empty());
    }

    #[test]
    fn many_hashes_stay_fast() {
        let mut t = TopicTrie::new();
        t.bind(b"#.#.#.#.#.#.#.#.#.#.#.#.x", 1u32);
        let key = vec!["w"; 40].join(".");
        let mut out = vec![];
        t.route(key.as_bytes(), &mut out);
        assert!(out.is_empty());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("".to_string())]
    }
    fn pword() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    proptest! {
        #[test]
        fn agrees_with_reference(patterns in proptest::collection::vec(proptest::collection::vec(pword(), 0..5), 1..8),
                                 key in proptest::collection::vec(word(), 0..6)) {
            let key = key.join(".");
            let mut t = TopicTrie::new();
            for (i, p) in patterns.iter().enumerate() {
                t.bind(p.join(".").as_bytes(), i as u32);
            }
            let mut got = vec![];
            t.route(key.as_bytes(), &mut got);
            got.sort();
            got.dedup();
            let kw: Vec<&[u8]> = words(key.as_bytes()).collect();
            let want: Vec<u32> = patterns.iter().enumerate().filter(|(_, p)| {
                let joined = p.join(".");
                let pw: Vec<&[u8]> = words(joined.as_bytes()).collect();
                reference(&pw, &kw)
            }).map(|(i, _)| i as u32).collect();
            prop_assert_eq!(got, want);
        }
    }
}
