//! One scenario's figures: printed as a table for people and as one JSON line for scripts;
//! `herald-bench report` turns JSON lines from several targets into a markdown comparison.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    procstat::Usage,
    record::{Latency, Summary, round},
};

/// Everything a run reports. Fields that do not apply to a scenario are absent from the JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// `push`, `enable`, `idle` or `route`.
    pub scenario: String,
    /// The server's name (`--target`).
    pub target: String,
    /// What this run stands for in a comparison (`--label`, default: the scenario).
    pub label: String,
    /// Push recipients, or enable/disable sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    /// Sending sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<usize>,
    /// Push registrations per recipient (a publish each per message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registrations: Option<usize>,
    /// Sessions held open (idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    /// Messages the run meant to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Target send rate per second; absent when flat out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_target: Option<f64>,
    /// Most messages in flight when flat out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Messages or requests sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Distinct arrivals (publishes, messages, IQ replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// delivered / sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_ratio: Option<f64>,
    /// Arrivals of a message already seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    /// Error replies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Arrivals that were not the tool's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrecognised: Option<u64>,
    /// Notifications, messages or round trips per second, from the first send to the last
    /// arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// Latency from send to arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Server RSS before the sessions were opened (idle) or the recipients enabled (push), KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS with the sessions open, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_after_kib: Option<u64>,
    /// (after - before) / sessions, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_session_kib: Option<f64>,
    /// The measured phase's wall-clock time, seconds.
    pub measured_s: f64,
    /// The server's CPU time in the measured phase, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// The server's CPU time / wall-clock time (1.0 = one core busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_cores: Option<f64>,
    /// The database server's CPU time (its child processes included) in the measured phase,
    /// seconds (`--db-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_cpu_s: Option<f64>,
    /// The database server's CPU time / wall-clock time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_cpu_cores: Option<f64>,
    /// CPU seconds of the server plus the database server (when measured) per 1,000
    /// arrivals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_1000: Option<f64>,
    /// The tool's own CPU time in the measured phase, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_cpu_s: Option<f64>,
    /// The tool's CPU time / wall-clock time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_cpu_cores: Option<f64>,
    /// Logins and other preparation before measuring, seconds.
    pub setup_s: f64,
    /// The time cap stopped the run before it finished.
    pub capped: bool,
}

impl Report {
    /// A report for `scenario` with the common fields.
    pub fn new(scenario: &str, target: &str, label: Option<&str>) -> Report {
        Report {
            scenario: scenario.into(),
            target: target.into(),
            label: label.unwrap_or(scenario).into(),
            ..Report::default()
        }
    }

    /// Take the delivery and latency figures.
    pub fn summary(&mut self, summary: Summary) {
        self.sent = Some(summary.sent);
        self.delivered = Some(summary.delivered);
        self.delivery_ratio = summary.delivery_ratio;
        self.duplicates = Some(summary.duplicates);
        self.errors = Some(summary.errors);
        self.unrecognised = Some(summary.unrecognised);
        self.per_second = summary.per_second;
        self.latency_ms = summary.latency_ms;
    }

    /// Take the CPU figures of the measured phase (after [`Report::summary`], for the CPU per
    /// arrival).
    pub fn usage(&mut self, usage: Usage) {
        let wall = usage.wall.as_secs_f64();
        self.measured_s = round(wall, 3);
        let cores = |cpu: f64| {
            if wall > 0.0 {
                round(cpu / wall, 3)
            } else {
                0.0
            }
        };
        if let Some(cpu) = usage.server_cpu {
            self.server_cpu_s = Some(round(cpu.as_secs_f64(), 3));
            self.server_cpu_cores = Some(cores(cpu.as_secs_f64()));
        }
        if let Some(cpu) = usage.db_cpu {
            self.db_cpu_s = Some(round(cpu.as_secs_f64(), 3));
            self.db_cpu_cores = Some(cores(cpu.as_secs_f64()));
        }
        if let (Some(server), Some(delivered)) = (usage.server_cpu, self.delivered)
            && delivered > 0
        {
            let cpu = server + usage.db_cpu.unwrap_or_default();
            self.cpu_s_per_1000 = Some(round(cpu.as_secs_f64() * 1000.0 / delivered as f64, 3));
        }
        if let Some(cpu) = usage.tool_cpu {
            self.tool_cpu_s = Some(round(cpu.as_secs_f64(), 3));
            self.tool_cpu_cores = Some(cores(cpu.as_secs_f64()));
        }
    }

    /// The human table: one `name  value` row per field present.
    pub fn table(&self) -> String {
        let value = serde_json::to_value(self).expect("a report serialises");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "herald-bench {} against {}",
            self.scenario, self.target
        );
        let order = serde_json::to_string(self).expect("a report serialises");
        // Rows in declaration order: walk the JSON text's keys, read values from the map.
        for key in top_level_keys(&order) {
            let field = &value[key.as_str()];
            let text = match field {
                serde_json::Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join("  "),
                other => other.to_string().trim_matches('"').to_owned(),
            };
            let _ = writeln!(out, "  {key:<22} {text}");
        }
        out
    }
}

/// The keys of a flat JSON object's top level, in the order they appear.
fn top_level_keys(json: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut keys: Vec<(usize, String)> = map
        .keys()
        .filter_map(|k| json.find(&format!("\"{k}\":")).map(|at| (at, k.clone())))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

/// A row of the comparison: its title, how to read it from a report, and whether higher
/// is better (for the ratio's reading).
struct Metric {
    title: &'static str,
    read: fn(&Report) -> Option<f64>,
}

const METRICS: &[Metric] = &[
    Metric {
        title: "target rate (/s)",
        read: |r| r.rate_target,
    },
    Metric {
        title: "per second",
        read: |r| r.per_second,
    },
    Metric {
        title: "delivery ratio",
        read: |r| r.delivery_ratio,
    },
    Metric {
        title: "duplicates",
        read: |r| r.duplicates.map(|d| d as f64),
    },
    Metric {
        title: "errors",
        read: |r| r.errors.map(|d| d as f64),
    },
    Metric {
        title: "latency p50 (ms)",
        read: |r| r.latency_ms.map(|l| l.p50),
    },
    Metric {
        title: "latency p95 (ms)",
        read: |r| r.latency_ms.map(|l| l.p95),
    },
    Metric {
        title: "latency p99 (ms)",
        read: |r| r.latency_ms.map(|l| l.p99),
    },
    Metric {
        title: "latency max (ms)",
        read: |r| r.latency_ms.map(|l| l.max),
    },
    Metric {
        title: "sessions",
        read: |r| r.sessions.map(|s| s as f64),
    },
    Metric {
        title: "server RSS before (MiB)",
        read: |r| r.server_rss_before_kib.map(|k| round(k as f64 / 1024.0, 1)),
    },
    Metric {
        title: "server RSS after (MiB)",
        read: |r| r.server_rss_after_kib.map(|k| round(k as f64 / 1024.0, 1)),
    },
    Metric {
        title: "RSS per session (KiB)",
        read: |r| r.rss_per_session_kib,
    },
    Metric {
        title: "server CPU (cores)",
        read: |r| r.server_cpu_cores,
    },
    Metric {
        title: "database CPU (cores)",
        read: |r| r.db_cpu_cores,
    },
    Metric {
        title: "CPU s per 1,000 (server + database)",
        read: |r| r.cpu_s_per_1000,
    },
    Metric {
        title: "herald-bench CPU (cores)",
        read: |r| r.tool_cpu_cores,
    },
    Metric {
        title: "measured (s)",
        read: |r| Some(r.measured_s),
    },
];

/// The targets and the labels of `reports`, each in order of first appearance: the columns
/// and the tables of a comparison (and the colours and figures of its charts).
pub fn targets_and_labels(reports: &[Report]) -> (Vec<&str>, Vec<&str>) {
    let mut targets: Vec<&str> = Vec::new();
    let mut labels: Vec<&str> = Vec::new();
    for report in reports {
        if !targets.contains(&report.target.as_str()) {
            targets.push(&report.target);
        }
        if !labels.contains(&report.label.as_str()) {
            labels.push(&report.label);
        }
    }
    (targets, labels)
}

/// The last report of `target` under `label` (a later run replaces an earlier one).
pub fn last_of<'r>(reports: &'r [Report], label: &str, target: &str) -> Option<&'r Report> {
    reports
        .iter()
        .rev()
        .find(|r| r.label == label && r.target == target)
}

/// A markdown comparison of reports: a table per label, a column per target in order of
/// first appearance, and the first target's ratio to each other one.
pub fn markdown(reports: &[Report]) -> String {
    let (targets, labels) = targets_and_labels(reports);
    let mut out = String::new();
    let reference = targets.first().copied().unwrap_or_default();
    for label in labels {
        let find = |target: &str| last_of(reports, label, target);
        let params = reports
            .iter()
            .find(|r| r.label == label)
            .map(parameters)
            .unwrap_or_default();
        let _ = writeln!(out, "### {label}\n\n{params}\n");
        let mut header = String::from("| | ");
        header.push_str(&targets.join(" | "));
        for other in targets.iter().skip(1) {
            let _ = write!(header, " | {reference}/{other}");
        }
        let _ = writeln!(out, "{header} |");
        let _ = writeln!(out, "|---|{}", "---:|".repeat(2 * targets.len() - 1));
        for metric in METRICS {
            let values: Vec<Option<f64>> = targets
                .iter()
                .map(|t| find(t).and_then(|r| (metric.read)(r)))
                .collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let mut row = format!("| {} |", metric.title);
            for value in &values {
                let _ = write!(
                    row,
                    " {} |",
                    value.map(number).unwrap_or_else(|| "n/a".into())
                );
            }
            for value in values.iter().skip(1) {
                let ratio = match (values[0], value) {
                    (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}", a / b),
                    _ => "n/a".into(),
                };
                let _ = write!(row, " {ratio} |");
            }
            let _ = writeln!(out, "{row}");
        }
        let capped: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| find(t).is_some_and(|r| r.capped))
            .collect();
        if !capped.is_empty() {
            let _ = writeln!(out, "\nStopped by the time cap: {}.", capped.join(", "));
        }
        let missing: Vec<&str> = targets
            .iter()
            .copied()
            .filter(|t| find(t).is_none())
            .collect();
        if !missing.is_empty() {
            let _ = writeln!(out, "\nNo result (the run failed): {}.", missing.join(", "));
        }
        out.push('\n');
    }
    out
}

fn parameters(report: &Report) -> String {
    let mut parts = vec![format!("scenario `{}`", report.scenario)];
    if let Some(users) = report.users {
        parts.push(format!("{users} users"));
    }
    if let Some(senders) = report.senders {
        parts.push(format!("{senders} senders"));
    }
    if let Some(registrations) = report.registrations.filter(|n| *n > 1) {
        parts.push(format!("{registrations} registrations each"));
    }
    if let Some(messages) = report.messages {
        parts.push(format!("{messages} messages"));
    }
    match (report.scenario.as_str(), report.rate_target) {
        // Each target may run at its own rate: the "target rate" row gives them.
        ("push" | "route", Some(_)) => parts.push("at a target rate".into()),
        ("push" | "route", None) => {
            parts.push(format!("flat out, window {}", report.window.unwrap_or(0)))
        }
        _ => {}
    }
    parts.join(", ")
}

pub fn number(value: f64) -> String {
    // Whole numbers and large ones without decimals; small ones to the microsecond (ms).
    if value.fract() == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(target: &str, per_second: f64) -> Report {
        Report {
            per_second: Some(per_second),
            ..Report::new("push", target, None)
        }
    }

    #[test]
    fn the_comparison_has_a_column_per_target_and_the_reference_ratios() {
        let table = markdown(&[
            push("herald", 300.0),
            push("prosody", 100.0),
            push("ejabberd", 150.0),
        ]);
        assert!(
            table.contains("| | herald | prosody | ejabberd | herald/prosody | herald/ejabberd |"),
            "{table}"
        );
        assert!(
            table.contains("| per second | 300 | 100 | 150 | 3.00 | 2.00 |"),
            "{table}"
        );
    }

    #[test]
    fn a_missing_target_is_named() {
        let table = markdown(&[push("herald", 300.0), Report::new("idle", "prosody", None)]);
        assert!(
            table.contains("No result (the run failed): prosody."),
            "{table}"
        );
    }

    #[test]
    fn the_cpu_per_thousand_arrivals_adds_the_database_server() {
        use std::time::Duration;
        let usage = Usage {
            wall: Duration::from_secs(2),
            tool_cpu: None,
            server_cpu: Some(Duration::from_secs(1)),
            db_cpu: Some(Duration::from_millis(500)),
        };
        let mut report = Report {
            delivered: Some(2000),
            ..Report::new("push", "herald-pg", None)
        };
        report.usage(usage);
        assert_eq!(report.db_cpu_s, Some(0.5));
        assert_eq!(report.db_cpu_cores, Some(0.25));
        assert_eq!(report.cpu_s_per_1000, Some(0.75));
        let table = markdown(&[report]);
        assert!(table.contains("| database CPU (cores) | 0.25 |"), "{table}");
        assert!(
            table.contains("| CPU s per 1,000 (server + database) | 0.75 |"),
            "{table}"
        );

        let mut without_db = Report {
            delivered: Some(2000),
            ..Report::new("push", "herald", None)
        };
        without_db.usage(Usage {
            db_cpu: None,
            ..usage
        });
        assert_eq!(without_db.db_cpu_s, None);
        assert_eq!(without_db.cpu_s_per_1000, Some(0.5));
    }

    #[test]
    fn the_table_lists_fields_in_declaration_order() {
        let table = push("herald", 12.5).table();
        let scenario = table.find("scenario").unwrap();
        let per_second = table.find("per_second").unwrap();
        assert!(scenario < per_second, "{table}");
    }
}
