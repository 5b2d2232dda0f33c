//! The outbox's writer (docs/modules/push.md, "Retries and the outbox"): a notification is
//! in the store before it is sent, and is marked done when its outcome is final (kept for
//! `keep`, so that its message is not notified twice, then purged). One task writes
//! for every sender, taking what has queued and writing it in one transaction (as the
//! offline store's group commit does), so that a busy server pays one commit for many
//! notifications; the pipeline awaits its own rows, so a message acknowledged to its sender
//! has its notifications in the store.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{mpsc, oneshot};

use crate::registrations::{PENDING_NOT_KEPT, PendingPush, RegistrationStore};

/// Most operations written in one transaction.
const BATCH: usize = 256;

/// How often done rows older than `keep` are purged (when there is traffic).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Operations waiting for the writer, at most.
const QUEUE: usize = 4096;

enum Op {
    Add(PendingPush, oneshot::Sender<Option<i64>>),
    Remove(i64),
}

/// The handle to the outbox's writer.
#[derive(Clone)]
pub(crate) struct Outbox {
    ops: mpsc::Sender<Op>,
}

impl Outbox {
    /// Start the writer over `store`, keeping done rows for `keep`; it ends when every
    /// handle is gone.
    pub(crate) fn start(store: Arc<dyn RegistrationStore>, keep: Duration) -> Outbox {
        let (ops, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, rx, keep));
        Outbox { ops }
    }

    /// Keep `push`; its id, or `None` when the same message is already pending for its
    /// registration. A store that fails (or a stopped writer) sends the notification
    /// anyway, without keeping it ([`PENDING_NOT_KEPT`]): a push is never lost for the
    /// outbox's sake.
    pub(crate) async fn add(&self, push: PendingPush) -> Option<i64> {
        let (told, id) = oneshot::channel();
        if self.ops.send(Op::Add(push, told)).await.is_err() {
            return Some(PENDING_NOT_KEPT);
        }
        id.await.unwrap_or(Some(PENDING_NOT_KEPT))
    }

    /// The notification `id` is done; never waits (a full queue leaves the row, sent again
    /// at the next start).
    pub(crate) fn remove(&self, id: i64) {
        if id != PENDING_NOT_KEPT && self.ops.try_send(Op::Remove(id)).is_err() {
            tracing::debug!(id, "push outbox: removal not queued");
        }
    }
}

async fn write(store: Arc<dyn RegistrationStore>, mut rx: mpsc::Receiver<Op>, keep: Duration) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut purged = Instant::now();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if purged.elapsed() >= PURGE_EVERY {
            purged = Instant::now();
            let before = SystemTime::now() - keep;
            match store.purge_pending(before).await {
                Ok(count) => tracing::debug!(count, "push outbox: purged done notifications"),
                Err(error) => {
                    tracing::warn!(%error, "push outbox: cannot purge done notifications")
                }
            }
        }
        let mut adds = Vec::new();
        let mut told = Vec::new();
        let mut removes = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Add(push, tell) => {
                    adds.push(push);
                    told.push(tell);
                }
                Op::Remove(id) => removes.push(id),
            }
        }
        if !adds.is_empty() {
            let ids = match store.add_pending(&adds).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::error!(%error, "push outbox: cannot keep pending notifications; sending them anyway");
                    vec![Some(PENDING_NOT_KEPT); adds.len()]
                }
            };
            for (tell, id) in told.into_iter().zip(ids) {
                let _ = tell.send(id);
            }
        }
        if !removes.is_empty()
            && let Err(error) = store.finish_pending(&removes).await
        {
            tracing::error!(%error, "push outbox: cannot remove finished notifications (they are sent again at the next start)");
        }
    }
}
