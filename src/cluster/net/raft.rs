//! openraft's network over the cluster port: [`ClusterNetwork`] (the
//! `RaftNetworkFactory` a group's `Raft` is built with) sends its RPCs as
//! [`Transport`] calls; [`RaftService`] serves them to the local `Raft` of
//! each group.
//!
//! A request's body is `[group u32le][postcard((target node id, message))]`
//! (a snapshot chunk adds its raw bytes after that), so every Raft group of
//! a node shares the node's connections: the metadata group is
//! [`META_GROUP`]. The receiver refuses a message for another node id
//! (an address now used by another node). A reply is the postcard of the
//! response.
//!
//! A snapshot (`SnapshotData = Vec<u8>`) travels in chunks of at most
//! [`MAX_CHUNK`] bytes, each a call of its own bounded by the RPC's soft
//! TTL (`Config::install_snapshot_timeout` × ¾), the last one carrying the
//! vote and the meta; the receiver assembles them (one transfer per group
//! at a time, at most [`MAX_SNAPSHOT`] bytes) and then installs the whole.
//! `cancel` stops the transfer between chunks.

use super::{CallError, Reply, Service, Transport};
use crate::cluster::types::NodeInfo;
use futures::future::{Either, LocalBoxFuture};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// The metadata group's id.
pub const META_GROUP: u32 = 0;

/// The cluster port's kinds for Raft RPCs.
pub const KIND_APPEND: u8 = 1;
pub const KIND_VOTE: u8 = 2;
pub const KIND_PRE_VOTE: u8 = 3;
pub const KIND_SNAPSHOT: u8 = 4;
pub const KIND_TRANSFER_LEADER: u8 = 5;
pub const RAFT_KINDS: [u8; 5] = [
    KIND_APPEND,
    KIND_VOTE,
    KIND_PRE_VOTE,
    KIND_SNAPSHOT,
    KIND_TRANSFER_LEADER,
];

/// The largest snapshot chunk.
pub const MAX_CHUNK: usize = 4 << 20;
/// The largest snapshot a node receives.
pub const MAX_SNAPSHOT: usize = 1 << 30;
/// The last chunk waits for the snapshot's installation: at least this long.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's cluster port is, from what the membership keeps of it.
pub trait PeerAddr {
    /// `host:port`.
    fn peer_addr(&self) -> &str;
}

impl PeerAddr for NodeInfo {
    fn peer_addr(&self) -> &str {
        &self.addr
    }
}

impl PeerAddr for openraft::BasicNode {
    fn peer_addr(&self) -> &str {
        &self.addr
    }
}

/// The `RaftNetworkFactory` of one group of this node: its RPCs go through
/// `transport`, tagged with `group`.
pub struct ClusterNetwork<C: RaftTypeConfig> {
    transport: Rc<Transport>,
    group: u32,
    me: C::NodeId,
    directory: Option<Directory<C>>,
}

/// Where a node's cluster port is now, by its id (a group whose membership
/// does not follow renames and moves asks the cluster's membership).
pub type Directory<C> = Rc<dyn Fn(&<C as RaftTypeConfig>::NodeId) -> Option<String>>;

impl<C: RaftTypeConfig> ClusterNetwork<C> {
    /// `me`: this node's id in the group (named in timeouts).
    pub fn new(transport: Rc<Transport>, group: u32, me: C::NodeId) -> ClusterNetwork<C> {
        ClusterNetwork {
            transport,
            group,
            me,
            directory: None,
        }
    }

    /// Peers are reached where `directory` says, at each call (the
    /// group's own record of their address is the fallback).
    pub fn with_directory(mut self, directory: Directory<C>) -> ClusterNetwork<C> {
        self.directory = Some(directory);
        self
    }
}

impl<C> RaftNetworkFactory<C> for ClusterNetwork<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
{
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> PeerClient<C> {
        PeerClient {
            transport: self.transport.clone(),
            group: self.group,
            me: self.me.clone(),
            target,
            addr: node.peer_addr().to_string(),
            directory: self.directory.clone(),
        }
    }
}

/// One group's RPCs to one peer.
pub struct PeerClient<C: RaftTypeConfig> {
    transport: Rc<Transport>,
    group: u32,
    me: C::NodeId,
    target: C::NodeId,
    addr: String,
    directory: Option<Directory<C>>,
}

/// A request's body: see the module's doc.
fn request_body<T: Serialize>(
    group: u32,
    target: &T,
    msg: &impl Serialize,
    tail: &[u8],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64 + tail.len());
    out.extend_from_slice(&group.to_le_bytes());
    let mut out = postcard::to_extend(&(target, msg), out).map_err(|e| e.to_string())?;
    out.extend_from_slice(tail);
    Ok(out)
}

/// A snapshot chunk's header (its bytes follow it in the body).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct ChunkHeader<C: RaftTypeConfig> {
    /// Random, per transfer.
    transfer: u64,
    offset: u64,
    total: u64,
    /// On the last chunk: the leader's vote and the snapshot's meta.
    last: Option<(VoteOf<C>, SnapshotMetaOf<C>)>,
}

impl<C: RaftTypeConfig> PeerClient<C> {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: u8,
        msg: &Req,
        tail: &[u8],
        timeout: Duration,
    ) -> Result<Resp, RPCError<C>> {
        let body = request_body(self.group, &self.target, msg, tail)
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(format!("encoding: {e}"))))?;
        let action = match kind {
            KIND_APPEND => RPCTypes::AppendEntries,
            KIND_SNAPSHOT => RPCTypes::InstallSnapshot,
            KIND_TRANSFER_LEADER => RPCTypes::TransferLeader,
            _ => RPCTypes::Vote,
        };
        let found = self.directory.as_ref().and_then(|d| d(&self.target));
        let addr = found.as_deref().unwrap_or(&self.addr);
        match self.transport.call(addr, kind, body, timeout).await {
            Ok(reply) => postcard::from_bytes(&reply).map_err(|e| {
                RPCError::Unreachable(Unreachable::from_string(format!("{addr}: bad reply: {e}")))
            }),
            Err(CallError::Timeout) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.me.clone(),
                target: self.target.clone(),
                timeout,
            })),
            // Anything else: back off (a peer down, refusing us, without
            // the group yet, or stopped).
            Err(e) => Err(RPCError::Unreachable(Unreachable::from_string(e))),
        }
    }
}

impl<C> RaftNetworkV2<C> for PeerClient<C>
where
    C: RaftTypeConfig,
{
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call(KIND_APPEND, &rpc, &[], option.soft_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(KIND_VOTE, &rpc, &[], option.soft_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(KIND_PRE_VOTE, &rpc, &[], option.soft_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.call(KIND_TRANSFER_LEADER, &req, &[], option.soft_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let mut cancel = Box::pin(cancel);
        let chunk = option
            .snapshot_chunk_size()
            .unwrap_or(MAX_CHUNK)
            .clamp(1024, MAX_CHUNK);
        let data = snapshot.snapshot;
        let mut last = Some((vote, snapshot.meta));
        let transfer: u64 = rand::random();
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(data.len());
            let is_last = end == data.len();
            let header = ChunkHeader::<C> {
                transfer,
                offset: offset as u64,
                total: data.len() as u64,
                last: if is_last { last.take() } else { None },
            };
            let timeout = if is_last {
                option.soft_ttl().max(INSTALL_TIMEOUT)
            } else {
                option.soft_ttl()
            };
            let call = self.call::<_, Option<SnapshotResponse<C>>>(
                KIND_SNAPSHOT,
                &header,
                &data[offset..end],
                timeout,
            );
            let reply = match futures::future::select(std::pin::pin!(call), cancel.as_mut()).await {
                Either::Left((r, _)) => r?,
                Either::Right((closed, _)) => return Err(StreamingError::Closed(closed)),
            };
            if is_last {
                return reply.ok_or_else(|| {
                    StreamingError::Unreachable(Unreachable::from_string(
                        "no response to the last snapshot chunk",
                    ))
                });
            }
            offset = end;
        }
    }
}

/// One group's server side, type-erased so that groups of several type
/// configs share [`RaftService`].
trait Group {
    /// `body` starts with the group id.
    fn handle(self: Rc<Self>, from: &str, kind: u8, body: Vec<u8>) -> LocalBoxFuture<'static, Reply>;
}

/// A snapshot being received.
struct Incoming {
    from: String,
    transfer: u64,
    total: usize,
    data: Vec<u8>,
}

struct RaftGroup<C: RaftTypeConfig, SM: RaftStateMachine<C>> {
    raft: Raft<C, SM>,
    incoming: RefCell<Option<Incoming>>,
    _c: PhantomData<C>,
}

fn encode<T: Serialize>(v: &T) -> Reply {
    postcard::to_stdvec(v).map_err(|e| format!("encoding the reply: {e}"))
}

impl<C, SM> RaftGroup<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    async fn serve(self: Rc<Self>, from: String, kind: u8, body: Vec<u8>) -> Reply {
        let me = self.raft.node_id().clone();
        let target = |t: C::NodeId| {
            if t == me {
                Ok(())
            } else {
                Err(format!("this is node {me}, not {t}"))
            }
        };
        let bad = |e: postcard::Error| format!("bad request: {e}");
        // After the group id.
        let body = &body[4..];
        match kind {
            KIND_APPEND => {
                let (t, rpc): (C::NodeId, AppendEntriesRequest<C>) =
                    postcard::from_bytes(body).map_err(bad)?;
                target(t)?;
                encode(&self.raft.append_entries(rpc).await.map_err(|e| e.to_string())?)
            }
            KIND_VOTE | KIND_PRE_VOTE => {
                let (t, rpc): (C::NodeId, VoteRequest<C>) = postcard::from_bytes(body).map_err(bad)?;
                target(t)?;
                let r = if kind == KIND_VOTE {
                    self.raft.vote(rpc).await
                } else {
                    self.raft.pre_vote(rpc).await
                };
                encode(&r.map_err(|e| e.to_string())?)
            }
            KIND_TRANSFER_LEADER => {
                let (t, req): (C::NodeId, TransferLeaderRequest<C>) =
                    postcard::from_bytes(body).map_err(bad)?;
                target(t)?;
                encode(
                    &self
                        .raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            KIND_SNAPSHOT => {
                let ((t, header), tail): ((C::NodeId, ChunkHeader<C>), &[u8]) =
                    postcard::take_from_bytes(body).map_err(bad)?;
                target(t)?;
                let done = self.chunk(from, header, tail)?;
                let resp = match done {
                    Some((vote, snapshot)) => Some(
                        self.raft
                            .install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                encode(&resp)
            }
            _ => Err(format!("no Raft RPC of kind {kind}")),
        }
    }

    /// Takes one chunk; the whole snapshot once the last one came.
    #[allow(clippy::type_complexity)]
    fn chunk(
        &self,
        from: String,
        h: ChunkHeader<C>,
        tail: &[u8],
    ) -> Result<Option<(VoteOf<C>, SnapshotOf<C, Vec<u8>>)>, String> {
        let total = usize::try_from(h.total).unwrap_or(usize::MAX);
        if total > MAX_SNAPSHOT {
            return Err(format!(
                "snapshot of {total} bytes is over the limit ({MAX_SNAPSHOT})"
            ));
        }
        let mut incoming = self.incoming.borrow_mut();
        if h.offset == 0 {
            // A new transfer replaces any unfinished one.
            *incoming = Some(Incoming {
                from: from.clone(),
                transfer: h.transfer,
                total,
                data: Vec::new(),
            });
        }
        let cur = match incoming.as_mut() {
            Some(c) if c.transfer == h.transfer && c.from == from && c.total == total => c,
            _ => return Err("snapshot chunk of an unknown transfer".into()),
        };
        if h.offset != cur.data.len() as u64 || cur.data.len() + tail.len() > total {
            *incoming = None;
            return Err("snapshot chunk out of order".into());
        }
        cur.data.extend_from_slice(tail);
        let Some((vote, meta)) = h.last else {
            return Ok(None);
        };
        let done = incoming.take().expect("current transfer");
        if done.data.len() != total {
            return Err("snapshot ended short".into());
        }
        Ok(Some((
            vote,
            openraft::Snapshot {
                meta,
                snapshot: done.data,
            },
        )))
    }
}

impl<C, SM> Group for RaftGroup<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
{
    fn handle(self: Rc<Self>, from: &str, kind: u8, body: Vec<u8>) -> LocalBoxFuture<'static, Reply> {
        Box::pin(self.serve(from.to_string(), kind, body))
    }
}

/// The server side of every Raft group of this node: register it on the
/// transport with [`RaftService::serve_on`], and each group's `Raft` with
/// [`RaftService::add_group`]. A call for a group not (yet) added is
/// answered with an error (its sender backs off).
#[derive(Default)]
pub struct RaftService {
    groups: RefCell<HashMap<u32, Rc<dyn Group>>>,
}

impl RaftService {
    pub fn new() -> Rc<RaftService> {
        Rc::new(RaftService::default())
    }

    /// Serves [`RAFT_KINDS`] on `transport`.
    pub fn serve_on(self: &Rc<Self>, transport: &Transport) {
        for kind in RAFT_KINDS {
            transport.register(kind, self.clone());
        }
    }

    /// Serves `group` with `raft` (replacing any).
    pub fn add_group<C, SM>(&self, group: u32, raft: Raft<C, SM>)
    where
        C: RaftTypeConfig,
        SM: RaftStateMachine<C, SnapshotData = Vec<u8>>,
    {
        let g: Rc<dyn Group> = Rc::new(RaftGroup {
            raft,
            incoming: RefCell::new(None),
            _c: PhantomData,
        });
        self.groups.borrow_mut().insert(group, g);
    }

    pub fn remove_group(&self, group: u32) {
        self.groups.borrow_mut().remove(&group);
    }
}

impl Service for RaftService {
    fn call(&self, from: &str, kind: u8, body: Vec<u8>) -> LocalBoxFuture<'static, Reply> {
        if body.len() < 4 {
            return Box::pin(async { Err("short Raft request".to_string()) });
        }
        let group = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
        match self.groups.borrow().get(&group) {
            Some(g) => g.clone().handle(from, kind, body),
            None => Box::pin(async move { Err(format!("no Raft group {group} here")) }),
        }
    }
}
