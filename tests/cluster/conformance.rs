//! openraft's conformance suites on warren's adapters (the glommio runtime,
//! the log store on files), and warren's own tests of the log store:
//! reopening, torn tails, damage, group commit, failed syncs, and a
//! one-node Raft that restarts from its log.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, TryStreamExt};
use glommio::{LocalExecutorBuilder, Placement};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::StoreBuilder;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::{
    Config, EntryPayload, LogState, OptionalSend, Raft, RaftLogReader, RaftSnapshotBuilder, RaftTypeConfig,
    StorageError,
};
use warren::cluster::log_store::{Options, Recovery};
use warren::cluster::rt::GlommioRuntime;
use warren::cluster::{LogStore, Meta, MetaCmd, MetaReply, NodeInfo};
use warren::storage::SimDisk;
use warren::storage::sim_disk::Faults;

type Entry = <Meta as RaftTypeConfig>::Entry;

fn run<F: Future + 'static>(f: F) -> F::Output
where
    F::Output: 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("a glommio executor")
        .run(f)
}

// ---- openraft's suites ----

#[test]
fn runtime_conformance() {
    openraft::testing::runtime::Suite::<GlommioRuntime>::test_all();
}

#[test]
fn log_store_conformance() {
    run(async {
        openraft::testing::log::Suite::test_all(Builder)
            .await
            .expect("the log store passes openraft's suite");
    });
}

/// A fresh directory per case; small segments, so the cases roll and
/// purge remove files.
struct Builder;

impl StoreBuilder<Meta, LogStore<Meta>, MemSm, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<Meta>, MemSm), StorageError<Meta>> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (store, _) = LogStore::open_with(
            warren::storage::RealDisk::shared(),
            dir.path(),
            Options { segment_size: 1024 },
        )
        .expect("a log store");
        Ok((dir, store, MemSm::default()))
    }
}

// ---- a state machine in memory (what the suite and the Raft test need) ----

#[derive(Default)]
struct SmInner {
    applied: Option<LogIdOf<Meta>>,
    membership: StoredMembershipOf<Meta>,
    /// Tokens of the commands applied, in order.
    tokens: Vec<u64>,
    snapshot: Option<(SnapshotMetaOf<Meta>, Vec<u8>)>,
}

#[derive(Clone, Default)]
struct MemSm(Rc<RefCell<SmInner>>);

impl RaftSnapshotBuilder<Meta> for MemSm {
    type SnapshotData = Vec<u8>;
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Meta, Vec<u8>>, io::Error> {
        let mut i = self.0.borrow_mut();
        let data = postcard::to_stdvec(&i.tokens).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Meta> {
            last_log_id: i.applied,
            last_membership: i.membership.clone(),
        };
        i.snapshot = Some((meta.clone(), data.clone()));
        Ok(openraft::Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<Meta> for MemSm {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Meta>>, StoredMembershipOf<Meta>), io::Error> {
        let i = self.0.borrow();
        Ok((i.applied, i.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<Meta>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut i = self.0.borrow_mut();
                i.applied = Some(entry.log_id());
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(c) => i.tokens.push(c.token),
                    EntryPayload::Membership(m) => {
                        i.membership = openraft::StoredMembership::new(Some(entry.log_id()), m.clone());
                    }
                }
            }
            if let Some(r) = responder {
                r.send(MetaReply { accepted: true });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Meta>,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        let mut i = self.0.borrow_mut();
        i.tokens = postcard::from_bytes(&data).map_err(io::Error::other)?;
        i.applied = meta.last_log_id;
        i.membership = meta.last_membership.clone();
        i.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Meta, Vec<u8>>>, io::Error> {
        Ok(self
            .0
            .borrow()
            .snapshot
            .clone()
            .map(|(meta, snapshot)| openraft::Snapshot { meta, snapshot }))
    }
}

// ---- helpers ----

fn log_id(term: u64, index: u64) -> LogIdOf<Meta> {
    LogIdOf::<Meta>::new(<Meta as RaftTypeConfig>::LeaderId::new_committed(term, 1), index)
}

fn cmd(token: u64) -> MetaCmd {
    MetaCmd {
        origin: 1,
        token,
        base: token,
        next_ids: [token, 2, 3],
        changes: vec![7; 24 + (token % 17) as usize],
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::new_normal(log_id(term, index), cmd(index))
}

fn open(dir: &Path, segment_size: usize) -> io::Result<(LogStore<Meta>, Recovery)> {
    LogStore::open_with(warren::storage::RealDisk::shared(), dir, Options { segment_size })
}

/// Appends and waits for the flush callback.
async fn append(store: &mut LogStore<Meta>, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = Meta::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.expect("the callback is called")
}

/// Everything a reader sees.
#[derive(Debug, PartialEq)]
struct Seen {
    state: LogState<Meta>,
    entries: Vec<Entry>,
    vote: Option<VoteOf<Meta>>,
    committed: Option<LogIdOf<Meta>>,
}

async fn seen(store: &mut LogStore<Meta>) -> Seen {
    let mut r = store.get_log_reader().await;
    Seen {
        state: store.get_log_state().await.unwrap(),
        entries: r.try_get_log_entries(..).await.unwrap(),
        vote: r.read_vote().await.unwrap(),
        committed: store.read_committed().await.unwrap(),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("raft.") && !n.ends_with(".dropped")
        })
        .collect();
    v.sort();
    v
}

/// Where the written bytes of a (zero-filled) segment file end.
fn written_end(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    data.iter().rposition(|&b| b != 0).unwrap() + 1
}

/// A store in `dir` holding the vote, then entries 1..=20 (synced).
fn twenty_entries(dir: &Path) -> VoteOf<Meta> {
    let vote = VoteOf::<Meta>::new_committed(3, 1);
    run({
        let dir = dir.to_path_buf();
        async move {
            let (mut s, _) = open(&dir, 1 << 20).unwrap();
            s.save_vote(&vote).await.unwrap();
            for i in 1..=20 {
                append(&mut s, vec![entry(3, i)]).await.unwrap();
            }
        }
    });
    vote
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

// ---- warren's tests of the log store ----

#[test]
fn reopen_gives_the_same_state_after_appends_truncate_purge_and_votes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (before, files) = run(async move {
        let (mut s, rec) = open(&path, 1024).unwrap();
        assert_eq!((rec.segments, rec.entries), (0, 0));
        s.save_vote(&VoteOf::<Meta>::new(1, 1)).await.unwrap();
        for chunk in (1..=100u64).collect::<Vec<_>>().chunks(7) {
            append(&mut s, chunk.iter().map(|&i| entry(1, i)).collect())
                .await
                .unwrap();
        }
        s.save_vote(&VoteOf::<Meta>::new_committed(2, 1)).await.unwrap();
        s.truncate_after(Some(log_id(1, 80))).await.unwrap();
        append(&mut s, (81..=90).map(|i| entry(2, i)).collect())
            .await
            .unwrap();
        s.save_committed(Some(log_id(2, 85))).await.unwrap();
        let files_before_purge = segments(&path).len();
        s.purge(log_id(1, 50)).await.unwrap();
        let files = segments(&path).len();
        assert!(
            files < files_before_purge,
            "purge removes whole segments ({files_before_purge} -> {files})"
        );
        s.sync().await.unwrap();
        let before = seen(&mut s).await;
        assert_eq!(indexes(&before.entries), (51..=90).collect::<Vec<_>>());
        assert_eq!(before.entries[35], entry(2, 86));
        assert_eq!(before.state.last_purged_log_id, Some(log_id(1, 50)));
        assert_eq!(before.state.last_log_id, Some(log_id(2, 90)));
        assert_eq!(before.committed, Some(log_id(2, 85)));
        (before, files)
    });
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1024).unwrap();
        assert!(rec.repairs.is_empty(), "{:?}", rec.repairs);
        assert_eq!(rec.segments, files);
        assert_eq!(seen(&mut s).await, before);
        // A purge past the end empties the log; the next entry follows it.
        s.purge(log_id(2, 95)).await.unwrap();
        assert_eq!(segments(&path).len(), 1, "every segment but the head was purged");
        append(&mut s, vec![entry(2, 96)]).await.unwrap();
    });
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, _) = open(&path, 1024).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(log_id(2, 95)));
        assert_eq!(st.last_log_id, Some(log_id(2, 96)));
        assert_eq!(
            s.read_vote().await.unwrap(),
            Some(VoteOf::<Meta>::new_committed(2, 1))
        );
        assert_eq!(s.read_committed().await.unwrap(), Some(log_id(2, 85)));
    });
}

#[test]
fn a_file_cut_mid_record_loses_only_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let vote = twenty_entries(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let end = written_end(&seg);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len((end - 5) as u64)
        .unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1 << 20).unwrap();
        assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
        assert!(rec.repairs[0].contains("torn"), "{:?}", rec.repairs);
        let got = seen(&mut s).await;
        assert_eq!(indexes(&got.entries), (1..=19).collect::<Vec<_>>());
        assert_eq!(got.vote, Some(vote));
        // It goes on after the cut, and the next open finds nothing to repair.
        append(&mut s, vec![entry(4, 20)]).await.unwrap();
    });
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1 << 20).unwrap();
        assert!(rec.repairs.is_empty(), "{:?}", rec.repairs);
        assert_eq!(seen(&mut s).await.entries.last(), Some(&entry(4, 20)));
    });
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    twenty_entries(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let end = written_end(&seg);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(97) | 0x80).collect();
        f.write_all_at(&garbage, end as u64).unwrap();
    }
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1 << 20).unwrap();
        assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
        assert_eq!(indexes(&seen(&mut s).await.entries), (1..=20).collect::<Vec<_>>());
        append(&mut s, vec![entry(3, 21)]).await.unwrap();
    });
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1 << 20).unwrap();
        assert!(
            rec.repairs.is_empty(),
            "the garbage was cleared: {:?}",
            rec.repairs
        );
        assert_eq!(indexes(&seen(&mut s).await.entries), (1..=21).collect::<Vec<_>>());
    });
}

#[test]
fn a_damaged_record_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    twenty_entries(dir.path());
    let seg = segments(dir.path()).pop().unwrap();
    let end = written_end(&seg);
    let mut data = std::fs::read(&seg).unwrap();
    data[32 + (end - 32) / 3] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let err = open(dir.path(), 1 << 20).err().expect("the log is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(err.to_string().contains(&seg.display().to_string()), "{err}");

    // The same damage in the last record is a torn tail: cut.
    data[32 + (end - 32) / 3] ^= 0x40;
    data[end - 2] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (mut s, rec) = open(&path, 1 << 20).unwrap();
        assert_eq!(rec.repairs.len(), 1, "{:?}", rec.repairs);
        assert_eq!(indexes(&seen(&mut s).await.entries), (1..=19).collect::<Vec<_>>());
    });
}

#[test]
fn appends_share_a_sync_and_complete_only_after_it() {
    let disk = SimDisk::new(7);
    let d = disk.clone();
    run(async move {
        let (mut s, _) = LogStore::<Meta>::open_with(
            Arc::new(d.clone()),
            Path::new("/raft"),
            Options { segment_size: 4096 },
        )
        .unwrap();
        let syncs_before = d.sync_counts().0;
        let mut waiting = Vec::new();
        for i in 1..=50 {
            let (tx, rx) = Meta::oneshot();
            s.append(vec![entry(1, i)], IOFlushed::signal(tx)).await.unwrap();
            // Readable at once, before it is durable.
            let got = s.try_get_log_entries(i..=i).await.unwrap();
            assert_eq!(got, vec![entry(1, i)]);
            waiting.push(rx);
        }
        // (glommio may start the flusher at once: then the first append's
        // sync is under way, the others wait for the next one.)
        assert!(d.sync_counts().0 <= syncs_before + 2, "at most one batch began");
        assert!(
            matches!(waiting[0].try_recv(), Ok(None)),
            "not complete before a sync"
        );
        for rx in waiting {
            rx.await.unwrap().unwrap();
        }
        assert!(s.syncs() <= 2, "50 appends in a row took {} syncs", s.syncs());
        assert!(d.sync_counts().0 > syncs_before);
        // Not awaited: lost or kept by a power loss, but never a hole.
        for i in 51..=60 {
            s.append(vec![entry(1, i)], IOFlushed::noop()).await.unwrap();
        }
    });
    disk.crash_power();
    let d = disk.clone();
    run(async move {
        let (mut s, _) =
            LogStore::<Meta>::open_with(Arc::new(d), Path::new("/raft"), Options { segment_size: 4096 })
                .unwrap();
        let got = indexes(&seen(&mut s).await.entries);
        let n = got.len() as u64;
        assert!((50..=60).contains(&n), "{got:?}");
        assert_eq!(got, (1..=n).collect::<Vec<_>>());
    });
}

#[test]
fn a_failed_sync_fails_the_callback_and_stops_the_store() {
    let disk = SimDisk::new(9);
    run(async move {
        let (mut s, _) = LogStore::<Meta>::open_with(
            Arc::new(disk.clone()),
            Path::new("/raft"),
            Options { segment_size: 4096 },
        )
        .unwrap();
        disk.set_faults(Faults {
            sync_error: 1.0,
            append_error: 0.0,
        });
        let err = append(&mut s, vec![entry(1, 1)])
            .await
            .expect_err("the sync failed");
        assert!(err.to_string().contains("fsync failed"), "{err}");
        assert!(append(&mut s, vec![entry(1, 2)]).await.is_err());
        assert!(s.save_vote(&VoteOf::<Meta>::new(1, 1)).await.is_err());
    });
}

// ---- a one-node Raft on the store, restarted ----

struct NoNet;
struct NoPeer;

impl RaftNetworkFactory<Meta> for NoNet {
    type Network = NoPeer;
    async fn new_client(&mut self, _target: u64, _node: &NodeInfo) -> NoPeer {
        NoPeer
    }
}

fn unreachable() -> Unreachable<Meta> {
    Unreachable::from_string("a one-node cluster has no peers")
}

impl RaftNetworkV2<Meta> for NoPeer {
    type SnapshotData = Vec<u8>;
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<Meta>,
        _o: RPCOption,
    ) -> Result<AppendEntriesResponse<Meta>, RPCError<Meta>> {
        Err(RPCError::Unreachable(unreachable()))
    }
    async fn vote(
        &mut self,
        _rpc: VoteRequest<Meta>,
        _o: RPCOption,
    ) -> Result<VoteResponse<Meta>, RPCError<Meta>> {
        Err(RPCError::Unreachable(unreachable()))
    }
    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<Meta>,
        _snapshot: SnapshotOf<Meta, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _o: RPCOption,
    ) -> Result<SnapshotResponse<Meta>, StreamingError<Meta>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}

#[test]
fn a_restarted_node_reapplies_its_committed_entries_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let last = run(async move {
        let cfg = Arc::new(
            Config {
                heartbeat_interval: 50,
                election_timeout_min: 150,
                election_timeout_max: 300,
                ..Default::default()
            }
            .validate()
            .unwrap(),
        );
        let (store, _) = open(&path, 4096).unwrap();
        let sm = MemSm::default();
        let raft = Raft::new(1, cfg, NoNet, store, sm.clone()).await.unwrap();
        let node = NodeInfo {
            name: "warren@a".into(),
            addr: "127.0.0.1:1".into(),
            ram: false,
        };
        raft.initialize(BTreeMap::from([(1u64, node)])).await.unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leader")
            .await
            .unwrap();
        let mut last = None;
        for t in 0..30 {
            last = Some(raft.client_write(cmd(t)).await.unwrap().log_id);
        }
        raft.shutdown().await.unwrap();
        assert_eq!(sm.0.borrow().tokens, (0..30).collect::<Vec<_>>());
        last.unwrap()
    });
    // Back as a follower, elections off: only what the log says was
    // committed is applied.
    let path = dir.path().to_path_buf();
    run(async move {
        let cfg = Arc::new(
            Config {
                enable_tick: false,
                enable_elect: false,
                enable_leader_restore: Some(false),
                ..Default::default()
            }
            .validate()
            .unwrap(),
        );
        let (store, rec) = open(&path, 4096).unwrap();
        assert!(rec.repairs.is_empty(), "{:?}", rec.repairs);
        let sm = MemSm::default();
        let raft = Raft::new(1, cfg, NoNet, store, sm.clone()).await.unwrap();
        raft.wait(Some(Duration::from_secs(5)))
            .applied_index(Some(last.index), "re-applied")
            .await
            .unwrap();
        assert_eq!(sm.0.borrow().tokens, (0..30).collect::<Vec<_>>());
        assert_eq!(
            raft.metrics().borrow_watched().current_leader,
            None,
            "no election"
        );
        raft.shutdown().await.unwrap();
    });
}
