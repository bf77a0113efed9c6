//! Messages waiting in a queue, in sequence order.

use crate::message::Message;
use std::collections::VecDeque;

/// A message held by a queue. `seq` is the queue-local sequence number given at
/// enqueue; it fixes the message's position for its whole life, so a requeued
/// message goes back exactly where it was (as RabbitMQ does since 2.7).
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    pub msg: Message,
    /// Delivered at least once before (the `redelivered` flag).
    pub redelivered: bool,
    /// On disk (persistent message on a durable queue).
    pub loc: Option<crate::ids::Loc>,
}

/// Ready messages ordered by `seq`. New messages append; requeued ones are
/// merged back into place.
#[derive(Default)]
pub struct ReadyList {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl ReadyList {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Sum of body sizes, as RabbitMQ's `message_bytes_ready`.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a newly published message; its seq must exceed every seq seen.
    pub fn push_new(&mut self, e: Entry) {
        debug_assert!(self.entries.back().is_none_or(|b| b.seq < e.seq));
        self.bytes += e.msg.body_len() as u64;
        self.entries.push_back(e);
    }

    pub fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.msg.body_len() as u64;
        Some(e)
    }

    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// Puts previously delivered messages back at their original positions.
    pub fn requeue(&mut self, mut back: Vec<Entry>) {
        if back.is_empty() {
            return;
        }
        back.sort_unstable_by_key(|e| e.seq);
        for e in &back {
            self.bytes += e.msg.body_len() as u64;
        }
        // Common case: everything requeued is older than everything waiting.
        let first_ready = self.entries.front().map(|e| e.seq);
        if first_ready.is_none_or(|f| back.last().is_some_and(|l| l.seq < f)) {
            for e in back.into_iter().rev() {
                self.entries.push_front(e);
            }
            return;
        }
        if back.len() <= 8 {
            for e in back {
                let at = self.entries.partition_point(|x| x.seq < e.seq);
                self.entries.insert(at, e);
            }
            return;
        }
        let old = std::mem::take(&mut self.entries);
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
        self.entries = merged;
    }

    /// Removes every ready message; returns them for disposal (storage acks).
    pub fn drain_all(&mut self) -> VecDeque<Entry> {
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64) -> Entry {
        Entry {
            seq,
            msg: Message::assemble(b"", b"q", b"", &seq.to_be_bytes()),
            redelivered: false,
            loc: None,
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
        assert_eq!(std::mem::size_of::<Entry>(), 88);
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
}
