//! The warren broker.

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// A RabbitMQ-compatible AMQP 0-9-1 broker, thread-per-core on io_uring.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about)]
struct Args {
    /// AMQP port.
    #[arg(long, default_value_t = 5672)]
    port: u16,
    /// Address to listen on (default: all interfaces).
    #[arg(long, default_value = "::")]
    bind: IpAddr,
    /// Number of shards (pinned executor threads); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// Where durable state lives.
    #[arg(long, default_value = "./warren-data")]
    data_dir: PathBuf,
    /// Largest frame offered to clients, in bytes (min 4096).
    #[arg(long, default_value_t = 131_072, value_parser = clap::value_parser!(u32).range(4096..))]
    frame_max: u32,
    /// Heartbeat interval offered to clients, in seconds (0 = off).
    #[arg(long, default_value_t = 60)]
    heartbeat: u64,
    /// Keep every connection on the shard that accepted it (by default a
    /// connection about to consume from, or publish only to, queues of
    /// another shard moves there first, so its messages cross no shard).
    #[arg(long)]
    no_connection_handoff: bool,
    /// Where a new classic queue lives: `packed` (by load: the lowest shard
    /// with CPU to spare, and queues move off a shard that stays busy
    /// while another idles); `client-local` keeps it on the declaring
    /// connection's shard; `balanced` puts it on the shard holding fewest
    /// queues (spreads a load that saturates one shard evenly, costs CPU
    /// per message below that). The connections that use a queue move to
    /// its shard.
    #[arg(long, default_value = "packed")]
    queue_locator: warren::config::QueueLocator,
    /// The longest, in microseconds, a shard that went to sleep may hold
    /// its wake-up to handle more events at once (io_uring min-wait, Linux
    /// 6.12+). Events later than the window after the shard slept wake it
    /// at once, so a quiet broker adds no latency; under load it trades up
    /// to the window in latency for fewer wake-ups and syscalls per
    /// message. Each shard measures and runs on the window that pays: none,
    /// a third or all of this. 0 wakes at the first event.
    #[arg(long, default_value_t = warren::config::DEFAULT_PARK_BATCHING.as_micros() as u64)]
    park_batch_us: u64,
    /// Channels per connection.
    #[arg(long, default_value_t = 2047)]
    channel_max: u16,
    /// Largest message body accepted, in bytes.
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    max_message_size: u64,
    /// Fraction of RAM the broker may use before blocking publishers.
    #[arg(long, default_value_t = 0.4)]
    vm_memory_high_watermark: f64,
    /// Free disk space, in bytes, below which publishers are blocked
    /// (RabbitMQ's disk_free_limit).
    #[arg(long, default_value_t = 50_000_000)]
    disk_free_limit: u64,
    /// Size of message segment files, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65536..=(1 << 32)))]
    segment_size: u64,
    /// How long a sync may wait for more writes to cover, in microseconds
    /// (group commit), when the last sync released several confirms; 0
    /// syncs as soon as each step's writes are done.
    #[arg(long, default_value_t = 500)]
    fsync_interval_us: u64,
    /// Port of the management HTTP API, web UI and /metrics.
    #[arg(long, default_value_t = 15672)]
    mgmt_port: u16,
    /// Address the management plane listens on (default: all interfaces).
    #[arg(long, default_value = "::")]
    mgmt_bind: IpAddr,
    /// Run without the management plane.
    #[arg(long)]
    no_mgmt: bool,
    /// Users that may only connect from loopback, comma-separated
    /// (RabbitMQ's `loopback_users`); an empty value lifts the restriction.
    #[arg(long, default_value = "guest")]
    loopback_users: String,
    /// AMQPS port (RabbitMQ's 5671); on when --tls-cert and --tls-key are given.
    #[arg(long, default_value_t = 5671)]
    tls_port: u16,
    /// PEM certificate chain for AMQPS and HTTPS management, the server's first.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates to verify client certificates against.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it (needs --tls-ca).
    #[arg(long, requires = "tls_ca")]
    tls_verify_peer: bool,
    /// Refuse clients that present no certificate (needs --tls-verify-peer).
    #[arg(long, requires = "tls_verify_peer")]
    tls_fail_if_no_peer_cert: bool,
    /// What names the user of the EXTERNAL mechanism: the certificate's
    /// whole subject or its common name (RabbitMQ's ssl_cert_login_from).
    #[arg(long, value_enum, default_value = "distinguished-name")]
    tls_cert_login_from: CertLogin,
    /// Serve the management API and UI over HTTPS on this port too
    /// (RabbitMQ uses 15671), with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    mgmt_tls_port: Option<u16>,
    /// This node's name in a cluster (RabbitMQ's `rabbit@host`); by default
    /// warren@ and this machine's short host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The cluster port other nodes talk to; by default the AMQP port +
    /// 20000 (25672 beside 5672), as RabbitMQ's distribution port; an
    /// ephemeral one when that is not a port.
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Where the cluster port listens; by default the AMQP bind address.
    #[arg(long)]
    cluster_bind: Option<IpAddr>,
    /// The address other nodes reach this one at (HOST:PORT); by default
    /// the node name's host and the cluster port.
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// The secret every node of the cluster shares; by default the cookie
    /// file `cluster.cookie` in the data dir (created on first start).
    #[arg(long, env = "WARREN_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Metadata changes after which the cluster's metadata log takes a
    /// snapshot and drops the entries it covers (all but the last 1,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    metadata_snapshot_every: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CertLogin {
    DistinguishedName,
    CommonName,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let mut cfg = warren::Config {
        bind: args.bind,
        port: args.port,
        shards: args.shards,
        data_dir: args.data_dir,
        loopback_users: args
            .loopback_users
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        connection_handoff: !args.no_connection_handoff,
        abort_on_shard_panic: true,
        queue_locator: args.queue_locator,
        park_batching: std::time::Duration::from_micros(args.park_batch_us),
        ..Default::default()
    };
    if let Some(n) = &args.node_name {
        cfg.cluster.node_name = if n.contains('@') {
            n.clone()
        } else {
            format!("warren@{n}")
        };
    }
    cfg.cluster.port = args.cluster_port.unwrap_or_else(|| match args.port {
        0 => 0,
        p => p.checked_add(20000).unwrap_or(0),
    });
    cfg.cluster.bind = args.cluster_bind.unwrap_or(args.bind);
    cfg.cluster.advertise = args.cluster_advertise.clone();
    cfg.cluster.secret = args.cluster_secret.clone();
    cfg.cluster.metadata_snapshot_every = args.metadata_snapshot_every;
    cfg.limits.frame_max = args.frame_max;
    cfg.limits.disk_free_limit = args.disk_free_limit;
    cfg.limits.heartbeat = std::time::Duration::from_secs(args.heartbeat);
    cfg.limits.channel_max = args.channel_max;
    cfg.limits.max_message_size = args.max_message_size;
    cfg.limits.segment_size = args.segment_size as usize;
    cfg.limits.memory_high_watermark =
        (warren::config::physical_memory() as f64 * args.vm_memory_high_watermark.clamp(0.0, 1.0)) as u64;
    cfg.limits.fsync_interval = std::time::Duration::from_micros(args.fsync_interval_us);
    let tls_options = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(warren::config::TlsOptions {
            cert: cert.clone(),
            key: key.clone(),
            ca: args.tls_ca.clone(),
            verify_peer: args.tls_verify_peer,
            fail_if_no_peer_cert: args.tls_fail_if_no_peer_cert,
            cert_login_from: match args.tls_cert_login_from {
                CertLogin::DistinguishedName => warren::config::CertLogin::DistinguishedName,
                CertLogin::CommonName => warren::config::CertLogin::CommonName,
            },
        }),
        _ => None,
    };
    cfg.tls = tls_options.clone().map(|options| warren::config::TlsListener {
        port: args.tls_port,
        options,
    });
    // Management HTTPS asks for no client certificate: the API has its
    // own login.
    let mgmt_tls = match (args.mgmt_tls_port, &tls_options) {
        (Some(port), Some(o)) => {
            let o = warren::config::TlsOptions {
                ca: None,
                verify_peer: false,
                fail_if_no_peer_cert: false,
                ..o.clone()
            };
            match warren::tls::server_config(&o, &[b"http/1.1"]) {
                Ok(s) => Some((port, s)),
                Err(e) => {
                    eprintln!("warren: management TLS: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };

    // Block the signals before any thread starts so they all inherit the
    // mask, then take them synchronously on this thread.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    let server = match warren::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _mgmt = if args.no_mgmt {
        None
    } else {
        let mut mcfg = warren::mgmt::MgmtConfig::new(args.mgmt_bind, args.mgmt_port);
        mcfg.tls = mgmt_tls;
        match warren::mgmt::start(server.admin(), mcfg) {
            Ok(h) => {
                log::info!("management plane listening on {}", h.addr());
                Some(h)
            }
            Err(e) => {
                eprintln!("warren: management port {}: {e}", args.mgmt_port);
                server.shutdown();
                return ExitCode::FAILURE;
            }
        }
    };
    let stop = server.stopper();
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits for one of the blocked signals in `set`.
        unsafe { libc::sigwait(&set, &mut sig) };
        log::info!("received signal {sig}, shutting down");
        stop();
    });
    server.wait();
    log::info!("warren stopped");
    ExitCode::SUCCESS
}
