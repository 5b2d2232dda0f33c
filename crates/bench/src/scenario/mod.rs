//! The four scenarios of issue 10 and what they share: bounded-concurrency logins, senders
//! that pace or window their messages, and readers that count what comes back.

pub mod enable;
pub mod idle;
pub mod push;
pub mod route;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use crate::{
    error::BenchError,
    record::Recorder,
    xmpp::{Conn, Reader, Session, Target, Writer},
};

/// What every scenario needs.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The c2s target.
    pub target: Target,
    /// Accounts are `{prefix}{n}`, n from 1.
    pub prefix: String,
    /// The server's name in reports.
    pub name: String,
    /// The comparison label.
    pub label: Option<String>,
    /// The server's PID, for its CPU and RSS.
    pub server_pid: Option<u32>,
    /// The database server's PID, for its CPU (children included).
    pub db_pid: Option<u32>,
    /// Logins in progress at once.
    pub concurrency: usize,
    /// When everything must have stopped.
    pub deadline: Instant,
}

impl Ctx {
    /// Account number `n`'s local part.
    pub fn user(&self, n: usize) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Run `f` for each of `items` with at most `concurrency` at once; results in order.
    /// The first failure is returned (after all finished), and the deadline stops all.
    pub async fn bounded<I, T, F, Fut>(
        &self,
        what: &'static str,
        items: Vec<I>,
        f: F,
    ) -> Result<Vec<T>, BenchError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I) -> Fut,
        Fut: Future<Output = Result<T, BenchError>> + Send + 'static,
    {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut set = JoinSet::new();
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let permits = Arc::clone(&permits);
            let fut = f(item);
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, fut.await)
            });
        }
        let collect = async {
            let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
            let mut first_error = None;
            let mut failures = 0usize;
            while let Some(joined) = set.join_next().await {
                let (index, result) = joined.expect("a setup task panicked");
                match result {
                    Ok(value) => out[index] = Some(value),
                    Err(error) => {
                        failures += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            match first_error {
                Some(error) => {
                    eprintln!(
                        "herald-bench: {what}: {failures} of {count} failed; the first: {error}"
                    );
                    Err(error)
                }
                None => Ok(out
                    .into_iter()
                    .map(|v| v.expect("every task reported"))
                    .collect()),
            }
        };
        tokio::time::timeout_at(self.deadline, collect)
            .await
            .map_err(|_| BenchError::Capped(what))?
    }

    /// Log in accounts `numbers` (resource `bench`), optionally with initial presence.
    pub async fn login_all(
        &self,
        what: &'static str,
        numbers: Vec<usize>,
        presence: bool,
    ) -> Result<Vec<Session>, BenchError> {
        let target = self.target.clone();
        let users: Vec<String> = numbers.iter().map(|&n| self.user(n)).collect();
        self.bounded(what, users, move |user| {
            let target = target.clone();
            async move {
                let mut session = Conn::login(&target, &user, "bench").await?;
                if presence {
                    session.writer.send("<presence/>").await?;
                }
                Ok(session)
            }
        })
        .await
    }
}

/// How a sender spaces its messages.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// The k-th message leaves at `start + k * interval`.
    Rate {
        /// The first message's time.
        start: Instant,
        /// Time between two messages of this sender.
        interval: Duration,
    },
    /// As fast as the window allows.
    FlatOut,
}

impl Pace {
    /// Sender `index` of `senders` sharing `rate` messages per second (none: flat out),
    /// starting at `start`, staggered so that the senders interleave.
    pub fn for_sender(rate: Option<f64>, index: usize, senders: usize, start: Instant) -> Pace {
        match rate {
            Some(rate) if rate > 0.0 => {
                let interval = Duration::from_secs_f64(senders as f64 / rate);
                let offset = Duration::from_secs_f64(index as f64 / rate);
                Pace::Rate {
                    start: start + offset,
                    interval,
                }
            }
            _ => Pace::FlatOut,
        }
    }
}

/// Flush when this much is buffered.
const BATCH_BYTES: usize = 16 * 1024;

/// Send chat messages `seqs` (each to `to(seq)`) stamped by `recorder`, paced by `pace`;
/// stops at `stop`. Writes are batched: a buffer is flushed when full or before waiting.
pub async fn send_messages(
    writer: &mut Writer,
    recorder: &Recorder,
    seqs: impl Iterator<Item = u64>,
    to: impl Fn(u64) -> String,
    pace: Pace,
    stop: Instant,
) -> Result<(), BenchError> {
    let mut buf = String::with_capacity(BATCH_BYTES + 512);
    for (k, seq) in seqs.enumerate() {
        if Instant::now() >= stop {
            break;
        }
        if let Pace::Rate { start, interval } = pace {
            let due = start + interval * k as u32;
            if due > Instant::now() {
                if !buf.is_empty() {
                    writer.send(&buf).await?;
                    buf.clear();
                }
                tokio::time::sleep_until(due.min(stop)).await;
            }
        }
        if let Some(window) = &recorder.window {
            match window.try_acquire_many(recorder.copies) {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    if !buf.is_empty() {
                        writer.send(&buf).await?;
                        buf.clear();
                    }
                    match tokio::time::timeout_at(stop, window.acquire_many(recorder.copies)).await
                    {
                        Ok(Ok(permit)) => permit.forget(),
                        _ => break,
                    }
                }
            }
        }
        let body = recorder.stamp(seq);
        buf.push_str("<message type='chat' id='m");
        buf.push_str(&seq.to_string());
        buf.push_str("' to='");
        buf.push_str(&to(seq));
        buf.push_str("'><body>");
        buf.push_str(&body);
        buf.push_str("</body></message>");
        if buf.len() >= BATCH_BYTES {
            writer.send(&buf).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        writer.send(&buf).await?;
    }
    Ok(())
}

/// Read a sender's stream until it ends, counting the error stanzas it gets back.
pub async fn count_bounces(mut reader: Reader, recorder: Arc<Recorder>) {
    while let Ok(Some(stanza)) = reader.next().await {
        if stanza.attr("type") == Some("error") {
            recorder
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Close every session, politely and without waiting long.
pub async fn close_all(writers: impl IntoIterator<Item = Writer>) {
    let mut set = JoinSet::new();
    for mut writer in writers {
        set.spawn(async move { writer.close().await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), set.join_all()).await;
}
