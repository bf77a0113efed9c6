//! The metadata group's state machine: committed entries go, in log order,
//! to shard 0's control plane ([`MetaSink`]), which applies them to the
//! node's topology and broadcasts them to its shards.
//!
//! The topology itself is the state; this adapter keeps what openraft asks
//! of a state machine besides: the last applied log id, the membership,
//! and the snapshot (an image of the topology: its changes as topology-log
//! records, the count of accepted commands and the planner's ids), kept in
//! `snapshot` in the group's directory so a restart need not replay the
//! whole log.

use super::types::{Meta, MetaCmd, MetaReply};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use crate::broker::topology::Change;
use crate::storage::topolog;

/// What the state machine needs from the node (shard 0's hub).
pub trait MetaSink {
    /// Applies a committed command, the log's entry `index`; returns
    /// whether it was accepted (see [`MetaCmd`]). Every node answers alike.
    fn apply(&self, index: u64, cmd: &MetaCmd) -> bool;
    /// The topology now, as an image.
    fn image(&self) -> MetaImage;
    /// Makes the node's topology the image's (a snapshot installed from
    /// the leader, or read back at start).
    fn install(&self, image: MetaImage);
    /// The cluster's membership changed (a node joined or left).
    fn membership_changed(&self) {}
}

/// A snapshot of the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaImage {
    /// Commands accepted up to the snapshot.
    pub accepted: u64,
    pub next_ids: [u64; 3],
    /// The topology as changes ([`encode_changes`]).
    pub changes: Vec<u8>,
}

/// Changes as the metadata log carries them: topology-log records, each
/// prefixed by its length (u32 little-endian). `me`: this node's id, put
/// in place of "here" (0) as the home of its queues.
pub fn encode_changes(changes: &[Change], me: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut one = BytesMut::new();
    for c in changes {
        one.clear();
        match c {
            Change::DeclareQueue(q) if q.node == 0 => {
                let mut q = q.clone();
                q.node = me;
                topolog::encode(&Change::DeclareQueue(q), &mut one);
            }
            Change::QueueLeader { id, node: 0 } => {
                topolog::encode(&Change::QueueLeader { id: *id, node: me }, &mut one);
            }
            c => topolog::encode(c, &mut one),
        }
        out.put_u32_le(one.len() as u32);
        out.extend_from_slice(&one);
    }
    out.to_vec()
}

/// The inverse of [`encode_changes`], on node `me` with `nshards` shards:
/// its own queues come back with their home as "here" (0), on one of its
/// shards (it may have restarted with fewer).
pub fn decode_changes_on(bytes: &[u8], me: u64, nshards: usize) -> io::Result<Vec<Change>> {
    let mut changes = decode_changes(bytes)?;
    for c in &mut changes {
        match c {
            Change::DeclareQueue(q) if q.node == me => {
                q.node = 0;
                q.owner %= nshards.max(1) as crate::ids::ShardId;
            }
            Change::QueueLeader { node, .. } if *node == me => *node = 0,
            _ => {}
        }
    }
    Ok(changes)
}

/// The inverse of [`encode_changes`].
pub fn decode_changes(bytes: &[u8]) -> io::Result<Vec<Change>> {
    let mut b = Bytes::copy_from_slice(bytes);
    let mut out = Vec::new();
    while b.has_remaining() {
        if b.remaining() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated change length",
            ));
        }
        let n = b.get_u32_le() as usize;
        if b.remaining() < n {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated change"));
        }
        out.push(topolog::decode(b.split_to(n))?);
    }
    Ok(out)
}

struct Inner {
    applied: Option<LogIdOf<Meta>>,
    membership: StoredMembershipOf<Meta>,
    snapshot: Option<(SnapshotMetaOf<Meta>, Vec<u8>)>,
}

/// The state machine. Shard 0 only (`!Send`).
#[derive(Clone)]
pub struct MetaSm {
    inner: Rc<RefCell<Inner>>,
    sink: Rc<dyn MetaSink>,
    /// Where the current snapshot is kept.
    path: PathBuf,
}

impl MetaSm {
    /// A state machine over `sink`, with the snapshot kept in `dir`.
    pub fn open(dir: PathBuf, sink: Rc<dyn MetaSink>) -> io::Result<MetaSm> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("snapshot");
        let snapshot = super::snapshot_file::load::<Meta>(&path)?;
        Ok(MetaSm {
            inner: Rc::new(RefCell::new(Inner {
                applied: None,
                membership: Default::default(),
                snapshot,
            })),
            sink,
            path,
        })
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogIdOf<Meta>> {
        self.inner.borrow().applied
    }

    fn save(&self, meta: &SnapshotMetaOf<Meta>, data: &[u8]) -> io::Result<()> {
        super::snapshot_file::save::<Meta>(&self.path, meta, data)
    }
}

impl RaftSnapshotBuilder<Meta> for MetaSm {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Meta, Vec<u8>>, io::Error> {
        let image = self.sink.image();
        let data = postcard::to_stdvec(&image).map_err(io::Error::other)?;
        let meta = {
            let i = self.inner.borrow();
            SnapshotMetaOf::<Meta> {
                last_log_id: i.applied,
                last_membership: i.membership.clone(),
            }
        };
        self.save(&meta, &data)?;
        self.inner.borrow_mut().snapshot = Some((meta.clone(), data.clone()));
        Ok(openraft::Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<Meta> for MetaSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MetaSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Meta>>, StoredMembershipOf<Meta>), io::Error> {
        let i = self.inner.borrow();
        Ok((i.applied, i.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Meta>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let reply = match &entry.payload {
                EntryPayload::Blank => MetaReply { accepted: true },
                EntryPayload::Normal(cmd) => MetaReply {
                    accepted: self.sink.apply(log_id.index(), cmd),
                },
                EntryPayload::Membership(m) => {
                    self.inner.borrow_mut().membership =
                        openraft::StoredMembership::new(Some(log_id), m.clone());
                    self.sink.membership_changed();
                    MetaReply { accepted: true }
                }
            };
            self.inner.borrow_mut().applied = Some(log_id);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MetaSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Meta>,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        let image: MetaImage =
            postcard::from_bytes(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.sink.install(image);
        self.save(meta, &data)?;
        let mut i = self.inner.borrow_mut();
        i.applied = meta.last_log_id;
        i.membership = meta.last_membership.clone();
        i.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Meta, Vec<u8>>>, io::Error> {
        Ok(self
            .inner
            .borrow()
            .snapshot
            .clone()
            .map(|(meta, snapshot)| openraft::Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::control::ControlPlane;
    use crate::broker::topology::Topology;

    #[test]
    fn changes_round_trip() {
        let changes = ControlPlane::default()
            .add_vhost(&Topology::default(), "/")
            .unwrap();
        let b = encode_changes(&changes, 7);
        let back = decode_changes(&b).unwrap();
        assert_eq!(format!("{changes:?}").len(), format!("{back:?}").len());
        assert_eq!(back.len(), changes.len());
        assert!(decode_changes(&b[..b.len() - 1]).is_err());
    }
}
