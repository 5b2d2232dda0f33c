//! CPU time and memory of this process, of the server under test and of its database server,
//! read from `/proc` (proc(5): `/proc/PID/stat` fields 4 and 14-17, `/proc/PID/status`
//! `VmRSS`).

use std::{fs, time::Duration, time::Instant};

/// `AT_CLKTCK` in the auxiliary vector: the unit of `/proc/PID/stat` times.
const AT_CLKTCK: u64 = 17;

/// Clock ticks per second, from `/proc/self/auxv` (no libc call needed); Linux's usual 100
/// when it cannot be read.
fn clock_ticks() -> u64 {
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
            let value = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
            (key, value)
        })
        .find(|(key, _)| *key == AT_CLKTCK)
        .map(|(_, value)| value)
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// The fields of `/proc/PID/stat` that matter here, in clock ticks.
struct Stat {
    /// Field 4: the parent's PID.
    ppid: u32,
    /// Fields 14-15: user plus system time of the process itself.
    own: u64,
    /// Fields 16-17: user plus system time of its children that ended and were waited for.
    reaped: u64,
}

fn stat(pid: &str) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_micros(ticks * 1_000_000 / clock_ticks())
}

/// User plus system CPU time of a process (`"self"` or a PID).
pub fn cpu_time(pid: &str) -> Option<Duration> {
    stat(pid).map(|s| ticks_to_duration(s.own))
}

/// CPU time of a process and of its children, for a server made of several processes
/// (PostgreSQL's postmaster and its backends, WAL writer, checkpointer...): its own time, that
/// of its children that ended (fields 16-17), and that of each living child (with its own ended
/// children). A child that ends between two readings moves from the last term to the second,
/// so the difference of two readings counts it once; one started in between counts whole.
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let root = stat(&pid.to_string())?;
    let mut ticks = root.own + root.reaped;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(child) = stat(name).filter(|s| s.ppid == pid) {
            ticks += child.own + child.reaped;
        }
    }
    Some(ticks_to_duration(ticks))
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// One reading of the clocks that a report compares.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    at: Instant,
    tool_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
    db_cpu: Option<Duration>,
    /// The server's RSS in KiB.
    pub server_rss: Option<u64>,
}

/// What happened between two samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Wall-clock time.
    pub wall: Duration,
    /// This process's CPU time.
    pub tool_cpu: Option<Duration>,
    /// The server's CPU time.
    pub server_cpu: Option<Duration>,
    /// The database server's CPU time, children included.
    pub db_cpu: Option<Duration>,
}

impl Sample {
    /// Read now; the server's figures only when its PID is known, the database server's
    /// (with its children) only when its PID is.
    pub fn take(server_pid: Option<u32>, db_pid: Option<u32>) -> Sample {
        let pid = server_pid.map(|pid| pid.to_string());
        Sample {
            at: Instant::now(),
            tool_cpu: cpu_time("self"),
            server_cpu: pid.as_deref().and_then(cpu_time),
            db_cpu: db_pid.and_then(tree_cpu_time),
            server_rss: pid.as_deref().and_then(rss_kib),
        }
    }

    /// The usage from `self` to `later`.
    pub fn until(&self, later: &Sample) -> Usage {
        let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Usage {
            wall: later.at.duration_since(self.at),
            tool_cpu: diff(self.tool_cpu, later.tool_cpu),
            server_cpu: diff(self.server_cpu, later.server_cpu),
            db_cpu: diff(self.db_cpu, later.db_cpu),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_time_and_an_rss() {
        assert!(cpu_time("self").is_some());
        assert!(rss_kib("self").is_some_and(|kib| kib > 0));
        assert!(clock_ticks() > 0);
    }

    #[test]
    fn an_absent_process_has_no_figures() {
        assert_eq!(cpu_time("0"), None);
        assert_eq!(tree_cpu_time(0), None);
        assert_eq!(rss_kib("0"), None);
    }

    #[test]
    fn a_process_tree_counts_a_child_that_ended() {
        let me = std::process::id();
        // What the tree adds to the process's own time: its children's.
        let children = || {
            let tree = tree_cpu_time(me).expect("this process has a tree");
            tree.saturating_sub(cpu_time("self").expect("this process has a CPU time"))
        };
        let before = children();
        // A child that burns some CPU and is waited for: its time lands in ours (fields 16-17).
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let after = children();
        assert!(after > before, "{before:?} then {after:?}");
    }

    #[test]
    fn a_sample_without_a_database_has_no_database_figure() {
        let before = Sample::take(Some(std::process::id()), None);
        let usage = before.until(&Sample::take(Some(std::process::id()), None));
        assert!(usage.server_cpu.is_some());
        assert_eq!(usage.db_cpu, None);
        let with_db = Sample::take(None, Some(std::process::id()));
        assert!(with_db.until(&with_db).db_cpu.is_some());
    }
}
