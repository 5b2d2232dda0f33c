//! What the module counts (spec section 10: "herald counts every outcome"), through the
//! `metrics` facade; the exporter is chosen by the binary.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `herald_push_enables_total` | counter | |
//! | `herald_push_disables_total` | counter | |
//! | `herald_push_notifications_total` | counter | `outcome`: delivered, timeout, rejected_and_disabled, transient_error, dropped_queue_full |
//! | `herald_push_skips_total` | counter | `reason`: see [`Skip::as_str`] |
//! | `herald_push_publish_duration_seconds` | histogram | |
//! | `herald_push_queue_depth` | gauge | |
//!
//! The same counts are kept in [`Stats`], which the module and the tests read.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::plugin::Skip;

/// How one notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The app server answered `result`.
    Delivered,
    /// No answer within the reply timeout; the registration is kept.
    Timeout,
    /// A `cancel` error: the registration was disabled.
    RejectedAndDisabled,
    /// Another error, or the IQ could not be sent; the registration is kept.
    TransientError,
    /// The publisher's queue was full; the notification was never sent.
    DroppedQueueFull,
}

impl Outcome {
    /// Every outcome, in the order of [`Stats::notifications`].
    pub const ALL: [Outcome; 5] = [
        Outcome::Delivered,
        Outcome::Timeout,
        Outcome::RejectedAndDisabled,
        Outcome::TransientError,
        Outcome::DroppedQueueFull,
    ];

    /// The outcome as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Timeout => "timeout",
            Outcome::RejectedAndDisabled => "rejected_and_disabled",
            Outcome::TransientError => "transient_error",
            Outcome::DroppedQueueFull => "dropped_queue_full",
        }
    }

    fn index(self) -> usize {
        match self {
            Outcome::Delivered => 0,
            Outcome::Timeout => 1,
            Outcome::RejectedAndDisabled => 2,
            Outcome::TransientError => 3,
            Outcome::DroppedQueueFull => 4,
        }
    }
}

/// The module's counts since start.
#[derive(Debug, Default)]
pub struct Stats {
    enables: AtomicU64,
    disables: AtomicU64,
    notifications: [AtomicU64; 5],
    skips: AtomicU64,
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

    pub(crate) fn publish_latency(&self, elapsed: Duration) {
        metrics::histogram!("herald_push_publish_duration_seconds").record(elapsed.as_secs_f64());
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        metrics::gauge!("herald_push_queue_depth").set(depth as f64);
    }
}
