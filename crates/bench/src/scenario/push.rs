//! `push`: N recipients enable push (XEP-0357 section 5, with publish-options) to the app
//! server this tool runs as a component, and go offline; S senders send M chat messages at
//! a target rate or flat out; the app server times each publish from the send.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    component::{AppServer, ComponentTarget},
    error::BenchError,
    procstat::Sample,
    record::Recorder,
    report::Report,
    scenario::{Ctx, Pace, close_all, count_bounces, send_messages},
    xmpp::{Conn, escape},
};

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct PushParams {
    /// Recipients (accounts 1..=users).
    pub users: usize,
    /// Senders (accounts users+1..=users+senders).
    pub senders: usize,
    /// Push registrations per recipient (nodes 0..registrations), each a publish per message.
    pub registrations: usize,
    /// Messages in all.
    pub messages: u64,
    /// Messages per second in all; `None`: flat out.
    pub rate: Option<f64>,
    /// Messages in flight when flat out.
    pub window: usize,
    /// Stop waiting after this long without a publish.
    pub stall: Duration,
    /// The app server.
    pub component: ComponentTarget,
}

/// The node of recipient `n`'s registration `k` (`bench-node-N`, then `bench-node-N.K`;
/// the app server reads `K` back with [`crate::component::copy_of`]).
fn node(n: usize, k: usize) -> String {
    if k == 0 {
        format!("bench-node-{n}")
    } else {
        format!("bench-node-{n}.{k}")
    }
}

/// XEP-0357 section 5: enable with publish-options (the form the app server needs to reach
/// the device).
pub fn enable_iq(id: &str, service: &str, node: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><enable xmlns='urn:xmpp:push:0' jid='{}' node='{}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>bench-secret</value></field>\
         <field var='device_id'><value>{}</value></field>\
         </x></enable></iq>",
        escape(service),
        escape(node),
        escape(node)
    )
}

/// XEP-0357 section 6: disable one node.
pub fn disable_iq(id: &str, service: &str, node: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><disable xmlns='urn:xmpp:push:0' jid='{}' node='{}'/></iq>",
        escape(service),
        escape(node)
    )
}

/// Run the scenario.
pub async fn run(ctx: &Ctx, params: &PushParams) -> Result<Report, BenchError> {
    let setup = Instant::now();
    let window = params.rate.is_none().then_some(params.window);
    let copies = u32::try_from(params.registrations.max(1))
        .map_err(|_| BenchError::Usage("--registrations is too large".into()))?;
    let recorder = Arc::new(Recorder::with_copies(params.messages, window, copies));

    let app = AppServer::connect_retrying(&params.component).await?;
    let (stop_app, stopped) = tokio::sync::oneshot::channel();
    let app_task = tokio::spawn(app.serve(Arc::clone(&recorder), stopped));

    // The server before any recipient enabled: what it grows by in the run, per
    // registration, is read from this and the memory after.
    let rss_before = Sample::take(ctx.server_pid, None).server_rss;

    // Recipients: log in, enable, close the stream and wait for the server to close its side,
    // so that each is offline (no session at all) before the first message.
    let target = ctx.target.clone();
    let service = params.component.domain.clone();
    let prefix = ctx.prefix.clone();
    let registrations = params.registrations.max(1);
    ctx.bounded("enabling push", (1..=params.users).collect(), move |n| {
        let target = target.clone();
        let service = service.clone();
        let user = format!("{prefix}{n}");
        async move { enable_and_leave(&target, &user, &service, n, registrations).await }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let senders = ctx
        .login_all(
            "logging in senders",
            (params.users + 1..=params.users + params.senders).collect(),
            false,
        )
        .await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let before = Sample::take(ctx.server_pid, ctx.db_pid);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    let mut writers = Vec::new();
    let (sender_count, users) = (params.senders as u64, params.users as u64);
    let mut bounce_readers = JoinSet::new();
    for (index, session) in senders.into_iter().enumerate() {
        bounce_readers.spawn(count_bounces(session.reader, Arc::clone(&recorder)));
        let mut writer = session.writer;
        let recorder = Arc::clone(&recorder);
        let pace = Pace::for_sender(params.rate, index, params.senders, start);
        let (messages, prefix, domain) = (
            params.messages,
            ctx.prefix.clone(),
            ctx.target.domain.clone(),
        );
        let stop = ctx.deadline;
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            let seqs = (index as u64..messages).step_by(sender_count as usize);
            // Message `seq` goes to recipient seq % N + 1: every recipient gets its share.
            let to = |seq: u64| format!("{prefix}{}@{domain}", seq % users + 1);
            let result = send_messages(&mut writer, &recorder, seqs, to, pace, stop).await;
            (writer, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (writer, result) = joined.expect("a sender panicked");
        if let Err(error) = result {
            eprintln!("herald-bench: a sender stopped: {error}");
        }
        writers.push(writer);
    }
    let sent = recorder.sent.load(std::sync::atomic::Ordering::Relaxed);
    let complete = recorder
        .wait_for(sent * u64::from(copies), params.stall, ctx.deadline)
        .await;
    let after = Sample::take(ctx.server_pid, ctx.db_pid);

    let mut report = Report::new("push", &ctx.name, ctx.label.as_deref());
    report.users = Some(params.users);
    report.senders = Some(params.senders);
    report.registrations = Some(params.registrations.max(1));
    report.messages = Some(params.messages);
    report.rate_target = params.rate;
    report.window = window;
    report.setup_s = crate::record::round(setup_s, 3);
    report.summary(recorder.summary());
    report.usage(before.until(&after));
    report.capped = !complete && Instant::now() >= ctx.deadline;
    report.server_rss_before_kib = rss_before;
    report.server_rss_after_kib = after.server_rss;

    close_all(writers).await;
    bounce_readers.abort_all();
    let _ = stop_app.send(());
    match tokio::time::timeout(Duration::from_secs(3), app_task).await {
        Ok(Ok(Err(error))) => eprintln!("herald-bench: the app server's stream failed: {error}"),
        Ok(_) => {}
        Err(_) => eprintln!("herald-bench: the app server's stream did not close in time"),
    }
    Ok(report)
}

/// Log in as `user`, enable push for `registrations` nodes of recipient `n`, close the
/// stream.
async fn enable_and_leave(
    target: &crate::xmpp::Target,
    user: &str,
    service: &str,
    n: usize,
    registrations: usize,
) -> Result<(), BenchError> {
    let mut session = Conn::login(target, user, "bench").await?;
    for k in 0..registrations {
        let id = format!("enable{k}");
        session
            .writer
            .send(&enable_iq(&id, service, &node(n, k)))
            .await?;
        let reply = session.reader.iq_reply(&id).await?;
        if reply.attr("type") != Some("result") {
            return Err(BenchError::Negotiation(format!(
                "enable refused: {}",
                String::from(&reply)
            )));
        }
    }
    session.writer.close().await;
    session.reader.until_closed(Duration::from_secs(5)).await;
    Ok(())
}
