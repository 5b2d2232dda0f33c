//! `route`: S senders each send to their own online receiver (RFC 6121 section 8.5.3: a
//! message to a full JID with a bound resource is delivered to it); throughput and latency
//! from the send to the receiver reading the message.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    error::BenchError,
    procstat::Sample,
    record::{Recorder, round},
    report::Report,
    scenario::{Ctx, Pace, close_all, count_bounces, send_messages},
    xmpp::Reader,
};

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct RouteParams {
    /// Sender/receiver pairs: receivers are accounts 1..=pairs, senders pairs+1..=2*pairs.
    pub pairs: usize,
    /// Messages in all.
    pub messages: u64,
    /// Messages per second in all; `None`: flat out.
    pub rate: Option<f64>,
    /// Messages in flight when flat out.
    pub window: usize,
    /// Stop waiting after this long without an arrival.
    pub stall: Duration,
}

/// Run the scenario.
pub async fn run(ctx: &Ctx, params: &RouteParams) -> Result<Report, BenchError> {
    let setup = Instant::now();
    let window = params.rate.is_none().then_some(params.window);
    let recorder = Arc::new(Recorder::new(params.messages, window));
    let receivers = ctx
        .login_all("logging in receivers", (1..=params.pairs).collect(), true)
        .await?;
    let senders = ctx
        .login_all(
            "logging in senders",
            (params.pairs + 1..=2 * params.pairs).collect(),
            true,
        )
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let mut readers = JoinSet::new();
    let mut receiver_writers = Vec::new();
    let mut to: Vec<String> = Vec::new();
    for session in receivers {
        to.push(session.jid.clone());
        readers.spawn(receive(session.reader, Arc::clone(&recorder)));
        receiver_writers.push(session.writer);
    }
    let to = Arc::new(to);

    let before = Sample::take(ctx.server_pid, ctx.db_pid);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    for (index, session) in senders.into_iter().enumerate() {
        readers.spawn(count_bounces(session.reader, Arc::clone(&recorder)));
        let mut writer = session.writer;
        let recorder = Arc::clone(&recorder);
        let pace = Pace::for_sender(params.rate, index, params.pairs, start);
        let (messages, pairs, to, stop) =
            (params.messages, params.pairs, Arc::clone(&to), ctx.deadline);
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            let seqs = (index as u64..messages).step_by(pairs);
            // seq % pairs == index: sender i always writes to receiver i.
            let result = send_messages(
                &mut writer,
                &recorder,
                seqs,
                |seq| to[(seq % pairs as u64) as usize].clone(),
                pace,
                stop,
            )
            .await;
            (writer, result)
        });
    }
    let mut writers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (writer, result) = joined.expect("a sender panicked");
        if let Err(error) = result {
            eprintln!("herald-bench: a sender stopped: {error}");
        }
        writers.push(writer);
    }
    let sent = recorder.sent.load(std::sync::atomic::Ordering::Relaxed);
    let complete = recorder.wait_for(sent, params.stall, ctx.deadline).await;
    let after = Sample::take(ctx.server_pid, ctx.db_pid);

    let mut report = Report::new("route", &ctx.name, ctx.label.as_deref());
    report.senders = Some(params.pairs);
    report.users = Some(params.pairs);
    report.messages = Some(params.messages);
    report.rate_target = params.rate;
    report.window = window;
    report.setup_s = round(setup_s, 3);
    report.summary(recorder.summary());
    report.usage(before.until(&after));
    report.capped = !complete && Instant::now() >= ctx.deadline;
    report.server_rss_after_kib = after.server_rss;

    writers.extend(receiver_writers);
    close_all(writers).await;
    readers.abort_all();
    Ok(report)
}

/// Read a receiver's stream, recording every message body.
async fn receive(mut reader: Reader, recorder: Arc<Recorder>) {
    while let Ok(Some(stanza)) = reader.next().await {
        if stanza.name() != "message" {
            continue;
        }
        if stanza.attr("type") == Some("error") {
            recorder
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        match stanza.children().find(|c| c.name() == "body") {
            Some(body) => recorder.observe(&body.text()),
            None => recorder.unrecognised(),
        }
    }
}
