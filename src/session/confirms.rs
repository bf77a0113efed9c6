//! Publisher confirms for one channel.
//!
//! Each publish gets the next sequence number. A publish is settled once every
//! queue it was routed to has taken it (and, for persistent messages on
//! durable queues, synced it). Settled publishes are confirmed in sequence
//! order, so one `basic.ack multiple=true` can cover a whole run.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Queue acknowledgements still awaited.
    pending: u32,
    /// Some queue refused it: confirm with `basic.nack`.
    nack: bool,
}

/// A run of confirms ready to go out: `basic.ack`/`basic.nack` with
/// `delivery_tag = last` and `multiple = (count > 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmRun {
    pub last: u64,
    pub count: u64,
    pub nack: bool,
}

#[derive(Default)]
pub struct ConfirmTracker {
    /// Seq of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Next seq to hand out (0 = confirm mode off).
    next: u64,
}

impl ConfirmTracker {
    pub fn enable(&mut self) {
        if self.next == 0 {
            self.next = 1;
            self.base = 1;
        }
    }
    pub fn enabled(&self) -> bool {
        self.next != 0
    }
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// The seq the next publish will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Registers a publish awaiting `pending` queue acks; returns its seq.
    pub fn publish(&mut self, pending: u32) -> u64 {
        self.publish_with(pending, false)
    }

    /// Like [`ConfirmTracker::publish`]; `nack` if already refused.
    pub fn publish_with(&mut self, pending: u32, nack: bool) -> u64 {
        debug_assert!(self.enabled());
        let seq = self.next;
        self.next += 1;
        self.slots.push_back(Slot { pending, nack });
        seq
    }

    /// One queue took (or refused) publish `seq`. Unknown seqs are ignored
    /// (a stale reply from before a channel was reopened).
    pub fn settle(&mut self, seq: u64, ok: bool) {
        if seq < self.base {
            return;
        }
        if let Some(s) = self.slots.get_mut((seq - self.base) as usize) {
            s.pending = s.pending.saturating_sub(1);
            s.nack |= !ok;
        }
    }

    /// Pops the settled prefix as runs of equal outcome.
    pub fn drain_ready(&mut self, mut emit: impl FnMut(ConfirmRun)) {
        let mut run: Option<ConfirmRun> = None;
        while let Some(s) = self.slots.front() {
            if s.pending > 0 {
                break;
            }
            let seq = self.base;
            let nack = s.nack;
            self.slots.pop_front();
            self.base += 1;
            match &mut run {
                Some(r) if r.nack == nack => {
                    r.last = seq;
                    r.count += 1;
                }
                _ => {
                    if let Some(r) = run.take() {
                        emit(r);
                    }
                    run = Some(ConfirmRun {
                        last: seq,
                        count: 1,
                        nack,
                    });
                }
            }
        }
        if let Some(r) = run {
            emit(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut ConfirmTracker) -> Vec<ConfirmRun> {
        let mut v = vec![];
        t.drain_ready(|r| v.push(r));
        v
    }

    #[test]
    fn coalesces_in_order() {
        let mut t = ConfirmTracker::default();
        t.enable();
        let a = t.publish(0);
        let b = t.publish(1);
        let c = t.publish(0);
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(
            drain(&mut t),
            vec![ConfirmRun {
                last: 1,
                count: 1,
                nack: false
            }]
        );
        t.settle(b, true);
        assert_eq!(
            drain(&mut t),
            vec![ConfirmRun {
                last: 3,
                count: 2,
                nack: false
            }]
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn nack_breaks_runs() {
        let mut t = ConfirmTracker::default();
        t.enable();
        for _ in 0..4 {
            t.publish(1);
        }
        t.settle(3, false);
        t.settle(1, true);
        t.settle(2, true);
        t.settle(4, true);
        assert_eq!(
            drain(&mut t),
            vec![
                ConfirmRun {
                    last: 2,
                    count: 2,
                    nack: false
                },
                ConfirmRun {
                    last: 3,
                    count: 1,
                    nack: true
                },
                ConfirmRun {
                    last: 4,
                    count: 1,
                    nack: false
                },
            ]
        );
    }
}
