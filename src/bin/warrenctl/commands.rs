//! The commands, with rabbitmqctl's names, messages and exit codes.

use super::Cli;
use super::client::*;
use super::format::{cell, columns, table};
use serde_json::{Value, json};

pub const HELP: &str = "Commands:
  status, cluster_status, stop, await_startup, reset (broker stopped; needs --data-dir)
  stop_app, start_app, join_cluster [--ram] [--address HOST:PORT] NODE,
  forget_cluster_node [--offline] NODE, change_cluster_node_type disc|ram
  grow NODE all|even [--errors-only], shrink NODE [--errors-only] (rabbitmq-queues')
  add_user USER PASSWORD, delete_user USER, change_password USER PASSWORD,
  set_user_tags USER [TAG ...], list_users
  add_vhost VHOST, delete_vhost VHOST, list_vhosts
  set_permissions [-p VHOST] USER CONF WRITE READ, clear_permissions [-p VHOST] USER,
  list_permissions [-p VHOST], list_user_permissions USER
  set_policy [-p VHOST] [--priority N] [--apply-to queues|exchanges|all] NAME PATTERN DEFINITION,
  clear_policy [-p VHOST] NAME, list_policies [-p VHOST]
  list_queues [-p VHOST] [COLUMN ...], list_exchanges [-p VHOST] [COLUMN ...],
  list_bindings [-p VHOST] [COLUMN ...], list_connections [COLUMN ...],
  list_channels [COLUMN ...], list_consumers [-p VHOST] [COLUMN ...]
  purge_queue [-p VHOST] QUEUE, delete_queue [-p VHOST] [--if-empty] [--if-unused] QUEUE
  set_vhost_limits [-p VHOST] DEFINITION, clear_vhost_limits [-p VHOST],
  list_vhost_limits [-p VHOST] [--global]
  set_user_limits USER DEFINITION, clear_user_limits USER LIMIT|all,
  list_user_limits [--user USER] [--global]
  export_definitions PATH|-, import_definitions PATH|-,
  set_disk_free_limit DISK_LIMIT|mem_relative FRACTION";

fn args<'a>(cli: &'a Cli, n: usize, shape: &str) -> Result<Vec<&'a str>, Failure> {
    if cli.args.len() != n {
        return Err(usage(format!("{} takes {shape}", cli.command)));
    }
    Ok(cli.args.iter().map(|s| s.as_str()).collect())
}

fn must(v: Option<Value>, what: &str) -> Result<Value, Failure> {
    v.ok_or_else(|| fail(EX_SOFTWARE, format!("{what} not found")))
}

fn node_of(c: &Client) -> Result<String, Failure> {
    let o = must(c.get("/overview")?, "overview")?;
    Ok(o["node"].as_str().unwrap_or_default().to_string())
}

fn user_exists(c: &Client, user: &str) -> Result<Option<Value>, Failure> {
    c.get(&format!("/users/{}", enc(user)))
}

pub fn run(cli: &Cli, c: &Client) -> Result<(), Failure> {
    let vh = enc(&cli.vhost);
    let vhost = cli.vhost.as_str();
    match cli.command.as_str() {
        "status" => status(cli, c),
        "cluster_status" => {
            let o = must(c.get("/overview")?, "overview")?;
            let node = o["node"].as_str().unwrap_or_default().to_string();
            cli.info(&format!("Cluster status of node {node} ..."));
            let cl = must(c.get("/warren/cluster")?, "cluster")?;
            let members = cl["nodes"].as_array().cloned().unwrap_or_default();
            let names = |f: &dyn Fn(&Value) -> bool| {
                let mut v: Vec<String> = members
                    .iter()
                    .filter(|n| f(n))
                    .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                    .collect();
                v.sort();
                v.join("\n")
            };
            let disc = names(&|n| n["type"] == "disc");
            let ram = names(&|n| n["type"] == "ram");
            let running = names(&|n| n["running"] == true);
            print!(
                "Basics\n\nCluster name: {}\n\nDisk Nodes\n\n{disc}\n\n",
                o["cluster_name"].as_str().unwrap_or_default()
            );
            if !ram.is_empty() {
                print!("RAM Nodes\n\n{ram}\n\n");
            }
            println!("Running Nodes\n\n{running}\n");
            let stopped: Vec<&str> = members
                .iter()
                .filter(|n| n["running"] == true && n["app_running"] == false)
                .filter_map(|n| n["name"].as_str())
                .collect();
            if !stopped.is_empty() {
                println!("Nodes with the app stopped\n\n{}\n", stopped.join("\n"));
            }
            println!(
                "Versions\n\n{node}: warren {} (RabbitMQ {} compatible)\n",
                cell(&o["product_version"]),
                cell(&o["rabbitmq_version"])
            );
            println!(
                "Alarms\n\n{}\n\nNetwork Partitions\n\n(none)\n\nListeners\n",
                alarm_lines(c)?
            );
            for l in o["listeners"].as_array().into_iter().flatten() {
                println!(
                    "Node: {node}, interface: {}, port: {}, protocol: {}",
                    cell(&l["ip_address"]),
                    cell(&l["port"]),
                    cell(&l["protocol"])
                );
            }
            Ok(())
        }
        "stop_app" => {
            args(cli, 0, "no arguments")?;
            cli.info(&format!(
                "Stopping rabbit application on node {} ...",
                node_of(c)?
            ));
            c.call("POST", "/warren/stop_app", None)?;
            Ok(())
        }
        "start_app" => {
            args(cli, 0, "no arguments")?;
            cli.info(&format!("Starting node {} ...", node_of(c)?));
            c.call("POST", "/warren/start_app", None)?;
            Ok(())
        }
        "join_cluster" => {
            let a = args(cli, 1, "NODE")?;
            cli.info(&format!("Clustering node {} with {} ...", node_of(c)?, a[0]));
            let mut body = json!({ "node": a[0], "ram": cli.ram });
            if let Some(addr) = &cli.address {
                body["address"] = json!(addr);
            }
            c.call("POST", "/warren/join_cluster", Some(&body))?;
            Ok(())
        }
        "forget_cluster_node" => {
            let a = args(cli, 1, "NODE")?;
            cli.info(&format!("Removing node {} from the cluster", a[0]));
            c.call(
                "POST",
                "/warren/forget_cluster_node",
                Some(&json!({ "node": a[0] })),
            )?;
            Ok(())
        }
        "grow" => {
            let a = args(cli, 2, "NODE all|even")?;
            if !matches!(a[1], "all" | "even") {
                return Err(usage(format!("strategy must be all or even, not {}", a[1])));
            }
            cli.info(&format!("Growing {} quorum queues on {}...", a[1], a[0]));
            let body = json!({ "node": a[0], "strategy": a[1] });
            let rows = c.call("POST", "/warren/quorum/grow", Some(&body))?;
            replica_rows(cli, rows)
        }
        "shrink" => {
            let a = args(cli, 1, "NODE")?;
            cli.info(&format!("Shrinking quorum queues on {}...", a[0]));
            let rows = c.call("POST", "/warren/quorum/shrink", Some(&json!({ "node": a[0] })))?;
            replica_rows(cli, rows)
        }
        "rename_cluster_node" => {
            if cli.args.len() < 2 || !cli.args.len().is_multiple_of(2) {
                return Err(usage(format!(
                    "{} takes OLDNODE NEWNODE [OLDNODE NEWNODE ...]",
                    cli.command
                )));
            }
            let lines: Vec<String> = cli
                .args
                .chunks(2)
                .map(|p| format!("{} -> {}", p[0], p[1]))
                .collect();
            cli.info(&format!("Renaming cluster nodes:\n{}", lines.join("\n")));
            c.call(
                "POST",
                "/warren/rename_cluster_node",
                Some(&json!({ "nodes": cli.args })),
            )?;
            Ok(())
        }
        "change_cluster_node_type" => {
            let a = args(cli, 1, "disc|ram")?;
            let t = match a[0] {
                "disc" | "disk" => "disc",
                "ram" => "ram",
                other => return Err(usage(format!("unknown node type {other}: disc or ram"))),
            };
            cli.info(&format!("Turning {} into a {t} node", node_of(c)?));
            c.call(
                "POST",
                "/warren/change_cluster_node_type",
                Some(&json!({ "type": t })),
            )?;
            Ok(())
        }
        "stop" => {
            let o = must(c.get("/overview")?, "overview")?;
            cli.info(&format!("Stopping and halting node {} ...", cell(&o["node"])));
            c.call("POST", "/warren/stop", None)?;
            Ok(())
        }
        "set_disk_free_limit" => {
            let (body, said) = match cli.args.as_slice() {
                [m, f] if m == "mem_relative" => match f.parse::<f64>() {
                    Ok(v) if v >= 0.0 => (
                        serde_json::json!({ "mem_relative": v }),
                        format!("{f} times the total RAM"),
                    ),
                    _ => return Err(usage(format!("bad argument: {f}"))),
                },
                [limit] => match disk_limit(limit) {
                    Some(bytes) => (serde_json::json!({ "bytes": bytes }), format!("{limit} bytes")),
                    None => return Err(usage(format!("bad argument: {limit}"))),
                },
                _ => {
                    return Err(usage(
                        "set_disk_free_limit takes DISK_LIMIT or mem_relative FRACTION",
                    ));
                }
            };
            let o = must(c.get("/overview")?, "overview")?;
            cli.info(&format!(
                "Setting disk free limit on {} to {said} ...",
                cell(&o["node"])
            ));
            c.call("PUT", "/warren/disk-free-limit", Some(&body))?;
            Ok(())
        }
        "await_startup" => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(cli.timeout);
            loop {
                match c.get("/overview") {
                    Ok(Some(_)) => return Ok(()),
                    Err(f) if f.code != EX_UNAVAILABLE => return Err(f),
                    _ if std::time::Instant::now() >= deadline => {
                        return Err(fail(EX_UNAVAILABLE, "the broker did not start in time"));
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(200)),
                }
            }
        }
        "reset" => reset(cli, c),
        "add_user" => {
            let a = args(cli, 2, "USER PASSWORD")?;
            cli.info(&format!("Adding user \"{}\" ...", a[0]));
            if user_exists(c, a[0])?.is_some() {
                return Err(fail(EX_SOFTWARE, format!("User \"{}\" already exists", a[0])));
            }
            c.call(
                "PUT",
                &format!("/users/{}", enc(a[0])),
                Some(&json!({ "password": a[1], "tags": "" })),
            )?;
            cli.info("Done. Don't forget to grant the user permissions to some virtual hosts! See 'warrenctl help set_permissions' to learn more.");
            Ok(())
        }
        "delete_user" => {
            let a = args(cli, 1, "USER")?;
            cli.info(&format!("Deleting user \"{}\" ...", a[0]));
            if c.call("DELETE", &format!("/users/{}", enc(a[0])), None)?
                .is_none()
            {
                return Err(fail(EX_NOUSER, format!("User \"{}\" does not exist", a[0])));
            }
            Ok(())
        }
        "change_password" => {
            let a = args(cli, 2, "USER PASSWORD")?;
            cli.info(&format!("Changing password for user \"{}\" ...", a[0]));
            let u = user_exists(c, a[0])?
                .ok_or_else(|| fail(EX_NOUSER, format!("User \"{}\" does not exist", a[0])))?;
            c.call(
                "PUT",
                &format!("/users/{}", enc(a[0])),
                Some(&json!({ "password": a[1], "tags": u["tags"] })),
            )?;
            Ok(())
        }
        "set_user_tags" => {
            let (user, tags) = cli
                .args
                .split_first()
                .ok_or_else(|| usage("set_user_tags takes USER [TAG ...]"))?;
            cli.info(&format!(
                "Setting tags for user \"{user}\" to [{}] ...",
                tags.join(", ")
            ));
            let u = user_exists(c, user)?
                .ok_or_else(|| fail(EX_NOUSER, format!("User \"{user}\" does not exist")))?;
            c.call(
                "PUT",
                &format!("/users/{}", enc(user)),
                Some(&json!({ "password_hash": u["password_hash"], "hashing_algorithm": u["hashing_algorithm"], "tags": tags })),
            )?;
            Ok(())
        }
        "list_users" => {
            cli.info("Listing users ...");
            let cols = columns(&cli.args, &["user", "tags"], &[("user", "/name")]);
            table(!cli.quiet, &cols, &c.list("/users")?);
            Ok(())
        }
        "add_vhost" => {
            let a = args(cli, 1, "VHOST")?;
            cli.info(&format!("Adding vhost \"{}\" ...", a[0]));
            c.call("PUT", &format!("/vhosts/{}", enc(a[0])), None)?;
            Ok(())
        }
        "delete_vhost" => {
            let a = args(cli, 1, "VHOST")?;
            cli.info(&format!("Deleting vhost \"{}\" ...", a[0]));
            if c.call("DELETE", &format!("/vhosts/{}", enc(a[0])), None)?
                .is_none()
            {
                return Err(fail(
                    EX_SOFTWARE,
                    format!("Virtual host '{}' does not exist", a[0]),
                ));
            }
            Ok(())
        }
        "list_vhosts" => {
            cli.info("Listing vhosts ...");
            let cols = columns(&cli.args, &["name"], &[]);
            table(!cli.quiet, &cols, &c.list("/vhosts")?);
            Ok(())
        }
        "set_permissions" => {
            let a = args(cli, 4, "[-p VHOST] USER CONF WRITE READ")?;
            cli.info(&format!(
                "Setting permissions for user \"{}\" in vhost \"{vhost}\" ...",
                a[0]
            ));
            let body = json!({ "configure": a[1], "write": a[2], "read": a[3] });
            if user_exists(c, a[0])?.is_none() {
                return Err(fail(EX_NOUSER, format!("User \"{}\" does not exist", a[0])));
            }
            if c.get(&format!("/vhosts/{vh}"))?.is_none() {
                return Err(fail(
                    EX_SOFTWARE,
                    format!("Virtual host '{vhost}' does not exist"),
                ));
            }
            c.call("PUT", &format!("/permissions/{vh}/{}", enc(a[0])), Some(&body))?;
            Ok(())
        }
        "clear_permissions" => {
            let a = args(cli, 1, "[-p VHOST] USER")?;
            cli.info(&format!(
                "Clearing permissions for user \"{}\" in vhost \"{vhost}\" ...",
                a[0]
            ));
            c.call("DELETE", &format!("/permissions/{vh}/{}", enc(a[0])), None)?;
            Ok(())
        }
        "list_permissions" => {
            cli.info(&format!("Listing permissions for vhost \"{vhost}\" ..."));
            let rows = c
                .get(&format!("/vhosts/{vh}/permissions"))?
                .ok_or_else(|| fail(EX_SOFTWARE, format!("Virtual host '{vhost}' does not exist")))?;
            let cols = columns(&[], &["user", "configure", "write", "read"], &[]);
            table(!cli.quiet, &cols, rows.as_array().map_or(&[][..], |v| v));
            Ok(())
        }
        "list_user_permissions" => {
            let a = args(cli, 1, "USER")?;
            cli.info(&format!("Listing permissions for user \"{}\" ...", a[0]));
            let rows = c
                .get(&format!("/users/{}/permissions", enc(a[0])))?
                .ok_or_else(|| fail(EX_NOUSER, format!("User \"{}\" does not exist", a[0])))?;
            let cols = columns(&[], &["vhost", "configure", "write", "read"], &[]);
            table(!cli.quiet, &cols, rows.as_array().map_or(&[][..], |v| v));
            Ok(())
        }
        "set_policy" => {
            let a = args(
                cli,
                3,
                "[-p VHOST] [--priority N] [--apply-to queues|exchanges|all] NAME PATTERN DEFINITION",
            )?;
            let def: Value = serde_json::from_str(a[2])
                .map_err(|e| fail(EX_DATAERR, format!("the definition is not valid JSON: {e}")))?;
            cli.info(&format!(
                "Setting policy \"{}\" for pattern \"{}\" to \"{}\" with priority \"{}\" for vhost \"{vhost}\" ...",
                a[0], a[1], a[2], cli.priority
            ));
            let body = json!({ "pattern": a[1], "definition": def, "priority": cli.priority, "apply-to": cli.apply_to });
            c.call("PUT", &format!("/policies/{vh}/{}", enc(a[0])), Some(&body))?;
            Ok(())
        }
        "clear_policy" => {
            let a = args(cli, 1, "[-p VHOST] NAME")?;
            cli.info(&format!("Clearing policy \"{}\" on vhost \"{vhost}\" ...", a[0]));
            c.call("DELETE", &format!("/policies/{vh}/{}", enc(a[0])), None)?;
            Ok(())
        }
        "list_policies" => {
            cli.info(&format!("Listing policies for vhost \"{vhost}\" ..."));
            let rows = c.list(&format!("/policies/{vh}"))?;
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|mut p| {
                    p["definition"] = Value::String(p["definition"].to_string());
                    p
                })
                .collect();
            let cols = columns(
                &[],
                &["vhost", "name", "pattern", "apply-to", "definition", "priority"],
                &[],
            );
            table(!cli.quiet, &cols, &rows);
            Ok(())
        }
        "list_queues" => {
            cli.info("Timeout: 60.0 seconds ...");
            cli.info(&format!("Listing queues for vhost {vhost} ..."));
            let rows = c.list(&format!("/queues/{vh}"))?;
            let cols = columns(&cli.args, &["name", "messages"], &[]);
            table(!cli.quiet, &cols, &rows);
            Ok(())
        }
        "list_exchanges" => {
            cli.info(&format!("Listing exchanges for vhost {vhost} ..."));
            let rows = c.list(&format!("/exchanges/{vh}"))?;
            let cols = columns(&cli.args, &["name", "type"], &[]);
            table(!cli.quiet, &cols, &rows);
            Ok(())
        }
        "list_bindings" => {
            cli.info(&format!("Listing bindings for vhost {vhost}..."));
            let rows: Vec<Value> = c
                .list(&format!("/bindings/{vh}"))?
                .into_iter()
                .map(|mut b| {
                    b["source_kind"] = json!("exchange");
                    b
                })
                .collect();
            let cols = columns(
                &cli.args,
                &[
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                    "arguments",
                ],
                &[
                    ("source_name", "/source"),
                    ("destination_name", "/destination"),
                    ("destination_kind", "/destination_type"),
                ],
            );
            table(!cli.quiet, &cols, &rows);
            Ok(())
        }
        "list_connections" => {
            cli.info("Listing connections ...");
            let cols = columns(&cli.args, &["user", "peer_host", "peer_port", "state"], &[]);
            table(!cli.quiet, &cols, &c.list("/connections")?);
            Ok(())
        }
        "list_channels" => {
            cli.info("Listing channels ...");
            let cols = columns(
                &cli.args,
                &["name", "user", "consumer_count", "messages_unacknowledged"],
                &[],
            );
            table(!cli.quiet, &cols, &c.list("/channels")?);
            Ok(())
        }
        "list_consumers" => {
            cli.info(&format!("Listing consumers in vhost {vhost} ..."));
            let cols = columns(
                &cli.args,
                &[
                    "queue_name",
                    "channel_pid",
                    "consumer_tag",
                    "ack_required",
                    "prefetch_count",
                    "active",
                    "arguments",
                ],
                &[
                    ("queue_name", "/queue/name"),
                    ("channel_pid", "/channel_details/name"),
                ],
            );
            table(!cli.quiet, &cols, &c.list(&format!("/consumers/{vh}"))?);
            Ok(())
        }
        "purge_queue" => {
            let a = args(cli, 1, "[-p VHOST] QUEUE")?;
            cli.info(&format!("Purging queue '{}' in vhost '{vhost}' ...", a[0]));
            if c.call("DELETE", &format!("/queues/{vh}/{}/contents", enc(a[0])), None)?
                .is_none()
            {
                return Err(fail(EX_UNAVAILABLE, "not_found"));
            }
            Ok(())
        }
        "delete_queue" => {
            let a = args(cli, 1, "[-p VHOST] [--if-empty] [--if-unused] QUEUE")?;
            cli.info(&format!("Deleting queue '{}' on vhost '{vhost}' ...", a[0]));
            let q = c
                .get(&format!("/queues/{vh}/{}", enc(a[0])))?
                .ok_or_else(|| fail(EX_USAGE, "Queue not found"))?;
            let path = format!(
                "/queues/{vh}/{}?if-empty={}&if-unused={}",
                enc(a[0]),
                cli.if_empty,
                cli.if_unused
            );
            c.call("DELETE", &path, None)?;
            if !cli.quiet {
                println!(
                    "Queue was successfully deleted with {} messages",
                    cell(&q["messages"])
                );
            }
            Ok(())
        }
        "set_vhost_limits" | "clear_vhost_limits" | "list_vhost_limits" | "set_user_limits"
        | "clear_user_limits" | "list_user_limits" => limits(cli, c),
        "export_definitions" => {
            let a = args(cli, 1, "PATH (or - for standard output)")?;
            let defs = must(c.get("/definitions")?, "definitions")?;
            let text = serde_json::to_string_pretty(&defs).unwrap_or_default();
            if a[0] == "-" {
                println!("{text}");
            } else {
                cli.info(&format!(
                    "Exporting definitions in JSON to a file at \"{}\" ...",
                    a[0]
                ));
                std::fs::write(a[0], text).map_err(|e| fail(EX_SOFTWARE, format!("{}: {e}", a[0])))?;
            }
            Ok(())
        }
        "import_definitions" => {
            let a = args(cli, 1, "PATH (or - for standard input)")?;
            let text = if a[0] == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| fail(EX_SOFTWARE, e.to_string()))?
            } else {
                std::fs::read_to_string(a[0]).map_err(|e| fail(EX_DATAERR, format!("{}: {e}", a[0])))?
            };
            let defs: Value =
                serde_json::from_str(&text).map_err(|e| fail(EX_DATAERR, format!("not valid JSON: {e}")))?;
            cli.info(&format!(
                "Importing definitions in JSON from a file at \"{}\" ...",
                a[0]
            ));
            c.call("POST", "/definitions", Some(&defs))?;
            cli.info("Successfully started definition import. This process is asynchronous and can take some time.");
            Ok(())
        }
        other => Err(usage(format!("unknown command '{other}'"))),
    }
}

fn status(cli: &Cli, c: &Client) -> Result<(), Failure> {
    let o = must(c.get("/overview")?, "overview")?;
    let nodes = c.list("/nodes")?;
    let n = nodes.first().cloned().unwrap_or(Value::Null);
    cli.info(&format!("Status of node {} ...", cell(&o["node"])));
    let gb = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e9;
    println!(
        "Runtime\n\nOS PID: {}\nOS: Linux\nUptime (seconds): {}\nProduct name: warren\nProduct version: {}\nRabbitMQ version (compatible with): {}\n",
        cell(&n["os_pid"]),
        n["uptime"].as_u64().unwrap_or(0) / 1000,
        cell(&o["product_version"]),
        cell(&o["rabbitmq_version"])
    );
    println!("Shards: {}\n", cell(&n["processors"]));
    println!("Alarms\n\n{}\n", alarm_lines(c)?);
    println!(
        "Memory\n\nTotal memory used: {:.4} gb\nCalculation strategy: rss\nMemory high watermark setting: {:.4} gb\n",
        gb(&n["mem_used"]),
        gb(&n["mem_limit"])
    );
    println!(
        "File Descriptors\n\nTotal: {}, limit: {}\n",
        cell(&n["fd_used"]),
        cell(&n["fd_total"])
    );
    println!(
        "Totals\n\nConnection count: {}\nQueue count: {}\nVirtual host count: {}\n",
        cell(&o["object_totals"]["connections"]),
        cell(&o["object_totals"]["queues"]),
        c.list("/vhosts")?.len()
    );
    println!("Listeners\n");
    for l in o["listeners"].as_array().into_iter().flatten() {
        println!(
            "Interface: {}, port: {}, protocol: {}",
            cell(&l["ip_address"]),
            cell(&l["port"]),
            cell(&l["protocol"])
        );
    }
    Ok(())
}

/// Wipes the data dir of a stopped broker. A running broker is refused, as
/// rabbitmqctl refuses while the app runs; the data dir's lock makes sure.
fn reset(cli: &Cli, c: &Client) -> Result<(), Failure> {
    if c.get("/overview").is_ok() {
        return Err(fail(
            EX_USAGE,
            "this command requires the broker to be stopped. Stop it with 'warrenctl stop' first.",
        ));
    }
    let dir = cli
        .data_dir
        .as_ref()
        .ok_or_else(|| usage("reset needs --data-dir (the stopped broker's data dir)"))?;
    cli.info(&format!("Resetting node {} ...", cli.node_name()));
    let lock = warren::storage::datadir::DataDir::open(dir)
        .map_err(|e| fail(EX_SOFTWARE, format!("cannot reset {}: {e}", dir.display())))?;
    let entries = std::fs::read_dir(dir).map_err(|e| fail(EX_SOFTWARE, e.to_string()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        if name == "LOCK" || name == "VERSION" {
            continue;
        }
        let p = e.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|err| fail(EX_SOFTWARE, format!("{}: {err}", p.display())))?;
    }
    drop(lock);
    Ok(())
}

/// A limits definition as rabbitmqctl prints it: compact JSON, keys in
/// order (an empty set, which the API shows as `[]`, is `{}`).
fn limits_json(v: &Value) -> String {
    match v {
        Value::Object(_) => v.to_string(),
        _ => "{}".to_string(),
    }
}

/// rabbitmqctl's "no such user" (an Erlang tuple, as it prints it).
fn no_such_user(user: &str) -> Failure {
    fail(EX_UNAVAILABLE, format!("{{:no_such_user, {user:?}}}"))
}

/// The vhost and user limits commands, with rabbitmqctl 3.10's messages
/// and exit codes (its errors are 69, a missing vhost 65).
fn limits(cli: &Cli, c: &Client) -> Result<(), Failure> {
    use warren::mgmt::limits::{Kind, user_error, validate};
    let vh = enc(&cli.vhost);
    let vhost = cli.vhost.as_str();
    // A refusal of the broker's (400) is rabbitmqctl's error, 69.
    let refused = |f: Failure| {
        if f.code == EX_DATAERR {
            fail(EX_UNAVAILABLE, f.message)
        } else {
            f
        }
    };
    let no_vhost = || fail(EX_DATAERR, format!("Virtual host '{vhost}' does not exist"));
    let bad_json = || fail(EX_UNAVAILABLE, "JSON decoding error. Reason: badarg");
    match cli.command.as_str() {
        "set_vhost_limits" => {
            let a = args(cli, 1, "[-p VHOST] DEFINITION")?;
            cli.info(&format!(
                "Setting vhost limits to \"{}\" for vhost \"{vhost}\" ...",
                a[0]
            ));
            let def: Value = serde_json::from_str(a[0]).map_err(|_| bad_json())?;
            let path = format!("/parameters/vhost-limits/{vh}/limits");
            c.call("PUT", &path, Some(&json!({ "value": def })))
                .map_err(refused)?
                .ok_or_else(no_vhost)?;
            Ok(())
        }
        "clear_vhost_limits" => {
            args(cli, 0, "[-p VHOST]")?;
            cli.info(&format!("Clearing vhost \"{vhost}\" limits ..."));
            let path = format!("/parameters/vhost-limits/{vh}/limits");
            c.call("DELETE", &path, None)
                .map_err(refused)?
                .ok_or_else(|| fail(EX_UNAVAILABLE, "Parameter does not exist"))?;
            Ok(())
        }
        "list_vhost_limits" if cli.global => {
            args(cli, 0, "[-p VHOST] [--global]")?;
            cli.info("Listing limits for all vhosts ...");
            list_all_limits(cli, c, "/vhost-limits", "vhost")
        }
        "list_vhost_limits" => {
            args(cli, 0, "[-p VHOST] [--global]")?;
            cli.info(&format!("Listing limits for vhost \"{vhost}\" ..."));
            let rows = c.get(&format!("/vhost-limits/{vh}"))?.ok_or_else(no_vhost)?;
            match rows.as_array().and_then(|r| r.first()) {
                Some(r) => println!("{}", limits_json(&r["value"])),
                None => println!(),
            }
            Ok(())
        }
        "set_user_limits" => {
            let a = args(cli, 2, "USER DEFINITION")?;
            cli.info(&format!(
                "Setting user limits to \"{}\" for user \"{}\" ...",
                a[1], a[0]
            ));
            let def: Value = serde_json::from_str(a[1]).map_err(|_| bad_json())?;
            let limits = validate(Kind::User, &def).map_err(|e| fail(EX_UNAVAILABLE, user_error(&e)))?;
            let user = enc(a[0]);
            c.get(&format!("/user-limits/{user}"))?
                .ok_or_else(|| no_such_user(a[0]))?;
            for (name, value) in limits.iter() {
                c.call(
                    "PUT",
                    &format!("/user-limits/{user}/{}", enc(name)),
                    Some(&json!({ "value": value })),
                )
                .map_err(refused)?;
            }
            Ok(())
        }
        "clear_user_limits" => {
            let a = args(cli, 2, "USER LIMIT|all")?;
            if a[1] == "all" {
                cli.info(&format!("Clearing all limits for user \"{}\" ...", a[0]));
            } else {
                cli.info(&format!("Clearing \"{}\" limit for user \"{}\" ...", a[1], a[0]));
            }
            let user = enc(a[0]);
            let rows = c
                .get(&format!("/user-limits/{user}"))?
                .ok_or_else(|| no_such_user(a[0]))?;
            let names: Vec<String> = if a[1] == "all" {
                rows.as_array()
                    .and_then(|r| r.first())
                    .and_then(|r| r["value"].as_object())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default()
            } else {
                vec![a[1].to_string()]
            };
            for name in names {
                c.call("DELETE", &format!("/user-limits/{user}/{}", enc(&name)), None)
                    .map_err(refused)?;
            }
            Ok(())
        }
        "list_user_limits" if cli.global => {
            args(cli, 0, "[--user USER] [--global]")?;
            cli.info("Listing limits for all users ...");
            list_all_limits(cli, c, "/user-limits", "user")
        }
        "list_user_limits" => {
            args(cli, 0, "[--user USER] [--global]")?;
            let user = cli.user.as_deref().unwrap_or("guest");
            cli.info(&format!("Listing limits for user \"{user}\" ..."));
            let rows = c
                .get(&format!("/user-limits/{}", enc(user)))?
                .ok_or_else(|| no_such_user(user))?;
            let value = rows.as_array().and_then(|r| r.first()).map(|r| &r["value"]);
            println!("{}", value.map_or("{}".to_string(), limits_json));
            Ok(())
        }
        other => Err(usage(format!("unknown command '{other}'"))),
    }
}

/// `list_vhost_limits --global` / `list_user_limits --global`: one row per
/// `owner` (vhost or user) with its limits, as rabbitmqctl prints them.
fn list_all_limits(cli: &Cli, c: &Client, path: &str, owner: &str) -> Result<(), Failure> {
    let rows: Vec<Value> = c
        .list(path)?
        .into_iter()
        .map(|r| json!({ owner: r[owner], "limits": limits_json(&r["value"]) }))
        .collect();
    if rows.is_empty() {
        println!();
    } else {
        table(!cli.quiet, &columns(&[], &[owner, "limits"], &[]), &rows);
    }
    Ok(())
}

/// The alarms in effect, as rabbitmqctl words them (its core/alarms.ex).
fn alarm_lines(c: &Client) -> Result<String, Failure> {
    let mut lines = Vec::new();
    for n in c.list("/nodes")? {
        let name = cell(&n["name"]);
        if n["mem_alarm"] == true {
            lines.push(format!("Memory alarm on node {name}"));
        }
        if n["disk_free_alarm"] == true {
            lines.push(format!("Free disk space alarm on node {name}"));
        }
    }
    Ok(if lines.is_empty() {
        "(none)".into()
    } else {
        lines.join("\n")
    })
}

/// rabbitmqctl's `<disk_limit>`: bytes, or a number with one of its units
/// (k, kiB, M, MiB, G, GiB binary; kB, MB, GB decimal).
fn disk_limit(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let scale: u64 = match &s[digits..] {
        "" => 1,
        "k" | "kiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `rabbitmq-queues grow`'s and `shrink`'s table: one row per queue
/// changed (vhost, name, size, result); with --errors-only the failed
/// ones.
fn replica_rows(cli: &Cli, rows: Option<Value>) -> Result<(), Failure> {
    let rows: Vec<Value> = rows
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| !cli.errors_only || r["result"] != "ok")
        .collect();
    let cols = columns(&[], &["vhost", "name", "size", "result"], &[]);
    table(!cli.quiet, &cols, &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_limits_as_rabbitmqctl_reads_them() {
        use super::disk_limit;
        assert_eq!(disk_limit("50000000"), Some(50_000_000));
        assert_eq!(disk_limit("50MB"), Some(50_000_000));
        assert_eq!(disk_limit("2GiB"), Some(2 << 30));
        assert_eq!(disk_limit("1k"), Some(1024));
        assert_eq!(disk_limit("1TB"), None);
        assert_eq!(disk_limit("-1"), None);
        assert_eq!(disk_limit("MB"), None);
    }
}
