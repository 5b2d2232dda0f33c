//! `idle`: C sessions authenticated, bound and available (initial presence), held open;
//! the server's resident memory before and after gives its memory per session.

use std::time::Duration;

use tokio::time::Instant;

use crate::{
    error::BenchError,
    procstat::Sample,
    record::round,
    report::Report,
    scenario::{Ctx, close_all},
};

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct IdleParams {
    /// Sessions (accounts 1..=sessions).
    pub sessions: usize,
    /// How long to hold them after the last login.
    pub hold: Duration,
    /// How long to let the server settle before the first reading (garbage-collected
    /// servers give back memory of earlier work lazily).
    pub settle: Duration,
}

/// Run the scenario.
pub async fn run(ctx: &Ctx, params: &IdleParams) -> Result<Report, BenchError> {
    tokio::time::sleep(params.settle).await;
    let before = Sample::take(ctx.server_pid, ctx.db_pid);
    let setup = Instant::now();
    let sessions = ctx
        .login_all("logging in", (1..=params.sessions).collect(), true)
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let hold_until = (Instant::now() + params.hold).min(ctx.deadline);
    let mut readers = tokio::task::JoinSet::new();
    let mut writers = Vec::new();
    for session in sessions {
        let mut reader = session.reader;
        // Keep reading (presence echoes, pings) as a client would.
        readers.spawn(async move { while let Ok(Some(_)) = reader.next().await {} });
        writers.push(session.writer);
    }
    let logged_in = Sample::take(ctx.server_pid, ctx.db_pid);
    tokio::time::sleep_until(hold_until).await;
    let after = Sample::take(ctx.server_pid, ctx.db_pid);

    let mut report = Report::new("idle", &ctx.name, ctx.label.as_deref());
    report.sessions = Some(params.sessions);
    report.setup_s = round(setup_s, 3);
    report.usage(logged_in.until(&after));
    report.server_rss_before_kib = before.server_rss;
    report.server_rss_after_kib = after.server_rss;
    if let (Some(before), Some(after)) = (before.server_rss, after.server_rss) {
        let per = (after as f64 - before as f64) / params.sessions.max(1) as f64;
        report.rss_per_session_kib = Some(round(per, 1));
    }
    report.capped = hold_until >= ctx.deadline;
    close_all(writers).await;
    readers.abort_all();
    Ok(report)
}
