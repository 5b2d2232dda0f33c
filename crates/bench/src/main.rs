//! `herald-bench`: a load generator for XMPP servers, speaking only standard protocols
//! (RFC 6120/6121 client streams with STARTTLS and SASL, XEP-0114 for its own app server,
//! XEP-0357 push), so that herald and its peers are measured by the same tool in the same
//! run. Scenarios: `push`, `enable`, `idle`, `route`; `register` creates the accounts
//! (XEP-0077) and `report` compares runs. Every run stops by itself within `--time-cap`
//! and only ever connects to loopback addresses.

#[cfg(test)]
mod against_herald;
mod chart;
mod component;
mod error;
mod procstat;
mod record;
mod report;
mod scenario;
mod scram;
mod xmpp;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    component::ComponentTarget,
    error::BenchError,
    report::Report,
    scenario::{Ctx, enable::EnableParams, idle::IdleParams, push::PushParams, route::RouteParams},
    xmpp::{Conn, Target, TlsMode},
};

/// A load generator for XMPP servers: push notifications, enable/disable, idle sessions,
/// routing. Prints a table and, as its last line, one JSON object.
#[derive(Parser, Debug)]
#[command(name = "herald-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create accounts {prefix}1..{prefix}N by in-band registration (XEP-0077).
    Register {
        #[command(flatten)]
        server: ServerArgs,
        /// How many accounts.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// Recipients enable push and go offline; senders message them; the tool's app server
    /// times every publish.
    Push {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        component: ComponentArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Recipients (accounts 1..=N).
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Senders (the accounts after the recipients).
        #[arg(long, default_value_t = 20)]
        senders: usize,
        /// Push registrations (devices) per recipient: each message is a publish to each.
        #[arg(long, default_value_t = 1)]
        registrations: usize,
    },
    /// Sessions alternate push enable and disable requests.
    Enable {
        #[command(flatten)]
        server: ServerArgs,
        /// Sessions (accounts 1..=N), one request in flight each.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// The app server JID named in the requests.
        #[arg(long, default_value = "push.localhost")]
        service: String,
    },
    /// Hold authenticated, available sessions open; server memory per session.
    Idle {
        #[command(flatten)]
        server: ServerArgs,
        /// Sessions (accounts 1..=N).
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Seconds to hold them after the last login.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// Seconds to let the server settle before reading its memory.
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
    },
    /// Online-to-online messages between sender/receiver pairs.
    Route {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Pairs: receivers are accounts 1..=N, senders N+1..=2N.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
    },
    /// Compare JSON report lines (from several targets) as markdown tables, and draw them.
    Report {
        /// Files of JSON lines; other lines are skipped.
        files: Vec<PathBuf>,
        /// Also draw the comparison as SVG charts into this directory: a figure per label,
        /// and push cost against recipients when runs at several sizes are given.
        #[arg(long)]
        charts: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// The server's c2s address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: String,
    /// The XMPP domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// STARTTLS or plaintext.
    #[arg(long, value_enum, default_value_t = TlsMode::Starttls)]
    tls: TlsMode,
    /// Insist on SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN (default: the strongest offered).
    #[arg(long)]
    sasl: Option<String>,
    /// Accounts are {prefix}1, {prefix}2...
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Every account's password.
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// The server's name in reports.
    #[arg(long, default_value = "server")]
    target: String,
    /// What this run stands for in a comparison (default: the scenario's name).
    #[arg(long)]
    label: Option<String>,
    /// The server's PID, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The database server's PID (PostgreSQL's postmaster), to report its CPU time with that
    /// of its child processes (backends, WAL writer...).
    #[arg(long)]
    db_pid: Option<u32>,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Seconds after which the run stops, whatever it is doing.
    #[arg(long, default_value_t = 300.0)]
    time_cap: f64,
}

#[derive(Args, Debug)]
struct ComponentArgs {
    /// The server's component (XEP-0114) listener; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:5275")]
    component_addr: String,
    /// The app server's domain.
    #[arg(long, default_value = "push.localhost")]
    component_domain: String,
    /// The component's shared secret.
    #[arg(long, default_value = "bench-secret")]
    component_secret: String,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Messages in all.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Messages per second in all; 0 sends flat out (within --window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// When flat out, the most messages sent but not yet arrived.
    #[arg(long, default_value_t = 2000)]
    window: usize,
    /// Seconds without an arrival after which the run stops waiting.
    #[arg(long, default_value_t = 10.0)]
    stall: f64,
}

/// Resolve `addr` and refuse anything but loopback (the tool never loads another machine).
fn loopback(addr: &str) -> Result<SocketAddr, BenchError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| BenchError::Usage(format!("cannot resolve {addr}: {e}")))?
        .collect();
    match addrs.first() {
        Some(first) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(*first),
        Some(_) => Err(BenchError::Usage(format!(
            "{addr} is not a loopback address: herald-bench only loads this machine"
        ))),
        None => Err(BenchError::Usage(format!("{addr} resolves to nothing"))),
    }
}

fn mechanism(name: Option<&str>) -> Result<Option<&'static str>, BenchError> {
    match name {
        None => Ok(None),
        Some(name) => scram::MECHANISMS
            .into_iter()
            .find(|m| m.eq_ignore_ascii_case(name))
            .map(Some)
            .ok_or_else(|| {
                BenchError::Usage(format!(
                    "unknown SASL mechanism {name}; one of {:?}",
                    scram::MECHANISMS
                ))
            }),
    }
}

fn positive(seconds: f64, what: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BenchError::Usage(format!("{what} must be a positive number of seconds")))
}

impl ServerArgs {
    fn ctx(&self) -> Result<Ctx, BenchError> {
        let cap = positive(self.time_cap, "--time-cap")?;
        Ok(Ctx {
            target: Target {
                addr: loopback(&self.addr)?,
                domain: self.domain.clone(),
                tls: self.tls,
                mechanism: mechanism(self.sasl.as_deref())?,
                password: self.password.clone(),
            },
            prefix: self.prefix.clone(),
            name: self.target.clone(),
            label: self.label.clone(),
            server_pid: self.server_pid,
            db_pid: self.db_pid,
            concurrency: self.connect_concurrency,
            deadline: tokio::time::Instant::now() + cap,
        })
    }
}

impl LoadArgs {
    fn rate(&self) -> Option<f64> {
        (self.rate > 0.0).then_some(self.rate)
    }
}

async fn register(ctx: &Ctx, users: usize) -> Result<(), BenchError> {
    let target = ctx.target.clone();
    let prefix = ctx.prefix.clone();
    let created = ctx
        .bounded("registering", (1..=users).collect(), move |n| {
            let target = target.clone();
            let user = format!("{prefix}{n}");
            async move { Conn::register(&target, &user).await }
        })
        .await?;
    let new = created.iter().filter(|c| **c).count();
    println!(
        "registered {users} accounts ({new} new, {} existed)",
        users - new
    );
    Ok(())
}

async fn run(command: Command) -> Result<Option<Report>, BenchError> {
    Ok(Some(match command {
        Command::Register { server, users } => {
            register(&server.ctx()?, users).await?;
            return Ok(None);
        }
        Command::Push {
            server,
            component,
            load,
            users,
            senders,
            registrations,
        } => {
            if registrations == 0 {
                return Err(BenchError::Usage(
                    "--registrations must be at least 1".into(),
                ));
            }
            let params = PushParams {
                users,
                senders,
                registrations,
                messages: load.messages,
                rate: load.rate(),
                window: load.window,
                stall: positive(load.stall, "--stall")?,
                component: ComponentTarget {
                    addr: loopback(&component.component_addr)?,
                    domain: component.component_domain,
                    secret: component.component_secret,
                },
            };
            scenario::push::run(&server.ctx()?, &params).await?
        }
        Command::Enable {
            server,
            users,
            duration,
            service,
        } => {
            let params = EnableParams {
                users,
                duration: positive(duration, "--duration")?,
                service,
            };
            scenario::enable::run(&server.ctx()?, &params).await?
        }
        Command::Idle {
            server,
            sessions,
            hold,
            settle,
        } => {
            let params = IdleParams {
                sessions,
                hold: positive(hold, "--hold")?,
                settle: Duration::try_from_secs_f64(settle).map_err(|_| {
                    BenchError::Usage("--settle must be a number of seconds".into())
                })?,
            };
            scenario::idle::run(&server.ctx()?, &params).await?
        }
        Command::Route {
            server,
            load,
            pairs,
        } => {
            let params = RouteParams {
                pairs,
                messages: load.messages,
                rate: load.rate(),
                window: load.window,
                stall: positive(load.stall, "--stall")?,
            };
            scenario::route::run(&server.ctx()?, &params).await?
        }
        Command::Report { files, charts } => {
            let mut reports = Vec::new();
            for file in files {
                let text = std::fs::read_to_string(&file)?;
                reports.extend(
                    text.lines()
                        .filter_map(|line| serde_json::from_str::<Report>(line).ok()),
                );
            }
            print!("{}", report::markdown(&reports));
            if let Some(dir) = charts {
                for path in chart::draw(&reports, &dir)? {
                    eprintln!("herald-bench: drew {}", path.display());
                }
            }
            return Ok(None);
        }
    }))
}

/// The time cap of a command, for the last-resort guard.
fn cap(command: &Command) -> Option<f64> {
    match command {
        Command::Register { server, .. }
        | Command::Push { server, .. }
        | Command::Enable { server, .. }
        | Command::Idle { server, .. }
        | Command::Route { server, .. } => Some(server.time_cap),
        Command::Report { .. } => None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let guard = cap(&cli.command)
        .map(|cap| Duration::from_secs_f64(cap.max(0.0)) + Duration::from_secs(20));
    let outcome = runtime.block_on(async {
        match guard {
            // Scenarios stop themselves at the cap; this only catches a step stuck past it.
            Some(guard) => tokio::time::timeout(guard, run(cli.command))
                .await
                .unwrap_or(Err(BenchError::Capped("shutdown"))),
            None => run(cli.command).await,
        }
    });
    // Tasks still blocked on sockets are not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(Some(report)) => {
            print!("{}", report.table());
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report serialises")
            );
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error @ BenchError::Usage(_)) => {
            eprintln!("herald-bench: {error}");
            ExitCode::from(64)
        }
        Err(error) => {
            eprintln!("herald-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        assert!(loopback("127.0.0.1:5222").is_ok());
        assert!(loopback("[::1]:5222").is_ok());
        assert!(loopback("127.0.0.2:1").is_ok());
    }

    #[test]
    fn other_targets_are_refused() {
        for addr in [
            "10.0.0.1:5222",
            "192.168.1.1:5222",
            "8.8.8.8:5222",
            "0.0.0.0:5222",
        ] {
            assert!(
                matches!(loopback(addr), Err(BenchError::Usage(_))),
                "{addr}"
            );
        }
    }

    #[test]
    fn mechanisms_are_named_case_insensitively() {
        assert_eq!(mechanism(Some("scram-sha-1")).unwrap(), Some("SCRAM-SHA-1"));
        assert!(mechanism(Some("DIGEST-MD5")).is_err());
    }
}
