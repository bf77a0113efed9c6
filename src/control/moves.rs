//! The control plane's side of moving a classic queue between shards of
//! this node (see `hub::moves` for the shards' side): one operation, so
//! moves never overlap each other or a change to the same queue.

use super::{ControlService, Stage, Wait};
use crate::broker::topology::{Change, Topology};
use crate::ids::{QueueId, ShardId};
use crate::owner::Item;
use crate::protocol::AmqpError;

impl ControlService {
    /// The stages of moving `queue` to shard `to`: the new shard expects
    /// it, the move is applied everywhere, and the new shard has it whole.
    /// Nothing when it is there already.
    pub(super) fn move_stages(
        &mut self,
        topo: &Topology,
        queue: QueueId,
        to: ShardId,
    ) -> Result<Vec<Stage>, AmqpError> {
        let Some(q) = topo.queue(queue) else {
            return Err(AmqpError::not_found(format!("no queue {}", queue.0)));
        };
        if self.cluster.is_some() || q.node != 0 {
            return Err(AmqpError::not_implemented(
                "queues of a cluster member do not move between its shards",
            ));
        }
        if q.is_quorum() {
            return Err(AmqpError::precondition(format!(
                "quorum queue '{}' does not move between shards",
                q.name
            )));
        }
        if q.exclusive.is_some() {
            return Err(AmqpError::precondition(format!(
                "exclusive queue '{}' stays on its connection's shard",
                q.name
            )));
        }
        if to as usize >= self.nshards {
            return Err(AmqpError::precondition(format!(
                "no shard {to}: this node has {}",
                self.nshards
            )));
        }
        if q.owner == to {
            return Ok(Vec::new());
        }
        let epoch = self.next_token;
        self.next_token += 1;
        Ok(vec![
            Stage::Expect {
                queue,
                to,
                from: q.owner,
                epoch,
            },
            Stage::Commit(vec![Change::MoveQueue {
                id: queue,
                owner: to,
                epoch,
            }]),
            Stage::AwaitMove(epoch),
        ])
    }

    /// The new shard of move `epoch` holds the queue's items (its first
    /// answer), or has the queue whole (its second).
    pub fn move_step(&mut self, epoch: u64) {
        match &mut self.op {
            Some(op) if op.wait == Wait::Move(epoch) => op.wait = Wait::Nothing,
            _ => self.move_steps.push(epoch),
        }
    }

    /// Runs [`Stage::Expect`] and [`Stage::AwaitMove`].
    pub(super) fn advance_move(&mut self, stage: Stage) {
        let op = self.op.as_mut().expect("an operation");
        match stage {
            Stage::Expect {
                queue,
                to,
                from,
                epoch,
            } => {
                op.wait = Wait::Move(epoch);
                self.actions
                    .push_back(super::Action::Send(to, Item::ExpectQueue { queue, epoch, from }));
            }
            Stage::AwaitMove(epoch) => {
                if let Some(i) = self.move_steps.iter().position(|e| *e == epoch) {
                    self.move_steps.swap_remove(i);
                } else {
                    op.wait = Wait::Move(epoch);
                }
            }
            _ => debug_assert!(false, "not a move stage"),
        }
    }
}
