//! CPU time and memory of a process, read from `/proc` (Linux).

use std::path::PathBuf;

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux reports `USER_HZ`, which is 100
/// on every architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// A reading of one process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now, bytes.
    pub rss_bytes: u64,
    /// Peak resident set size since the process started, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>` (`None`: this process).
pub fn sample(pid: Option<u32>) -> std::io::Result<ProcSample> {
    let dir = match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}")),
        None => PathBuf::from("/proc/self"),
    };
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    // Fields after the command name, which is parenthesized and may contain spaces.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `after` starts at field 3.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu_secs = (ticks(14) + ticks(15)) / TICKS_PER_SEC;
    let status = std::fs::read_to_string(dir.join("status"))?;
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: kb("VmRSS:"),
        peak_rss_bytes: kb("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_self() {
        let s = super::sample(None).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.peak_rss_bytes >= s.rss_bytes / 2);
    }
}
