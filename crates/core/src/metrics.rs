//! What the core counts, through the `metrics` facade (the binary chooses the exporter:
//! Prometheus, docs/operations.md). Without an installed recorder every call is a no-op.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `herald_connections` | gauge | `kind`: c2s, component, s2s_in, s2s_out |
//! | `herald_sessions` | gauge | |
//! | `herald_stanzas_routed_total` | counter | `kind`: message, presence, iq |
//! | `herald_offline_stored_total` | counter | |
//! | `herald_offline_delivered_total` | counter | |
//! | `herald_lane_messages` | gauge | |
//! | `herald_sm_resumptions_total` | counter | `result`: resumed, failed |
//! | `herald_store_duration_seconds` | histogram | `op`: offline_store, offline_remove, archive_append (and push_registrations, from the push module) |

use std::time::Instant;

/// An open connection of `kind`, counted while this lives.
pub(crate) struct Connection(&'static str);

impl Connection {
    pub(crate) fn open(kind: &'static str) -> Connection {
        metrics::gauge!("herald_connections", "kind" => kind).increment(1.0);
        Connection(kind)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        metrics::gauge!("herald_connections", "kind" => self.0).decrement(1.0);
    }
}

/// A session bound (+1) or unbound (-1).
pub(crate) fn sessions(change: f64) {
    metrics::gauge!("herald_sessions").increment(change);
}

/// A stanza routed.
pub(crate) fn routed(kind: &'static str) {
    metrics::counter!("herald_stanzas_routed_total", "kind" => kind).increment(1);
}

/// Offline messages stored.
pub(crate) fn offline_stored() {
    metrics::counter!("herald_offline_stored_total").increment(1);
}

/// A message handed to a recipient lane (`crate::lanes`).
pub(crate) fn lane_queued() {
    metrics::gauge!("herald_lane_messages").increment(1.0);
}

/// A recipient lane handled a message.
pub(crate) fn lane_done() {
    metrics::gauge!("herald_lane_messages").decrement(1.0);
}

/// Offline messages delivered.
pub(crate) fn offline_delivered(count: usize) {
    metrics::counter!("herald_offline_delivered_total").increment(count as u64);
}

/// A resumption attempt's result.
pub(crate) fn resumption(resumed: bool) {
    let result = if resumed { "resumed" } else { "failed" };
    metrics::counter!("herald_sm_resumptions_total", "result" => result).increment(1);
}

/// How long a store operation took since `started` (the one place this histogram is recorded;
/// feature crates call it too).
pub fn store_latency(op: &'static str, started: Instant) {
    metrics::histogram!("herald_store_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
}
