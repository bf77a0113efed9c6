//! Requests local channels sent to queues on other nodes that still wait
//! for their answer (consume, get, purge, a declare's counts, cancel).
//!
//! A node that took a request and then died, or restarted, never answers
//! it: the channel would wait forever, and with it the connection (a
//! client waits for each synchronous method's answer). So each request is
//! remembered from when it is sent until its answer passes; shard 0 checks
//! the nodes that owe answers, and the requests of a node that restarted
//! (a new boot id) or missed [`MISSES`] checks in a row are answered as
//! for a queue whose node is down. An answer that comes after all is
//! dropped by the channel (it is closed by then), as any late one is.

use crate::ids::{ChannelRef, QueueId};
use crate::protocol::ShortStr;
use std::collections::HashMap;

/// Checks in a row a node may miss before what it owes is given up.
pub const MISSES: u32 = 2;

/// One request waiting for its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    pub node: u64,
    /// The node's boot id when it took the request; 0 until known.
    pub boot: u64,
    pub queue: QueueId,
    pub name: ShortStr,
    pub since_ms: u64,
}

#[derive(Default)]
pub struct Asks {
    /// A channel has at most one request waiting.
    by_ch: HashMap<ChannelRef, Ask>,
    missed: HashMap<u64, u32>,
}

/// What a node's check found.
pub enum Check {
    Up { boot: u64 },
    Unreachable,
}

impl Asks {
    pub fn asked(&mut self, ch: ChannelRef, node: u64, queue: QueueId, name: ShortStr, now_ms: u64) {
        self.by_ch.insert(
            ch,
            Ask {
                node,
                boot: 0,
                queue,
                name,
                since_ms: now_ms,
            },
        );
    }

    /// `node` took these channels' requests while running as `boot`.
    pub fn taken(&mut self, node: u64, boot: u64, chs: impl IntoIterator<Item = ChannelRef>) {
        for ch in chs {
            if let Some(a) = self.by_ch.get_mut(&ch)
                && a.node == node
            {
                a.boot = boot;
            }
        }
    }

    /// The channel's answer came (or was given); None if nothing waited.
    pub fn answered(&mut self, ch: ChannelRef) -> Option<Ask> {
        self.by_ch.remove(&ch)
    }

    pub fn is_empty(&self) -> bool {
        self.by_ch.is_empty()
    }

    /// The nodes owing an answer asked before `before_ms`: they are
    /// checked (a fresh request is given time to be answered).
    pub fn owing(&self, before_ms: u64) -> Vec<u64> {
        let mut nodes: Vec<u64> = self
            .by_ch
            .values()
            .filter(|a| a.since_ms < before_ms)
            .map(|a| a.node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Applies a check of `node`; returns the requests given up (their
    /// channels get the answer for a queue whose node is down). Only the
    /// requests asked before `before_ms` are judged.
    pub fn checked(&mut self, node: u64, check: Check, before_ms: u64) -> Vec<(ChannelRef, Ask)> {
        let give_up = |a: &Ask, restarted: bool| a.node == node && a.since_ms < before_ms && restarted;
        let lost: Vec<ChannelRef> = match check {
            Check::Up { boot } => {
                self.missed.remove(&node);
                // A request taken by an earlier run of the node died with it.
                self.by_ch
                    .iter()
                    .filter(|(_, a)| give_up(a, a.boot != 0 && a.boot != boot))
                    .map(|(c, _)| *c)
                    .collect()
            }
            Check::Unreachable => {
                let m = self.missed.entry(node).or_default();
                *m += 1;
                if *m < MISSES {
                    return Vec::new();
                }
                self.missed.remove(&node);
                self.by_ch
                    .iter()
                    .filter(|(_, a)| give_up(a, true))
                    .map(|(c, _)| *c)
                    .collect()
            }
        };
        lost.into_iter()
            .filter_map(|c| self.by_ch.remove(&c).map(|a| (c, a)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;

    fn ch(n: u16) -> ChannelRef {
        ChannelRef {
            conn: ConnId::new(0, 1),
            channel: n,
            epoch: 0,
        }
    }

    #[test]
    fn an_answer_clears_the_request() {
        let mut a = Asks::default();
        a.asked(ch(1), 7, QueueId(1), "q".into(), 100);
        assert_eq!(a.owing(200), vec![7]);
        assert!(a.answered(ch(1)).is_some());
        assert!(a.answered(ch(1)).is_none());
        assert!(a.is_empty());
        assert!(a.owing(200).is_empty());
    }

    #[test]
    fn fresh_requests_are_not_judged() {
        let mut a = Asks::default();
        a.asked(ch(1), 7, QueueId(1), "q".into(), 100);
        assert!(a.owing(100).is_empty());
        a.checked(7, Check::Unreachable, 100);
        assert!(a.checked(7, Check::Unreachable, 100).is_empty());
        assert!(!a.is_empty());
    }

    #[test]
    fn a_node_that_restarted_owes_nothing_it_took_before() {
        let mut a = Asks::default();
        a.asked(ch(1), 7, QueueId(1), "q".into(), 100);
        a.asked(ch(2), 7, QueueId(1), "q".into(), 100);
        a.asked(ch(3), 8, QueueId(2), "r".into(), 100);
        a.taken(7, 55, [ch(1)]);
        // Taken by another node's run: not this one's to mark.
        a.taken(8, 66, [ch(2)]);
        // Same run: still waiting.
        assert!(a.checked(7, Check::Up { boot: 55 }, 200).is_empty());
        // A new run: what the old one took is lost; ch(2)'s run is unknown
        // (the send's answer has not come), it waits on.
        let lost = a.checked(7, Check::Up { boot: 56 }, 200);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, ch(1));
        assert_eq!(lost[0].1.name.as_bytes(), b"q");
        assert!(a.answered(ch(2)).is_some());
        assert!(a.answered(ch(3)).is_some());
    }

    #[test]
    fn an_unreachable_node_is_given_up_after_missing_checks_in_a_row() {
        let mut a = Asks::default();
        a.asked(ch(1), 7, QueueId(1), "q".into(), 100);
        assert!(a.checked(7, Check::Unreachable, 200).is_empty());
        // Back in between: the count starts again.
        assert!(a.checked(7, Check::Up { boot: 1 }, 200).is_empty());
        assert!(a.checked(7, Check::Unreachable, 200).is_empty());
        let lost = a.checked(7, Check::Unreachable, 200);
        assert_eq!(lost.len(), 1);
        assert!(a.is_empty());
    }
}
