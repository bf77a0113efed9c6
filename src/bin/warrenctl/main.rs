//! warrenctl: rabbitmqctl's commands and output, spoken to warren's
//! management API.

mod client;
mod commands;
mod format;

use clap::Parser;
use client::Client;
use std::process::ExitCode;
use std::time::Duration;

/// Manage a warren broker with rabbitmqctl's commands.
#[derive(Parser, Debug)]
#[command(name = "warrenctl", version, about, after_help = commands::HELP)]
pub struct Cli {
    /// Node to talk to: HOST or NAME@HOST (the management API's host).
    #[arg(short = 'n', long, global = true, default_value = "localhost")]
    node: String,
    /// Management API port.
    #[arg(long, global = true, default_value_t = 15672)]
    port: u16,
    #[arg(long, global = true, default_value = "guest")]
    username: String,
    #[arg(long, global = true, default_value = "guest")]
    password: String,
    /// Virtual host.
    #[arg(short = 'p', long = "vhost", global = true, default_value = "/")]
    vhost: String,
    /// Only the results, no informational lines.
    #[arg(short = 'q', long, global = true)]
    quiet: bool,
    /// Seconds to wait for the broker.
    #[arg(short = 't', long, global = true, default_value_t = 60)]
    timeout: u64,
    /// set_policy: what the policy applies to (queues, exchanges, all).
    #[arg(long, global = true, default_value = "all")]
    apply_to: String,
    /// set_policy: the policy's priority.
    #[arg(long, global = true, default_value_t = 0)]
    priority: i64,
    /// delete_queue: only if it has no consumers.
    #[arg(short = 'u', long, global = true)]
    if_unused: bool,
    /// delete_queue: only if it is empty.
    #[arg(short = 'e', long, global = true)]
    if_empty: bool,
    /// reset: the data dir of the stopped broker.
    #[arg(long, global = true)]
    data_dir: Option<std::path::PathBuf>,
    /// list_vhost_limits, list_user_limits: every vhost's or user's.
    #[arg(long, global = true)]
    global: bool,
    /// list_user_limits: whose (guest by default, as rabbitmqctl).
    #[arg(long, global = true)]
    user: Option<String>,
    /// join_cluster: join as a RAM node.
    #[arg(long, global = true)]
    ram: bool,
    /// join_cluster: the cluster port of the node to join (HOST:PORT), when
    /// it is not the node's host on port 25672.
    #[arg(long, global = true)]
    address: Option<String>,
    /// forget_cluster_node: accepted for rabbitmqctl's sake (warren forgets
    /// a stopped node the same way either way).
    #[arg(long, global = true)]
    offline: bool,
    /// shrink, grow: list only the queues that reported an error.
    #[arg(long, global = true)]
    errors_only: bool,
    /// The command (see below) and its arguments.
    command: String,
    #[arg(allow_hyphen_values = false)]
    args: Vec<String>,
}

impl Cli {
    pub fn host(&self) -> &str {
        self.node.rsplit_once('@').map_or(self.node.as_str(), |(_, h)| h)
    }

    pub fn node_name(&self) -> String {
        if self.node.contains('@') {
            self.node.clone()
        } else {
            format!("warren@{}", self.node)
        }
    }

    /// An informational line (suppressed by --quiet).
    pub fn info(&self, s: &str) {
        if !self.quiet {
            println!("{s}");
        }
    }
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early ends the process quietly,
    // as other command-line tools do, instead of a panic on EPIPE.
    // SAFETY: restoring a signal's default disposition at start, before
    // any thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let client = Client::new(
        cli.host(),
        cli.port,
        &cli.username,
        &cli.password,
        Duration::from_secs(cli.timeout.max(1)),
    );
    match commands::run(&cli, &client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if f.usage {
                eprintln!(
                    "Error: {}\n\nUsage: warrenctl [options] <command> [args]; see warrenctl --help",
                    f.message
                );
            } else {
                eprintln!("Error:\n{}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
