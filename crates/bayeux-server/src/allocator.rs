//! The binary's allocator (feature `jemalloc`, on by default): jemalloc, configured to give
//! freed memory back to the system, and its figures for `/metrics`.
//!
//! glibc's malloc keeps what a burst freed (200 stalled WebSocket subscribers left the server
//! ~110 MiB above its baseline for minutes). jemalloc's background threads purge pages unused for
//! `dirty_decay_ms`, set with `background_thread` and `muzzy_decay_ms` at build time in
//! `.cargo/config.toml` (see there why it cannot be set here without `unsafe`).
//!
//! Only the binary installs it: the library never imposes an allocator on an embedding server.

use bayeux_server::write_gauge;
use tikv_jemalloc_ctl::{background_thread, config, epoch, stats};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns the background purge threads on, in case this binary was built without the
/// configured defaults (outside this workspace, or with `JEMALLOC_SYS_WITH_MALLOC_CONF`
/// overridden): without them freed pages are returned only when the program next allocates,
/// so an idle server would keep them. Logs the configuration in force.
pub fn init() {
    // The binding returns the C string with its terminating NUL.
    let conf = config::malloc_conf::read()
        .unwrap_or("")
        .trim_end_matches('\0');
    if let Err(e) = background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc: cannot start the background purge threads");
    }
    tracing::info!(
        malloc_conf = conf,
        background_thread = background_thread::read().unwrap_or(false),
        "allocator: jemalloc"
    );
}

/// Appends `bayeux_allocator_allocated_bytes` and `bayeux_allocator_resident_bytes` (Prometheus
/// text). jemalloc's statistics are a snapshot taken when its epoch advances, so it is advanced
/// first; a figure that cannot be read is left out rather than reported as 0.
pub fn render_metrics(out: &mut String) {
    if epoch::advance().is_err() {
        return;
    }
    if let Ok(v) = stats::allocated::read() {
        write_gauge(
            out,
            "bayeux_allocator_allocated_bytes",
            "Bytes the server has allocated and not freed (jemalloc stats.allocated).",
            v as u64,
        );
    }
    if let Ok(v) = stats::resident::read() {
        write_gauge(
            out,
            "bayeux_allocator_resident_bytes",
            "Bytes of resident pages the allocator maps, freed pages not yet returned to the \
             system included (jemalloc stats.resident).",
            v as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    /// The value of `name` in Prometheus text.
    fn value(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn metrics_follow_the_allocator() {
        // This test binary runs on jemalloc too (the `#[global_allocator]` above).
        let block = vec![1u8; 32 << 20];
        let mut with = String::new();
        super::render_metrics(&mut with);
        drop(block);
        let allocated = value(&with, "bayeux_allocator_allocated_bytes").expect("allocated");
        let resident = value(&with, "bayeux_allocator_resident_bytes").expect("resident");
        assert!(allocated >= 32 << 20, "{with}");
        assert!(resident >= allocated, "{with}");
        assert!(with.contains("# TYPE bayeux_allocator_resident_bytes gauge\n"));
        let mut without = String::new();
        super::render_metrics(&mut without);
        let after = value(&without, "bayeux_allocator_allocated_bytes").expect("allocated");
        assert!(
            after + (16 << 20) < allocated,
            "the epoch was not advanced: {without}"
        );
    }
}
