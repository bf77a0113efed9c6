//! Messages waiting in a queue: by priority level (one level unless the
//! queue has `x-max-priority`), each level in sequence order.

use crate::message::Message;
use std::collections::VecDeque;

/// A message held by a queue. `seq` is the queue-local sequence number given at
/// enqueue; it fixes the message's position for its whole life, so a requeued
/// message goes back exactly where it was (as RabbitMQ does since 2.7).
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub msg: Message,
    /// When the message expires, in ms since the epoch (0: never).
    pub expires_at: u64,
    /// On disk (persistent message on a durable queue).
    pub loc: Option<crate::ids::Loc>,
    /// Delivered at least once before (the `redelivered` flag).
    pub redelivered: bool,
}

impl Entry {
    pub fn expired(&self, now_ms: u64, inclusive: bool) -> bool {
        self.expires_at != 0 && (self.expires_at < now_ms || (inclusive && self.expires_at == now_ms))
    }
}

/// Ready messages. Higher priority levels come first; within a level,
/// messages are in `seq` order. New messages append; requeued ones are
/// merged back into place.
pub struct ReadyList {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
    bytes: u64,
}

impl Default for ReadyList {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ReadyList {
    /// `max_priority` 0: a plain FIFO queue.
    pub fn new(max_priority: u8) -> Self {
        ReadyList {
            levels: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn level(&self, e: &Entry) -> usize {
        (e.msg.priority as usize).min(self.levels.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Sum of body sizes, as RabbitMQ's `message_bytes_ready`.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a newly published message; its seq must exceed every seq seen.
    pub fn push_new(&mut self, e: Entry) {
        let l = self.level(&e);
        debug_assert!(self.levels[l].back().is_none_or(|b| b.seq < e.seq));
        self.bytes += e.msg.body_len() as u64;
        self.len += 1;
        self.levels[l].push_back(e);
    }

    fn head_level(&self) -> Option<usize> {
        (0..self.levels.len()).rev().find(|&l| !self.levels[l].is_empty())
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Entry> {
        self.levels[self.head_level()?].front()
    }

    pub fn pop_front(&mut self) -> Option<Entry> {
        let l = self.head_level()?;
        self.take(l)
    }

    fn take(&mut self, level: usize) -> Option<Entry> {
        let e = self.levels[level].pop_front()?;
        self.bytes -= e.msg.body_len() as u64;
        self.len -= 1;
        Some(e)
    }

    /// Removes one expired message waiting at the head of any level (only
    /// heads are checked, as in RabbitMQ: a per-queue TTL makes the head the
    /// oldest, so expiry never scans the queue).
    pub fn pop_expired(&mut self, now_ms: u64, inclusive: bool) -> Option<Entry> {
        let l = (0..self.levels.len()).find(|&l| {
            self.levels[l]
                .front()
                .is_some_and(|e| e.expired(now_ms, inclusive))
        })?;
        self.take(l)
    }

    /// Puts previously delivered messages back at their original positions.
    pub fn requeue(&mut self, back: Vec<Entry>) {
        if back.is_empty() {
            return;
        }
        if self.levels.len() == 1 {
            self.merge(0, back);
            return;
        }
        let mut by_level: Vec<Vec<Entry>> = (0..self.levels.len()).map(|_| Vec::new()).collect();
        for e in back {
            let l = self.level(&e);
            by_level[l].push(e);
        }
        for (l, v) in by_level.into_iter().enumerate() {
            if !v.is_empty() {
                self.merge(l, v);
            }
        }
    }

    fn merge(&mut self, level: usize, mut back: Vec<Entry>) {
        back.sort_unstable_by_key(|e| e.seq);
        for e in &back {
            self.bytes += e.msg.body_len() as u64;
        }
        self.len += back.len();
        let entries = &mut self.levels[level];
        // Common case: everything requeued is older than everything waiting.
        let first_ready = entries.front().map(|e| e.seq);
        if first_ready.is_none_or(|f| back.last().is_some_and(|l| l.seq < f)) {
            for e in back.into_iter().rev() {
                entries.push_front(e);
            }
            return;
        }
        if back.len() <= 8 {
            for e in back {
                let at = entries.partition_point(|x| x.seq < e.seq);
                entries.insert(at, e);
            }
            return;
        }
        let old = std::mem::take(entries);
        let mut merged = VecDeque::with_capacity(old.len() + back.len());
        let mut a = old.into_iter().peekable();
        let mut b = back.into_iter().peekable();
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.seq < y.seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_a { a.next() } else { b.next() };
            merged.extend(next);
        }
        *entries = merged;
    }

    /// Takes out the message with this sequence, if ready.
    pub fn take_seq(&mut self, seq: u64) -> Option<Entry> {
        let level = self
            .levels
            .iter()
            .position(|l| l.binary_search_by_key(&seq, |e| e.seq).is_ok())?;
        let at = self.levels[level].binary_search_by_key(&seq, |e| e.seq).ok()?;
        let e = self.levels[level].remove(at)?;
        self.bytes -= e.msg.body_len() as u64;
        self.len -= 1;
        Some(e)
    }

    /// Takes out the messages whose sequences are in `seqs` (sorted), in
    /// sequence order per level. A scan of the whole list: for rare events
    /// (a consumer resuming on a replicated queue's new leader).
    pub fn take_seqs(&mut self, seqs: &[u64]) -> Vec<Entry> {
        let mut out = Vec::new();
        if seqs.is_empty() {
            return out;
        }
        for level in &mut self.levels {
            let mut kept = VecDeque::with_capacity(level.len());
            for e in level.drain(..) {
                if seqs.binary_search(&e.seq).is_ok() {
                    out.push(e);
                } else {
                    kept.push_back(e);
                }
            }
            *level = kept;
        }
        for e in &out {
            self.bytes -= e.msg.body_len() as u64;
        }
        self.len -= out.len();
        out
    }

    /// Removes every ready message, in delivery order.
    pub fn drain_all(&mut self) -> VecDeque<Entry> {
        self.bytes = 0;
        self.len = 0;
        let mut out = VecDeque::new();
        for l in self.levels.iter_mut().rev() {
            out.extend(l.drain(..));
        }
        out
    }

    /// In delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.levels.iter().rev().flat_map(|l| l.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64) -> Entry {
        ep(seq, 0)
    }

    fn ep(seq: u64, priority: u8) -> Entry {
        let mut msg = Message::assemble(b"", b"q", b"", &seq.to_be_bytes());
        msg.priority = priority;
        Entry {
            seq,
            msg,
            expires_at: 0,
            loc: None,
            redelivered: false,
        }
    }

    fn seqs(r: &ReadyList) -> Vec<u64> {
        r.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn requeue_restores_positions() {
        let mut r = ReadyList::default();
        for s in [2, 4, 6, 8, 10, 12, 14, 16, 18, 20] {
            r.push_new(e(s));
        }
        r.requeue(vec![e(1), e(5)]);
        assert_eq!(seqs(&r), vec![1, 2, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20]);
        r.requeue((0..10).map(|i| e(100 + i)).chain([e(3), e(7)]).collect());
        let s = seqs(&r);
        let mut sorted = s.clone();
        sorted.sort();
        assert_eq!(s, sorted);
        assert_eq!(s.len(), 24);
        assert_eq!(r.bytes(), 24 * 8);
    }

    /// The in-memory cost of a waiting message, documented in the README.
    #[test]
    fn entry_size() {
        assert_eq!(std::mem::size_of::<Entry>(), 96);
        assert_eq!(std::mem::size_of::<Message>(), 64);
    }

    #[test]
    fn requeue_older_goes_front() {
        let mut r = ReadyList::default();
        r.push_new(e(10));
        r.requeue(vec![e(3), e(1), e(2)]);
        assert_eq!(seqs(&r), vec![1, 2, 3, 10]);
        assert_eq!(r.pop_front().unwrap().seq, 1);
    }

    #[test]
    fn priorities_first_fifo_within() {
        let mut r = ReadyList::new(5);
        for (s, p) in [(1, 0), (2, 3), (3, 9), (4, 3), (5, 0)] {
            r.push_new(ep(s, p));
        }
        // Priority 9 is capped to 5 and comes first.
        assert_eq!(seqs(&r), vec![3, 2, 4, 1, 5]);
        let top = r.pop_front().unwrap();
        let next = r.pop_front().unwrap();
        r.requeue(vec![next, top]);
        assert_eq!(seqs(&r), vec![3, 2, 4, 1, 5]);
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn expiry_checks_heads_only() {
        let mut r = ReadyList::default();
        let mut a = e(1);
        a.expires_at = 100;
        let mut b = e(2);
        b.expires_at = 50;
        r.push_new(a);
        r.push_new(b);
        assert!(r.pop_expired(60, true).is_none(), "the head has not expired");
        assert_eq!(r.pop_expired(100, true).unwrap().seq, 1);
        assert!(r.pop_expired(100, false).is_some());
    }
}
