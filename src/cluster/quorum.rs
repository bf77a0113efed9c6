//! Quorum queues' replication: the Raft groups that hold their messages.
//!
//! A group is one replica set with one preferred leader (the node that
//! declared its first queue): every quorum queue with the same replicas
//! shares it, so many queues cost one log, one fsync per batch and one set
//! of heartbeats, and leaders spread over the nodes as queues are declared
//! on different nodes. Groups run on shard 0, beside the cluster port.
//!
//! The log carries what changes a queue's contents: messages enqueued,
//! settled (acked, dropped, expired) and returned (requeued: their
//! delivery count grows). Every replica applies them to the same state, a
//! queue's unsettled messages by index; the leader also runs a queue
//! engine over that state that delivers to consumers. Deliveries are not
//! replicated: a new leader redelivers whatever was unsettled.

use super::forward;
use super::types::{NodeId, NodeInfo};
use crate::ids::QueueId;
use crate::message::Message;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::vote::RaftLeaderId;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

/// The cluster port's kind for a proposal sent to a group's leader.
pub const KIND_QUORUM_PROPOSE: u8 = 43;
/// The cluster port's kind for a group's leader telling a member that its
/// removal from the group committed (the body: the group, u32 LE).
pub const KIND_QUORUM_LEFT: u8 = 45;

pub use crate::broker::topology::quorum_group as group_of;

/// One change to one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QOp {
    /// Messages, in order (the forwarding codec of [`forward`]: each
    /// message with its queue id). Shared, not copied, by a write sent
    /// again and by the messages the state holds; encoded as the
    /// `Vec<u8>` it was before (postcard writes both as length + bytes).
    Enqueue { msgs: Bytes },
    /// Messages gone for good (acked, dropped, expired, dead-lettered).
    Settle { queue: u64, idx: Vec<u64> },
    /// Messages back to the queue: their delivery count grows.
    Return { queue: u64, idx: Vec<u64> },
    /// First op of a node's write: its writer (`source`, one per node
    /// and boot) and the write's number, which grows by one per write.
    /// A write sent again (its leader changed, or its answer was lost) is
    /// applied once: an entry at or below the writer's last applied
    /// number is skipped whole.
    Writer { source: u64, batch: u64 },
}

/// Writers whose last write a group remembers; past it the one heard
/// from longest ago is forgotten (a writer is a node's boot, so only
/// restarts add writers).
const MAX_WRITERS: usize = 64;

/// One entry of a group's log: a batch of changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QCmd {
    pub ops: Vec<QOp>,
}

impl fmt::Display for QCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quorum({} ops)", self.ops.len())
    }
}

/// What applying a [`QCmd`] answers (nothing: the proposer only waits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QReply;

openraft::declare_raft_types!(
    /// A quorum group's types.
    pub Quorum:
        D = QCmd,
        R = QReply,
        NodeId = NodeId,
        Node = NodeInfo,
        AsyncRuntime = super::rt::GlommioRuntime,
);

/// A quorum group's Raft.
pub type QuorumRaft = openraft::Raft<Quorum, QuorumSm>;

/// A message a queue holds until it is settled.
#[derive(Clone)]
pub struct Held {
    pub msg: Message,
    /// Times it came back (`x-delivery-count`).
    pub count: u32,
}

/// One queue's replicated state.
#[derive(Clone, Default)]
pub struct QueueState {
    /// The next message's index.
    pub next: u64,
    pub msgs: BTreeMap<u64, Held>,
}

/// A group's replicated state: its queues.
#[derive(Default)]
pub struct GroupState {
    pub queues: HashMap<QueueId, QueueState>,
    /// Per writer: its last applied write's number, and the log index at
    /// which it was applied (to forget the oldest).
    writers: HashMap<u64, (u64, u64)>,
}

impl GroupState {
    /// Whether a write is new (and records it): a write the log holds
    /// twice is applied once.
    fn first_time(&mut self, source: u64, batch: u64, at: u64) -> bool {
        if self.writers.get(&source).is_some_and(|(last, _)| *last >= batch) {
            return false;
        }
        self.writers.insert(source, (batch, at));
        if self.writers.len() > MAX_WRITERS
            && let Some(oldest) = self
                .writers
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(s, _)| *s)
        {
            self.writers.remove(&oldest);
        }
        true
    }
}

/// What applying an entry did, for the node to mirror in its engines.
pub enum Applied {
    /// Messages added at indices `first..`.
    Enqueued {
        queue: QueueId,
        first: u64,
        msgs: Vec<Message>,
    },
    Settled {
        queue: QueueId,
        idx: Vec<u64>,
    },
    /// (index, delivery count now).
    Returned {
        queue: QueueId,
        idx: Vec<(u64, u32)>,
    },
}

/// What the state machine needs from its node (shard 0).
pub trait QuorumSink {
    /// Entries were applied (a batch of them, in order); the state already
    /// shows them.
    fn applied(&self, group: u32, what: Vec<Applied>);
    /// This node's own first entry of its term as leader was applied: its
    /// state is complete, its engines may serve.
    fn lead(&self, group: u32, term: u64);
    /// Whether a queue was deleted (its entries are dropped).
    fn is_deleted(&self, queue: QueueId) -> bool;
}

struct Meta {
    applied: Option<LogIdOf<Quorum>>,
    membership: StoredMembershipOf<Quorum>,
    snapshot: Option<(SnapshotMetaOf<Quorum>, Vec<u8>)>,
}

/// The state machine of one group on this node. Shard 0 only (`!Send`).
#[derive(Clone)]
pub struct QuorumSm {
    group: u32,
    me: NodeId,
    pub state: Rc<RefCell<GroupState>>,
    meta: Rc<RefCell<Meta>>,
    sink: Rc<dyn QuorumSink>,
    path: PathBuf,
}

/// A snapshot's data: per queue, its next index and its messages.
#[derive(Serialize, Deserialize, Default)]
struct Image {
    queues: Vec<ImageQueue>,
}

#[derive(Serialize, Deserialize)]
struct ImageQueue {
    queue: u64,
    next: u64,
    /// (index, delivery count) per message, in order.
    held: Vec<(u64, u32)>,
    /// The messages, in the same order ([`forward`]'s codec).
    msgs: Vec<u8>,
}

fn bad_data(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl QuorumSm {
    /// The state machine of `group`, its snapshot kept in `dir` (read back
    /// now: the log before it may be purged).
    pub fn open(group: u32, me: NodeId, dir: PathBuf, sink: Rc<dyn QuorumSink>) -> io::Result<QuorumSm> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("snapshot");
        let sm = QuorumSm {
            group,
            me,
            state: Rc::new(RefCell::new(GroupState::default())),
            meta: Rc::new(RefCell::new(Meta {
                applied: None,
                membership: Default::default(),
                snapshot: None,
            })),
            sink,
            path,
        };
        if let Some((meta, data)) = super::snapshot_file::load::<Quorum>(&sm.path)? {
            sm.load(&data)?;
            let mut m = sm.meta.borrow_mut();
            m.applied = meta.last_log_id;
            m.membership = meta.last_membership.clone();
            m.snapshot = Some((meta, data));
        }
        Ok(sm)
    }

    fn image(&self) -> Vec<u8> {
        let st = self.state.borrow();
        let mut img = Image::default();
        for (q, qs) in &st.queues {
            if self.sink.is_deleted(*q) {
                continue;
            }
            let mut msgs = Vec::new();
            let mut held = Vec::with_capacity(qs.msgs.len());
            for (i, h) in &qs.msgs {
                held.push((*i, h.count));
                forward::encode(&mut msgs, *q, &h.msg);
            }
            img.queues.push(ImageQueue {
                queue: q.0,
                next: qs.next,
                held,
                msgs,
            });
        }
        let bytes = postcard::to_stdvec(&img).expect("an image encodes");
        // The writers follow the image (a snapshot without them, from
        // before they were kept, reads as none).
        let writers: Vec<(u64, u64, u64)> = st.writers.iter().map(|(s, (b, at))| (*s, *b, *at)).collect();
        postcard::to_extend(&writers, bytes).expect("writers encode")
    }

    fn load(&self, data: &[u8]) -> io::Result<()> {
        let (img, rest): (Image, &[u8]) = postcard::take_from_bytes(data).map_err(bad_data)?;
        let mut st = GroupState::default();
        if !rest.is_empty() {
            let writers: Vec<(u64, u64, u64)> = postcard::from_bytes(rest).map_err(bad_data)?;
            st.writers = writers.into_iter().map(|(s, b, at)| (s, (b, at))).collect();
        }
        for q in img.queues {
            let msgs = forward::decode(Bytes::from(q.msgs))?;
            if msgs.len() != q.held.len() {
                return Err(bad_data("snapshot: messages and indices differ"));
            }
            let mut qs = QueueState {
                next: q.next,
                msgs: BTreeMap::new(),
            };
            for ((i, count), (_, msg)) in q.held.into_iter().zip(msgs) {
                qs.msgs.insert(i, Held { msg, count });
            }
            st.queues.insert(QueueId(q.queue), qs);
        }
        *self.state.borrow_mut() = st;
        Ok(())
    }

    fn save(&self, meta: &SnapshotMetaOf<Quorum>, data: &[u8]) -> io::Result<()> {
        super::snapshot_file::save::<Quorum>(&self.path, meta, data)
    }

    /// Applies one command (the entry at log index `at`) to the state;
    /// returns what changed.
    fn apply_cmd(&self, cmd: &QCmd, at: u64) -> Vec<Applied> {
        let mut out = Vec::new();
        let mut st = self.state.borrow_mut();
        if let Some(QOp::Writer { source, batch }) = cmd.ops.first()
            && !st.first_time(*source, *batch, at)
        {
            return out;
        }
        for op in &cmd.ops {
            match op {
                QOp::Writer { .. } => {}
                QOp::Enqueue { msgs } => {
                    let Ok(msgs) = forward::decode(msgs.clone()) else {
                        // Every replica reads the same bytes alike.
                        log::error!("quorum group {:x}: an unreadable batch; skipped", self.group);
                        continue;
                    };
                    // One run per queue, in order.
                    let mut run: Option<(QueueId, u64, Vec<Message>)> = None;
                    for (queue, msg) in msgs {
                        if self.sink.is_deleted(queue) {
                            continue;
                        }
                        // Indices start at 1, as queue sequences do.
                        let qs = st.queues.entry(queue).or_insert_with(|| QueueState {
                            next: 1,
                            msgs: BTreeMap::new(),
                        });
                        let i = qs.next;
                        qs.next += 1;
                        qs.msgs.insert(
                            i,
                            Held {
                                msg: msg.clone(),
                                count: 0,
                            },
                        );
                        match &mut run {
                            Some((q, _, v)) if *q == queue => v.push(msg),
                            _ => {
                                if let Some((queue, first, msgs)) = run.take() {
                                    out.push(Applied::Enqueued { queue, first, msgs });
                                }
                                run = Some((queue, i, vec![msg]));
                            }
                        }
                    }
                    if let Some((queue, first, msgs)) = run {
                        out.push(Applied::Enqueued { queue, first, msgs });
                    }
                }
                QOp::Settle { queue, idx } => {
                    let queue = QueueId(*queue);
                    if let Some(qs) = st.queues.get_mut(&queue) {
                        for i in idx {
                            qs.msgs.remove(i);
                        }
                    }
                    out.push(Applied::Settled {
                        queue,
                        idx: idx.clone(),
                    });
                }
                QOp::Return { queue, idx } => {
                    let queue = QueueId(*queue);
                    let mut back = Vec::new();
                    if let Some(qs) = st.queues.get_mut(&queue) {
                        for i in idx {
                            if let Some(h) = qs.msgs.get_mut(i) {
                                h.count = h.count.saturating_add(1);
                                back.push((*i, h.count));
                            }
                        }
                    }
                    out.push(Applied::Returned { queue, idx: back });
                }
            }
        }
        out
    }

    /// Drops a deleted queue's state.
    pub fn forget(&self, queue: QueueId) {
        self.state.borrow_mut().queues.remove(&queue);
    }
}

impl RaftSnapshotBuilder<Quorum> for QuorumSm {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Quorum, Vec<u8>>, io::Error> {
        let data = self.image();
        let meta = {
            let m = self.meta.borrow();
            SnapshotMetaOf::<Quorum> {
                last_log_id: m.applied,
                last_membership: m.membership.clone(),
            }
        };
        self.save(&meta, &data)?;
        self.meta.borrow_mut().snapshot = Some((meta.clone(), data.clone()));
        Ok(openraft::Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<Quorum> for QuorumSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = QuorumSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Quorum>>, StoredMembershipOf<Quorum>), io::Error> {
        let m = self.meta.borrow();
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Quorum>, io::Error>> + Unpin + OptionalSend,
    {
        // What changed is handed to the node once per batch of entries (and
        // before a leadership change, which reads the state).
        let mut changed = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            match &entry.payload {
                EntryPayload::Blank => {
                    self.meta.borrow_mut().applied = Some(log_id);
                    let leader = log_id.committed_leader_id();
                    if *leader.node_id() == self.me {
                        if !changed.is_empty() {
                            self.sink.applied(self.group, std::mem::take(&mut changed));
                        }
                        self.sink.lead(self.group, leader.term());
                    }
                }
                EntryPayload::Normal(cmd) => {
                    changed.extend(self.apply_cmd(cmd, log_id.index()));
                    self.meta.borrow_mut().applied = Some(log_id);
                }
                EntryPayload::Membership(m) => {
                    let mut meta = self.meta.borrow_mut();
                    meta.membership = openraft::StoredMembership::new(Some(log_id), m.clone());
                    meta.applied = Some(log_id);
                }
            }
            if let Some(r) = responder {
                r.send(QReply);
            }
        }
        if !changed.is_empty() {
            self.sink.applied(self.group, changed);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> QuorumSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Quorum>,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.load(&data)?;
        self.save(meta, &data)?;
        let mut m = self.meta.borrow_mut();
        m.applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Quorum, Vec<u8>>>, io::Error> {
        Ok(self
            .meta
            .borrow()
            .snapshot
            .clone()
            .map(|(meta, snapshot)| openraft::Snapshot { meta, snapshot }))
    }
}

/// Openraft settings for quorum groups: elections in about a second, a
/// snapshot (the queues' unsettled messages) every 20,000 entries, after
/// which the log before it goes.
pub fn raft_config() -> std::sync::Arc<openraft::Config> {
    let c = openraft::Config {
        cluster_name: "warren-quorum".into(),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    std::sync::Arc::new(c.validate().expect("valid Raft settings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_depend_on_replicas_and_order_and_never_collide_with_metadata() {
        let a = group_of(&[1, 2, 3]);
        assert_eq!(a, group_of(&[1, 2, 3]));
        assert_ne!(a, group_of(&[2, 1, 3]));
        assert_ne!(a, 0);
        assert_ne!(group_of(&[]), 0);
    }

    #[test]
    fn commands_round_trip() {
        let mut msgs = Vec::new();
        forward::encode(
            &mut msgs,
            QueueId(3),
            &Message::assemble(b"", b"q", &[0, 0], b"hi"),
        );
        let c = QCmd {
            ops: vec![
                QOp::Enqueue { msgs: msgs.into() },
                QOp::Settle {
                    queue: 3,
                    idx: vec![0, 1],
                },
                QOp::Return {
                    queue: 3,
                    idx: vec![2],
                },
            ],
        };
        let b = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<QCmd>(&b).unwrap(), c);
    }

    /// Logs written while the messages were a `Vec<u8>` read the same.
    #[test]
    fn enqueues_read_as_before() {
        #[derive(Serialize)]
        enum Before {
            Enqueue { msgs: Vec<u8> },
        }
        let msgs = vec![1u8, 2, 3, 200];
        let old = postcard::to_stdvec(&vec![Before::Enqueue { msgs: msgs.clone() }]).unwrap();
        let new = vec![QOp::Enqueue {
            msgs: Bytes::from(msgs),
        }];
        assert_eq!(postcard::from_bytes::<Vec<QOp>>(&old).unwrap(), new);
        assert_eq!(postcard::to_stdvec(&new).unwrap(), old);
    }

    struct NoSink;
    impl QuorumSink for NoSink {
        fn applied(&self, _: u32, _: Vec<Applied>) {}
        fn lead(&self, _: u32, _: u64) {}
        fn is_deleted(&self, _: QueueId) -> bool {
            false
        }
    }

    fn write(source: u64, batch: u64, body: &[u8]) -> QCmd {
        let mut msgs = Vec::new();
        forward::encode(
            &mut msgs,
            QueueId(7),
            &Message::assemble(b"", b"q", &[0, 0], body),
        );
        QCmd {
            ops: vec![QOp::Writer { source, batch }, QOp::Enqueue { msgs: msgs.into() }],
        }
    }

    fn bodies(sm: &QuorumSm) -> Vec<Vec<u8>> {
        let st = sm.state.borrow();
        st.queues[&QueueId(7)]
            .msgs
            .values()
            .map(|h| h.msg.body().to_vec())
            .collect()
    }

    #[test]
    fn a_write_sent_twice_is_applied_once_and_the_snapshot_remembers_it() {
        let dir = tempfile::tempdir().unwrap();
        let sm = QuorumSm::open(1, 1, dir.path().join("a"), Rc::new(NoSink)).unwrap();
        assert_eq!(sm.apply_cmd(&write(10, 1, b"a"), 1).len(), 1);
        // The same write again (its leader changed): skipped whole.
        assert!(sm.apply_cmd(&write(10, 1, b"a"), 2).is_empty());
        // Another writer's first write, and this writer's next.
        assert_eq!(sm.apply_cmd(&write(20, 1, b"b"), 3).len(), 1);
        assert_eq!(sm.apply_cmd(&write(10, 2, b"c"), 4).len(), 1);
        // Writes without a writer (from before writers were named) apply.
        let mut plain = write(10, 2, b"d");
        plain.ops.remove(0);
        assert_eq!(sm.apply_cmd(&plain, 5).len(), 1);
        assert_eq!(bodies(&sm), [b"a", b"b", b"c", b"d"]);

        let img = sm.image();
        let back = QuorumSm::open(1, 1, dir.path().join("b"), Rc::new(NoSink)).unwrap();
        back.load(&img).unwrap();
        assert_eq!(bodies(&back), [b"a", b"b", b"c", b"d"]);
        assert!(back.apply_cmd(&write(10, 2, b"c"), 6).is_empty());
        assert!(back.apply_cmd(&write(20, 1, b"b"), 7).is_empty());

        // An image from before the writers were kept reads as none.
        let (_, rest): (Image, &[u8]) = postcard::take_from_bytes(&img).unwrap();
        let old = &img[..img.len() - rest.len()];
        let older = QuorumSm::open(1, 1, dir.path().join("c"), Rc::new(NoSink)).unwrap();
        older.load(old).unwrap();
        assert_eq!(bodies(&older), [b"a", b"b", b"c", b"d"]);
        assert_eq!(older.apply_cmd(&write(10, 2, b"c"), 6).len(), 1);
    }

    #[test]
    fn the_writer_heard_from_longest_ago_is_forgotten_past_the_limit() {
        let mut st = GroupState::default();
        for s in 0..MAX_WRITERS as u64 + 1 {
            assert!(st.first_time(s, 1, s));
        }
        assert_eq!(st.writers.len(), MAX_WRITERS);
        assert!(!st.writers.contains_key(&0));
        assert!(!st.first_time(MAX_WRITERS as u64, 1, 100));
    }
}
