//! The topology log: durable vhosts, exchanges, queues and bindings as an
//! append-only file of [`Change`] records (same framing and checksum as
//! message records), rewritten as a compact snapshot at every start.
//!
//! Durability contract: [`TopoLog::append`] writes; the caller syncs (off the
//! reactor) and only then answers the client's `declare-ok`.

use super::disk::{AppendFile, Disk, Syncable};
use crate::broker::limits::Limits;
use crate::broker::topology::{Change, Dest, ExchangeDef, PolicyDef, QueueDef, Topology};
use crate::broker::users::User;
use crate::ids::{ExchangeId, QueueId, VhostId};
use crate::protocol::{Reader, ShortStr, put_longstr, put_shortstr, put_table};
use crate::routing::ExchangeKind;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"WRNTOPO\0";
const HEADER_LEN: usize = 16;
const FILE: &str = "topology.log";

fn kind_code(k: ExchangeKind) -> u8 {
    match k {
        ExchangeKind::Direct => 0,
        ExchangeKind::Fanout => 1,
        ExchangeKind::Topic => 2,
        ExchangeKind::Headers => 3,
    }
}

fn kind_from(c: u8) -> Option<ExchangeKind> {
    Some(match c {
        0 => ExchangeKind::Direct,
        1 => ExchangeKind::Fanout,
        2 => ExchangeKind::Topic,
        3 => ExchangeKind::Headers,
        _ => return None,
    })
}

fn put_dest(out: &mut BytesMut, d: Dest) {
    match d {
        Dest::Queue(q) => {
            out.put_u8(0);
            out.put_u64(q.0);
        }
        Dest::Exchange(e) => {
            out.put_u8(1);
            out.put_u64(e.0);
        }
    }
}

/// Serializes one change.
pub fn encode(c: &Change, out: &mut BytesMut) {
    match c {
        Change::AddVhost { id, name, .. } => {
            out.put_u8(1);
            out.put_u32(id.0);
            put_longstr(out, name.as_bytes());
        }
        Change::DeleteVhost { id } => {
            out.put_u8(2);
            out.put_u32(id.0);
        }
        Change::DeclareExchange(d) => {
            out.put_u8(3);
            out.put_u64(d.id.0);
            out.put_u32(d.vhost.0);
            put_shortstr(out, d.name.as_bytes());
            out.put_u8(kind_code(d.kind));
            out.put_u8(d.durable as u8 | (d.auto_delete as u8) << 1 | (d.internal as u8) << 2);
            put_table(out, &d.args);
        }
        Change::DeleteExchange { id } => {
            out.put_u8(4);
            out.put_u64(id.0);
        }
        Change::DeclareQueue(q) => {
            out.put_u8(5);
            out.put_u64(q.id.0);
            out.put_u32(q.vhost.0);
            put_shortstr(out, q.name.as_bytes());
            out.put_u16(q.owner);
            // Exclusive queues only travel in a cluster's metadata log (the
            // topology log never holds one): there the flag says "owned by
            // a connection somewhere", never which one.
            out.put_u8(q.durable as u8 | (q.auto_delete as u8) << 1 | (q.exclusive.is_some() as u8) << 2);
            put_table(out, &q.args);
            // The home node, in a cluster (absent: this node), then a
            // quorum queue's replicas.
            if q.node != 0 || !q.replicas.is_empty() {
                out.put_u64(q.node);
            }
            if !q.replicas.is_empty() {
                out.put_u8(q.replicas.len().min(255) as u8);
                for r in q.replicas.iter().take(255) {
                    out.put_u64(*r);
                }
                // Its group (absent in records written before groups
                // could change members: the hash of the replicas).
                out.put_u32(q.group);
            }
        }
        Change::QueueLeader { id, node } => {
            out.put_u8(17);
            out.put_u64(id.0);
            out.put_u64(*node);
        }
        Change::MoveQueue { id, owner, epoch } => {
            out.put_u8(19);
            out.put_u64(id.0);
            out.put_u16(*owner);
            out.put_u64(*epoch);
        }
        Change::QueueReplicas { id, replicas } => {
            out.put_u8(18);
            out.put_u64(id.0);
            out.put_u8(replicas.len().min(255) as u8);
            for r in replicas.iter().take(255) {
                out.put_u64(*r);
            }
        }
        Change::DeleteQueue { id } => {
            out.put_u8(6);
            out.put_u64(id.0);
        }
        Change::Bind {
            source,
            dest,
            key,
            args,
        }
        | Change::Unbind {
            source,
            dest,
            key,
            args,
        } => {
            out.put_u8(if matches!(c, Change::Bind { .. }) { 7 } else { 8 });
            out.put_u64(source.0);
            put_dest(out, *dest);
            put_shortstr(out, key.as_bytes());
            put_table(out, args);
        }
        Change::PutUser(u) => {
            out.put_u8(9);
            put_longstr(out, u.name.as_bytes());
            put_longstr(out, &u.password_hash);
            out.put_u32(u.tags.len() as u32);
            for t in &u.tags {
                put_longstr(out, t.as_bytes());
            }
        }
        Change::DeleteUser { name } => {
            out.put_u8(10);
            put_longstr(out, name.as_bytes());
        }
        Change::SetPermissions {
            user,
            vhost,
            configure,
            write,
            read,
        } => {
            out.put_u8(11);
            put_longstr(out, user.as_bytes());
            out.put_u32(vhost.0);
            for p in [configure, write, read] {
                put_longstr(out, p.as_bytes());
            }
        }
        Change::ClearPermissions { user, vhost } => {
            out.put_u8(12);
            put_longstr(out, user.as_bytes());
            out.put_u32(vhost.0);
        }
        Change::SetPolicy(p) => {
            out.put_u8(13);
            out.put_u32(p.vhost.0);
            put_longstr(out, p.name.as_bytes());
            put_longstr(out, p.pattern.as_bytes());
            put_longstr(out, p.apply_to.as_bytes());
            out.put_u64(p.priority as u64);
            put_table(out, &p.definition);
        }
        Change::ClearPolicy { vhost, name } => {
            out.put_u8(14);
            out.put_u32(vhost.0);
            put_longstr(out, name.as_bytes());
        }
        Change::SetVhostLimits { vhost, limits } => {
            out.put_u8(15);
            out.put_u32(vhost.0);
            match limits {
                None => out.put_u8(0),
                Some(l) => {
                    out.put_u8(1);
                    put_limits(out, l);
                }
            }
        }
        Change::SetUserLimits { user, limits } => {
            out.put_u8(16);
            put_longstr(out, user.as_bytes());
            put_limits(out, limits);
        }
    }
}

fn put_limits(out: &mut BytesMut, l: &Limits) {
    out.put_u32(l.0.len() as u32);
    for (name, value) in l.iter() {
        put_longstr(out, name.as_bytes());
        out.put_i64(value);
    }
}

fn limits(r: &mut Reader) -> io::Result<Limits> {
    let n = r.u32().map_err(|_| bad())?;
    let mut l = Limits::default();
    // Two names are defined; a few more would be a newer format's.
    for _ in 0..n.min(64) {
        let name = text(r)?;
        let value = r.u64().map_err(|_| bad())? as i64;
        l.0.insert(name, value);
    }
    Ok(l)
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed topology record")
}

/// Deserializes one change.
pub fn decode(b: Bytes) -> io::Result<Change> {
    let mut r = Reader::new(b);
    let e = |_| bad();
    let tag = r.u8().map_err(e)?;
    let dest = |r: &mut Reader| -> io::Result<Dest> {
        let t = r.u8().map_err(e)?;
        let id = r.u64().map_err(e)?;
        match t {
            0 => Ok(Dest::Queue(QueueId(id))),
            1 => Ok(Dest::Exchange(ExchangeId(id))),
            _ => Err(bad()),
        }
    };
    Ok(match tag {
        1 => Change::AddVhost {
            id: VhostId(r.u32().map_err(e)?),
            name: r.longstr().map_err(e)?.as_str().into_owned(),
            connections: Default::default(),
        },
        2 => Change::DeleteVhost {
            id: VhostId(r.u32().map_err(e)?),
        },
        3 => {
            let id = ExchangeId(r.u64().map_err(e)?);
            let vhost = VhostId(r.u32().map_err(e)?);
            let name = r.shortstr().map_err(e)?;
            let kind = kind_from(r.u8().map_err(e)?).ok_or_else(bad)?;
            let f = r.u8().map_err(e)?;
            Change::DeclareExchange(ExchangeDef {
                id,
                vhost,
                name,
                kind,
                durable: f & 1 != 0,
                auto_delete: f & 2 != 0,
                internal: f & 4 != 0,
                args: r.table().map_err(e)?,
            })
        }
        4 => Change::DeleteExchange {
            id: ExchangeId(r.u64().map_err(e)?),
        },
        5 => {
            let id = QueueId(r.u64().map_err(e)?);
            let vhost = VhostId(r.u32().map_err(e)?);
            let name = r.shortstr().map_err(e)?;
            let owner = r.u16().map_err(e)?;
            let f = r.u8().map_err(e)?;
            let args = r.table().map_err(e)?;
            let node = if r.remaining() >= 8 {
                r.u64().map_err(e)?
            } else {
                0
            };
            let mut replicas = Vec::new();
            let mut group = 0;
            if r.remaining() >= 1 {
                let n = r.u8().map_err(e)?;
                for _ in 0..n {
                    replicas.push(r.u64().map_err(e)?);
                }
                group = if r.remaining() >= 4 {
                    r.u32().map_err(e)?
                } else {
                    crate::broker::topology::quorum_group(&replicas)
                };
            }
            Change::DeclareQueue(QueueDef {
                id,
                vhost,
                name,
                owner,
                node,
                durable: f & 1 != 0,
                exclusive: (f & 4 != 0).then_some(crate::ids::ConnId::ELSEWHERE),
                auto_delete: f & 2 != 0,
                args,
                replicas,
                group,
            })
        }
        6 => Change::DeleteQueue {
            id: QueueId(r.u64().map_err(e)?),
        },
        7 | 8 => {
            let source = ExchangeId(r.u64().map_err(e)?);
            let d = dest(&mut r)?;
            let key: ShortStr = r.shortstr().map_err(e)?;
            let args = r.table().map_err(e)?;
            if tag == 7 {
                Change::Bind {
                    source,
                    dest: d,
                    key,
                    args,
                }
            } else {
                Change::Unbind {
                    source,
                    dest: d,
                    key,
                    args,
                }
            }
        }
        9 => {
            let name = text(&mut r)?;
            let password_hash = r.longstr().map_err(e)?.as_bytes().to_vec();
            let n = r.u32().map_err(e)?;
            let mut tags = Vec::new();
            for _ in 0..n.min(1024) {
                tags.push(text(&mut r)?);
            }
            Change::PutUser(User {
                name,
                password_hash,
                tags,
                counters: Default::default(),
            })
        }
        10 => Change::DeleteUser { name: text(&mut r)? },
        11 => Change::SetPermissions {
            user: text(&mut r)?,
            vhost: VhostId(r.u32().map_err(e)?),
            configure: text(&mut r)?,
            write: text(&mut r)?,
            read: text(&mut r)?,
        },
        12 => Change::ClearPermissions {
            user: text(&mut r)?,
            vhost: VhostId(r.u32().map_err(e)?),
        },
        13 => Change::SetPolicy(PolicyDef {
            vhost: VhostId(r.u32().map_err(e)?),
            name: text(&mut r)?,
            pattern: text(&mut r)?,
            apply_to: text(&mut r)?,
            priority: r.u64().map_err(e)? as i64,
            definition: r.table().map_err(e)?,
        }),
        14 => Change::ClearPolicy {
            vhost: VhostId(r.u32().map_err(e)?),
            name: text(&mut r)?,
        },
        15 => Change::SetVhostLimits {
            vhost: VhostId(r.u32().map_err(e)?),
            limits: match r.u8().map_err(e)? {
                0 => None,
                1 => Some(limits(&mut r)?),
                _ => return Err(bad()),
            },
        },
        16 => Change::SetUserLimits {
            user: text(&mut r)?,
            limits: limits(&mut r)?,
        },
        17 => Change::QueueLeader {
            id: QueueId(r.u64().map_err(e)?),
            node: r.u64().map_err(e)?,
        },
        19 => Change::MoveQueue {
            id: QueueId(r.u64().map_err(e)?),
            owner: r.u16().map_err(e)?,
            epoch: r.u64().map_err(e)?,
        },
        18 => {
            let id = QueueId(r.u64().map_err(e)?);
            let n = r.u8().map_err(e)?;
            let mut replicas = Vec::with_capacity(n as usize);
            for _ in 0..n {
                replicas.push(r.u64().map_err(e)?);
            }
            Change::QueueReplicas { id, replicas }
        }
        _ => return Err(bad()),
    })
}

fn text(r: &mut Reader) -> io::Result<String> {
    Ok(r.longstr().map_err(|_| bad())?.as_str().into_owned())
}

/// Whether a change must survive a restart. Evaluated against the topology
/// *before* the change is applied.
pub fn is_durable(topo: &Topology, c: &Change) -> bool {
    let dest_durable = |d: &Dest| match d {
        Dest::Queue(q) => topo.queue(*q).is_some_and(|q| q.durable && q.exclusive.is_none()),
        Dest::Exchange(x) => topo.exchange(*x).is_some_and(|x| x.def.durable),
    };
    match c {
        Change::AddVhost { .. }
        | Change::DeleteVhost { .. }
        | Change::PutUser(_)
        | Change::DeleteUser { .. }
        | Change::SetPermissions { .. }
        | Change::ClearPermissions { .. }
        | Change::SetPolicy(_)
        | Change::ClearPolicy { .. }
        | Change::SetVhostLimits { .. }
        | Change::SetUserLimits { .. } => true,
        // Where a queue runs on this node is not kept across a restart.
        Change::MoveQueue { .. } => false,
        Change::DeclareExchange(d) => d.durable,
        Change::DeleteExchange { id } => topo.exchange(*id).is_some_and(|x| x.def.durable),
        Change::DeclareQueue(q) => q.durable && q.exclusive.is_none(),
        Change::DeleteQueue { id } | Change::QueueLeader { id, .. } | Change::QueueReplicas { id, .. } => {
            dest_durable(&Dest::Queue(*id))
        }
        Change::Bind { source, dest, .. } | Change::Unbind { source, dest, .. } => {
            topo.exchange(*source).is_some_and(|x| x.def.durable) && dest_durable(dest)
        }
    }
}

/// The changes that rebuild the durable part of `topo` from nothing.
pub fn snapshot(topo: &Topology) -> Vec<Change> {
    image(topo, false)
}

/// The changes that rebuild all of `topo` (durable or not: a cluster's
/// metadata image), or only its durable part.
pub fn image(topo: &Topology, all: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let mut vhosts: Vec<_> = topo.vhosts().collect();
    vhosts.sort_by_key(|v| v.id);
    for v in &vhosts {
        out.push(Change::AddVhost {
            id: v.id,
            name: v.name.clone(),
            connections: v.connections.clone(),
        });
        if v.limits.is_some() {
            out.push(Change::SetVhostLimits {
                vhost: v.id,
                limits: v.limits.clone(),
            });
        }
    }
    let mut users: Vec<_> = topo.users().collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    for u in users {
        out.push(Change::PutUser(u.clone()));
        let limits = topo.user_limits(&u.name);
        if !limits.is_empty() {
            out.push(Change::SetUserLimits {
                user: u.name.clone(),
                limits: limits.clone(),
            });
        }
    }
    let mut perms: Vec<_> = topo.all_permissions().collect();
    perms.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (user, vhost, p) in perms {
        out.push(Change::SetPermissions {
            user: user.to_string(),
            vhost,
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        });
    }
    for p in topo.policies() {
        out.push(Change::SetPolicy(p.clone()));
    }
    let mut exchanges: Vec<_> = topo.exchanges().filter(|x| all || x.def.durable).collect();
    exchanges.sort_by_key(|x| x.def.id);
    for x in &exchanges {
        out.push(Change::DeclareExchange(x.def.clone()));
    }
    let mut queues: Vec<_> = topo
        .queues()
        .filter(|q| all || (q.durable && q.exclusive.is_none()))
        .collect();
    queues.sort_by_key(|q| q.id);
    for q in &queues {
        out.push(Change::DeclareQueue((*q).clone()));
    }
    for x in &exchanges {
        for (k, a, d) in x.bindings.iter() {
            let c = Change::Bind {
                source: x.def.id,
                dest: d,
                key: k.clone(),
                args: a.clone(),
            };
            if all || is_durable(topo, &c) {
                out.push(c);
            }
        }
    }
    out
}

/// The open topology log. Shard 0 only.
pub struct TopoLog {
    path: PathBuf,
    file: Arc<dyn AppendFile>,
}

fn frame(c: &Change, out: &mut BytesMut) {
    let at = out.len();
    out.put_u64(0);
    encode(c, out);
    let len = (out.len() - at - 8) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&out[at + 8..]);
    let crc = h.finalize();
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

impl TopoLog {
    /// Reads the log (repairing a torn tail), then rewrites it as a compact
    /// snapshot. Returns the log and the changes that rebuild the topology.
    pub fn open(disk: &dyn Disk, dir: &Path) -> io::Result<(TopoLog, Vec<Change>)> {
        let path = dir.join(FILE);
        let mut changes = Vec::new();
        match disk.read(&path) {
            Ok(buf) => {
                if buf.len() < HEADER_LEN || &buf[0..8] != MAGIC {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a warren topology log", path.display()),
                    ));
                }
                let mut b = Bytes::from(buf);
                b.advance(HEADER_LEN);
                while b.len() >= 8 {
                    let len = u32::from_le_bytes(b[0..4].try_into().expect("4")) as usize;
                    let crc = u32::from_le_bytes(b[4..8].try_into().expect("4"));
                    if b.len() < 8 + len {
                        log::warn!("{}: torn tail of {} bytes dropped", path.display(), b.len());
                        break;
                    }
                    let mut h = crc32fast::Hasher::new();
                    h.update(&b[0..4]);
                    h.update(&b[8..8 + len]);
                    if h.finalize() != crc {
                        log::warn!("{}: corrupt record, rest of the log dropped", path.display());
                        break;
                    }
                    let rec = b.slice(8..8 + len);
                    b.advance(8 + len);
                    changes.push(decode(rec)?);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut topo = Topology::default();
        for c in &changes {
            topo.apply(c);
        }
        let snap = snapshot(&topo);
        let log = Self::rewrite(disk, dir, &snap)?;
        Ok((log, snap))
    }

    fn rewrite(disk: &dyn Disk, dir: &Path, changes: &[Change]) -> io::Result<TopoLog> {
        let path = dir.join(FILE);
        let tmp = dir.join("topology.log.tmp");
        let mut buf = BytesMut::new();
        buf.put_slice(MAGIC);
        buf.put_u32_le(super::segment::FORMAT_VERSION);
        buf.put_u32_le(0);
        for c in changes {
            frame(c, &mut buf);
        }
        if disk.exists(&tmp) {
            disk.remove_file(&tmp)?;
        }
        disk.write_synced(&tmp, &buf)?;
        disk.rename(&tmp, &path)?;
        disk.open_dir(dir)?.sync()?;
        let file = disk.open_append(&path)?;
        Ok(TopoLog { path, file })
    }

    /// Appends changes (written, not yet synced), all or none: a failed
    /// append (a full disk) leaves the log as it was, so what is appended
    /// after it does not land behind a torn record.
    pub fn append(&mut self, changes: &[&Change]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        for c in changes {
            frame(c, &mut buf);
        }
        self.file.append(&buf)
    }

    /// The file to sync after [`TopoLog::append`].
    pub fn file(&self) -> Arc<dyn Syncable> {
        self.file.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::control::ControlPlane;
    use crate::protocol::{FieldTable, FieldValue};
    use std::io::Write;

    /// Limits are logged and come back whole (negative and empty sets
    /// too), after the vhost or user they belong to; a vhost's cleared
    /// limits and a deleted user's stay gone.
    #[test]
    fn limits_are_logged_and_recovered() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = TopoLog::open(&crate::storage::RealDisk, d.path()).unwrap();
        let mut topo = Topology::default();
        let mut cp = ControlPlane::default();
        let mut all = cp.add_vhost(&topo, "/").unwrap();
        all.extend(cp.add_vhost(&topo, "v2").unwrap());
        for name in ["u", "gone"] {
            all.push(Change::PutUser(User {
                name: name.into(),
                password_hash: Vec::new(),
                tags: Vec::new(),
                counters: Default::default(),
            }));
        }
        let lim = Limits::from([("max-connections", -1), ("max-queues", 1 << 40)]);
        all.extend([
            Change::SetVhostLimits {
                vhost: VhostId(1),
                limits: Some(lim.clone()),
            },
            Change::SetVhostLimits {
                vhost: VhostId(2),
                limits: Some(Limits::default()),
            },
            Change::SetUserLimits {
                user: "u".into(),
                limits: Limits::from([("max-channels", 0)]),
            },
            Change::SetUserLimits {
                user: "gone".into(),
                limits: Limits::from([("max-channels", 3)]),
            },
            Change::DeleteUser { name: "gone".into() },
        ]);
        for c in &all {
            assert!(is_durable(&topo, c));
            topo.apply(c);
            log.append(&[c]).unwrap();
        }
        drop(log);
        for _ in 0..2 {
            // Read back twice: the second time from the snapshot the first
            // reopen wrote.
            let (_log, changes) = TopoLog::open(&crate::storage::RealDisk, d.path()).unwrap();
            let mut back = Topology::default();
            for c in &changes {
                back.apply(c);
            }
            assert_eq!(back.vhost("/").unwrap().limits, Some(lim.clone()));
            assert_eq!(back.vhost("v2").unwrap().limits, Some(Limits::default()));
            assert_eq!(back.user_limits("u"), &Limits::from([("max-channels", 0)]));
            assert!(back.user_limits("gone").is_empty());
        }
        // A cleared set is a record of its own.
        let mut b = BytesMut::new();
        encode(
            &Change::SetVhostLimits {
                vhost: VhostId(2),
                limits: None,
            },
            &mut b,
        );
        assert!(matches!(
            decode(b.freeze()).unwrap(),
            Change::SetVhostLimits {
                vhost: VhostId(2),
                limits: None
            }
        ));
    }

    #[test]
    fn replay_rebuilds_durable_topology_only() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, initial) = TopoLog::open(&crate::storage::RealDisk, d.path()).unwrap();
        assert!(initial.is_empty());
        let mut topo = Topology::default();
        let mut cp = ControlPlane::default();
        let mut all = cp.add_vhost(&topo, "/").unwrap();
        let mut args = FieldTable::new();
        args.insert("x-message-ttl".into(), FieldValue::I32(5));
        all.push(Change::DeclareQueue(QueueDef {
            id: QueueId(7),
            vhost: VhostId(1),
            name: "dq".into(),
            owner: 1,
            node: 0,
            durable: true,
            exclusive: None,
            auto_delete: false,
            args,
            replicas: Vec::new(),
            group: 0,
        }));
        all.push(Change::DeclareQueue(QueueDef {
            id: QueueId(8),
            vhost: VhostId(1),
            name: "tq".into(),
            owner: 0,
            node: 0,
            durable: false,
            exclusive: None,
            auto_delete: false,
            args: FieldTable::new(),
            replicas: Vec::new(),
            group: 0,
        }));
        for c in &all {
            let durable = is_durable(&topo, c);
            topo.apply(c);
            if durable {
                log.append(&[c]).unwrap();
            }
        }
        let amq_direct = topo.exchange_id(VhostId(1), b"amq.direct").unwrap();
        for (q, key) in [(7, "k1"), (8, "k2")] {
            let c = Change::Bind {
                source: amq_direct,
                dest: Dest::Queue(QueueId(q)),
                key: ShortStr::from_string_lossy(key),
                args: FieldTable::new(),
            };
            if is_durable(&topo, &c) {
                log.append(&[&c]).unwrap();
            }
            topo.apply(&c);
        }
        drop(log);
        // A torn write at the end is dropped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join(FILE))
            .unwrap()
            .write_all(&[9, 0, 0, 0, 1])
            .unwrap();
        let (_log, changes) = TopoLog::open(&crate::storage::RealDisk, d.path()).unwrap();
        let mut back = Topology::default();
        for c in &changes {
            back.apply(c);
        }
        let q = back.queue_by_name(VhostId(1), b"dq").unwrap();
        assert_eq!(q.owner, 1);
        assert_eq!(q.args.get("x-message-ttl"), Some(&FieldValue::I32(5)));
        assert!(back.queue_by_name(VhostId(1), b"tq").is_none());
        let ex = back.exchange(amq_direct).unwrap();
        assert_eq!(ex.bindings.len(), 1);
        assert!(back.exchange_by_name(VhostId(1), b"amq.topic").is_some());
    }

    #[test]
    fn a_quorum_queue_replicas_and_leader_changes_round_trip() {
        for node in [0u64, 42] {
            let q = QueueDef {
                id: QueueId(4),
                vhost: VhostId(1),
                name: "qq".into(),
                owner: 0,
                node,
                durable: true,
                exclusive: None,
                auto_delete: false,
                args: FieldTable::new(),
                replicas: vec![42, 7, 9],
                group: 0x8000_1234,
            };
            let mut b = BytesMut::new();
            encode(&Change::DeclareQueue(q), &mut b);
            match decode(b.freeze()).unwrap() {
                Change::DeclareQueue(d) => {
                    assert_eq!(d.node, node);
                    assert_eq!(d.replicas, vec![42, 7, 9]);
                    assert_eq!(d.group, 0x8000_1234);
                    assert!(d.is_quorum());
                }
                other => panic!("{other:?}"),
            }
        }
        let mut b = BytesMut::new();
        encode(
            &Change::QueueLeader {
                id: QueueId(4),
                node: 7,
            },
            &mut b,
        );
        match decode(b.freeze()).unwrap() {
            Change::QueueLeader { id, node } => assert_eq!((id, node), (QueueId(4), 7)),
            other => panic!("{other:?}"),
        }
        let mut b = BytesMut::new();
        encode(
            &Change::QueueReplicas {
                id: QueueId(4),
                replicas: vec![9, 42],
            },
            &mut b,
        );
        match decode(b.freeze()).unwrap() {
            Change::QueueReplicas { id, replicas } => assert_eq!((id, replicas), (QueueId(4), vec![9, 42])),
            other => panic!("{other:?}"),
        }
    }

    /// A quorum queue's record written before groups were stored (no
    /// group after the replicas) reads with the group its replicas named.
    #[test]
    fn a_quorum_queue_record_without_its_group_reads_the_hash_of_its_replicas() {
        let q = QueueDef {
            id: QueueId(4),
            vhost: VhostId(1),
            name: "qq".into(),
            owner: 0,
            node: 42,
            durable: true,
            exclusive: None,
            auto_delete: false,
            args: FieldTable::new(),
            replicas: vec![42, 7, 9],
            group: 0x8000_1234,
        };
        let mut b = BytesMut::new();
        encode(&Change::DeclareQueue(q), &mut b);
        let old = b.split_to(b.len() - 4).freeze();
        match decode(old).unwrap() {
            Change::DeclareQueue(d) => {
                assert_eq!(d.replicas, vec![42, 7, 9]);
                assert_eq!(d.group, crate::broker::topology::quorum_group(&[42, 7, 9]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_queue_home_node_and_exclusive_flag_round_trip() {
        for node in [0u64, 99] {
            let q = QueueDef {
                id: QueueId(3),
                vhost: VhostId(1),
                name: "x".into(),
                owner: 1,
                node,
                durable: false,
                exclusive: Some(crate::ids::ConnId::new(0, 5)),
                auto_delete: true,
                args: FieldTable::new(),
                replicas: Vec::new(),
                group: 0,
            };
            let mut b = BytesMut::new();
            encode(&Change::DeclareQueue(q), &mut b);
            match decode(b.freeze()).unwrap() {
                Change::DeclareQueue(d) => {
                    assert_eq!(d.node, node);
                    assert_eq!(d.exclusive, Some(crate::ids::ConnId::ELSEWHERE));
                    assert!(d.auto_delete && !d.durable);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
