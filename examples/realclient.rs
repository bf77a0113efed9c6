//! A load driver that uses lapin, a third-party AMQP client, the way
//! applications do: one connection per producer and per consumer, a write
//! per message, an ack per message or every N, publisher confirms one at a
//! time or windowed, requests and replies. `perf/run` drives it against
//! warren and RabbitMQ side by side; warren-perf, which batches from a
//! pre-encoded template, shows the ceiling, this shows what users get.
//!
//! ```text
//! cargo run --release --example realclient -- --producers 1 --consumers 1 --time 10
//! cargo run --release --example realclient -- --rpc --clients 4 --time 10
//! ```
//! Prints one JSON line: rates over the measured interval and the
//! publish→deliver (or request→reply) latency percentiles.

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
struct Args {
    uri: String,
    /// Where producers and consumers connect (default: `uri`, where the
    /// queues are declared first): nodes of a cluster.
    publish_uri: Option<String>,
    consume_uri: Option<String>,
    /// PEM CA certificates for an amqps:// URI.
    ca: Option<String>,
    producers: usize,
    consumers: usize,
    queues: usize,
    size: usize,
    prefetch: u16,
    /// Ack every N deliveries with `multiple` (1: each; 0: auto-ack).
    ack_every: u64,
    persistent: bool,
    /// Quorum queues (`x-queue-type: quorum`, durable).
    quorum: bool,
    /// Confirms in flight per producer (0: no confirms; 1: one at a time).
    confirm: usize,
    /// Messages per second per producer (0: as fast as it can).
    rate: u64,
    fanout: bool,
    rpc: bool,
    /// RPC clients take replies through `amq.rabbitmq.reply-to` instead of
    /// an exclusive queue each.
    direct_reply_to: bool,
    clients: usize,
    time: u64,
    warmup: u64,
    prefix: String,
    /// Producers wait while more than this many messages are published
    /// and not yet delivered: a steady state, not a backlog that grows
    /// until the broker's flow control steps in.
    max_inflight: u64,
}

fn parse() -> Args {
    let mut a = Args {
        uri: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        publish_uri: None,
        consume_uri: None,
        ca: None,
        producers: 1,
        consumers: 1,
        queues: 1,
        size: 16,
        prefetch: 1000,
        ack_every: 1,
        persistent: false,
        quorum: false,
        confirm: 0,
        rate: 0,
        fanout: false,
        rpc: false,
        direct_reply_to: false,
        clients: 1,
        time: 10,
        warmup: 2,
        prefix: "rc".into(),
        max_inflight: 5000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--uri" => a.uri = val(),
            "--publish-uri" => a.publish_uri = Some(val()),
            "--consume-uri" => a.consume_uri = Some(val()),
            "--ca" => a.ca = Some(std::fs::read_to_string(val()).expect("read the CA file")),
            "--producers" => a.producers = val().parse().unwrap(),
            "--consumers" => a.consumers = val().parse().unwrap(),
            "--queues" => a.queues = val().parse().unwrap(),
            "--size" => a.size = val().parse().unwrap(),
            "--prefetch" => a.prefetch = val().parse().unwrap(),
            "--ack-every" => a.ack_every = val().parse().unwrap(),
            "--persistent" => a.persistent = true,
            "--quorum" => a.quorum = true,
            "--confirm" => a.confirm = val().parse().unwrap(),
            "--rate" => a.rate = val().parse().unwrap(),
            "--fanout" => a.fanout = true,
            "--rpc" => a.rpc = true,
            "--direct-reply-to" => a.direct_reply_to = true,
            "--clients" => a.clients = val().parse().unwrap(),
            "--time" => a.time = val().parse().unwrap(),
            "--warmup" => a.warmup = val().parse().unwrap(),
            "--prefix" => a.prefix = val(),
            "--max-inflight" => a.max_inflight = val().parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a.size = a.size.max(8);
    a
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// What the measured interval saw.
#[derive(Default)]
struct Stats {
    published: AtomicU64,
    delivered: AtomicU64,
    /// Since the start: sent (times the queues each reaches) and received,
    /// for the in-flight bound.
    sent_all: AtomicU64,
    received_all: AtomicU64,
    measuring: AtomicBool,
    latency: std::sync::Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Stats {
    fn record(&self, sent_ns: u64) {
        self.received_all.fetch_add(1, Ordering::Relaxed);
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let us = now_ns().saturating_sub(sent_ns) / 1000;
        if let Some(h) = self.latency.lock().unwrap().as_mut() {
            let _ = h.record(us.max(1));
        }
    }
}

static CA: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

async fn connect(uri: &str) -> Connection {
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: CA.get().cloned().flatten(),
    };
    Connection::connect_with_config(
        uri,
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().expect("runtime"),
    )
    .await
    .expect("connects")
}

fn queue_name(a: &Args, i: usize) -> String {
    format!("{}-q-{}", a.prefix, i % a.queues.max(1))
}

async fn declare(ch: &Channel, a: &Args, i: usize) {
    ch.queue_declare(
        queue_name(a, i).as_str().into(),
        QueueDeclareOptions {
            durable: a.persistent || a.quorum,
            ..Default::default()
        },
        {
            let mut t = FieldTable::default();
            if a.quorum {
                t.insert(
                    "x-queue-type".into(),
                    lapin::types::AMQPValue::LongString("quorum".into()),
                );
            }
            t
        },
    )
    .await
    .expect("queue declared");
    if a.fanout {
        ch.exchange_declare(
            format!("{}-fanout", a.prefix).as_str().into(),
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange declared");
        ch.queue_bind(
            queue_name(a, i).as_str().into(),
            format!("{}-fanout", a.prefix).as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bound");
    }
}

async fn consumer(a: Args, i: usize, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let c = connect(a.consume_uri.as_deref().unwrap_or(&a.uri)).await;
    let ch = c.create_channel().await.unwrap();
    declare(&ch, &a, i).await;
    ch.basic_qos(a.prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut deliveries = ch
        .basic_consume(
            queue_name(&a, i).as_str().into(),
            format!("c{i}").as_str().into(),
            BasicConsumeOptions {
                no_ack: a.ack_every == 0,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(200), deliveries.next()).await;
        let Ok(Some(Ok(d))) = next else { continue };
        stats.record(u64::from_le_bytes(d.data[..8].try_into().unwrap()));
        n += 1;
        if a.ack_every > 0 && n.is_multiple_of(a.ack_every) {
            ch.basic_ack(
                d.delivery_tag,
                BasicAckOptions {
                    multiple: a.ack_every > 1,
                },
            )
            .await
            .unwrap();
        }
    }
    let _ = c.close(200, "done".into()).await;
}

async fn producer(a: Args, i: usize, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let c = connect(a.publish_uri.as_deref().unwrap_or(&a.uri)).await;
    let ch = c.create_channel().await.unwrap();
    declare(&ch, &a, i).await;
    if a.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    }
    let (exchange, key) = if a.fanout {
        (format!("{}-fanout", a.prefix), String::new())
    } else {
        (String::new(), queue_name(&a, i))
    };
    let props = if a.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default()
    };
    let mut body = vec![0u8; a.size];
    let mut confirms = std::collections::VecDeque::new();
    let period = (a.rate > 0).then(|| Duration::from_nanos(1_000_000_000 / a.rate));
    let copies = if a.fanout { a.queues as u64 } else { 1 };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        while stats.sent_all.load(Ordering::Relaxed)
            > stats.received_all.load(Ordering::Relaxed) + a.max_inflight
            && !stop.load(Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        stats.sent_all.fetch_add(copies, Ordering::Relaxed);
        if let Some(p) = period {
            next += p;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        body[..8].copy_from_slice(&now_ns().to_le_bytes());
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props.clone(),
            )
            .await;
        let Ok(confirm) = confirm else { break };
        if stats.measuring.load(Ordering::Relaxed) {
            stats.published.fetch_add(1, Ordering::Relaxed);
        }
        if a.confirm > 0 {
            confirms.push_back(confirm);
            while confirms.len() >= a.confirm {
                let _ = confirms.pop_front().unwrap().await;
            }
        }
    }
    let _ = c.close(200, "done".into()).await;
}

/// Request/reply: clients send a request and wait for its reply; servers
/// answer each request on the request's `reply_to`.
async fn rpc_server(a: Args, stop: Arc<AtomicBool>) {
    let c = connect(&a.uri).await;
    let ch = c.create_channel().await.unwrap();
    let q = format!("{}-rpc", a.prefix);
    ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut requests = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(200), requests.next()).await;
        let Ok(Some(Ok(d))) = next else { continue };
        let reply_to = d.properties.reply_to().clone().unwrap_or_default();
        let props = BasicProperties::default()
            .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
        let _ = ch
            .basic_publish("".into(), reply_to, Default::default(), &d.data, props)
            .await;
        let _ = ch.basic_ack(d.delivery_tag, Default::default()).await;
    }
    let _ = c.close(200, "done".into()).await;
}

async fn rpc_client(a: Args, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let c = connect(&a.uri).await;
    let ch = c.create_channel().await.unwrap();
    let reply_to = if a.direct_reply_to {
        ShortString::from("amq.rabbitmq.reply-to")
    } else {
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .name()
        .clone()
    };
    let mut replies = ch
        .basic_consume(
            reply_to.clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let q = format!("{}-rpc", a.prefix);
    let mut body = vec![0u8; a.size];
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        id += 1;
        body[..8].copy_from_slice(&now_ns().to_le_bytes());
        let props = BasicProperties::default()
            .with_reply_to(reply_to.clone())
            .with_correlation_id(ShortString::from(id.to_string()));
        if ch
            .basic_publish("".into(), q.as_str().into(), Default::default(), &body, props)
            .await
            .is_err()
        {
            break;
        }
        if stats.measuring.load(Ordering::Relaxed) {
            stats.published.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
            Ok(Some(Ok(d))) => stats.record(u64::from_le_bytes(d.data[..8].try_into().unwrap())),
            _ => break,
        }
    }
    let _ = c.close(200, "done".into()).await;
}

fn main() {
    let a = parse();
    CA.set(a.ca.clone()).expect("set once");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = Arc::new(Stats::default());
    *stats.latency.lock().unwrap() =
        Some(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let mut tasks = Vec::new();
        if a.rpc {
            for _ in 0..a.consumers.max(1) {
                tasks.push(tokio::spawn(rpc_server(a.clone(), stop.clone())));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            for _ in 0..a.clients {
                tasks.push(tokio::spawn(rpc_client(a.clone(), stats.clone(), stop.clone())));
            }
        } else {
            if a.publish_uri.is_some() || a.consume_uri.is_some() {
                // The queues live on `uri`'s node: declared there first,
                // given a moment to reach the other nodes.
                let c = connect(&a.uri).await;
                let ch = c.create_channel().await.unwrap();
                for i in 0..a.queues.max(a.consumers).max(a.producers) {
                    declare(&ch, &a, i).await;
                }
                let _ = c.close(200, "declared".into()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for i in 0..a.consumers {
                tasks.push(tokio::spawn(consumer(a.clone(), i, stats.clone(), stop.clone())));
            }
            // Consumers first, so the queues exist and nothing piles up.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..a.producers {
                tasks.push(tokio::spawn(producer(a.clone(), i, stats.clone(), stop.clone())));
            }
        }
        tokio::time::sleep(Duration::from_secs(a.warmup)).await;
        stats.measuring.store(true, Ordering::Relaxed);
        let began = Instant::now();
        tokio::time::sleep(Duration::from_secs(a.time)).await;
        stats.measuring.store(false, Ordering::Relaxed);
        let secs = began.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let pubd = stats.published.load(Ordering::Relaxed);
        let deld = stats.delivered.load(Ordering::Relaxed);
        let h = stats.latency.lock().unwrap().take().unwrap();
        println!(
            "{{\"seconds\": {secs:.3}, \"published\": {pubd}, \"delivered\": {deld}, \"publish_rate\": {:.1}, \"deliver_rate\": {:.1}, \"latency_us\": {{\"p50\": {}, \"p99\": {}, \"p999\": {}, \"max\": {}}}}}",
            pubd as f64 / secs,
            deld as f64 / secs,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    });
}
