//! Memory that idle connections give back, returned to the operating system.
//!
//! A connection that has read nothing for a while frees its parser's scratch buffers and parks
//! its parser (`conn.rs`; connections read into their thread's buffer, not one of their own).
//! glibc's allocator hands freed memory back to the system only from the top of a heap, so
//! the buffers of many idle connections, freed in the middle of it, would stay resident until
//! something reused them. After connections have released buffers, [`trim_released`] waits
//! [`TRIM_AFTER`] (more releases gather meanwhile) and then trims once (`malloc_trim`, which
//! gives back every whole free page): an idle server's resident memory falls by what its idle
//! connections freed. A server with no idle connections never trims.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Releases and the trims that follow them.
pub struct Releases {
    /// Buffers were released since the last trim.
    released: AtomicBool,
    /// Wakes the trimming task at the first release after a trim.
    wake: Notify,
    /// Trims done.
    trims: AtomicU64,
}

/// The process's releases (the allocator is the process's).
static RELEASES: Releases = Releases::new();

/// How long after a release the trim waits: a trim takes the allocator's locks, so releases
/// are gathered, and a server whose connections keep going idle trims at most this often.
pub const TRIM_AFTER: Duration = Duration::from_secs(10);

/// A connection released its buffers.
pub(crate) fn released() {
    RELEASES.released();
}

/// Trim [`TRIM_AFTER`] after connections released buffers, until `shutdown`.
pub async fn trim_released(shutdown: tokio_util::sync::CancellationToken) {
    RELEASES.trim_after_releases(shutdown).await;
}

impl Releases {
    const fn new() -> Releases {
        Releases {
            released: AtomicBool::new(false),
            wake: Notify::const_new(),
            trims: AtomicU64::new(0),
        }
    }

    fn released(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Trims done so far.
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }

    async fn trim_after_releases(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep(TRIM_AFTER) => {}
            }
            self.released.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(trim).await;
            self.trims.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists,
    // under the allocator's locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_release_is_trimmed_once_after_the_wait_and_quiet_means_no_trim() {
        static OWN: Releases = Releases::new();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(OWN.trim_after_releases(shutdown.clone()));
        tokio::time::sleep(TRIM_AFTER * 3).await;
        assert_eq!(OWN.trims(), 0, "nothing released, nothing trimmed");
        OWN.released();
        OWN.released();
        tokio::time::sleep(TRIM_AFTER / 2).await;
        assert_eq!(OWN.trims(), 0, "the trim waits for more releases");
        tokio::time::sleep(TRIM_AFTER).await;
        // The trim runs on the blocking pool: give it the moment it needs.
        for _ in 0..100 {
            if OWN.trims() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(OWN.trims(), 1, "two releases, one trim");
        tokio::time::sleep(TRIM_AFTER * 3).await;
        assert_eq!(OWN.trims(), 1, "nothing released since, nothing trimmed");
        shutdown.cancel();
        task.await.unwrap();
    }
}
