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
//!
//! Consumers of classic queues on other nodes are watched the same way:
//! a queue's node that restarted or is gone will deliver nothing more, and
//! RabbitMQ tells such consumers with a `basic.cancel` (its "consumer
//! cancel notification" names a failed queue node as a cause). So are
//! those the queue's node dropped while it could not reach this one (it
//! says so in its status: [`Check::Up`]'s `forgot`): it delivers nothing
//! more to them. Quorum queues' consumers are not: they move to the new
//! leader.

use crate::ids::{ChannelRef, ConsumerRef, QueueId};
use crate::protocol::ShortStr;
use std::collections::HashMap;

/// Checks in a row a node may miss before what it owes is given up.
pub const MISSES: u32 = 2;

/// A node's `forgot` count not seen yet: the first check's is taken as
/// where its consumers began (a count that grew before includes none of
/// them, as far as this node can tell).
const UNSEEN: u64 = u64::MAX;

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
    /// Consumers of classic queues on other nodes: (node, its boot id when
    /// it took the consumer, the queue, the node's `forgot` count as last
    /// seen when it began: [`UNSEEN`] until a check of the node tells).
    consumers: HashMap<ConsumerRef, (u64, u64, QueueId, u64)>,
    missed: HashMap<u64, u32>,
    /// Per node: its count of this node's consumers it dropped, as last
    /// seen.
    forgot: HashMap<u64, u64>,
}

/// What a check found lost: requests that will not be answered, and
/// consumers whose queue's node restarted or is gone.
#[derive(Default, Debug)]
pub struct Lost {
    pub asks: Vec<(ChannelRef, Ask)>,
    pub consumers: Vec<(ConsumerRef, u64, QueueId)>,
}

/// What a node's check found.
pub enum Check {
    /// Its run (boot id), and how many times it dropped this node's
    /// consumers of its queues while it could not reach this node.
    Up {
        boot: u64,
        forgot: u64,
    },
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
        self.adopt(node, boot);
    }

    /// Consumers whose node's run was not known yet (their answer came
    /// before the call that carried their consume returned) take `boot`.
    fn adopt(&mut self, node: u64, boot: u64) {
        for c in self.consumers.values_mut() {
            if c.0 == node && c.1 == 0 {
                c.1 = boot;
            }
        }
    }

    /// The channel's answer came (or was given); None if nothing waited.
    pub fn answered(&mut self, ch: ChannelRef) -> Option<Ask> {
        self.by_ch.remove(&ch)
    }

    pub fn is_empty(&self) -> bool {
        self.by_ch.is_empty() && self.consumers.is_empty()
    }

    /// A consumer of a classic queue `node` serves (its run `boot`) began.
    pub fn consuming(&mut self, consumer: ConsumerRef, node: u64, boot: u64, queue: QueueId) {
        let forgot = self.forgot.get(&node).copied().unwrap_or(UNSEEN);
        self.consumers.insert(consumer, (node, boot, queue, forgot));
    }

    /// The consumer was cancelled or dropped.
    pub fn stopped(&mut self, consumer: ConsumerRef) {
        self.consumers.remove(&consumer);
    }

    /// The nodes to check: those owing an answer asked before `before_ms`
    /// (a fresh request is given time to be answered), and those serving
    /// consumers here.
    pub fn owing(&self, before_ms: u64) -> Vec<u64> {
        let mut nodes: Vec<u64> = self
            .by_ch
            .values()
            .filter(|a| a.since_ms < before_ms)
            .map(|a| a.node)
            .chain(self.consumers.values().map(|c| c.0))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Applies a check of `node`; returns what is given up: requests (their
    /// channels get the answer for a queue whose node is down; only those
    /// asked before `before_ms` are judged) and consumers (cancelled).
    pub fn checked(&mut self, node: u64, check: Check, before_ms: u64) -> Lost {
        // Whether something the node took while running as `boot` is lost.
        let lost = |boot: u64| match check {
            // What an earlier run of the node took died with it.
            Check::Up { boot: now, .. } => boot != 0 && boot != now,
            Check::Unreachable => true,
        };
        // A consumer that began before the node last dropped this node's
        // consumers is one of them.
        let dropped =
            |since: u64| matches!(check, Check::Up { forgot, .. } if since != UNSEEN && forgot > since);
        match check {
            Check::Up { boot, forgot } => {
                self.missed.remove(&node);
                self.adopt(node, boot);
                self.forgot.insert(node, forgot);
                for c in self.consumers.values_mut() {
                    if c.0 == node && c.3 == UNSEEN {
                        c.3 = forgot;
                    }
                }
            }
            Check::Unreachable => {
                let m = self.missed.entry(node).or_default();
                *m += 1;
                if *m < MISSES {
                    return Lost::default();
                }
                self.missed.remove(&node);
            }
        }
        let asks: Vec<ChannelRef> = self
            .by_ch
            .iter()
            .filter(|(_, a)| a.node == node && a.since_ms < before_ms && lost(a.boot))
            .map(|(c, _)| *c)
            .collect();
        let consumers: Vec<ConsumerRef> = self
            .consumers
            .iter()
            .filter(|(_, (n, boot, _, since))| *n == node && (lost(*boot) || dropped(*since)))
            .map(|(c, _)| *c)
            .collect();
        Lost {
            asks: asks
                .into_iter()
                .filter_map(|c| self.by_ch.remove(&c).map(|a| (c, a)))
                .collect(),
            consumers: consumers
                .into_iter()
                .filter_map(|c| self.consumers.remove(&c).map(|(n, _, q, _)| (c, n, q)))
                .collect(),
        }
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
        assert!(a.checked(7, Check::Unreachable, 100).asks.is_empty());
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
        assert!(
            a.checked(7, Check::Up { boot: 55, forgot: 0 }, 200)
                .asks
                .is_empty()
        );
        // A new run: what the old one took is lost; ch(2)'s run is unknown
        // (the send's answer has not come), it waits on.
        let lost = a.checked(7, Check::Up { boot: 56, forgot: 0 }, 200).asks;
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
        assert!(a.checked(7, Check::Unreachable, 200).asks.is_empty());
        // Back in between: the count starts again.
        assert!(
            a.checked(7, Check::Up { boot: 1, forgot: 0 }, 200)
                .asks
                .is_empty()
        );
        assert!(a.checked(7, Check::Unreachable, 200).asks.is_empty());
        let lost = a.checked(7, Check::Unreachable, 200);
        assert_eq!(lost.asks.len(), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn consumers_of_a_node_that_restarted_or_is_gone_are_lost() {
        let mut a = Asks::default();
        let c = |id| ConsumerRef { ch: ch(1), id };
        a.consuming(c(1), 7, 55, QueueId(1));
        a.consuming(c(2), 8, 66, QueueId(2));
        a.consuming(c(3), 8, 66, QueueId(2));
        a.stopped(c(3));
        assert_eq!(a.owing(0), vec![7, 8]);
        // The same run: nothing lost.
        let l = a.checked(7, Check::Up { boot: 55, forgot: 0 }, 0);
        assert!(l.consumers.is_empty() && l.asks.is_empty());
        // Restarted: its consumer is lost at once.
        let l = a.checked(7, Check::Up { boot: 56, forgot: 0 }, 0);
        assert_eq!(l.consumers, vec![(c(1), 7, QueueId(1))]);
        // Gone: after two missed checks.
        assert!(a.checked(8, Check::Unreachable, 0).consumers.is_empty());
        let l = a.checked(8, Check::Unreachable, 0);
        assert_eq!(l.consumers, vec![(c(2), 8, QueueId(2))]);
        assert!(a.is_empty());
    }

    #[test]
    fn consumers_the_node_dropped_while_it_could_not_reach_this_one_are_lost() {
        let mut a = Asks::default();
        let c = |id| ConsumerRef { ch: ch(1), id };
        let up = |forgot| Check::Up { boot: 55, forgot };
        // Its count before any check here is where the first consumer
        // began: 3 older drops are none of it.
        a.consuming(c(1), 7, 55, QueueId(1));
        assert!(a.checked(7, up(3), 0).consumers.is_empty());
        a.consuming(c(2), 7, 55, QueueId(1));
        assert!(a.checked(7, up(3), 0).consumers.is_empty());
        // The node dropped this node's consumers: both were there before.
        let mut l = a.checked(7, up(4), 0).consumers;
        l.sort_by_key(|(c, ..)| c.id);
        assert_eq!(l, vec![(c(1), 7, QueueId(1)), (c(2), 7, QueueId(1))]);
        // One that began after it is not.
        a.consuming(c(3), 7, 55, QueueId(1));
        assert!(a.checked(7, up(4), 0).consumers.is_empty());
        assert!(!a.is_empty());
    }
}
