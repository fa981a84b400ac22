//! `--spawn`: starting our own server for a run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conn::Result;

/// A server process started by the generator; killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// The Bayeux endpoint URL the server announced.
    pub url: String,
}

impl Spawned {
    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `bayeux-server` is expected: next to the running executable (both are built into the
/// same target directory).
pub fn default_server_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // Test and bench executables live in target/<profile>/deps.
    [dir.join("bayeux-server"), dir.join("../bayeux-server")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Parses the line `bayeux-server listening on http://ADDR (Bayeux endpoint PATH)` (and the
/// peers' scripts' lines of the same shape) into the endpoint URL.
pub fn parse_listening(line: &str) -> Option<String> {
    let rest = line.split_once("listening on ")?.1;
    let (base, rest) = rest.split_once(' ')?;
    let path = rest.split_once("endpoint ")?.1.trim_end_matches(')').trim();
    Some(format!("{base}{path}"))
}

/// Starts `bin --listen 127.0.0.1:0 ARGS...` and waits for its listening line.
pub fn spawn(bin: &Path, args: &[String]) -> Result<Spawned> {
    let mut child = Command::new(bin)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log-level")
        .arg("warn")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        // Keep reading so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let started = Instant::now();
    let mut spawned = Spawned {
        child,
        url: String::new(),
    };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => {
            spawned.url = parse_listening(&line)
                .ok_or_else(|| format!("unexpected first line from the server: {line}"))?;
            Ok(spawned)
        }
        Err(_) => Err(format!(
            "{} printed no listening line within {:?}",
            bin.display(),
            started.elapsed()
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listening_lines() {
        assert_eq!(
            super::parse_listening(
                "bayeux-server listening on http://127.0.0.1:4100 (Bayeux endpoint /cometd)"
            )
            .as_deref(),
            Some("http://127.0.0.1:4100/cometd")
        );
        assert_eq!(
            super::parse_listening(
                "faye listening on http://127.0.0.1:9 (Bayeux endpoint /cometd)"
            )
            .as_deref(),
            Some("http://127.0.0.1:9/cometd")
        );
    }
}
