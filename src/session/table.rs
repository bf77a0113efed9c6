//! The open channels of one connection, by number.
//!
//! Any channel number (1..=65535) may be used, as in RabbitMQ; what
//! `channel_max` limits is how many are open at once. Numbers below
//! [`DENSE`] (what clients use in practice) are looked up by index, on
//! the per-frame path; the rest go to a map, so a client opening channel
//! 65535 costs one entry rather than a 65,536-slot table.

use super::channel::Channel;
use crate::ids::IdMap;

/// Channel numbers below this live in the indexed table.
const DENSE: usize = 256;

#[derive(Default)]
pub(crate) struct ChannelTable {
    dense: Vec<Option<Box<Channel>>>,
    sparse: IdMap<u16, Box<Channel>>,
    len: usize,
}

impl ChannelTable {
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn get(&self, n: u16) -> Option<&Channel> {
        match self.dense.get(n as usize) {
            Some(slot) => slot.as_deref(),
            None if (n as usize) < DENSE => None,
            None => self.sparse.get(&n).map(|b| &**b),
        }
    }

    #[inline]
    pub fn get_mut(&mut self, n: u16) -> Option<&mut Channel> {
        if (n as usize) < DENSE {
            return self.dense.get_mut(n as usize)?.as_deref_mut();
        }
        self.sparse.get_mut(&n).map(|b| &mut **b)
    }

    /// Adds channel `n`, which must not be open.
    pub fn insert(&mut self, n: u16, ch: Box<Channel>) {
        let i = n as usize;
        if i < DENSE {
            if self.dense.len() <= i {
                self.dense.resize_with(i + 1, || None);
            }
            debug_assert!(self.dense[i].is_none(), "channel {n} already open");
            self.dense[i] = Some(ch);
        } else {
            let old = self.sparse.insert(n, ch);
            debug_assert!(old.is_none(), "channel {n} already open");
        }
        self.len += 1;
    }

    pub fn remove(&mut self, n: u16) -> Option<Box<Channel>> {
        let i = n as usize;
        let ch = if i < DENSE {
            self.dense.get_mut(i).and_then(Option::take)
        } else {
            self.sparse.remove(&n)
        };
        if ch.is_some() {
            self.len -= 1;
        }
        ch
    }

    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.dense
            .iter()
            .flatten()
            .map(|b| &**b)
            .chain(self.sparse.values().map(|b| &**b))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.dense
            .iter_mut()
            .flatten()
            .map(|b| &mut **b)
            .chain(self.sparse.values_mut().map(|b| &mut **b))
    }

    /// Removes every channel.
    pub fn drain(&mut self) -> impl Iterator<Item = Box<Channel>> + '_ {
        self.len = 0;
        self.dense
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.sparse.drain().map(|(_, c)| c))
    }
}
