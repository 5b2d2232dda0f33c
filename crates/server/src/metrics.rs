//! The Prometheus recorder behind the `metrics` facade every crate counts through
//! (`[instrumentation.prometheus]`, served by a `mongoose_prometheus_handler`). What is
//! counted is listed in docs/operations.md.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Install the recorder (once per process; later calls return the same handle).
///
/// # Errors
///
/// When another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_gauge!(
        "herald_connections",
        "Open connections, by kind (c2s, component, s2s_in, s2s_out)."
    );
    describe_gauge!("herald_sessions", "Bound client sessions.");
    describe_counter!(
        "herald_stanzas_routed_total",
        "Stanzas routed, by kind (message, presence, iq)."
    );
    describe_counter!(
        "herald_offline_stored_total",
        "Messages stored for offline users."
    );
    describe_counter!(
        "herald_offline_delivered_total",
        "Offline messages delivered to a session."
    );
    describe_counter!(
        "herald_sm_resumptions_total",
        "Stream management resumptions, by result (resumed, failed)."
    );
    describe_histogram!(
        "herald_store_duration_seconds",
        Unit::Seconds,
        "Store operations on the message path, by operation."
    );
    describe_counter!("herald_push_enables_total", "Push registrations enabled.");
    describe_counter!(
        "herald_push_disables_total",
        "Push registrations disabled (by users, admins or app servers)."
    );
    describe_counter!(
        "herald_push_notifications_total",
        "Push notifications, by outcome."
    );
    describe_counter!(
        "herald_push_skips_total",
        "Messages or registrations not pushed, by reason."
    );
    describe_counter!(
        "herald_push_http_replies_total",
        "Replies of the HTTP push service, by status."
    );
    describe_histogram!(
        "herald_push_publish_duration_seconds",
        Unit::Seconds,
        "From sending a publish to its answer."
    );
    describe_gauge!(
        "herald_push_queue_depth",
        "Notifications waiting for a publisher worker."
    );
}
