//! A classic queue moving to another shard of this node: what its owner
//! hands over and what the new owner takes in. The hub's protocol
//! (`hub::moves`) keeps the items addressed to the queue in order around
//! the hand-over; this is only the queue's own state.

use super::effects::Effects;
use super::service::Owner;
use super::slot::QueueSlot;
use crate::broker::topology::Topology;
use crate::ids::QueueId;

impl Owner {
    /// Takes a classic queue out, to move it. Publishes waiting for the
    /// end-of-step write are written first; files written but not synced
    /// yet stay in this shard's next sync, because the confirms and
    /// barriers that wait on them are answered here.
    pub fn depart(
        &mut self,
        queue: QueueId,
        topo: &Topology,
        fx: &mut impl Effects,
        now: u64,
    ) -> Option<QueueSlot> {
        if self.queues.get(&queue)?.quorum.is_some() {
            return None;
        }
        self.flush_store(queue, topo, fx, now);
        let mut slot = self.queues.remove(&queue)?;
        if let Some(store) = &mut slot.store
            && (store.needs_sync() || store.acks_unsynced())
        {
            let mut files = Vec::new();
            store.take_sync(true, &mut files);
            self.departed_files.extend(files.into_iter().map(|f| (queue, f)));
            self.sync_wanted = true;
        }
        slot.dirty = false;
        slot.store_dirty = false;
        Some(slot)
    }

    /// Takes in a queue another shard handed over: it dispatches at the
    /// end of the step, and the sweeper looks at it if it may expire.
    pub fn arrive(&mut self, slot: QueueSlot) {
        let id = slot.q.id;
        self.sweep_kick = true;
        self.queues.insert(id, slot);
        let (dirty, store_dirty, slot) = self.parts(id);
        Self::mark_dirty(dirty, slot);
        Self::mark_store_dirty(store_dirty, slot);
    }
}
