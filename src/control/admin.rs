//! Management operations as control-plane stages: validated here, then
//! committed like any other topology change.

use super::Stage;
use crate::admin::{AdminOp, LimitsOp};
use crate::broker::control::{ControlPlane, Plan, Requester};
use crate::broker::limits::{Limits, USER_LIMITS, VHOST_LIMITS, unknown_name};
use crate::broker::request::Reply;
use crate::broker::topology::{Change, PolicyDef, Topology};
use crate::ids::{ConnId, VhostId};
use crate::protocol::AmqpError;

fn vhost_id(topo: &Topology, name: &str) -> Result<VhostId, AmqpError> {
    topo.vhost(name)
        .map(|v| v.id)
        .ok_or_else(|| AmqpError::not_found(format!("vhost '{name}' not found")))
}

fn commit(changes: Vec<Change>) -> Vec<Stage> {
    vec![Stage::Commit(changes)]
}

/// What a management operation does, or why it is refused.
pub(super) fn stages(
    plane: &mut ControlPlane,
    topo: &Topology,
    user: &str,
    op: AdminOp,
) -> Result<Vec<Stage>, AmqpError> {
    Ok(match op {
        // Planned by the control service itself (it needs the shard count).
        AdminOp::MoveQueue { .. } => return Err(AmqpError::internal("queue move planned as an admin stage")),
        AdminOp::QuorumReplicas { node, grow, even } => {
            let changes: Vec<Change> = topo
                .queues()
                .filter_map(|q| {
                    q.replicas_after(node, grow, even)
                        .map(|replicas| (q.id, replicas))
                })
                .map(|(id, replicas)| Change::QueueReplicas { id, replicas })
                .collect();
            if changes.is_empty() {
                Vec::new()
            } else {
                commit(changes)
            }
        }
        AdminOp::Amqp { vhost, req } => {
            let who = Requester {
                vhost: vhost_id(topo, &vhost)?,
                conn: ConnId(0),
                shard: 0,
                user,
            };
            match plane.plan(topo, who, req)? {
                Plan::Reply(Reply::Error(e)) => return Err(e),
                Plan::Reply(_) | Plan::DeclareExisting { .. } => Vec::new(),
                Plan::Apply { changes, .. } => commit(changes),
                Plan::DeleteQueue {
                    queue,
                    owner,
                    if_unused,
                    if_empty,
                } => vec![
                    Stage::OwnerDelete {
                        queue,
                        owner,
                        via: 0,
                        if_unused,
                        if_empty,
                    },
                    Stage::DeleteQueue(queue),
                ],
            }
        }
        AdminOp::AddVhost { name } => {
            if name.is_empty() || name.len() > 255 {
                return Err(AmqpError::precondition("invalid vhost name"));
            }
            plane.add_vhost(topo, &name).map(commit).unwrap_or_default()
        }
        AdminOp::DeleteVhost { name } => commit(vec![Change::DeleteVhost {
            id: vhost_id(topo, &name)?,
        }]),
        AdminOp::PutUser {
            name,
            password_hash,
            tags,
        } => {
            if name.is_empty() {
                return Err(AmqpError::precondition("user names cannot be empty"));
            }
            // A replaced user keeps its counters: its connections and
            // channels still count.
            let counters = topo.user(&name).map(|u| u.counters.clone()).unwrap_or_default();
            commit(vec![Change::PutUser(crate::broker::users::User {
                name,
                password_hash,
                tags,
                counters,
            })])
        }
        AdminOp::DeleteUser { name } => {
            if topo.user(&name).is_none() {
                return Err(AmqpError::not_found(format!("user '{name}' not found")));
            }
            commit(vec![Change::DeleteUser { name }])
        }
        AdminOp::SetPermissions {
            user: who,
            vhost,
            configure,
            write,
            read,
        } => {
            let id = vhost_id(topo, &vhost)?;
            if topo.user(&who).is_none() {
                return Err(AmqpError::not_found(format!("user '{who}' not found")));
            }
            crate::broker::users::Permissions::new(&configure, &write, &read)
                .map_err(AmqpError::precondition)?;
            commit(vec![Change::SetPermissions {
                user: who,
                vhost: id,
                configure,
                write,
                read,
            }])
        }
        AdminOp::SetPolicy {
            vhost,
            name,
            pattern,
            apply_to,
            priority,
            definition,
        } => {
            let id = vhost_id(topo, &vhost)?;
            if name.is_empty() {
                return Err(AmqpError::precondition("policy names cannot be empty"));
            }
            if !matches!(apply_to.as_str(), "queues" | "exchanges" | "all") {
                return Err(AmqpError::precondition(format!(
                    "invalid apply-to value '{apply_to}': expected queues, exchanges or all"
                )));
            }
            regex::Regex::new(&pattern)
                .map_err(|e| AmqpError::precondition(format!("invalid pattern '{pattern}': {e}")))?;
            crate::broker::args::validate_policy(&definition).map_err(AmqpError::precondition)?;
            commit(vec![Change::SetPolicy(PolicyDef {
                vhost: id,
                name,
                pattern,
                apply_to,
                priority,
                definition,
            })])
        }
        AdminOp::ClearPolicy { vhost, name } => {
            let id = vhost_id(topo, &vhost)?;
            if !topo.policies().any(|p| p.vhost == id && p.name == name) {
                return Err(AmqpError::not_found(format!(
                    "policy '{name}' not found in vhost '{vhost}'"
                )));
            }
            commit(vec![Change::ClearPolicy { vhost: id, name }])
        }
        AdminOp::ClearPermissions { user: who, vhost } => commit(vec![Change::ClearPermissions {
            user: who,
            vhost: vhost_id(topo, &vhost)?,
        }]),
        AdminOp::VhostLimits { vhost, op } => {
            let v = topo
                .vhost(&vhost)
                .ok_or_else(|| AmqpError::not_found(format!("vhost '{vhost}' not found")))?;
            let old = v.limits.clone();
            let limits = match op {
                LimitsOp::Clear if old.is_none() => {
                    return Err(AmqpError::not_found("Parameter does not exist"));
                }
                LimitsOp::Clear => None,
                // RabbitMQ's `clear_limit` writes what is left, so removing
                // a limit from a vhost without any leaves an empty set.
                other => Some(change_limits(old.unwrap_or_default(), other, &VHOST_LIMITS)?),
            };
            commit(vec![Change::SetVhostLimits { vhost: v.id, limits }])
        }
        AdminOp::UserLimits { user: who, op } => {
            if topo.user(&who).is_none() {
                return Err(AmqpError::not_found(format!("user '{who}' not found")));
            }
            let limits = change_limits(topo.user_limits(&who).clone(), op, &USER_LIMITS)?;
            commit(vec![Change::SetUserLimits { user: who, limits }])
        }
    })
}

/// The limits after `op`; names outside `known` are refused (the
/// management plane validated them with RabbitMQ's texts already).
fn change_limits(old: Limits, op: LimitsOp, known: &[&str]) -> Result<Limits, AmqpError> {
    let new = match op {
        LimitsOp::Set(l) => l,
        LimitsOp::Merge(l) => old.merged(&l),
        LimitsOp::Remove(name) => old.without(&name),
        LimitsOp::Clear => Limits::default(),
    };
    match unknown_name(&new, known) {
        Some(name) => Err(AmqpError::precondition(format!("unknown limit '{name}'"))),
        None => Ok(new),
    }
}
