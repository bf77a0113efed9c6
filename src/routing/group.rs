//! The bindings that share one routing key, grouped by destination so that
//! routing can copy out each destination once without deduplicating.

use super::args::{EMPTY_ARGS, identical};
use crate::protocol::FieldTable;
use std::collections::HashMap;
use std::hash::Hash;

/// Past this many destinations a group keeps a hash index, so that binding
/// thousands of queues under one key (a fanout exchange, usually) stays O(1)
/// per binding instead of a linear search.
const INDEX_FROM: usize = 32;

/// The argument tables of the bindings from one key to one destination:
/// one entry per binding, in canonical form (see `args::canonical`).
/// Almost every binding has no arguments; that case is `None` and costs no
/// allocation.
#[derive(Debug, Default)]
#[allow(
    clippy::box_collection,
    reason = "a thin pointer keeps the common case at 8 bytes, not 24"
)]
pub(crate) struct ArgSet(Option<Box<Vec<FieldTable>>>);

/// The outcome of removing one argument table from an [`ArgSet`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    NotFound,
    /// Removed; other tables remain.
    One,
    /// Removed the last table: the destination has no binding left here.
    Last,
}

impl ArgSet {
    fn single(args: FieldTable) -> ArgSet {
        if args.is_empty() {
            ArgSet(None)
        } else {
            ArgSet(Some(Box::new(vec![args])))
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(1, |v| v.len())
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, FieldTable> {
        match &self.0 {
            None => std::slice::from_ref(&EMPTY_ARGS).iter(),
            Some(v) => v.iter(),
        }
    }

    fn insert(&mut self, args: FieldTable) -> bool {
        if self.iter().any(|a| identical(a, &args)) {
            return false;
        }
        match &mut self.0 {
            None => self.0 = Some(Box::new(vec![FieldTable::new(), args])),
            Some(v) => v.push(args),
        }
        true
    }

    fn remove(&mut self, args: &FieldTable) -> Removed {
        let Some(v) = &mut self.0 else {
            return if args.is_empty() {
                Removed::Last
            } else {
                Removed::NotFound
            };
        };
        let Some(i) = v.iter().position(|a| identical(a, args)) else {
            return Removed::NotFound;
        };
        v.remove(i);
        match v.len() {
            0 => Removed::Last,
            1 if v[0].is_empty() => {
                self.0 = None;
                Removed::One
            }
            _ => Removed::One,
        }
    }
}

/// What [`Group::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The binding already existed.
    Exists,
    /// A new binding for a destination already bound under this key.
    Args,
    /// The destination's first binding under this key.
    Dest,
}

/// Bindings under one key: each destination once, with its argument tables.
/// Part of a [`super::Bindings`], so replicated on every shard.
#[derive(Debug)]
pub(crate) struct Group<D> {
    entries: Entries<(D, ArgSet)>,
    /// Destination → position in `entries`, only for large groups.
    #[allow(clippy::box_collection, reason = "8 bytes, not 48, in the many small groups")]
    index: Option<Box<HashMap<D, u32>>>,
}

impl<D: Copy + Eq + Hash> Group<D> {
    pub(crate) fn new() -> Self {
        Group {
            entries: Entries::Many(Vec::new()),
            index: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each destination exactly once.
    pub(crate) fn dests(&self) -> impl Iterator<Item = D> + '_ {
        self.entries.as_slice().iter().map(|(d, _)| *d)
    }

    /// Every destination and its argument tables.
    pub(crate) fn entries(&self) -> &[(D, ArgSet)] {
        self.entries.as_slice()
    }

    /// Every binding as (arguments, destination).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&FieldTable, D)> + '_ {
        self.entries
            .as_slice()
            .iter()
            .flat_map(|(d, a)| a.iter().map(move |t| (t, *d)))
    }

    fn position(&self, dest: D) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(&dest).map(|&i| i as usize),
            None => self.entries.as_slice().iter().position(|(d, _)| *d == dest),
        }
    }

    /// Adds a binding; `args` must be canonical.
    pub(crate) fn insert(&mut self, dest: D, args: FieldTable) -> Inserted {
        if let Some(i) = self.position(dest) {
            return if self.entries.as_mut_slice()[i].1.insert(args) {
                Inserted::Args
            } else {
                Inserted::Exists
            };
        }
        if let Some(ix) = &mut self.index {
            ix.insert(dest, self.entries.len() as u32);
        }
        self.entries.push((dest, ArgSet::single(args)));
        if self.index.is_none() && self.entries.len() > INDEX_FROM {
            let ix = self
                .entries
                .as_slice()
                .iter()
                .enumerate()
                .map(|(i, (d, _))| (*d, i as u32));
            self.index = Some(Box::new(ix.collect()));
        }
        Inserted::Dest
    }

    /// Removes one binding; `args` must be canonical.
    pub(crate) fn remove(&mut self, dest: D, args: &FieldTable) -> Removed {
        let Some(i) = self.position(dest) else {
            return Removed::NotFound;
        };
        let r = self.entries.as_mut_slice()[i].1.remove(args);
        if r == Removed::Last {
            self.remove_at(i);
        }
        r
    }

    /// Removes every binding to `dest`; returns how many there were.
    pub(crate) fn remove_dest(&mut self, dest: D) -> usize {
        match self.position(dest) {
            Some(i) => self.remove_at(i).len(),
            None => 0,
        }
    }

    fn remove_at(&mut self, i: usize) -> ArgSet {
        let (dest, args) = self.entries.swap_remove(i);
        if let Some(ix) = &mut self.index {
            ix.remove(&dest);
            if let Some((moved, _)) = self.entries.as_slice().get(i) {
                ix.insert(*moved, i as u32);
            }
            if self.entries.len() < INDEX_FROM / 2 {
                self.index = None;
            }
        }
        args
    }
}

/// A list that holds its only element inline: most routing keys lead to a
/// single destination, and this saves that case an allocation and, when
/// routing, a cache miss.
#[derive(Debug)]
enum Entries<T> {
    One(T),
    /// Also the empty list, which allocates nothing.
    Many(Vec<T>),
}

impl<T> Entries<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            Entries::One(t) => std::slice::from_ref(t),
            Entries::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Entries::One(t) => std::slice::from_mut(t),
            Entries::Many(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, t: T) {
        match self {
            Entries::Many(v) if v.is_empty() => *self = Entries::One(t),
            Entries::Many(v) => v.push(t),
            Entries::One(_) => {
                let Entries::One(first) = std::mem::replace(self, Entries::Many(Vec::new())) else {
                    unreachable!()
                };
                *self = Entries::Many(vec![first, t]);
            }
        }
    }

    fn swap_remove(&mut self, i: usize) -> T {
        match self {
            Entries::One(_) => {
                assert_eq!(i, 0, "index out of bounds");
                let Entries::One(t) = std::mem::replace(self, Entries::Many(Vec::new())) else {
                    unreachable!()
                };
                t
            }
            Entries::Many(v) => {
                let t = v.swap_remove(i);
                if v.len() == 1 {
                    *self = Entries::One(v.pop().expect("one left"));
                }
                t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FieldValue, ShortStr};

    fn a(v: i32) -> FieldTable {
        FieldTable(vec![(ShortStr::from("a"), FieldValue::I32(v))])
    }

    #[test]
    fn arg_set_keeps_the_empty_case_unallocated() {
        let mut g = Group::new();
        assert_eq!(g.insert(1u32, FieldTable::new()), Inserted::Dest);
        assert!(g.entries()[0].1.0.is_none());
        assert_eq!(g.insert(1, FieldTable::new()), Inserted::Exists);
        assert_eq!(g.insert(1, a(1)), Inserted::Args);
        assert_eq!(g.insert(1, a(1)), Inserted::Exists);
        assert_eq!(g.entries()[0].1.len(), 2);
        assert_eq!(g.remove(1, &a(1)), Removed::One);
        assert!(g.entries()[0].1.0.is_none(), "back to the compact form");
        assert_eq!(g.remove(1, &a(1)), Removed::NotFound);
        assert_eq!(g.remove(1, &FieldTable::new()), Removed::Last);
        assert!(g.is_empty());
    }

    #[test]
    fn removing_the_empty_table_keeps_the_others() {
        let mut g = Group::new();
        g.insert(7u32, FieldTable::new());
        g.insert(7, a(1));
        g.insert(7, a(2));
        assert_eq!(g.remove(7, &FieldTable::new()), Removed::One);
        let left: Vec<_> = g.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(left, vec![a(1), a(2)]);
        assert_eq!(g.remove_dest(7), 2);
        assert!(g.is_empty());
    }

    #[test]
    fn large_groups_index_and_stay_consistent() {
        let mut g = Group::new();
        for d in 0..100u32 {
            assert_eq!(g.insert(d, FieldTable::new()), Inserted::Dest);
        }
        assert!(g.index.is_some());
        for d in (0..100u32).step_by(3) {
            assert_eq!(g.remove(d, &FieldTable::new()), Removed::Last);
        }
        for d in 0..100u32 {
            let want = if d % 3 == 0 {
                Inserted::Dest
            } else {
                Inserted::Exists
            };
            assert_eq!(g.insert(d, FieldTable::new()), want, "dest {d}");
        }
        for d in 0..95u32 {
            assert_eq!(g.remove_dest(d), 1);
        }
        assert!(g.index.is_none());
        let mut left: Vec<_> = g.dests().collect();
        left.sort();
        assert_eq!(left, (95..100).collect::<Vec<_>>());
    }
}
