//! One exchange's binding table.

use super::args::{canonical, detach_str, identical};
use super::group::{Group, Inserted, Removed};
use super::headers::headers_match;
use super::kind::ExchangeKind;
use super::topic::{TopicTrie, dedup_tail};
use crate::protocol::{FieldTable, ShortStr};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The bindings of one exchange, generic over the destination type `D` (the
/// broker's queue-or-exchange id). Replicated on every shard: each shard
/// routes its own publishes against its own copy, and the control plane
/// applies the same bind/unbind sequence to every copy.
///
/// A binding's identity is (routing key, arguments, destination), as in
/// RabbitMQ; arguments compare after sorting by key, type tags included
/// (see `args.rs`). Keys and arguments are copied on bind, so a table never
/// holds on to the frame a `queue.bind` arrived in.
///
/// What a binding costs (64-bit, no arguments, each binding to its own
/// destination; heap measured by the `topic` bench over 100 000 bindings,
/// growth slack of vectors and hash maps included): direct ~220 bytes with a
/// 25-byte key: the key's hash-map slot (64 bytes, the first destination
/// held inline), the key's bytes, and the reverse index entry that makes
/// [`Bindings::remove_destination`] cheap (another copy of the key). A further
/// destination under an existing key adds ~16 bytes plus its own reverse
/// index entry. Topic ~370 bytes with 4-word keys (see [`TopicTrie`]), most
/// of it trie nodes. Arguments add their deep-copied table.
#[derive(Debug)]
pub struct Bindings<D> {
    kind: ExchangeKind,
    /// Direct, fanout and headers: the bindings grouped by routing key.
    by_key: HashMap<Key, Group<D>>,
    /// Topic only.
    trie: TopicTrie<D>,
    /// Every bound destination once: what a fanout exchange routes to.
    dests: Vec<D>,
    /// Reverse index, so dropping a queue touches only its own bindings.
    by_dest: HashMap<D, DestKeys>,
    len: usize,
}

/// A routing key as a map key that can be looked up by `&[u8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(ShortStr);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Must hash exactly as `[u8]` does, for `Borrow<[u8]>`.
        self.0.as_bytes().hash(h)
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where one destination is bound.
#[derive(Debug)]
struct DestKeys {
    /// Its position in `Bindings::dests`.
    pos: u32,
    /// The distinct keys it is bound under.
    keys: Vec<ShortStr>,
}

impl<D: Copy + Eq + Hash + Ord + std::fmt::Debug> Bindings<D> {
    pub fn new(kind: ExchangeKind) -> Self {
        Bindings {
            kind,
            by_key: HashMap::new(),
            trie: TopicTrie::new(),
            dests: Vec::new(),
            by_dest: HashMap::new(),
            len: 0,
        }
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Adds a binding. Identity is (routing key, arguments, destination) as in
    /// RabbitMQ; returns false if it already existed. Does not validate: call
    /// [`super::validate_binding_args`] first, as RabbitMQ does.
    pub fn bind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        let args = canonical(args);
        let r = match self.kind {
            ExchangeKind::Topic => self.trie.insert(key, args, dest),
            _ => match self.by_key.get_mut(key.as_bytes()) {
                Some(g) => g.insert(dest, args),
                None => {
                    let mut g = Group::new();
                    let r = g.insert(dest, args);
                    self.by_key.insert(Key(detach_str(key)), g);
                    r
                }
            },
        };
        match r {
            Inserted::Exists => return false,
            Inserted::Args => {}
            Inserted::Dest => self.note_key(dest, key),
        }
        self.len += 1;
        true
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&mut self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        let args = canonical(args);
        let r = match self.kind {
            ExchangeKind::Topic => self.trie.remove(key.as_bytes(), &args, dest),
            _ => {
                let Some(g) = self.by_key.get_mut(key.as_bytes()) else {
                    return false;
                };
                let r = g.remove(dest, &args);
                if g.is_empty() {
                    self.by_key.remove(key.as_bytes());
                }
                r
            }
        };
        match r {
            Removed::NotFound => return false,
            Removed::One => {}
            Removed::Last => self.forget_key(dest, key.as_bytes()),
        }
        self.len -= 1;
        true
    }

    /// Removes every binding to `dest` (queue or exchange deleted); returns
    /// how many.
    pub fn remove_destination(&mut self, dest: D) -> usize {
        let Some(entry) = self.by_dest.remove(&dest) else {
            return 0;
        };
        self.drop_dest_at(entry.pos);
        let mut n = 0;
        for key in &entry.keys {
            let key = key.as_bytes();
            n += match self.kind {
                ExchangeKind::Topic => self.trie.remove_dest(key, dest),
                _ => {
                    let g = self.by_key.get_mut(key).expect("reverse index names a live key");
                    let n = g.remove_dest(dest);
                    if g.is_empty() {
                        self.by_key.remove(key);
                    }
                    n
                }
            };
        }
        debug_assert!(n >= entry.keys.len());
        self.len -= n;
        n
    }

    pub fn has_destination(&self, dest: D) -> bool {
        self.by_dest.contains_key(&dest)
    }

    /// Every bound destination, each once, in no particular order.
    pub fn destinations(&self) -> &[D] {
        &self.dests
    }

    /// Whether this exact binding exists (arguments compared as RabbitMQ
    /// does, in any order).
    pub fn contains(&self, key: &ShortStr, args: &FieldTable, dest: D) -> bool {
        match self.kind {
            ExchangeKind::Topic => self.trie.contains(key, args, dest),
            _ => {
                let args = canonical(args);
                self.by_key
                    .get(key.as_bytes())
                    .is_some_and(|g| g.iter().any(|(a, d)| d == dest && identical(a, &args)))
            }
        }
    }

    /// Appends every destination that the message matches to `out`, each at
    /// most once per call. `headers` is only read by headers exchanges.
    /// Allocates nothing but `out`'s growth (topic: once per thread, for the
    /// trie walk's state sets).
    pub fn route(&self, routing_key: &[u8], headers: Option<&FieldTable>, out: &mut Vec<D>) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(g) = self.by_key.get(routing_key) {
                    out.extend(g.dests());
                }
            }
            ExchangeKind::Fanout => out.extend_from_slice(&self.dests),
            ExchangeKind::Topic => self.trie.route(routing_key, out),
            ExchangeKind::Headers => self.route_headers(headers, out),
        }
    }

    /// Like RabbitMQ, tries every binding: there is no index over header
    /// values.
    fn route_headers(&self, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let start = out.len();
        let mut groups = 0;
        for g in self.by_key.values() {
            let before = out.len();
            for (dest, args) in g.entries() {
                if args.iter().any(|a| headers_match(a, headers)) {
                    out.push(*dest);
                }
            }
            groups += usize::from(out.len() > before);
        }
        if groups > 1 {
            dedup_tail(out, start);
        }
    }

    /// How many bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All bindings, for listing/export: (routing key, arguments sorted by
    /// key, destination), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldTable, D)> + '_ {
        self.by_key
            .iter()
            .flat_map(|(k, g)| g.iter().map(move |(a, d)| (&k.0, a, d)))
            .chain(self.trie.iter())
    }

    /// Records that `dest` gained its first binding under `key`.
    fn note_key(&mut self, dest: D, key: &ShortStr) {
        let dests = &mut self.dests;
        let entry = self.by_dest.entry(dest).or_insert_with(|| {
            dests.push(dest);
            DestKeys {
                pos: u32::try_from(dests.len() - 1).expect("fewer than 2^32 destinations"),
                keys: Vec::with_capacity(1),
            }
        });
        entry.keys.push(detach_str(key));
    }

    /// Records that `dest` lost its last binding under `key`.
    fn forget_key(&mut self, dest: D, key: &[u8]) {
        let entry = self
            .by_dest
            .get_mut(&dest)
            .expect("bound destinations are indexed");
        let i = entry
            .keys
            .iter()
            .position(|k| k.as_bytes() == key)
            .expect("the index lists every key of a destination");
        entry.keys.swap_remove(i);
        if entry.keys.is_empty() {
            let pos = entry.pos;
            self.by_dest.remove(&dest);
            self.drop_dest_at(pos);
        }
    }

    fn drop_dest_at(&mut self, pos: u32) {
        self.dests.swap_remove(pos as usize);
        if let Some(moved) = self.dests.get(pos as usize) {
            self.by_dest
                .get_mut(moved)
                .expect("listed destinations are indexed")
                .pos = pos;
        }
    }
}
