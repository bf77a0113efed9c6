//! warren-perf: an AMQP 0-9-1 load generator speaking through warren's own
//! protocol codec. One blocking thread per connection; see `perf/README.md`.

mod args;
mod churn;
mod conn;
mod consumer;
mod producer;
mod stats;
mod topology;

use args::{Args, ExchangeType, Scenario, Uri};
use clap::Parser;
use conn::{Conn, Error};
use stats::{Reporter, Shared, Snapshot};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set when the run must end (time up, Ctrl-C, a worker failed).
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Relaxed);
}

type Errors = Arc<Mutex<Vec<String>>>;

fn spawn<F>(name: String, errors: &Errors, f: F) -> JoinHandle<()>
where
    F: FnOnce() -> conn::Result<()> + Send + 'static,
{
    let errors = errors.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || match f() {
            Ok(()) | Err(Error::Stopped) => {}
            Err(e) => {
                errors.lock().unwrap().push(format!("{name}: {e}"));
                STOP.store(true, Relaxed);
            }
        })
        .expect("spawn thread")
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Throughput => "throughput",
        Scenario::Latency => "latency",
        Scenario::ConnectionChurn => "connection-churn",
        Scenario::QueueChurn => "queue-churn",
        Scenario::IdleConnections => "idle-connections",
        Scenario::DeleteQueues => "delete-queues",
    }
}

/// Prints a line a second until the time is up, `done` says so, or the
/// run is stopped; then sets [`STOP`].
fn monitor(rep: &mut Reporter, shared: &Shared, time: Option<f64>, mut done: impl FnMut(Snapshot) -> bool) {
    let mut next = 1.0;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let t = rep.elapsed();
        if STOP.load(Relaxed) || time.is_some_and(|limit| t >= limit) || done(shared.snapshot()) {
            break;
        }
        if t >= next {
            rep.tick(shared, true);
            next += 1.0;
        }
    }
    STOP.store(true, Relaxed);
}

fn finish(threads: Vec<JoinHandle<()>>, errors: &Errors) -> Result<(), String> {
    for t in threads {
        let _ = t.join();
    }
    let e = errors.lock().unwrap();
    if e.is_empty() { Ok(()) } else { Err(e.join("\n")) }
}

fn queue_names(args: &Args) -> Vec<String> {
    (0..args.queues.max(1)).map(|i| args.queue_name(i)).collect()
}

fn messaging(args: &Args, uri: &Uri, errors: &Errors) -> Result<(), String> {
    let shared = Arc::new(Shared::new());
    let queues = queue_names(args);
    let mut admin = Conn::open(uri, "warren-perf admin").map_err(|e| e.to_string())?;
    admin.open_channel(1).map_err(|e| e.to_string())?;
    topology::declare_exchange(&mut admin, args).map_err(|e| e.to_string())?;
    // Each consumer declares the queues it consumes from, as applications
    // usually do (and PerfTest does); the admin connection declares the rest.
    let unconsumed = &queues[args.consumers.min(queues.len())..];
    topology::declare_queues(&mut admin, 1, args, unconsumed).map_err(|e| e.to_string())?;

    let cpc = args.channels_per_connection.max(1);
    let mut threads = Vec::new();
    let consumer_ids: Vec<usize> = (0..args.consumers).collect();
    let consumer_conns = consumer_ids.chunks(cpc).count();
    let ready = Arc::new(AtomicUsize::new(0));
    for (n, group) in consumer_ids.chunks(cpc).enumerate() {
        let qs: Vec<String> = group.iter().map(|i| queues[i % queues.len()].clone()).collect();
        let cfg = consumer::ConsumerCfg {
            autoack: args.autoack,
            prefetch: args.prefetch.unwrap_or(if args.autoack { 0 } else { 1000 }),
            multi_ack: args.multi_ack,
            measure: args.producers > 0,
        };
        let (uri, shared, ready, run_args) = (uri.clone(), shared.clone(), ready.clone(), args.clone());
        threads.push(spawn(format!("consumer-{n}"), errors, move || {
            let mut conn = Conn::open(&uri, "warren-perf consumer")?;
            let ch = qs.len() as u16 + 1;
            conn.open_channel(ch)?;
            topology::declare_queues(&mut conn, ch, &run_args, &qs)?;
            let c = consumer::Consumer::new(conn, &qs, cfg, shared)?;
            ready.fetch_add(1, Relaxed);
            c.run()
        }));
    }
    let t0 = Instant::now();
    while ready.load(Relaxed) < consumer_conns && !STOP.load(Relaxed) {
        if t0.elapsed() > Duration::from_secs(30) {
            STOP.store(true, Relaxed);
            errors
                .lock()
                .unwrap()
                .push("consumers not ready after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let rate = match (args.rate, args.scenario) {
        (Some(r), _) => r,
        (None, Scenario::Latency) => 10_000.0 / args.producers.max(1) as f64,
        (None, _) => 0.0,
    };
    let mut rep = Reporter::new(args.json, scenario_name(args.scenario));
    let producer_ids: Vec<usize> = (0..args.producers).collect();
    let producer_conns = producer_ids.chunks(cpc).count();
    let producers_done = Arc::new(AtomicUsize::new(0));
    for (n, group) in producer_ids.chunks(cpc).enumerate() {
        let specs: Vec<producer::PubSpec> = group
            .iter()
            .map(|i| producer::PubSpec {
                exchange: args.exchange.clone().unwrap_or_default(),
                routing_key: topology::routing_key(args, &queues[i % queues.len()]),
            })
            .collect();
        let cfg = producer::ProducerCfg {
            size: args.size,
            persistent: args.persistent,
            mandatory: args.mandatory,
            window: args.confirm,
            rate,
            limit: args.msgs,
        };
        let (uri, shared, done) = (uri.clone(), shared.clone(), producers_done.clone());
        threads.push(spawn(format!("producer-{n}"), errors, move || {
            let conn = Conn::open(&uri, "warren-perf producer")?;
            let r = producer::Producer::new(conn, &specs, cfg, shared)?.run();
            done.fetch_add(1, Relaxed);
            r
        }));
    }

    // With --msgs: done once every producer is, and the consumers have
    // everything (or nothing arrived for 2 s).
    let fanout = match (&args.exchange, args.kind) {
        (Some(_), ExchangeType::Fanout) => queues.len() as u64,
        (Some(_), _) if args.routing_key.is_some() => queues.len() as u64,
        _ => 1,
    };
    let (mut last_delivered, mut last_change) = (0, Instant::now());
    let msgs_mode = args.msgs.is_some();
    let consumers = args.consumers;
    monitor(&mut rep, &shared, args.time, |s| {
        if s.delivered != last_delivered {
            (last_delivered, last_change) = (s.delivered, Instant::now());
        }
        msgs_mode
            && producers_done.load(Relaxed) >= producer_conns
            && (consumers == 0
                || s.delivered >= s.published * fanout
                || last_change.elapsed() > Duration::from_secs(2))
    });
    rep.tick(&shared, false);
    let result = finish(threads, errors);
    rep.collect_hists(&shared);
    if !args.keep_queues
        && let Err(e) = topology::delete(&mut admin, args, &queues)
    {
        eprintln!("warren-perf: deleting the queues: {e}");
    }
    let _ = admin.close();
    rep.summary(serde_json::json!({
        "producers": args.producers,
        "consumers": args.consumers,
        "queues": queues.len(),
        "size": args.size.max(8),
        "confirm": args.confirm,
        "persistent": args.persistent,
        "rate_per_producer": rate,
    }));
    result
}

fn churn(args: &Args, uri: &Uri, errors: &Errors) -> Result<(), String> {
    let shared = Arc::new(Shared::new());
    let mut rep = Reporter::new(args.json, scenario_name(args.scenario));
    let mut threads = Vec::new();
    for n in 0..args.connections.max(1) {
        let (uri, shared) = (uri.clone(), shared.clone());
        let queues = args.scenario == Scenario::QueueChurn;
        threads.push(spawn(format!("churn-{n}"), errors, move || {
            if queues {
                churn::queues(&uri, n, &shared)
            } else {
                churn::connections(&uri, &shared)
            }
        }));
    }
    monitor(&mut rep, &shared, args.time, |_| false);
    rep.tick(&shared, false);
    let result = finish(threads, errors);
    rep.collect_hists(&shared);
    rep.summary(serde_json::json!({ "workers": args.connections.max(1) }));
    result
}

fn idle(args: &Args, uri: &Uri) -> Result<(), String> {
    let shared = Arc::new(Shared::new());
    let conns = churn::idle(uri, args, shared.clone()).map_err(|e| e.to_string())?;
    let mut rep = Reporter::new(args.json, scenario_name(args.scenario));
    monitor(&mut rep, &shared, args.time, |_| false);
    let n = conns.len();
    rep.tick(&shared, false);
    for c in conns {
        let _ = c.close();
    }
    rep.summary(serde_json::json!({ "open_connections": n }));
    Ok(())
}

fn run(args: &Args, uri: &Uri) -> Result<(), String> {
    let errors: Errors = Arc::default();
    match args.scenario {
        Scenario::Throughput | Scenario::Latency => messaging(args, uri, &errors),
        Scenario::ConnectionChurn | Scenario::QueueChurn => churn(args, uri, &errors),
        Scenario::IdleConnections => idle(args, uri),
        Scenario::DeleteQueues => {
            let mut c = Conn::open(uri, "warren-perf admin").map_err(|e| e.to_string())?;
            c.open_channel(1).map_err(|e| e.to_string())?;
            topology::delete(&mut c, args, &queue_names(args)).map_err(|e| e.to_string())?;
            c.close().map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let uri = match Uri::parse(&args.uri) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("warren-perf: bad --uri: {e}");
            return ExitCode::from(2);
        }
    };
    stats::now_ns();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        // Piped into `head`: end quietly instead of panicking in println.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(&args, &uri) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
