//! `/metrics` in the Prometheus text format: RabbitMQ's metric names where
//! they exist (as its `rabbitmq_prometheus` plugin with per-object metrics),
//! and warren's own per-shard figures.

use super::Mgmt;
use crate::admin::{BrokerSnapshot, FSYNC_BUCKETS_US};
use std::fmt::Write;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn val(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let esc = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{esc}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn gauge(&mut self, name: &str, help: &str, v: impl std::fmt::Display) {
        self.head(name, "gauge", help);
        self.val(name, &[], v);
    }
}

/// `per_object`: a sample per queue (`/metrics/per-object`); otherwise, as
/// RabbitMQ's `/metrics`, queue metrics are summed, so the answer stays
/// small however many queues there are.
pub fn render(m: &Mgmt, snap: &BrokerSnapshot, per_object: bool) -> String {
    let mut o = Out(String::with_capacity(4096 + snap.queues.len() * 512));
    o.head("rabbitmq_build_info", "untyped", "Broker version");
    o.val(
        "rabbitmq_build_info",
        &[
            ("product", "warren"),
            ("product_version", env!("CARGO_PKG_VERSION")),
            ("rabbitmq_version", "3.10.8"),
        ],
        1,
    );
    o.head("rabbitmq_identity_info", "untyped", "Node name");
    o.val(
        "rabbitmq_identity_info",
        &[("rabbitmq_node", &m.node), ("rabbitmq_cluster", &m.node)],
        1,
    );
    o.gauge(
        "rabbitmq_connections",
        "Connections currently open",
        snap.connections.len(),
    );
    o.gauge(
        "rabbitmq_channels",
        "Channels currently open",
        snap.channels.len(),
    );
    o.gauge(
        "rabbitmq_consumers",
        "Consumers currently connected",
        snap.consumers.len(),
    );
    o.gauge("rabbitmq_queues", "Queues available", snap.queues.len());
    o.gauge(
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        crate::shard::resident_memory(),
    );
    o.gauge(
        "warren_allocated_memory_bytes",
        "Memory held from the allocator (what the memory alarm compares with the watermark)",
        crate::shard::allocated(),
    );
    o.gauge(
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        m.admin.config.limits.memory_high_watermark,
    );
    o.gauge(
        "rabbitmq_alarms_free_disk_space_watermark",
        "Is the disk alarm in effect",
        u8::from(
            m.admin
                .stats
                .disk_alarm
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    );
    o.gauge(
        "rabbitmq_disk_space_available_bytes",
        "Disk space available in bytes",
        m.admin.stats.disk_free.load(std::sync::atomic::Ordering::Relaxed),
    );
    o.gauge(
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        m.admin
            .stats
            .disk_free_limit
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    o.gauge(
        "rabbitmq_alarms_memory_used_watermark",
        "Is the memory alarm in effect",
        u8::from(
            m.admin
                .stats
                .memory_alarm
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    );

    let conns = &snap.connections;
    let sum = |f: fn(&crate::admin::ConnectionInfo) -> u64| conns.iter().map(f).sum::<u64>();
    let routed: u64 = snap.shards.iter().map(|s| s.routed).sum();
    let total = |o: &mut Out, name: &str, help: &str, v: u64| {
        o.head(name, "counter", help);
        o.val(name, &[], v);
    };
    total(
        &mut o,
        "rabbitmq_channel_messages_published_total",
        "Messages published into an exchange on a channel",
        routed,
    );
    total(
        &mut o,
        "rabbitmq_channel_messages_confirmed_total",
        "Messages published into an exchange and confirmed on the channel (open connections)",
        sum(|c| c.confirmed),
    );
    total(
        &mut o,
        "rabbitmq_channel_messages_delivered_total",
        "Messages delivered to consumers (open connections)",
        sum(|c| c.delivered),
    );
    total(
        &mut o,
        "rabbitmq_connection_incoming_bytes_total",
        "Bytes received (open connections)",
        sum(|c| c.recv_oct),
    );
    total(
        &mut o,
        "rabbitmq_connection_outgoing_bytes_total",
        "Bytes sent (open connections)",
        sum(|c| c.send_oct),
    );

    type QField = fn(&crate::admin::QueueInfo) -> u64;
    let per_queue: [(&str, &str, &str, QField); 9] = [
        (
            "rabbitmq_queue_messages_ready",
            "gauge",
            "Messages ready to be delivered to consumers",
            |q| q.messages_ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "gauge",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.messages_unacknowledged,
        ),
        (
            "rabbitmq_queue_messages",
            "gauge",
            "Sum of ready and unacknowledged messages",
            |q| q.messages_ready + q.messages_unacknowledged,
        ),
        (
            "rabbitmq_queue_messages_bytes",
            "gauge",
            "Size in bytes of ready and unacknowledged messages",
            |q| q.message_bytes_ready + q.message_bytes_unacknowledged,
        ),
        ("rabbitmq_queue_consumers", "gauge", "Consumers on a queue", |q| {
            q.consumers
        }),
        (
            "warren_queue_disk_bytes",
            "gauge",
            "Bytes of segment files held by the queue",
            |q| q.disk_bytes,
        ),
        (
            "rabbitmq_queue_messages_published_total",
            "counter",
            "Messages published to a queue",
            |q| q.counters.published,
        ),
        (
            "rabbitmq_queue_messages_delivered_total",
            "counter",
            "Messages delivered from a queue",
            |q| q.counters.delivered,
        ),
        (
            "rabbitmq_queue_messages_acked_total",
            "counter",
            "Messages acknowledged on a queue",
            |q| q.counters.acked,
        ),
    ];
    for (name, kind, help, f) in per_queue {
        o.head(name, kind, help);
        if per_object {
            for q in &snap.queues {
                o.val(name, &[("vhost", &q.vhost), ("queue", &q.name)], f(q));
            }
        } else {
            o.val(name, &[], snap.queues.iter().map(f).sum::<u64>());
        }
    }

    type SField = fn(&crate::admin::ShardStats) -> u64;
    let per_shard: [(&str, &str, &str, SField); 13] = [
        (
            "warren_shard_messages_routed_total",
            "counter",
            "Messages routed by the shard's connections",
            |s| s.routed,
        ),
        (
            "warren_shard_outbox_items",
            "gauge",
            "Items waiting for the cross-shard rings, per source shard",
            |s| s.outbox_items,
        ),
        (
            "warren_shard_ring_items_total",
            "counter",
            "Items sent to other shards (cross-shard hops)",
            |s| s.ring_items,
        ),
        (
            "warren_shard_ring_batches_total",
            "counter",
            "Ring pushes to other shards (each carries a batch of items)",
            |s| s.ring_batches,
        ),
        (
            "warren_shard_connection_handoffs_total",
            "counter",
            "Connections handed over to the shard that owns their queue",
            |s| s.handoffs,
        ),
        (
            "warren_shard_direct_replies_dropped_total",
            "counter",
            "Direct replies (amq.rabbitmq.reply-to) dropped because the client was not reading its connection",
            |s| s.replies_dropped,
        ),
        (
            "warren_shard_wakeups_total",
            "counter",
            "Times the shard's thread slept and was woken (voluntary context switches)",
            |s| s.wakeups,
        ),
        (
            "warren_shard_preemptions_total",
            "counter",
            "Times the shard's thread was preempted by the kernel (involuntary context switches)",
            |s| s.preemptions,
        ),
        (
            "warren_shard_park_batching",
            "gauge",
            "1 while the shard's parks batch their wake-ups (--park-batch-us), 0 while they wake at the first event",
            |s| s.park_batching,
        ),
        (
            "warren_shard_park_window_microseconds",
            "gauge",
            "How long the shard's parks may hold their wake-up now (chosen among 0 and fractions of --park-batch-us)",
            |s| s.park_window_us,
        ),
        (
            "warren_shard_fsyncs_total",
            "counter",
            "Group-commit fsyncs",
            |s| s.fsyncs,
        ),
        (
            "warren_shard_fsync_files_total",
            "counter",
            "Files covered by fsyncs (batch size numerator)",
            |s| s.fsync_files,
        ),
        (
            "warren_shard_fsync_waiters_total",
            "counter",
            "Confirms and barriers released by fsyncs",
            |s| s.fsync_waiters,
        ),
    ];
    for (name, kind, help, f) in per_shard {
        o.head(name, kind, help);
        for s in &snap.shards {
            o.val(name, &[("shard", &s.shard.to_string())], f(s));
        }
    }
    o.head("warren_shard_connections", "gauge", "Open connections per shard");
    for (i, c) in m.admin.stats.connections.iter().enumerate() {
        o.val(
            "warren_shard_connections",
            &[("shard", &i.to_string())],
            c.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    let h = "warren_fsync_latency_seconds";
    o.head(h, "histogram", "Latency of group-commit fsyncs");
    for s in &snap.shards {
        let shard = s.shard.to_string();
        for (le, count) in FSYNC_BUCKETS_US.iter().zip(&s.fsync_latency_buckets) {
            let le = format!("{}", *le as f64 / 1e6);
            o.val(&format!("{h}_bucket"), &[("shard", &shard), ("le", &le)], count);
        }
        o.val(
            &format!("{h}_bucket"),
            &[("shard", &shard), ("le", "+Inf")],
            s.fsyncs,
        );
        o.val(
            &format!("{h}_sum"),
            &[("shard", &shard)],
            s.fsync_latency_sum_us as f64 / 1e6,
        );
        o.val(&format!("{h}_count"), &[("shard", &shard)], s.fsyncs);
    }
    o.0
}
