//! What arrives: each message carries its run, sequence number and send time in its body
//! (`hb RUN SEQ MICROS`); the receiving side reads them back and records delivery, duplicates
//! and latency. A message of another run (an offline message delivered at login, a late
//! publish) is not counted. Latencies are kept whole (microseconds) and sorted once at the end.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

/// The body of message `seq` of run `run`, sent at `micros` since the recorder's start.
pub fn body(run: u32, seq: u64, micros: u64) -> String {
    format!("hb {run} {seq} {micros}")
}

/// (run, seq, micros) from a body.
fn parse_body(body: &str) -> Option<(u32, u64, u64)> {
    let mut parts = body.strip_prefix("hb ")?.split(' ');
    let run = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let micros = parts.next()?.parse().ok()?;
    Some((run, seq, micros))
}

/// Shared by the senders and the receivers of one scenario.
pub struct Recorder {
    start: Instant,
    run: u32,
    seen: Vec<AtomicU64>,
    /// Messages written to the server.
    pub sent: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    unrecognised: AtomicU64,
    /// Error stanzas the senders got back (bounces).
    pub errors: AtomicU64,
    first_send: AtomicU64,
    last_arrival: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    /// Woken at every arrival.
    pub progress: Notify,
    /// Flow control for flat-out runs: a permit per arrival awaited ([`Recorder::copies`]
    /// per message in flight).
    pub window: Option<Semaphore>,
    /// Arrivals each message makes (a push per registration of its recipient).
    pub copies: u32,
}

impl Recorder {
    /// A recorder for messages `0..messages`, each arriving once, with at most `window` in
    /// flight if given.
    pub fn new(messages: u64, window: Option<usize>) -> Recorder {
        Recorder::with_copies(messages, window, 1)
    }

    /// A recorder for messages `0..messages` that each arrive `copies` times (copy 0 to
    /// `copies - 1`: a push to each of the recipient's registrations).
    pub fn with_copies(messages: u64, window: Option<usize>, copies: u32) -> Recorder {
        let copies = copies.max(1);
        let mut run = [0u8; 4];
        // Without randomness, runs are still told apart by the clock.
        if getrandom::fill(&mut run).is_err() {
            run = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos())
            .to_ne_bytes();
        }
        Recorder {
            start: Instant::now(),
            run: u32::from_ne_bytes(run),
            seen: (0..(messages * u64::from(copies)).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unrecognised: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_send: AtomicU64::new(u64::MAX),
            last_arrival: AtomicU64::new(0),
            latencies: Mutex::new(Vec::with_capacity(messages as usize)),
            progress: Notify::new(),
            window: window.map(|w| Semaphore::new(w * copies as usize)),
            copies,
        }
    }

    /// Microseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The body for message `seq`, stamped now, counted as sent.
    pub fn stamp(&self, seq: u64) -> String {
        let now = self.now();
        self.first_send.fetch_min(now, Relaxed);
        self.sent.fetch_add(1, Relaxed);
        body(self.run, seq, now)
    }

    /// Count a round trip that started at `started` (microseconds from [`Recorder::now`]).
    pub fn round_trip(&self, started: u64) {
        let now = self.now();
        self.first_send.fetch_min(started, Relaxed);
        self.last_arrival.fetch_max(now, Relaxed);
        self.delivered.fetch_add(1, Relaxed);
        self.latencies
            .lock()
            .expect("never poisoned")
            .push(now.saturating_sub(started).min(u32::MAX as u64) as u32);
    }

    /// A message body arrived (its first copy, or its only one).
    pub fn observe(&self, body: &str) {
        self.observe_copy(body, 0);
    }

    /// Copy `copy` of a message body arrived; a copy number out of range is not ours.
    pub fn observe_copy(&self, body: &str, copy: u32) {
        let Some((run, seq, sent_at)) = parse_body(body) else {
            self.unrecognised();
            return;
        };
        if run != self.run || copy >= self.copies {
            self.unrecognised();
            return;
        }
        let seq = seq * u64::from(self.copies) + u64::from(copy);
        let Some(word) = self.seen.get((seq / 64) as usize) else {
            self.unrecognised();
            return;
        };
        let bit = 1u64 << (seq % 64);
        if word.fetch_or(bit, Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Relaxed);
            return;
        }
        let now = self.now();
        self.last_arrival.fetch_max(now, Relaxed);
        self.delivered.fetch_add(1, Relaxed);
        self.latencies
            .lock()
            .expect("never poisoned")
            .push(now.saturating_sub(sent_at).min(u32::MAX as u64) as u32);
        if let Some(window) = &self.window {
            window.add_permits(1);
        }
        self.progress.notify_waiters();
    }

    /// Something arrived that is not one of ours (or has no readable body).
    pub fn unrecognised(&self) {
        self.unrecognised.fetch_add(1, Relaxed);
    }

    /// Distinct arrivals (message and copy) so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    /// Wait until `expected` messages arrived, nothing arrived for `stall`, or `deadline`.
    /// Returns whether everything arrived.
    pub async fn wait_for(
        &self,
        expected: u64,
        stall: Duration,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            let before = self.delivered();
            if before >= expected {
                return true;
            }
            let progress = self.progress.notified();
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = stall.min(deadline - now);
            // Also wake periodically: a notification may race with the check above.
            let tick = wait.min(Duration::from_millis(200));
            let _ = tokio::time::timeout(tick, progress).await;
            if self.delivered() == before && self.idle_for() >= stall {
                return false;
            }
        }
    }

    /// How long since the last arrival (or since the first send, if nothing arrived).
    fn idle_for(&self) -> Duration {
        let last = self
            .last_arrival
            .load(Relaxed)
            .max(self.first_send.load(Relaxed).min(self.now()));
        Duration::from_micros(self.now().saturating_sub(last))
    }

    /// The figures so far.
    pub fn summary(&self) -> Summary {
        let mut latencies = self.latencies.lock().expect("never poisoned").clone();
        latencies.sort_unstable();
        let first = self.first_send.load(Relaxed);
        let last = self.last_arrival.load(Relaxed);
        let span = if first == u64::MAX || last <= first {
            0.0
        } else {
            (last - first) as f64 / 1e6
        };
        let sent = self.sent.load(Relaxed);
        let delivered = self.delivered();
        let expected = sent * u64::from(self.copies);
        Summary {
            sent,
            delivered,
            delivery_ratio: if expected == 0 {
                None
            } else {
                Some(round(delivered as f64 / expected as f64, 4))
            },
            duplicates: self.duplicates.load(Relaxed),
            errors: self.errors.load(Relaxed),
            unrecognised: self.unrecognised.load(Relaxed),
            span_s: round(span, 3),
            per_second: if span > 0.0 {
                Some(round(delivered as f64 / span, 1))
            } else {
                None
            },
            latency_ms: Latency::of(&latencies),
        }
    }
}

/// Round to `digits` decimals, for readable JSON.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Delivery and latency of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Messages (or requests) sent.
    pub sent: u64,
    /// Distinct arrivals: messages (each copy of one), publishes or answered requests.
    pub delivered: u64,
    /// delivered / sent.
    pub delivery_ratio: Option<f64>,
    /// Messages that arrived more than once.
    pub duplicates: u64,
    /// Error stanzas the senders got back.
    pub errors: u64,
    /// Arrivals that were not ours.
    pub unrecognised: u64,
    /// From the first send to the last arrival, in seconds.
    pub span_s: f64,
    /// delivered / span.
    pub per_second: Option<f64>,
    /// Latency percentiles.
    pub latency_ms: Option<Latency>,
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The slowest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of sorted microsecond latencies.
    pub fn of(sorted: &[u32]) -> Option<Latency> {
        let last = *sorted.last()?;
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        let ms = |micros: u32| round(micros as f64 / 1000.0, 3);
        Some(Latency {
            p50: ms(rank(50.0)),
            p95: ms(rank(95.0)),
            p99: ms(rank(99.0)),
            max: ms(last),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_sequence_and_time() {
        assert_eq!(parse_body(&body(7, 42, 1234567)), Some((7, 42, 1234567)));
        assert_eq!(parse_body("hello"), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let latency = Latency::of(&sorted).unwrap();
        assert_eq!(
            latency,
            Latency {
                p50: 50.0,
                p95: 95.0,
                p99: 99.0,
                max: 100.0
            }
        );
        assert_eq!(Latency::of(&[]), None);
    }

    #[test]
    fn a_message_of_another_run_is_not_counted() {
        let earlier = Recorder::new(10, None);
        let recorder = Recorder::new(10, None);
        recorder.observe(&earlier.stamp(3));
        let summary = recorder.summary();
        assert_eq!((summary.delivered, summary.unrecognised), (0, 1));
    }

    #[test]
    fn a_second_arrival_of_a_message_is_a_duplicate() {
        let recorder = Recorder::new(10, None);
        let first = recorder.stamp(3);
        recorder.observe(&first);
        recorder.observe(&first);
        recorder.observe("not ours");
        let summary = recorder.summary();
        assert_eq!(
            (
                summary.sent,
                summary.delivered,
                summary.duplicates,
                summary.unrecognised
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn each_copy_of_a_message_counts_once_and_the_window_waits_for_all() {
        let recorder = Recorder::with_copies(10, Some(2), 3);
        assert_eq!(
            recorder.window.as_ref().map(|w| w.available_permits()),
            Some(6)
        );
        let body = recorder.stamp(9);
        for copy in [0, 2, 1, 2] {
            recorder.observe_copy(&body, copy);
        }
        // A fourth device the run did not register is not one of ours.
        recorder.observe_copy(&body, 3);
        let summary = recorder.summary();
        assert_eq!(
            (
                summary.sent,
                summary.delivered,
                summary.duplicates,
                summary.unrecognised
            ),
            (1, 3, 1, 1)
        );
        assert_eq!(summary.delivery_ratio, Some(1.0));
        assert_eq!(
            recorder.window.as_ref().map(|w| w.available_permits()),
            Some(9)
        );
    }
}
