//! Vhost and user limits, as RabbitMQ 3.10 has them, and the counters
//! they are checked against.
//!
//! * A vhost's limits are RabbitMQ's `vhost-limits` runtime parameter:
//!   `max-connections` and `max-queues` (`rabbit_vhost_limit`). A vhost
//!   either has the parameter (possibly empty) or not; the difference shows
//!   in what `clear_vhost_limits` and the API answer.
//! * A user's limits are `max-connections` and `max-channels`
//!   (`rabbit_auth_backend_internal`), a map that is always there.
//!
//! Values are integers as given (kept, and shown, as set); a negative one
//! means no limit, 0 refuses everything (`get_limit`).
//!
//! Connections are counted per vhost and per user, channels per user, over
//! the whole cluster, as RabbitMQ's tracking does: a [`Counter`] is one
//! atomic shared by every shard of this node, beside what the other running
//! members last said they hold (polled every second by the cluster side,
//! so two nodes filling the last place at the same instant may both get
//! it, as in RabbitMQ, whose tracking is asynchronous too). It
//! travels inside the [`super::topology::Change`] that creates the vhost or
//! user, so every replica of the topology (each shard applies a clone of
//! the same change) holds the same counter. A place is taken with a
//! compare-and-swap that fails at the limit, so a burst of connections on
//! several shards at once cannot go past it; it is given back when the
//! [`Lease`] drops. Queues are counted by the control plane, which orders
//! every declare (see [`super::control`]).

use crate::protocol::AmqpError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub const MAX_CONNECTIONS: &str = "max-connections";
pub const MAX_QUEUES: &str = "max-queues";
pub const MAX_CHANNELS: &str = "max-channels";

/// The limits a vhost takes (`rabbit_vhost_limit:vhost_limit_validation`).
pub const VHOST_LIMITS: [&str; 2] = [MAX_CONNECTIONS, MAX_QUEUES];
/// The limits a user takes (`rabbit_auth_backend_internal:user_limit_validation`).
pub const USER_LIMITS: [&str; 2] = [MAX_CONNECTIONS, MAX_CHANNELS];

/// Limits by name, values as set. Replicated on every shard (part of the
/// topology).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits(pub BTreeMap<String, i64>);

impl Limits {
    /// The limit in force for `name`: none when unset or negative.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(|&v| u64::try_from(v).ok())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// These limits with `other`'s set over them.
    pub fn merged(&self, other: &Limits) -> Limits {
        let mut m = self.0.clone();
        m.extend(other.0.iter().map(|(k, v)| (k.clone(), *v)));
        Limits(m)
    }

    /// These limits without `name`.
    pub fn without(&self, name: &str) -> Limits {
        let mut m = self.0.clone();
        m.remove(name);
        Limits(m)
    }
}

impl<const N: usize> From<[(&str, i64); N]> for Limits {
    fn from(a: [(&str, i64); N]) -> Self {
        Limits(a.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

/// The first name not in `known`, if any.
pub fn unknown_name<'a>(limits: &'a Limits, known: &[&str]) -> Option<&'a str> {
    limits.0.keys().map(String::as_str).find(|k| !known.contains(k))
}

/// How many of something the cluster holds (a vhost's or a user's
/// connections, a user's channels): this node's count, shared by every
/// shard, and the other members'. See the module documentation. Two
/// counters are equal when they are the same counter.
#[derive(Clone, Default)]
pub struct Counter(Arc<Counts>);

#[derive(Default)]
struct Counts {
    here: AtomicU32,
    elsewhere: AtomicU32,
}

impl Counter {
    /// This node's count.
    pub fn count(&self) -> u32 {
        self.0.here.load(Ordering::Acquire)
    }

    /// What the other running members last said they hold.
    pub fn elsewhere(&self) -> u32 {
        self.0.elsewhere.load(Ordering::Acquire)
    }

    pub fn set_elsewhere(&self, n: u32) {
        self.0.elsewhere.store(n, Ordering::Release);
    }

    /// Takes a place unless `limit` places are taken already in the
    /// cluster (RabbitMQ's `count >= Limit` refusal); without a limit,
    /// always.
    pub fn acquire(&self, limit: Option<u64>) -> Option<Lease> {
        let mut n = self.0.here.load(Ordering::Relaxed);
        loop {
            let total = u64::from(n) + u64::from(self.elsewhere());
            if limit.is_some_and(|l| total >= l) {
                return None;
            }
            match self.0.here.compare_exchange_weak(
                n,
                n.saturating_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Lease(self.0.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl PartialEq for Counter {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

impl Eq for Counter {}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({} + {})", self.count(), self.elsewhere())
    }
}

/// One place taken in a [`Counter`], given back when dropped.
#[must_use = "the place is given back when the lease drops"]
pub struct Lease(Arc<Counts>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.here.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// A user's connections and channels, over every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCounters {
    pub connections: Counter,
    pub channels: Counter,
}

/// `rabbit_reader:is_over_vhost_connection_limit` (530, on `connection.open`).
pub fn vhost_connections_reached(vhost: &str, user: &str, limit: u64) -> AmqpError {
    AmqpError::not_allowed(format!(
        "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
    ))
}

/// `rabbit_reader:is_over_user_connection_limit` (530, on `connection.open`).
pub fn user_connections_reached(user: &str, limit: u64) -> AmqpError {
    AmqpError::not_allowed(format!(
        "connection refused for user '{user}': user connection limit ({limit}) is reached"
    ))
}

/// `rabbit_reader:create_channel` (530, closes the connection; no method).
pub fn user_channels_reached(user: &str, limit: u64) -> AmqpError {
    AmqpError::not_allowed(format!(
        "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
    ))
}

/// `rabbit_channel:check_vhost_queue_limit` (406 on the channel).
pub fn queues_reached(queue: &str, vhost: &str, limit: u64) -> AmqpError {
    AmqpError::precondition(format!(
        "cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached"
    ))
}

/// RabbitMQ's refusal of a definitions import that would go past a vhost's
/// queue limit (`rabbit_definitions:validate_vhost_queue_limit`), checked
/// before anything is imported.
pub fn import_over_queue_limit(vhost: &str, adding: u64, limit: u64, existing: u64) -> String {
    format!(
        "Adding {adding} queue(s) to virtual host \"{vhost}\" would exceed the limit of {limit} queue(s).\n\nThis virtual host currently has {existing} queue(s) defined.\n\nImport aborted!"
    )
}

/// Would `adding` more queues go past the vhost's queue limit, with
/// `existing` queues there now? (`rabbit_vhost_limit:would_exceed_queue_limit`.)
pub fn would_exceed_queues(limits: Option<&Limits>, existing: u64, adding: u64) -> Option<u64> {
    let limit = limits?.get(MAX_QUEUES)?;
    (adding > 0 && existing + adding > limit).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_missing_mean_no_limit() {
        let l = Limits::from([(MAX_CONNECTIONS, -1), (MAX_QUEUES, 0)]);
        assert_eq!(l.get(MAX_CONNECTIONS), None);
        assert_eq!(l.get(MAX_QUEUES), Some(0));
        assert_eq!(l.get(MAX_CHANNELS), None);
        // Kept as set, shown as set.
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [(MAX_CONNECTIONS, -1), (MAX_QUEUES, 0)]
        );
    }

    #[test]
    fn merge_and_remove() {
        let a = Limits::from([(MAX_CONNECTIONS, 2)]);
        let b = a.merged(&Limits::from([(MAX_CHANNELS, 3), (MAX_CONNECTIONS, 5)]));
        assert_eq!(b, Limits::from([(MAX_CHANNELS, 3), (MAX_CONNECTIONS, 5)]));
        assert_eq!(b.without(MAX_CHANNELS), Limits::from([(MAX_CONNECTIONS, 5)]));
        assert_eq!(b.without("max-bogus"), b);
        assert_eq!(unknown_name(&b, &USER_LIMITS), None);
        assert_eq!(unknown_name(&b, &VHOST_LIMITS), Some(MAX_CHANNELS));
    }

    #[test]
    fn counter_refuses_at_the_limit_and_leases_give_back() {
        let c = Counter::default();
        let a = c.acquire(Some(2)).expect("first");
        let b = c.acquire(Some(2)).expect("second");
        assert!(c.acquire(Some(2)).is_none(), "count 2 >= limit 2");
        assert_eq!(c.count(), 2);
        drop(a);
        assert_eq!(c.count(), 1);
        let a = c.acquire(Some(2)).expect("a slot freed");
        // No limit: always; a limit lowered under the count refuses new ones
        // and leaves the old ones alone.
        let d = c.acquire(None).expect("no limit");
        assert_eq!(c.count(), 3);
        assert!(c.acquire(Some(1)).is_none());
        drop((a, b, d));
        assert_eq!(c.count(), 0);
        assert!(c.acquire(Some(0)).is_none(), "0 refuses everything");
    }

    #[test]
    fn other_members_places_count_against_the_limit() {
        let c = Counter::default();
        let a = c.acquire(Some(3)).unwrap();
        c.set_elsewhere(2);
        assert!(c.acquire(Some(3)).is_none(), "1 here + 2 elsewhere");
        assert!(c.acquire(None).is_some(), "no limit");
        assert_eq!(c.count(), 1, "only this node's are counted here");
        c.set_elsewhere(1);
        let b = c.acquire(Some(3)).unwrap();
        assert!(c.acquire(Some(3)).is_none());
        drop((a, b));
        assert_eq!((c.count(), c.elsewhere()), (0, 1));
    }

    #[test]
    fn counter_is_exact_under_a_burst_from_several_threads() {
        let c = Counter::default();
        let leases: Vec<Lease> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..1000).filter_map(|_| c.acquire(Some(100))).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(leases.len(), 100);
        assert_eq!(c.count(), 100);
        drop(leases);
        assert_eq!(c.count(), 0);
    }

    #[test]
    fn counters_are_equal_only_to_themselves() {
        let a = Counter::default();
        assert_eq!(a, a.clone());
        assert_ne!(a, Counter::default());
    }

    #[test]
    fn rabbitmq_texts() {
        // rabbit_reader.erl, rabbit_channel.erl and rabbit_definitions.erl
        // of RabbitMQ 3.10.8; the first three as a 3.10.8 broker sent them.
        let e = vhost_connections_reached("limtest", "lim", 1);
        assert_eq!(
            e.reply_text(),
            "NOT_ALLOWED - access to vhost 'limtest' refused for user 'lim': connection limit (1) is reached"
        );
        assert_eq!(
            user_connections_reached("lim", 1).reply_text(),
            "NOT_ALLOWED - connection refused for user 'lim': user connection limit (1) is reached"
        );
        assert_eq!(
            user_channels_reached("lim", 2).reply_text(),
            "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (2)"
        );
        let q = queues_reached("q2", "limtest", 1);
        assert_eq!(q.code, 406);
        assert_eq!(
            q.reply_text(),
            "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost 'limtest' (1) is reached"
        );
        assert_eq!(
            import_over_queue_limit("limtest", 2, 1, 0),
            "Adding 2 queue(s) to virtual host \"limtest\" would exceed the limit of 1 queue(s).\n\nThis virtual host currently has 0 queue(s) defined.\n\nImport aborted!"
        );
    }

    #[test]
    fn import_check_counts_only_new_queues_against_the_limit() {
        let l = Limits::from([(MAX_QUEUES, 3)]);
        assert_eq!(would_exceed_queues(Some(&l), 1, 2), None);
        assert_eq!(would_exceed_queues(Some(&l), 2, 2), Some(3));
        assert_eq!(would_exceed_queues(Some(&l), 5, 0), None, "nothing added");
        assert_eq!(would_exceed_queues(None, 5, 5), None);
        let zero = Limits::from([(MAX_QUEUES, 0)]);
        assert_eq!(would_exceed_queues(Some(&zero), 0, 1), Some(0));
    }
}
