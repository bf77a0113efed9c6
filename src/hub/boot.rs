//! What a broker starts from: the durable topology read back from the
//! data dir (or, on a fresh one, the default vhost and user RabbitMQ
//! creates on first boot), with queue owners mapped onto the shard count
//! and the stores of queues that no longer exist removed.

use crate::broker::control::ControlPlane;
use crate::broker::topology::{Change, Topology};
use crate::config::Config;
use crate::ids::ShardId;
use crate::storage::Disk;
use crate::storage::topolog::TopoLog;
use std::io;

/// Reads (and rewrites as a snapshot) the topology log; see the module
/// documentation. `salt`: for the default user's password hash.
pub fn recover_topology(
    disk: &dyn Disk,
    cfg: &Config,
    nshards: usize,
    salt: [u8; 4],
) -> io::Result<(TopoLog, Vec<Change>)> {
    disk.create_dir_all(&cfg.data_dir)?;
    let (mut log, mut changes) = TopoLog::open(disk, &cfg.data_dir)?;
    if changes.is_empty() {
        changes = ControlPlane::default()
            .add_vhost(&Topology::default(), &cfg.default_vhost)
            .unwrap_or_default();
        changes.push(Change::PutUser(crate::broker::users::User {
            name: cfg.default_user.clone(),
            password_hash: crate::broker::users::hash_password(cfg.default_pass.as_bytes(), salt),
            tags: vec!["administrator".into()],
            counters: Default::default(),
        }));
        let vhost = match &changes[0] {
            Change::AddVhost { id, .. } => *id,
            _ => unreachable!("add_vhost starts with the vhost"),
        };
        changes.push(Change::SetPermissions {
            user: cfg.default_user.clone(),
            vhost,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
        log.append(&changes.iter().collect::<Vec<_>>())?;
        log.file().sync()?;
    }
    let mut live = std::collections::BTreeSet::new();
    for c in &mut changes {
        if let Change::DeclareQueue(q) = c {
            q.owner %= nshards as ShardId;
            live.insert(q.id.0.to_string());
        }
    }
    let queues_dir = cfg.data_dir.join("queues");
    if let Ok(entries) = disk.list_dir(&queues_dir) {
        for name in entries {
            if !live.contains(&name) {
                let path = queues_dir.join(&name);
                log::info!("removing the store of deleted queue {}", path.display());
                let _ = disk.remove_dir_all(&path);
            }
        }
    }
    Ok((log, changes))
}
