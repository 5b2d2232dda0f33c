//! CPU time and memory of this process and of the server under test, read from `/proc`
//! (proc(5): `/proc/PID/stat` fields 14-15, `/proc/PID/status` `VmRSS`).

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

/// User plus system CPU time of a process (`"self"` or a PID).
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
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
}

impl Sample {
    /// Read now; the server's figures only when its PID is known.
    pub fn take(server_pid: Option<u32>) -> Sample {
        let pid = server_pid.map(|pid| pid.to_string());
        Sample {
            at: Instant::now(),
            tool_cpu: cpu_time("self"),
            server_cpu: pid.as_deref().and_then(cpu_time),
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
        assert_eq!(rss_kib("0"), None);
    }
}
