//! Command-line flags and the AMQP URI.

use clap::{Parser, ValueEnum};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Producers and consumers as fast as they go (or at --rate).
    Throughput,
    /// A fixed rate (10 000 msg/s in total unless --rate), latency percentiles.
    Latency,
    /// Open and close connections (full handshake) as fast as possible.
    ConnectionChurn,
    /// Declare and delete queues on one channel as fast as possible.
    QueueChurn,
    /// Hold --connections idle connections open for --time seconds.
    IdleConnections,
    /// Only delete the queues named by --queues/--queue-pattern.
    DeleteQueues,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
        }
    }
}

/// An AMQP 0-9-1 load generator (in the spirit of RabbitMQ PerfTest).
#[derive(Parser, Debug, Clone)]
#[command(name = "warren-perf", version, about)]
pub struct Args {
    /// Broker to load.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub uri: String,
    /// Number of producers (one channel each).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Number of consumers (one channel each).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Number of queues; producer i publishes to queue i % N, consumer i
    /// consumes from queue i % N.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Queue name pattern, `%d` replaced by the queue index.
    #[arg(long, default_value = "perf-q-%d")]
    pub queue_pattern: String,
    /// Message body size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Publish to this exchange (declared unless it is `amq.*`) and bind
    /// the queues to it; default: the default exchange.
    #[arg(long)]
    pub exchange: Option<String>,
    /// Exchange type when declaring --exchange.
    #[arg(long = "type", value_enum, default_value = "direct")]
    pub kind: ExchangeType,
    /// Routing key (and binding key); default: the queue name.
    #[arg(long)]
    pub routing_key: Option<String>,
    /// Persistent messages (delivery_mode 2) and durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Quorum queues (`x-queue-type: quorum`, durable; on a cluster, three
    /// replicas by default).
    #[arg(long)]
    pub quorum: bool,
    /// Publisher confirms with at most this many outstanding per producer
    /// (0: no confirms).
    #[arg(long, default_value_t = 0)]
    pub confirm: usize,
    /// Consumer prefetch (basic.qos); default 1000, none with --autoack.
    #[arg(long)]
    pub prefetch: Option<u16>,
    /// Ack every N deliveries with multiple=true (1: ack each message).
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u64,
    /// Consume with no-ack.
    #[arg(long)]
    pub autoack: bool,
    /// Publish with mandatory=true (unroutable messages come back).
    #[arg(long)]
    pub mandatory: bool,
    /// Messages per second per producer (0: unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run for this many seconds (default: until --msgs or Ctrl-C).
    #[arg(long)]
    pub time: Option<f64>,
    /// Messages per producer, then stop.
    #[arg(long)]
    pub msgs: Option<u64>,
    /// Connections for idle-connections, parallel churners for
    /// connection-churn.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Producers (and consumers) share connections this many channels at a
    /// time.
    #[arg(long, default_value_t = 1)]
    pub channels_per_connection: usize,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to run.
    #[arg(long, value_enum, default_value = "throughput")]
    pub scenario: Scenario,
    /// Leave the queues (and exchange) in place at the end.
    #[arg(long)]
    pub keep_queues: bool,
}

impl Args {
    pub fn queue_name(&self, i: usize) -> String {
        self.queue_pattern.replace("%d", &i.to_string())
    }
}

/// `amqp://user:pass@host:port/vhost`.
#[derive(Debug, Clone)]
pub struct Uri {
    pub user: String,
    pub pass: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URI is not UTF-8".to_string())
}

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, String> {
        let rest = s
            .strip_prefix("amqp://")
            .ok_or_else(|| format!("{s}: only amqp:// URIs are supported"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (user, pass) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
                None => (percent_decode(a)?, String::new()),
            },
            None => ("guest".into(), "guest".into()),
        };
        let (hostport, vhost) = match rest.split_once('/') {
            Some((h, v)) if !v.is_empty() => (h, percent_decode(v)?),
            Some((h, _)) => (h, "/".to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or("unterminated [ in host")?;
            match tail.strip_prefix(':') {
                Some(p) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
                None => (h, 5672),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
                None => (hostport, 5672),
            }
        };
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(Uri {
            user,
            pass,
            host: host.to_string(),
            port,
            vhost,
        })
    }
}
