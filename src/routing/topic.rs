//! Topic-exchange matching: a trie of binding-key words, walked as an NFA.
//!
//! Semantics are RabbitMQ's (`rabbit_db_topic_exchange` /
//! `rabbit_exchange_type_topic`, checked against RabbitMQ 3.10.8):
//! - A key splits on every `.` into words, and empty words count: `a..b` has
//!   three words, `a.` is `a` and an empty word, `.` is two empty words.
//! - The empty key has **no** words (`split_topic_key(<<>>) -> []`), not one
//!   empty word: routing key `""` matches binding keys `""`, `#` and `#.#`
//!   but not `*`.
//! - In a binding key, a word that is exactly `*` matches one word and a word
//!   that is exactly `#` matches zero or more. Anything else, `a*` included,
//!   is literal. In a routing key every word is literal; a routing word `*`
//!   meets binding `*` only through the wildcard.
//!
//! Routing keeps the set of trie nodes that the words read so far can have
//! reached, deduplicated after every word, so its cost is bounded by
//! words × live states and never blows up on patterns such as `#.#.#.a`
//! (RabbitMQ's own recursive walk is exponential there).

use super::args::{canonical, detach_str, identical};
use super::group::{Group, Inserted, Removed};
use crate::protocol::{FieldTable, ShortStr};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

const ROOT: u32 = 0;
const NONE: u32 = u32::MAX;
/// A node switches its literal edges from a scanned list to a hash map past
/// this many. Most nodes have one or two children; the root and the level
/// below often have thousands.
const MANY_FROM: usize = 16;

/// The bindings of one topic exchange, as a trie over binding-key words.
/// Part of an exchange's [`super::Bindings`], so replicated on every shard;
/// public on its own for benchmarks.
///
/// Literal words are interned: routing hashes each routing-key word once,
/// then follows edges labelled with 4-byte word ids. A trie node costs 48
/// bytes and an edge 8 (more in hash-mapped nodes); a node where bindings
/// end adds ~100 bytes plus the key's bytes, and each binding there 16 bytes
/// (more if it has arguments). Nodes sit in one vector, so up to half of its
/// capacity can be growth slack.
#[derive(Debug)]
pub struct TopicTrie<D> {
    nodes: Vec<Node<D>>,
    /// Unused slots of `nodes`, reused before growing.
    free: Vec<u32>,
    words: Words,
    len: usize,
}

#[derive(Debug)]
struct Node<D> {
    edges: Edges,
    star: u32,
    hash: u32,
    /// Reached through a `#` edge, so it stays reached as words are read.
    via_hash: bool,
    bound: Option<Box<Bound<D>>>,
}

/// The bindings whose key ends at a node; they all share that key.
#[derive(Debug)]
struct Bound<D> {
    key: ShortStr,
    group: Group<D>,
}

impl<D> Node<D> {
    fn new(via_hash: bool) -> Self {
        Node {
            edges: Edges::Few(Vec::new()),
            star: NONE,
            hash: NONE,
            via_hash,
            bound: None,
        }
    }

    fn is_dead(&self) -> bool {
        self.edges.is_empty() && self.star == NONE && self.hash == NONE && self.bound.is_none()
    }
}

/// Literal edges: word id → child.
#[derive(Debug)]
enum Edges {
    Few(Vec<(u32, u32)>),
    #[allow(clippy::box_collection, reason = "keeps every node's edge list at 24 bytes")]
    Many(Box<HashMap<u32, u32, BuildHasherDefault<IdHasher>>>),
}

impl Edges {
    fn get(&self, word: u32) -> Option<u32> {
        match self {
            Edges::Few(v) => v.iter().find(|(w, _)| *w == word).map(|(_, c)| *c),
            Edges::Many(m) => m.get(&word).copied(),
        }
    }

    fn insert(&mut self, word: u32, child: u32) {
        match self {
            Edges::Few(v) if v.len() < MANY_FROM => v.push((word, child)),
            Edges::Few(v) => {
                let mut m: HashMap<_, _, _> = v.drain(..).collect();
                m.insert(word, child);
                *self = Edges::Many(Box::new(m));
            }
            Edges::Many(m) => {
                m.insert(word, child);
            }
        }
    }

    fn remove(&mut self, word: u32) {
        match self {
            Edges::Few(v) => v.retain(|(w, _)| *w != word),
            Edges::Many(m) => {
                m.remove(&word);
                if m.len() < MANY_FROM / 2 {
                    *self = Edges::Few(m.drain().collect());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Edges::Few(v) => v.is_empty(),
            Edges::Many(m) => m.is_empty(),
        }
    }
}

/// Hashes the trie's own word ids. They are dense integers the trie hands
/// out, not client input, so a multiplicative hash is enough; client-chosen
/// bytes go through std's keyed SipHash in [`Words`].
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(b as u32);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Interned literal words, counted by the edges that use them.
#[derive(Debug, Default)]
struct Words {
    ids: HashMap<Box<[u8]>, (u32, u32)>,
    free: Vec<u32>,
    next: u32,
}

impl Words {
    fn lookup(&self, word: &[u8]) -> Option<u32> {
        self.ids.get(word).map(|&(id, _)| id)
    }

    fn acquire(&mut self, word: &[u8]) -> u32 {
        if let Some((id, refs)) = self.ids.get_mut(word) {
            *refs += 1;
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.ids.insert(word.into(), (id, 1));
        id
    }

    fn release(&mut self, word: &[u8]) {
        let Some((id, refs)) = self.ids.get_mut(word) else {
            unreachable!("released a word no edge holds");
        };
        *refs -= 1;
        if *refs == 0 {
            self.free.push(*id);
            self.ids.remove(word);
        }
    }
}

/// Words of a key as RabbitMQ splits them: none for the empty key.
fn split(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    (!key.is_empty())
        .then(|| key.split(|&b| b == b'.'))
        .into_iter()
        .flatten()
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Star,
    Hash,
    Word(u32),
}

/// One edge on the way to a binding key's node.
struct PathStep<'k> {
    parent: u32,
    child: u32,
    step: Step,
    word: &'k [u8],
}

/// Reusable state sets for [`TopicTrie::route_with`], owned by one thread
/// (a shard's executor). [`TopicTrie::route`] keeps one per thread, so a
/// shard routes without allocating once these have grown to its largest
/// state set.
#[derive(Debug, Default)]
pub struct TopicScratch {
    cur: Vec<u32>,
    next: Vec<u32>,
}

impl TopicScratch {
    pub const fn new() -> Self {
        TopicScratch {
            cur: Vec::new(),
            next: Vec::new(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<TopicScratch> = const { RefCell::new(TopicScratch::new()) };
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::new(false)],
            free: Vec::new(),
            words: Words::default(),
            len: 0,
        }
    }
}

impl<D: Copy + Eq + Hash + Ord + std::fmt::Debug> TopicTrie<D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live trie nodes, the root included (for tests and memory estimates).
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Distinct literal words in binding keys.
    pub fn interned_words(&self) -> usize {
        self.words.ids.len()
    }

    /// Adds a binding; false if this (key, arguments, destination) existed.
    pub fn bind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        self.insert(key, canonical(args), dest) != Inserted::Exists
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        self.remove(key.as_bytes(), &canonical(args), dest) != Removed::NotFound
    }

    /// Whether the binding exists.
    pub fn contains(&self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        let args = canonical(args);
        self.bound_at(key.as_bytes())
            .is_some_and(|b| b.group.iter().any(|(a, d)| d == dest && identical(a, &args)))
    }

    /// Appends each destination whose binding key matches `routing_key`, once.
    pub fn route(&self, routing_key: &[u8], out: &mut Vec<D>) {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => self.route_with(routing_key, &mut s, out),
            // Only reachable if a caller routes from inside a route call.
            Err(_) => self.route_with(routing_key, &mut TopicScratch::new(), out),
        })
    }

    /// [`Self::route`] with caller-owned scratch space.
    pub fn route_with(&self, routing_key: &[u8], scratch: &mut TopicScratch, out: &mut Vec<D>) {
        let TopicScratch { cur, next } = scratch;
        cur.clear();
        cur.push(ROOT);
        self.close(cur);
        for word in split(routing_key) {
            // A word no binding key contains can only meet wildcards.
            let id = self.words.lookup(word);
            next.clear();
            for &s in cur.iter() {
                let node = &self.nodes[s as usize];
                if let Some(child) = id.and_then(|id| node.edges.get(id)) {
                    next.push(child);
                }
                if node.star != NONE {
                    next.push(node.star);
                }
                if node.via_hash {
                    next.push(s);
                }
            }
            self.close(next);
            if next.len() > 1 {
                next.sort_unstable();
                next.dedup();
            }
            std::mem::swap(cur, next);
            if cur.is_empty() {
                return;
            }
        }
        let start = out.len();
        let mut groups = 0;
        for &s in cur.iter() {
            if let Some(b) = &self.nodes[s as usize].bound {
                out.extend(b.group.dests());
                groups += 1;
            }
        }
        // One group lists each destination once; several may share some.
        if groups > 1 {
            dedup_tail(out, start);
        }
    }

    /// Adds the nodes a `#` edge reaches without reading a word.
    fn close(&self, states: &mut Vec<u32>) {
        let mut i = 0;
        while i < states.len() {
            let h = self.nodes[states[i] as usize].hash;
            if h != NONE {
                states.push(h);
            }
            i += 1;
        }
    }

    /// Every binding as (key, arguments, destination).
    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldTable, D)> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.bound.as_deref())
            .flat_map(|b| b.group.iter().map(move |(a, d)| (&b.key, a, d)))
    }

    /// Adds a binding with canonical `args`.
    pub(crate) fn insert(&mut self, key: &ShortStr, args: FieldTable, dest: D) -> Inserted {
        let mut at = ROOT;
        for word in split(key.as_bytes()) {
            at = self.child_or_create(at, word);
        }
        let bound = self.nodes[at as usize].bound.get_or_insert_with(|| {
            Box::new(Bound {
                key: detach_str(key),
                group: Group::new(),
            })
        });
        let r = bound.group.insert(dest, args);
        if r != Inserted::Exists {
            self.len += 1;
        }
        r
    }

    /// Removes a binding with canonical `args`.
    pub(crate) fn remove(&mut self, key: &[u8], args: &FieldTable, dest: D) -> Removed {
        self.with_group(key, |g| {
            let r = g.remove(dest, args);
            let n = usize::from(r != Removed::NotFound);
            (r, n)
        })
        .unwrap_or(Removed::NotFound)
    }

    /// Removes every binding from `key` to `dest`; returns how many.
    pub(crate) fn remove_dest(&mut self, key: &[u8], dest: D) -> usize {
        self.with_group(key, |g| {
            let n = g.remove_dest(dest);
            (n, n)
        })
        .unwrap_or(0)
    }

    /// Runs `f` on the bindings of `key`, which returns its result and how
    /// many bindings it removed; then drops what became empty.
    fn with_group<R>(&mut self, key: &[u8], f: impl FnOnce(&mut Group<D>) -> (R, usize)) -> Option<R> {
        let path = self.path(key)?;
        let end = path.last().map_or(ROOT, |p| p.child) as usize;
        let bound = self.nodes[end].bound.as_mut()?;
        let (r, removed) = f(&mut bound.group);
        self.len -= removed;
        if bound.group.is_empty() {
            self.nodes[end].bound = None;
            self.prune(&path);
        }
        Some(r)
    }

    fn child_or_create(&mut self, at: u32, word: &[u8]) -> u32 {
        let node = &self.nodes[at as usize];
        let existing = match word {
            b"*" => node.star,
            b"#" => node.hash,
            w => self
                .words
                .lookup(w)
                .and_then(|id| node.edges.get(id))
                .unwrap_or(NONE),
        };
        if existing != NONE {
            return existing;
        }
        let child = self.alloc(word == b"#");
        match word {
            b"*" => self.nodes[at as usize].star = child,
            b"#" => self.nodes[at as usize].hash = child,
            w => {
                let id = self.words.acquire(w);
                self.nodes[at as usize].edges.insert(id, child);
            }
        }
        child
    }

    fn alloc(&mut self, via_hash: bool) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize].via_hash = via_hash;
                i
            }
            None => {
                self.nodes.push(Node::new(via_hash));
                u32::try_from(self.nodes.len() - 1).expect("fewer than 2^32 trie nodes")
            }
        }
    }

    /// The edges from the root to the node of `key`, if it exists.
    fn path<'k>(&self, key: &'k [u8]) -> Option<Vec<PathStep<'k>>> {
        let mut path = Vec::new();
        let mut at = ROOT;
        for word in split(key) {
            let node = &self.nodes[at as usize];
            let (step, child) = match word {
                b"*" => (Step::Star, node.star),
                b"#" => (Step::Hash, node.hash),
                w => {
                    let id = self.words.lookup(w)?;
                    (Step::Word(id), node.edges.get(id).unwrap_or(NONE))
                }
            };
            if child == NONE {
                return None;
            }
            path.push(PathStep {
                parent: at,
                child,
                step,
                word,
            });
            at = child;
        }
        Some(path)
    }

    fn bound_at(&self, key: &[u8]) -> Option<&Bound<D>> {
        let path = self.path(key)?;
        let end = path.last().map_or(ROOT, |p| p.child);
        self.nodes[end as usize].bound.as_deref()
    }

    /// Unlinks and frees the nodes at the end of `path` that no longer lead
    /// to any binding.
    fn prune(&mut self, path: &[PathStep<'_>]) {
        for p in path.iter().rev() {
            if !self.nodes[p.child as usize].is_dead() {
                return;
            }
            let parent = &mut self.nodes[p.parent as usize];
            match p.step {
                Step::Star => parent.star = NONE,
                Step::Hash => parent.hash = NONE,
                Step::Word(id) => {
                    parent.edges.remove(id);
                    self.words.release(p.word);
                }
            }
            self.nodes[p.child as usize] = Node::new(false);
            self.free.push(p.child);
        }
    }
}

/// Sorts `out[start..]` and drops repeats, in place.
pub(crate) fn dedup_tail<D: Ord + Copy>(out: &mut Vec<D>, start: usize) {
    if out.len() - start < 2 {
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_layout_stays_compact() {
        // The per-binding costs in the docs assume these sizes (64-bit).
        assert_eq!(std::mem::size_of::<Edges>(), 24);
        assert_eq!(std::mem::size_of::<Node<u64>>(), 48);
        assert_eq!(std::mem::size_of::<Group<u64>>(), 32);
        assert_eq!(std::mem::size_of::<(u64, super::super::group::ArgSet)>(), 16);
    }
}
