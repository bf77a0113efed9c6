//! The bindings of one exchange, kept in the structure its type routes with.

use super::ExchangeKind;
use super::headers::headers_match;
use super::topic::TopicTrie;
use crate::protocol::{FieldTable, ShortStr};
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::Hash;

/// One binding as declared: key, arguments, destination. Identity is all
/// three, as in RabbitMQ.
#[derive(Clone, Debug)]
struct Binding<D> {
    key: ShortStr,
    args: FieldTable,
    dest: D,
}

/// An exchange's bindings. Replicated on every shard.
///
/// Memory: every binding is kept once in `all` (key and arguments share the
/// decoded frame's buffer); direct exchanges add one hash-map slot per
/// distinct key, topic exchanges one trie node per distinct word prefix.
pub struct Bindings<D> {
    kind: ExchangeKind,
    all: Vec<Binding<D>>,
    /// Direct: routing key → destinations (with multiplicity).
    direct: HashMap<Bytes, Vec<(D, u32)>>,
    topic: TopicTrie<D>,
}

impl<D: Copy + Eq + Hash + Ord + std::fmt::Debug> Bindings<D> {
    pub fn new(kind: ExchangeKind) -> Self {
        Bindings {
            kind,
            all: Vec::new(),
            direct: HashMap::new(),
            topic: TopicTrie::new(),
        }
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    fn position(&self, key: &ShortStr, args: &FieldTable, dest: D) -> Option<usize> {
        self.all
            .iter()
            .position(|b| b.dest == dest && b.key == *key && b.args == *args)
    }

    /// Adds a binding; false if the identical binding exists.
    pub fn bind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        if self.position(key, args, dest).is_some() {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => {
                let v = self.direct.entry(key.bytes().clone()).or_default();
                match v.iter_mut().find(|(d, _)| *d == dest) {
                    Some((_, c)) => *c += 1,
                    None => v.push((dest, 1)),
                }
            }
            ExchangeKind::Topic => self.topic.bind(key.as_bytes(), dest),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.all.push(Binding {
            key: key.clone(),
            args: args.clone(),
            dest,
        });
        true
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        let Some(i) = self.position(key, args, dest) else {
            return false;
        };
        let b = self.all.swap_remove(i);
        self.forget(&b);
        true
    }

    fn forget(&mut self, b: &Binding<D>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get_mut(b.key.as_bytes()) {
                    if let Some(i) = v.iter().position(|(d, _)| *d == b.dest) {
                        v[i].1 -= 1;
                        if v[i].1 == 0 {
                            v.swap_remove(i);
                        }
                    }
                    if v.is_empty() {
                        self.direct.remove(b.key.as_bytes());
                    }
                }
            }
            ExchangeKind::Topic => {
                self.topic.unbind(b.key.as_bytes(), b.dest);
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// Removes every binding to `dest`; returns how many.
    pub fn remove_destination(&mut self, dest: D) -> usize {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.all).into_iter().partition(|b| b.dest == dest);
        self.all = kept;
        for b in &gone {
            self.forget(b);
        }
        gone.len()
    }

    pub fn has_destination(&self, dest: D) -> bool {
        self.all.iter().any(|b| b.dest == dest)
    }

    /// Appends each matching destination once.
    pub fn route(&self, routing_key: &[u8], headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let start = out.len();
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    out.extend(v.iter().map(|(d, _)| *d));
                }
                return;
            }
            ExchangeKind::Fanout => out.extend(self.all.iter().map(|b| b.dest)),
            ExchangeKind::Topic => self.topic.route(routing_key, out),
            ExchangeKind::Headers => out.extend(
                self.all
                    .iter()
                    .filter(|b| headers_match(&b.args, headers))
                    .map(|b| b.dest),
            ),
        }
        if out.len() - start > 1 {
            out[start..].sort_unstable();
            let mut w = start + 1;
            for r in start + 1..out.len() {
                if out[r] != out[w - 1] {
                    out[w] = out[r];
                    w += 1;
                }
            }
            out.truncate(w);
        }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every binding: (key, arguments, destination).
    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldTable, D)> + '_ {
        self.all.iter().map(|b| (&b.key, &b.args, b.dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FieldValue;

    fn k(s: &'static str) -> ShortStr {
        ShortStr::from_static(s)
    }

    #[test]
    fn direct_dedupes_and_unbinds() {
        let mut b = Bindings::new(ExchangeKind::Direct);
        let mut a2 = FieldTable::new();
        a2.insert(k("x"), FieldValue::I32(1));
        assert!(b.bind(&k("rk"), &FieldTable::new(), 1u32));
        assert!(!b.bind(&k("rk"), &FieldTable::new(), 1));
        assert!(b.bind(&k("rk"), &a2, 1));
        let mut out = vec![];
        b.route(b"rk", None, &mut out);
        assert_eq!(out, vec![1]);
        assert!(b.unbind(&k("rk"), &FieldTable::new(), 1));
        out.clear();
        b.route(b"rk", None, &mut out);
        assert_eq!(out, vec![1], "the binding with arguments remains");
        assert_eq!(b.remove_destination(1), 1);
        out.clear();
        b.route(b"rk", None, &mut out);
        assert!(out.is_empty());
        assert!(b.direct.is_empty());
    }

    #[test]
    fn fanout_and_topic_dedupe() {
        let mut f = Bindings::new(ExchangeKind::Fanout);
        f.bind(&k("a"), &FieldTable::new(), 2u32);
        f.bind(&k("b"), &FieldTable::new(), 2);
        f.bind(&k("c"), &FieldTable::new(), 1);
        let mut out = vec![];
        f.route(b"zzz", None, &mut out);
        assert_eq!(out, vec![1, 2]);
        let mut t = Bindings::new(ExchangeKind::Topic);
        t.bind(&k("a.*"), &FieldTable::new(), 5u32);
        t.bind(&k("#"), &FieldTable::new(), 5);
        out.clear();
        t.route(b"a.b", None, &mut out);
        assert_eq!(out, vec![5]);
    }
}
