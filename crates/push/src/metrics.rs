//! What the module counts (push.md section 10: "herald counts every outcome"), through the
//! `metrics` facade; the exporter is chosen by the binary.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `herald_push_enables_total` | counter | |
//! | `herald_push_disables_total` | counter | |
//! | `herald_push_notifications_total` | counter | `outcome`: delivered, timeout, rejected_and_disabled, transient_error, dropped_queue_full |
//! | `herald_push_skips_total` | counter | `reason`: see [`Skip::as_str`] |
//! | `herald_push_retries_total` | counter | `event`: see [`RetryEvent::as_str`] |
//! | `herald_push_sessions_total` | counter | `event`: see [`SessionEvent::as_str`] (hibernation, wake-ups, pushes for ack-delayed and inactive sessions) |
//! | `herald_push_paced_total` | counter | `event`: see [`PaceEvent::as_str`] (notifications held by `pacing`, coalesced into a later one, calls sent ahead) |
//! | `herald_push_http_replies_total` | counter | `status`: the HTTP push service's status code, `timeout` or `failed` |
//! | `herald_push_publish_duration_seconds` | histogram | |
//! | `herald_push_queue_depth` | gauge | |
//! | `herald_store_duration_seconds` | histogram | `op`: push_registrations (the lookup on the message path) |
//!
//! The same counts are kept in [`Stats`], which the module and the tests read.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::registrations::RegistrationKey;

pub use crate::vocabulary::Outcome;
use crate::vocabulary::Skip;

/// The id that follows one message's notifications through the logs, from the decision to
/// each publish and its outcome (`request_id` in every line): unique in the process, and
/// across restarts (it starts from the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// A fresh id.
    pub fn next() -> RequestId {
        static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        // Microseconds at first use, so that a restart does not reuse ids.
        let start = *START.get_or_init(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |now| u64::try_from(now.as_micros()).unwrap_or(0))
        });
        RequestId(start.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What became of a notification that failed for a passing reason (`retry.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryEvent {
    /// It will be tried again after a backoff.
    Retried,
    /// Its tries or its time ran out, or it was older than `retry.max_age` at start.
    GaveUp,
    /// Its registration had only failed for `retry.disable_after` and was disabled.
    DisabledFailing,
}

impl RetryEvent {
    /// The event as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryEvent::Retried => "retried",
            RetryEvent::GaveUp => "gave_up",
            RetryEvent::DisabledFailing => "disabled_failing",
        }
    }

    fn index(self) -> usize {
        match self {
            RetryEvent::Retried => 0,
            RetryEvent::GaveUp => 1,
            RetryEvent::DisabledFailing => 2,
        }
    }
}

/// What pacing (`pacing.*`) and calls did to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaceEvent {
    /// Held: its registration had been notified too recently (rate limit or window).
    Held,
    /// Replaced by a later notification to the same registration while held.
    Coalesced,
    /// A call, sent at once ahead of every other notification.
    Urgent,
}

impl PaceEvent {
    /// The event as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PaceEvent::Held => "held",
            PaceEvent::Coalesced => "coalesced",
            PaceEvent::Urgent => "urgent",
        }
    }

    fn index(self) -> usize {
        match self {
            PaceEvent::Held => 0,
            PaceEvent::Coalesced => 1,
            PaceEvent::Urgent => 2,
        }
    }
}

/// What happened to a session because of push (docs/modules/push.md, "Sessions that sleep").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEvent {
    /// A session with push enabled started hibernating past `resume_timeout`.
    Hibernating,
    /// A wake-up notification was queued shortly before a hibernating session's end.
    Woken,
    /// A wake-up notification was queued at start for a session hibernating at the stop.
    WokenAtStart,
    /// A notification was queued for a message left unacknowledged for `max_ack_delay`.
    AckDelayed,
    /// A notification was queued for a message to an inactive client (XEP-0352).
    Inactive,
}

impl SessionEvent {
    /// Every event, in the order the counts keep them.
    pub const ALL: [SessionEvent; 5] = [
        SessionEvent::Hibernating,
        SessionEvent::Woken,
        SessionEvent::WokenAtStart,
        SessionEvent::AckDelayed,
        SessionEvent::Inactive,
    ];

    /// The event as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEvent::Hibernating => "hibernating",
            SessionEvent::Woken => "woken",
            SessionEvent::WokenAtStart => "woken_at_start",
            SessionEvent::AckDelayed => "ack_delayed",
            SessionEvent::Inactive => "inactive",
        }
    }

    fn index(self) -> usize {
        match self {
            SessionEvent::Hibernating => 0,
            SessionEvent::Woken => 1,
            SessionEvent::WokenAtStart => 2,
            SessionEvent::AckDelayed => 3,
            SessionEvent::Inactive => 4,
        }
    }
}

/// The last outcomes of one registration's publishes since start (the admin API shows them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastOutcomes {
    /// When a publish last succeeded.
    pub success: Option<SystemTime>,
    /// When a publish last failed, and what the app server answered.
    pub error: Option<(SystemTime, String)>,
    /// Since when every publish has failed (the first failure after the last success), on
    /// the runtime's clock.
    pub failing_since: Option<tokio::time::Instant>,
}

/// The module's counts since start.
#[derive(Debug, Default)]
pub struct Stats {
    enables: AtomicU64,
    disables: AtomicU64,
    notifications: [AtomicU64; Outcome::ALL.len()],
    skips: AtomicU64,
    sessions: [AtomicU64; SessionEvent::ALL.len()],
    retries: [AtomicU64; 3],
    paced: [AtomicU64; 3],
    /// Per registration notified since start; entries go with their registration.
    last: Mutex<HashMap<RegistrationKey, LastOutcomes>>,
}

impl Stats {
    /// Registrations enabled.
    pub fn enables(&self) -> u64 {
        self.enables.load(Ordering::Relaxed)
    }

    /// Registrations disabled (by the user or by an app server's cancel error).
    pub fn disables(&self) -> u64 {
        self.disables.load(Ordering::Relaxed)
    }

    /// Notifications that ended with `outcome`.
    pub fn notifications(&self, outcome: Outcome) -> u64 {
        self.notifications[outcome.index()].load(Ordering::Relaxed)
    }

    /// Events (or registrations) skipped, all reasons together.
    pub fn skips(&self) -> u64 {
        self.skips.load(Ordering::Relaxed)
    }

    /// How many notifications `event` happened to.
    pub fn retries(&self, event: RetryEvent) -> u64 {
        self.retries[event.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn retry(&self, event: RetryEvent) {
        self.retries[event.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_retries_total", "event" => event.as_str()).increment(1);
    }

    /// Since when every notification to `key` has failed, if its last one did.
    pub fn failing_since(&self, key: &RegistrationKey) -> Option<tokio::time::Instant> {
        self.lock_last()
            .get(key)
            .and_then(|last| last.failing_since)
    }

    /// How many notifications `event` happened to.
    pub fn paced(&self, event: PaceEvent) -> u64 {
        self.paced[event.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn pace(&self, event: PaceEvent) {
        self.paced[event.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_paced_total", "event" => event.as_str()).increment(1);
    }

    /// How many times `event` happened.
    pub fn sessions(&self, event: SessionEvent) -> u64 {
        self.sessions[event.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn session(&self, event: SessionEvent) {
        self.sessions[event.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_sessions_total", "event" => event.as_str()).increment(1);
    }

    /// The last outcomes of `key`'s publishes since start.
    pub fn last(&self, key: &RegistrationKey) -> LastOutcomes {
        self.lock_last().get(key).cloned().unwrap_or_default()
    }

    /// Remember the outcome of a publish to `key`.
    pub(crate) fn record_last(&self, key: &RegistrationKey, outcome: Outcome, answer: &str) {
        let now = SystemTime::now();
        let mut last = self.lock_last();
        if outcome == Outcome::RejectedAndDisabled {
            last.remove(key);
            return;
        }
        let entry = match last.get_mut(key) {
            Some(entry) => entry,
            None => last.entry(key.clone()).or_default(),
        };
        if outcome == Outcome::Delivered {
            entry.success = Some(now);
            entry.failing_since = None;
        } else {
            entry.error = Some((now, answer.to_owned()));
            entry
                .failing_since
                .get_or_insert_with(tokio::time::Instant::now);
        }
    }

    /// Forget a registration that was disabled.
    pub(crate) fn forget(&self, key: &RegistrationKey) {
        self.lock_last().remove(key);
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, HashMap<RegistrationKey, LastOutcomes>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enabled(&self) {
        self.enables.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_enables_total").increment(1);
    }

    pub(crate) fn disabled(&self, count: u64) {
        self.disables.fetch_add(count, Ordering::Relaxed);
        metrics::counter!("herald_push_disables_total").increment(count);
    }

    pub(crate) fn notification(&self, outcome: Outcome) {
        self.notifications[outcome.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_notifications_total", "outcome" => outcome.as_str())
            .increment(1);
    }

    pub(crate) fn skipped(&self, reason: Skip) {
        self.skips.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_push_skips_total", "reason" => reason.as_str()).increment(1);
    }

    pub(crate) fn http_reply(&self, reply: &crate::mongoosepush::HttpOutcome) {
        use crate::mongoosepush::HttpOutcome;
        let status = match reply {
            HttpOutcome::Status(status) | HttpOutcome::RetryAfter(status, _) => status.to_string(),
            HttpOutcome::Timeout => "timeout".to_owned(),
            HttpOutcome::Failed(_) => "failed".to_owned(),
        };
        metrics::counter!("herald_push_http_replies_total", "status" => status).increment(1);
    }

    pub(crate) fn publish_latency(&self, elapsed: Duration) {
        metrics::histogram!("herald_push_publish_duration_seconds").record(elapsed.as_secs_f64());
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        metrics::gauge!("herald_push_queue_depth").set(depth as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;

    /// Records counters and gauges by name and labels, e.g. `name{outcome=delivered}`.
    #[derive(Default)]
    struct Record(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Record {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::clone(self.0.lock().unwrap().entry(name).or_default())
        }

        fn value(&self, name: &str) -> Option<u64> {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map(|cell| cell.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Record {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn every_outcome_and_skip_is_counted_through_the_metrics_facade() {
        let record = Record::default();
        let stats = Stats::default();
        metrics::with_local_recorder(&record, || {
            stats.enabled();
            stats.disabled(2);
            for outcome in Outcome::ALL {
                stats.notification(outcome);
            }
            stats.notification(Outcome::Delivered);
            stats.skipped(Skip::RecipientOnline);
            stats.queue_depth(3);
        });
        assert_eq!(record.value("herald_push_enables_total{}"), Some(1));
        assert_eq!(record.value("herald_push_disables_total{}"), Some(2));
        assert_eq!(
            record.value("herald_push_notifications_total{outcome=delivered}"),
            Some(2)
        );
        for outcome in [
            "timeout",
            "rejected_and_disabled",
            "transient_error",
            "dropped_queue_full",
        ] {
            assert_eq!(
                record.value(&format!(
                    "herald_push_notifications_total{{outcome={outcome}}}"
                )),
                Some(1),
                "{outcome}"
            );
        }
        assert_eq!(
            record.value("herald_push_skips_total{reason=recipient_online}"),
            Some(1)
        );
        assert!(record.value("herald_push_queue_depth{}").is_some());
        assert_eq!(stats.notifications(Outcome::Delivered), 2);
        assert_eq!(
            (stats.enables(), stats.disables(), stats.skips()),
            (1, 2, 1)
        );
    }
}
