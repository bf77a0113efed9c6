//! `rabbitmq-queues grow` and `shrink` (and the shrink of
//! `forget_cluster_node`): a member added to quorum queues' replicas or
//! taken out, through the metadata; each group's leader then changes its
//! Raft members to match (see `quorum::members_changed`).

use super::quorum;
use super::state::{Shard, now_ms};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long `grow` and `shrink` wait for the groups this node runs to
/// take their new members (a new one catches up first).
const REPLICAS_WAIT: Duration = Duration::from_secs(20);

/// Adds `id` to quorum queues' replicas or takes it out (see
/// `AdminOp::QuorumReplicas`), then waits until the groups this node runs
/// have those members. One row per queue, as `rabbitmq-queues` prints:
/// vhost, name, size (its replicas after) and result.
pub async fn change(shard: &Rc<Shard>, id: u64, grow: bool, even: bool) -> Result<serde_json::Value, String> {
    struct Row {
        vhost: String,
        name: String,
        group: u32,
        size: usize,
        error: Option<&'static str>,
    }
    let mut rows: Vec<Row> = {
        let hub = shard.hub.borrow();
        hub.topo
            .queues()
            .filter(|q| q.is_quorum())
            .filter_map(|q| {
                let (size, error) = match q.replicas_after(id, grow, even) {
                    Some(r) => (r.len(), None),
                    // Only the node left: RabbitMQ's `last_node`.
                    None if !grow && q.replicas == [id] => {
                        (1, Some("error: the last node cannot be removed"))
                    }
                    None => return None,
                };
                Some(Row {
                    vhost: hub.topo.vhost_name(q.vhost).to_string(),
                    name: q.name.to_string(),
                    group: q.quorum_group(),
                    size,
                    error,
                })
            })
            .collect()
    };
    if rows.iter().any(|r| r.error.is_none()) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let now = now_ms();
        shard
            .hub
            .borrow_mut()
            .submit_control(crate::owner::ControlMsg::Admin {
                user: String::new(),
                op: crate::admin::AdminOp::QuorumReplicas { node: id, grow, even },
                reply: tx,
            });
        shard.after_step(now);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.try_recv() {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(e.text.to_string()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err("the control plane dropped the change".into());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err("timed out waiting for the metadata to take the change".into());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    glommio::timer::sleep(Duration::from_millis(10)).await
                }
            }
        }
        let deadline = Instant::now() + REPLICAS_WAIT;
        let mut groups: Vec<u32> = rows
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.group)
            .collect();
        groups.dedup();
        groups.retain(|g| !quorum::has_members_wanted(shard, *g));
        while !groups.is_empty() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            groups.retain(|g| !quorum::has_members_wanted(shard, *g));
        }
        for r in rows.iter_mut().filter(|r| groups.contains(&r.group)) {
            r.error = Some("error: the operation timed out and may not have been completed");
        }
    }
    Ok(serde_json::Value::Array(
        rows.into_iter()
            .map(|r| {
                serde_json::json!({
                    "vhost": r.vhost,
                    "name": r.name,
                    "size": r.size,
                    "result": r.error.unwrap_or("ok"),
                })
            })
            .collect(),
    ))
}
