//! openraft's log storage for one Raft group, on files: the records of
//! [`crate::storage::raftlog`] (segments in one directory), openraft's
//! types encoded with postcard, and a group commit that makes them durable
//! off the reactor.
//!
//! Owned by the shard that runs the group (`Rc`, not `Send`); it must be
//! used on a glommio executor: the flusher is a task of that executor.
//!
//! Durability contract (what openraft asks, and how it is met):
//!
//! * `append`: the entries are written into the segment mapping and indexed
//!   before it returns (readable at once); its callback is completed, on the
//!   executor, after an `fdatasync` of every file written, begun after the
//!   write, has completed. Appends that arrive while a sync runs share the
//!   next one (group commit: one sync per batch, whatever the batch holds).
//! * `save_vote` returns once a sync covering it completed.
//! * `truncate_after`, `save_committed`: written in call order, durable with
//!   the next sync (a crash before it brings back the truncated entries or
//!   an older committed id: both allowed by Raft and by openraft).
//! * `purge`: written, synced, then the segments holding only purged
//!   entries are removed (off the reactor, oldest first).
//! * A failed sync completes the callbacks it covered with the error, and
//!   every later call fails: the page cache can no longer be trusted, so
//!   the group stops (openraft treats storage errors as fatal) until a
//!   restart recovers what the files hold.
//!
//! Recovery is [`RaftLog::open`]'s: a torn tail is cut, damage in the
//! middle of the log refuses to open.

use std::cell::RefCell;
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::storage::raftlog::{self, RaftLog};
pub use crate::storage::raftlog::{Options, Recovery};
use crate::storage::{Disk, RealDisk};

/// Something waiting for the next sync.
type Waiter = Box<dyn FnOnce(io::Result<()>)>;

#[derive(Default)]
struct Flush {
    waiters: Vec<Waiter>,
    /// The flusher task is alive.
    running: bool,
    /// The first sync error: sticky.
    failed: Option<(io::ErrorKind, String)>,
    /// Syncs done (batches with at least one file).
    syncs: u64,
}

struct Inner {
    log: RefCell<RaftLog>,
    flush: RefCell<Flush>,
    /// Reused to encode entries.
    buf: RefCell<Vec<u8>>,
}

/// The log storage of one Raft group (and its reader: a clone).
pub struct LogStore<C> {
    inner: Rc<Inner>,
    _c: PhantomData<C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            inner: self.inner.clone(),
            _c: PhantomData,
        }
    }
}

fn encode<T: Serialize + ?Sized>(v: &T, what: &str) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| io::Error::other(format!("raft log: cannot encode {what}: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8], what: &str) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft log: cannot decode {what}: {e}"),
        )
    })
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens (or creates) the log in `dir`, on the real disk, with the
    /// default options (64 MiB segments).
    pub fn open(dir: &Path) -> io::Result<LogStore<C>> {
        Self::open_with(RealDisk::shared(), dir, Options::default()).map(|(s, _)| s)
    }

    /// Opens (or creates) the log in `dir` on `disk`; also says what
    /// recovery found and repaired.
    pub fn open_with(disk: Arc<dyn Disk>, dir: &Path, opts: Options) -> io::Result<(LogStore<C>, Recovery)> {
        let (log, rec) = RaftLog::open(disk, dir, opts)?;
        log::debug!(
            "raft log {}: {} entries in {} segments",
            dir.display(),
            rec.entries,
            rec.segments
        );
        let store = LogStore {
            inner: Rc::new(Inner {
                log: RefCell::new(log),
                flush: RefCell::new(Flush::default()),
                buf: RefCell::new(Vec::new()),
            }),
            _c: PhantomData,
        };
        Ok((store, rec))
    }

    /// Waits until everything written so far is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.inner.enqueue(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("raft log: the flusher is gone")))
    }

    /// Syncs done so far (each covers a batch of writes).
    pub fn syncs(&self) -> u64 {
        self.inner.flush.borrow().syncs
    }

    /// Segment files in use.
    pub fn segment_count(&self) -> usize {
        self.inner.log.borrow().segment_count()
    }
}

impl Inner {
    fn check(&self) -> io::Result<()> {
        match &self.flush.borrow().failed {
            Some((kind, msg)) => Err(io::Error::new(
                *kind,
                format!("raft log unusable after a failed sync: {msg}"),
            )),
            None => Ok(()),
        }
    }

    /// Waits `w` for the next sync, starting the flusher if it is idle.
    fn enqueue(self: &Rc<Self>, w: Waiter) {
        let start = {
            let mut f = self.flush.borrow_mut();
            f.waiters.push(w);
            !std::mem::replace(&mut f.running, true)
        };
        if start {
            glommio::spawn_local(self.clone().flusher()).detach();
        }
    }

    /// Syncs in batches until nobody waits: each round takes every waiter
    /// and every file written so far, syncs them on glommio's blocking
    /// thread and completes the waiters, in order, here.
    async fn flusher(self: Rc<Self>) {
        loop {
            let waiters = {
                let mut f = self.flush.borrow_mut();
                if f.waiters.is_empty() {
                    f.running = false;
                    return;
                }
                std::mem::take(&mut f.waiters)
            };
            let failed = self.flush.borrow().failed.clone();
            let res = match failed {
                Some(e) => Err(e),
                None => {
                    let files = self.log.borrow_mut().take_sync();
                    if files.is_empty() {
                        Ok(())
                    } else {
                        for f in &files {
                            f.begin_sync();
                        }
                        let r = glommio::executor()
                            .spawn_blocking(move || {
                                files
                                    .iter()
                                    .try_for_each(|f| f.sync())
                                    .map_err(|e| (e.kind(), e.to_string()))
                            })
                            .await;
                        let mut f = self.flush.borrow_mut();
                        f.syncs += 1;
                        if let Err(e) = &r {
                            log::error!("raft log: sync failed, the group stops: {}", e.1);
                            f.failed.get_or_insert(e.clone());
                        }
                        r
                    }
                }
            };
            for w in waiters {
                w(res.clone().map_err(|(kind, msg)| io::Error::new(kind, msg)));
            }
        }
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let log = self.inner.log.borrow();
        log.entries(range).map(|(_, b)| decode(b, "an entry")).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        let log = self.inner.log.borrow();
        log.vote().map(|b| decode(b, "the vote")).transpose()
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let log = self.inner.log.borrow();
        let purged: Option<LogIdOf<C>> = log
            .purged()
            .map(|(_, b)| decode(b, "the purged log id"))
            .transpose()?;
        let last = match log.last_index().and_then(|i| log.entry(i)) {
            Some(b) => Some(decode::<C::Entry>(b, "an entry")?.log_id()),
            None => purged.clone(),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.inner.check()?;
        let b = encode(vote, "the vote")?;
        self.inner.log.borrow_mut().set_vote(&b)?;
        self.sync().await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.inner.check()?;
        let b = encode(&committed, "the committed log id")?;
        self.inner.log.borrow_mut().set_committed(&b)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let log = self.inner.log.borrow();
        match log.committed() {
            Some(b) => decode(b, "the committed log id"),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.inner.check()?;
        {
            let mut log = self.inner.log.borrow_mut();
            let mut buf = self.inner.buf.borrow_mut();
            for e in entries {
                buf.clear();
                let b = postcard::to_extend(&e, std::mem::take(&mut *buf))
                    .map_err(|err| io::Error::other(format!("raft log: cannot encode an entry: {err}")))?;
                *buf = b;
                log.append(e.index(), &buf)?;
            }
        }
        self.inner.enqueue(Box::new(move |r| callback.io_completed(r)));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.inner.check()?;
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        self.inner.log.borrow_mut().truncate(from)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.inner.check()?;
        let upto = log_id.index();
        let b = encode(&log_id, "the purged log id")?;
        self.inner.log.borrow_mut().purge(upto, &b)?;
        // The purge record must be durable before the files it makes
        // useless go.
        self.sync().await?;
        let (paths, disk, dir) = {
            let mut log = self.inner.log.borrow_mut();
            let paths = log.detach_purged(upto);
            let (disk, dir) = log.disk();
            (paths, disk, dir)
        };
        if !paths.is_empty() {
            let n = paths.len();
            let r = glommio::executor()
                .spawn_blocking(move || raftlog::remove_segments(&*disk, &*dir, &paths))
                .await;
            match r {
                // What is left is still a valid log: a removed segment's
                // entries are purged whether or not its file is gone.
                Err(e) => log::error!("raft log: cannot remove purged segments: {e}"),
                Ok(()) => log::debug!("raft log: removed {n} purged segments"),
            }
        }
        Ok(())
    }
}
