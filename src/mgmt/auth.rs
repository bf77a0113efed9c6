//! Who is calling, and what their tags let them see and do — RabbitMQ's
//! management rules: `administrator` ⊃ `monitoring` ⊃ `management`, and
//! `policymaker` ⊃ `management`; a user with none of them may not use the
//! API; non-administrators see only the vhosts they have permissions in,
//! and `management`/`policymaker` users only their own connections.

use super::http::{Call, Reply, not_authorised};
use crate::admin::{PermissionInfo, UserInfo};
use base64::Engine;

#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub tags: Vec<String>,
    pub vhosts: Vec<String>,
}

impl Who {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// Sees every vhost and connection (monitoring and administrators).
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.has("policymaker")
    }

    fn may_manage(&self) -> bool {
        self.is_monitor() || self.is_policymaker() || self.has("management")
    }

    pub fn sees_vhost(&self, vhost: &str) -> bool {
        self.is_monitor() || self.vhosts.iter().any(|v| v == vhost)
    }

    /// Whether the caller may see a connection (or its channels) of `user`.
    pub fn sees_user_objects(&self, user: &str) -> bool {
        self.is_monitor() || self.name == user
    }
}

/// Checks basic auth against the users (shard 0's replica: no shard is
/// asked for anything else before the caller is known).
pub fn authenticate(
    call: &Call,
    (users, permissions): &(Vec<UserInfo>, Vec<PermissionInfo>),
    loopback_users: &[String],
) -> Result<Who, Reply> {
    let (user, pass) = credentials(call).ok_or_else(|| not_authorised("Login failed"))?;
    let u = users
        .iter()
        .find(|u| u.name == user)
        .ok_or_else(|| not_authorised("Login failed"))?;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(&u.password_hash)
        .unwrap_or_default();
    if !crate::broker::users::check_password(&stored, pass.as_bytes()) {
        return Err(not_authorised("Login failed"));
    }
    if loopback_users.contains(&user) && !crate::broker::users::is_loopback(&call.peer) {
        return Err(not_authorised("User can only log in via localhost"));
    }
    let who = Who {
        vhosts: permissions
            .iter()
            .filter(|p| p.user == user)
            .map(|p| p.vhost.clone())
            .collect(),
        tags: u.tags.clone(),
        name: user,
    };
    if !who.may_manage() {
        return Err(not_authorised("Not management user"));
    }
    Ok(who)
}

fn credentials(call: &Call) -> Option<(String, String)> {
    let h = call.headers.get("authorization")?.to_str().ok()?;
    let (scheme, b64) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}
