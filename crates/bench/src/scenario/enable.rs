//! `enable`: each session alternates XEP-0357 enable and disable requests, one at a time,
//! for a fixed duration; round trips per second and their latency.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    error::BenchError,
    procstat::Sample,
    record::{Recorder, round},
    report::Report,
    scenario::{
        Ctx, close_all,
        push::{disable_iq, enable_iq},
    },
    xmpp::{Reader, Writer},
};

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct EnableParams {
    /// Sessions (accounts 1..=users), each with one request in flight.
    pub users: usize,
    /// How long to measure.
    pub duration: Duration,
    /// The app server's JID named in the requests.
    pub service: String,
}

/// Run the scenario.
pub async fn run(ctx: &Ctx, params: &EnableParams) -> Result<Report, BenchError> {
    let setup = Instant::now();
    let sessions = ctx
        .login_all("logging in", (1..=params.users).collect(), false)
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let recorder = Arc::new(Recorder::new(0, None));
    let before = Sample::take(ctx.server_pid, ctx.db_pid);
    let stop = (Instant::now() + params.duration).min(ctx.deadline);
    let mut tasks = JoinSet::new();
    for (index, session) in sessions.into_iter().enumerate() {
        let recorder = Arc::clone(&recorder);
        let service = params.service.clone();
        tasks.spawn(round_trips(
            session.reader,
            session.writer,
            recorder,
            service,
            index + 1,
            stop,
        ));
    }
    let mut writers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (writer, result) = joined.expect("a session task panicked");
        if let Err(error) = result {
            eprintln!("herald-bench: a session stopped: {error}");
        }
        writers.push(writer);
    }
    let after = Sample::take(ctx.server_pid, ctx.db_pid);

    let mut report = Report::new("enable", &ctx.name, ctx.label.as_deref());
    report.users = Some(params.users);
    report.setup_s = round(setup_s, 3);
    report.summary(recorder.summary());
    report.usage(before.until(&after));
    report.capped = stop >= ctx.deadline;
    report.server_rss_after_kib = after.server_rss;
    close_all(writers).await;
    Ok(report)
}

/// Enable, disable, enable... until `stop`; an error reply is counted, not fatal.
async fn round_trips(
    mut reader: Reader,
    mut writer: Writer,
    recorder: Arc<Recorder>,
    service: String,
    n: usize,
    stop: Instant,
) -> (Writer, Result<(), BenchError>) {
    let node = format!("bench-enable-{n}");
    let mut k = 0u64;
    let result = async {
        while Instant::now() < stop {
            let id = format!("r{k}");
            let request = if k.is_multiple_of(2) {
                enable_iq(&id, &service, &node)
            } else {
                disable_iq(&id, &service, &node)
            };
            let started = recorder.now();
            recorder
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            writer.send(&request).await?;
            let reply = reader.iq_reply(&id).await?;
            if reply.attr("type") == Some("result") {
                recorder.round_trip(started);
            } else {
                recorder
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            k += 1;
        }
        Ok(())
    }
    .await;
    // Leave no registration behind for the push scenario.
    if !k.is_multiple_of(2) {
        let _ = writer.send(&disable_iq("last", &service, &node)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), reader.iq_reply("last")).await;
    }
    (writer, result)
}
