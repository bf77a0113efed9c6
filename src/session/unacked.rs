//! A channel's outstanding deliveries, keyed by delivery tag.
//!
//! Tags grow strictly, and clients ack mostly in order, so this is a deque
//! sorted by tag: in-order acks pop the front, `multiple` acks drain a prefix,
//! and out-of-order acks leave a tombstone that is compacted away once
//! tombstones outnumber live entries (amortized O(1), memory bounded by the
//! live count).

use crate::ids::QueueId;
use std::collections::VecDeque;

/// One delivery awaiting ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    pub tag: u64,
    pub queue: QueueId,
    pub seq: u64,
    /// Delivered to a consumer under the channel-wide prefetch (`basic.qos
    /// global=true`): counts against it until settled, even if the consumer
    /// is cancelled first (false for `basic.get`).
    pub limited: bool,
    /// When it was delivered (ms), for the consumer timeout.
    pub at_ms: u64,
}

// One slot per delivery in flight: keep it at five words.
const _: () = assert!(std::mem::size_of::<Option<Outstanding>>() == 40);

#[derive(Default)]
pub struct UnackedMap {
    slots: VecDeque<Option<Outstanding>>,
    live: usize,
}

impl UnackedMap {
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn push(&mut self, o: Outstanding) {
        debug_assert!(
            self.slots
                .iter()
                .rev()
                .flatten()
                .next()
                .is_none_or(|b| b.tag < o.tag),
            "delivery tags strictly increase"
        );
        self.slots.push_back(Some(o));
        self.live += 1;
    }

    fn index_of(&self, tag: u64) -> Option<usize> {
        // Tombstones keep their position, so the deque stays sorted by tag
        // if we search by the tag a slot had; we store tags only in live
        // slots, so search over live ones with a binary search that skips
        // tombstones by probing neighbours.
        let (mut lo, mut hi) = (0usize, self.slots.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            // Find a live slot at or after mid within [mid, hi).
            let mut probe = mid;
            while probe < hi && self.slots[probe].is_none() {
                probe += 1;
            }
            if probe == hi {
                hi = mid;
                continue;
            }
            let t = self.slots[probe].expect("live").tag;
            if t == tag {
                return Some(probe);
            } else if t < tag {
                lo = probe + 1;
            } else {
                hi = mid;
            }
        }
        None
    }

    /// Removes one delivery by tag.
    pub fn take(&mut self, tag: u64) -> Option<Outstanding> {
        let i = self.index_of(tag)?;
        let o = self.slots[i].take();
        self.live -= 1;
        self.trim();
        o
    }

    /// Removes every delivery with tag ≤ `tag` (`multiple = true`), in order.
    pub fn take_up_to(&mut self, tag: u64, out: &mut Vec<Outstanding>) {
        while let Some(front) = self.slots.front() {
            match front {
                None => {
                    self.slots.pop_front();
                }
                Some(o) if o.tag <= tag => {
                    out.push(*o);
                    self.slots.pop_front();
                    self.live -= 1;
                }
                Some(_) => break,
            }
        }
        self.trim();
    }

    /// Removes everything (channel close, `basic.recover`), in tag order.
    pub fn take_all(&mut self, out: &mut Vec<Outstanding>) {
        out.extend(self.slots.drain(..).flatten());
        self.live = 0;
    }

    /// Puts back deliveries taken out earlier (a rolled-back transaction's
    /// acks), each in its place by tag. Rare: rebuilds the map.
    pub fn restore(&mut self, back: impl IntoIterator<Item = Outstanding>) {
        let mut back = back.into_iter().peekable();
        if back.peek().is_none() {
            return;
        }
        let mut all: Vec<Outstanding> = self.slots.drain(..).flatten().chain(back).collect();
        all.sort_unstable_by_key(|o| o.tag);
        debug_assert!(
            all.windows(2).all(|w| w[0].tag < w[1].tag),
            "a tag is unacked once"
        );
        self.live = all.len();
        self.slots = all.into_iter().map(Some).collect();
    }

    pub fn contains(&self, tag: u64) -> bool {
        self.index_of(tag).is_some()
    }

    /// The oldest delivery still unacked.
    pub fn oldest(&self) -> Option<&Outstanding> {
        self.slots.iter().flatten().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Outstanding> {
        self.slots.iter().flatten()
    }

    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
        }
        while matches!(self.slots.back(), Some(None)) {
            self.slots.pop_back();
        }
        let dead = self.slots.len() - self.live;
        if dead > 64 && dead > self.live * 2 {
            self.slots.retain(|s| s.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(tag: u64) -> Outstanding {
        Outstanding {
            tag,
            queue: QueueId(1),
            seq: tag * 10,
            limited: false,
            at_ms: 0,
        }
    }

    #[test]
    fn in_order_and_multiple() {
        let mut m = UnackedMap::default();
        for t in 1..=10 {
            m.push(o(t));
        }
        assert_eq!(m.take(1).unwrap().seq, 10);
        assert!(m.take(1).is_none());
        assert_eq!(m.take(5).unwrap().tag, 5);
        let mut out = vec![];
        m.take_up_to(7, &mut out);
        assert_eq!(out.iter().map(|x| x.tag).collect::<Vec<_>>(), vec![2, 3, 4, 6, 7]);
        assert_eq!(m.len(), 3);
        assert!(m.contains(9));
        assert!(!m.contains(5));
    }

    #[test]
    fn tombstones_stay_bounded() {
        let mut m = UnackedMap::default();
        m.push(o(1));
        for t in 2..100_000 {
            m.push(o(t));
            assert!(m.take(t).is_some());
        }
        assert_eq!(m.len(), 1);
        assert!(m.slots.len() < 200);
    }

    proptest! {
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..4, 0u64..60), 1..200)) {
            let mut m = UnackedMap::default();
            let mut model = std::collections::BTreeSet::new();
            let mut next = 1u64;
            for (op, arg) in ops {
                match op {
                    0 | 1 => { m.push(o(next)); model.insert(next); next += 1; }
                    2 => { prop_assert_eq!(m.take(arg).map(|x| x.tag), model.take(&arg)); }
                    _ => {
                        let mut out = vec![];
                        m.take_up_to(arg, &mut out);
                        let expect: Vec<u64> = model.iter().copied().filter(|t| *t <= arg).collect();
                        for t in &expect { model.remove(t); }
                        prop_assert_eq!(out.iter().map(|x| x.tag).collect::<Vec<_>>(), expect);
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
        }
    }
}
