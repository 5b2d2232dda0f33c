//! The outbox (docs/modules/push.md, "Retries and the outbox"): every notification for a
//! message is handed to it when it is decided, and leaves it when its outcome is final. One
//! writer task gathers what arrives for [`GATHER`] and writes it in one transaction; a
//! notification whose outcome came within that time (an app server that answers at once,
//! the usual case) cancels its own row before it is ever written, so the happy path costs
//! the store nothing, while one that waits for a reply or a retry is in the store within
//! [`GATHER`] and is sent again after a restart or a crash.
//!
//! It also knows which messages are pending or were notified lately for each registration
//! (by the id the archive gave the message), so that a message reaching a registration from
//! two sessions' buffers, or from a buffer and offline storage, is notified once.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::RequestId,
    registrations::{PendingPush, RegistrationKey, RegistrationStore},
};

/// How long the writer gathers before writing, by default (`outbox_gather`): a notification
/// delivered within it is never written.
pub(crate) const GATHER: Duration = Duration::from_millis(20);

/// Operations waiting for the writer, at most (beyond, a notification is sent unkept).
const QUEUE: usize = 16_384;

/// Messages remembered as notified, at most (the oldest are forgotten first).
const REMEMBERED: usize = 100_000;

enum Op {
    /// With a channel when the caller waits for the row to be committed.
    Add(i64, PendingPush, Option<oneshot::Sender<()>>),
    Finish(i64),
}

/// A message (by its archive id) for a registration, as two 64-bit keyed hashes of the pair
/// (a key drawn when the outbox starts): sixteen bytes and no allocation an entry. (Kept as
/// the registration's key and the id's text, an entry was five allocations that lived as
/// long as the message is remembered, an hour by default, and with the archive on, every
/// notified message left one: the heap the sessions allocate from grew and fragmented,
/// and every allocation on the push path got slower.) Two pairs share an identity with a
/// probability of about 2^-128, and the keys are secret, so no registration's node can be
/// chosen to hide another's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity(u64, u64);

/// An identity is already a keyed hash: the set uses its first half as it is rather than
/// hashing it again.
impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The hasher of the set of identities: it passes the one `u64` it is given through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Identity`; kept correct for any other input all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The keyed hash that makes an [`Identity`]: the pair is read once into SipHash's 256-bit
/// state, which is then finished twice, the second time after one more word, for the two
/// halves (two hashes from two keys read the pair twice, about 700 instructions a
/// notification more).
struct Fingerprint(RandomState);

/// The word that tells the second half's finish from the first's.
const SECOND_HALF: u64 = 0x5345_434f_4e44_4841;

impl Fingerprint {
    fn new() -> Fingerprint {
        Fingerprint(RandomState::new())
    }

    fn of(&self, key: &RegistrationKey, message: &str) -> Identity {
        let mut hasher = self.0.build_hasher();
        (key, message).hash(&mut hasher);
        let first = hasher.finish();
        hasher.write_u64(SECOND_HALF);
        Identity(first, hasher.finish())
    }
}

/// Which messages each registration has pending or got lately.
struct Seen {
    fingerprint: Fingerprint,
    set: HashSet<Identity, BuildHasherDefault<PassThrough>>,
    order: VecDeque<(Instant, Identity)>,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            fingerprint: Fingerprint::new(),
            set: HashSet::default(),
            order: VecDeque::new(),
        }
    }
}

/// The handle to the outbox.
#[derive(Clone)]
pub(crate) struct Outbox {
    ops: mpsc::Sender<Op>,
    seen: Arc<Mutex<Seen>>,
    /// How long a message is remembered as notified (`retry.max_age`).
    remember: Duration,
    /// `outbox_gather`; zero: every notification is committed before it is sent.
    gather: Duration,
}

impl Outbox {
    /// Start the writer over `store`, gathering for `gather`; messages are remembered as
    /// notified for `remember`. The writer ends when every handle is gone, after writing
    /// what it holds.
    pub(crate) fn start(
        store: Arc<dyn RegistrationStore>,
        gather: Duration,
        remember: Duration,
    ) -> Outbox {
        let (ops, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, rx, gather));
        Outbox {
            ops,
            seen: Arc::default(),
            remember,
            gather,
        }
    }

    /// Take `push` in; its id, or `None` when its message is already pending for its
    /// registration or was notified to it within `remember`. With a gathering time it never
    /// waits (with the writer's queue full the notification is sent without being kept);
    /// without one, it returns once the row is committed.
    pub(crate) async fn add(&self, push: PendingPush) -> Option<i64> {
        if let Some(message) = &push.message {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            while let Some((at, _)) = seen.order.front()
                && (now.duration_since(*at) >= self.remember || seen.order.len() >= REMEMBERED)
            {
                if let Some((_, old)) = seen.order.pop_front() {
                    seen.set.remove(&old);
                }
            }
            let identity = seen.fingerprint.of(&push.key, message);
            if !seen.set.insert(identity) {
                return None;
            }
            seen.order.push_back((now, identity));
        }
        let id = next_id();
        if self.gather.is_zero() {
            let (told, committed) = oneshot::channel();
            if self.ops.send(Op::Add(id, push, Some(told))).await.is_ok() {
                let _ = committed.await;
            }
        } else if self.ops.try_send(Op::Add(id, push, None)).is_err() {
            tracing::debug!("push outbox: queue full; a notification is sent without being kept");
        }
        Some(id)
    }

    /// The notification `id` is over; never waits (a full queue leaves the row, sent again
    /// at the next start).
    pub(crate) fn remove(&self, id: i64) {
        if self.ops.try_send(Op::Finish(id)).is_err() {
            tracing::debug!(id, "push outbox: removal not queued");
        }
    }
}

/// An id unique in the process and across restarts: a request id's (microseconds at first
/// use, counted on).
fn next_id() -> i64 {
    i64::try_from(RequestId::next().0).unwrap_or(i64::MAX)
}

async fn write(store: Arc<dyn RegistrationStore>, mut rx: mpsc::Receiver<Op>, gather: Duration) {
    let mut batch = Vec::new();
    loop {
        if rx.recv_many(&mut batch, QUEUE).await == 0 {
            return;
        }
        // Gather: what is answered meanwhile cancels its own row.
        if !gather.is_zero() {
            tokio::time::sleep(gather).await;
            while let Ok(op) = rx.try_recv() {
                batch.push(op);
            }
        }
        let mut adds: HashMap<i64, PendingPush> = HashMap::new();
        let mut waiting = Vec::new();
        let mut finished = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Add(id, push, told) => {
                    adds.insert(id, push);
                    waiting.extend(told);
                }
                // Not among this batch's additions: written before (or by an earlier run).
                Op::Finish(id) => {
                    if adds.remove(&id).is_none() {
                        finished.push(id);
                    }
                }
            }
        }
        if !adds.is_empty() {
            let mut rows: Vec<(i64, PendingPush)> = adds.into_iter().collect();
            rows.sort_by_key(|(id, _)| *id);
            if let Err(error) = store.add_pending(&rows).await {
                tracing::error!(%error, count = rows.len(), "push outbox: cannot keep pending notifications (they are still sent)");
            }
        }
        for told in waiting {
            let _ = told.send(());
        }
        if !finished.is_empty()
            && let Err(error) = store.finish_pending(&finished).await
        {
            tracing::error!(%error, "push outbox: cannot remove finished notifications (they are sent again at the next start)");
        }
    }
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;

    fn key(node: &str) -> RegistrationKey {
        RegistrationKey {
            owner: BareJid::new("bob@example.com").unwrap(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: node.into(),
        }
    }

    #[test]
    fn a_pair_has_one_identity_and_pairs_that_differ_anywhere_have_others() {
        let fingerprint = Fingerprint::new();
        let identity = fingerprint.of(&key("phone"), "archive:1");
        assert_eq!(identity, fingerprint.of(&key("phone"), "archive:1"));
        // The halves are two hashes, not one repeated.
        assert_ne!(identity.0, identity.1);
        for (node, message) in [
            ("phone", "archive:2"),
            ("tablet", "archive:1"),
            // Where the node ends and the message begins counts.
            ("phonea", "rchive:1"),
            ("phon", "earchive:1"),
        ] {
            let other = fingerprint.of(&key(node), message);
            assert!(
                other.0 != identity.0 && other.1 != identity.1,
                "{node} {message}"
            );
        }
        // Another outbox draws another key.
        assert_ne!(Fingerprint::new().of(&key("phone"), "archive:1"), identity);
    }
}
