//! The outbound queue of one connection (client or component), bounded twice: by a number
//! of stanzas and by a byte budget (their approximate serialised size), so that a peer that
//! does not read costs bounded memory whatever the size of what it is sent.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::mpsc;

use crate::envelope::Envelope;

/// A stanza waiting, with the size it was counted at. The envelope is boxed: tokio's channel
/// allocates its slots 32 at a time, the first 32 when the queue is made, so a slot the size
/// of an envelope cost every connection about 4.5 KiB before it queued anything (a quarter of
/// an idle session); a boxed one costs 512 bytes.
#[derive(Debug)]
struct Queued {
    envelope: Box<Envelope>,
    size: usize,
}

/// Why a stanza was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The queue holds its number of stanzas or its bytes.
    Full(Box<Envelope>),
    /// The connection is gone.
    Closed(Box<Envelope>),
}

/// The sending side, held by the router (cheap to clone).
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
    budget: usize,
}

/// The receiving side, held by the connection's task.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `count` stanzas and `budget` bytes.
pub fn bounded(count: usize, budget: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            bytes: Arc::clone(&bytes),
            budget,
        },
        Inbox { rx, bytes },
    )
}

impl Outbox {
    /// Queue without waiting.
    pub fn try_send(&self, envelope: impl Into<Envelope>) -> Result<(), Refused> {
        let envelope = envelope.into();
        let size = herald_stream::stanza::approximate_size(&envelope.stanza);
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        // One stanza larger than the whole budget still goes into an empty queue.
        if before > 0 && before + size > self.budget {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(Refused::Full(Box::new(envelope)));
        }
        match self.tx.try_send(Queued {
            envelope: Box::new(envelope),
            size,
        }) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                Err(match error {
                    mpsc::error::TrySendError::Full(queued) => Refused::Full(queued.envelope),
                    mpsc::error::TrySendError::Closed(queued) => Refused::Closed(queued.envelope),
                })
            }
        }
    }

    /// The bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Inbox {
    fn taken(&self, queued: Queued) -> Envelope {
        self.bytes.fetch_sub(queued.size, Ordering::Relaxed);
        *queued.envelope
    }

    /// The next stanza; `None` once closed and empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let queued = self.rx.recv().await?;
        Some(self.taken(queued))
    }

    /// The next stanza if one waits.
    pub fn try_recv(&mut self) -> Option<Envelope> {
        let queued = self.rx.try_recv().ok()?;
        Some(self.taken(queued))
    }

    /// Refuse anything more (what waits can still be taken).
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use minidom::Element;

    use super::*;

    fn message(body: &str) -> Element {
        format!("<message xmlns='jabber:client'><body>{body}</body></message>")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn the_byte_budget_refuses_before_the_count_does() {
        let (outbox, mut inbox) = bounded(100, 3000);
        let kilobyte = "x".repeat(1000);
        assert!(outbox.try_send(message(&kilobyte)).is_ok());
        assert!(outbox.try_send(message(&kilobyte)).is_ok());
        assert!(matches!(
            outbox.try_send(message(&kilobyte)),
            Err(Refused::Full(_))
        ));
        assert!(outbox.try_send(message("small")).is_ok());
        // Taking frees the bytes.
        inbox.recv().await.unwrap();
        assert!(outbox.try_send(message(&kilobyte)).is_ok());
        while inbox.try_recv().is_some() {}
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn one_stanza_larger_than_the_budget_goes_into_an_empty_queue() {
        let (outbox, mut inbox) = bounded(10, 100);
        assert!(outbox.try_send(message(&"y".repeat(500))).is_ok());
        assert!(matches!(
            outbox.try_send(message("z")),
            Err(Refused::Full(_))
        ));
        inbox.recv().await.unwrap();
        assert!(outbox.try_send(message("z")).is_ok());
    }

    #[test]
    fn the_count_still_bounds_the_queue() {
        let (outbox, _inbox) = bounded(2, usize::MAX);
        assert!(outbox.try_send(message("a")).is_ok());
        assert!(outbox.try_send(message("b")).is_ok());
        assert!(matches!(
            outbox.try_send(message("c")),
            Err(Refused::Full(_))
        ));
    }
}
