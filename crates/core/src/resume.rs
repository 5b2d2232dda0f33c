//! The table of resumable sessions (XEP-0198 section 5): resumption ids to the session task
//! waiting for a new connection, and the last `h` of recently ended sessions ("stale h").

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use herald_stream::Bare;
use jid::{BareJid, FullJid};
use tokio::sync::mpsc;

use crate::conn::Conn;

/// A new connection taking over a session.
pub(crate) struct Resumption {
    /// The authenticated connection, stream restarted, features sent.
    pub conn: Conn,
    /// The client's `h`: how many stanzas it handled.
    pub h: u32,
}

struct Live {
    jid: FullJid,
    /// Boxed: a channel allocates its first block of 32 slots when it is made, and a slot the
    /// size of a connection made that block 24 KiB for every resumable session.
    handover: mpsc::Sender<Box<Resumption>>,
}

/// Why a resumption was refused.
pub(crate) enum Refused {
    /// Unknown, expired or another user's id; the stale `h` if remembered, and the
    /// connection back.
    NotFound(Option<u32>, Box<Resumption>),
    /// The session ended while the request was in flight.
    Gone(Option<u32>, Box<Resumption>),
}

/// Resumable sessions by id.
#[derive(Default)]
pub struct ResumeTable {
    live: Mutex<HashMap<String, Live>>,
    stale: Mutex<HashMap<String, (u32, Instant)>>,
}

impl ResumeTable {
    /// Register a resumable session; returns the receiving end for resumptions.
    pub(crate) fn register(&self, id: String, jid: FullJid) -> mpsc::Receiver<Box<Resumption>> {
        let (tx, rx) = mpsc::channel(1);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Live { jid, handover: tx });
        rx
    }

    /// Forget a session; with `stale_for`, remember its last `h` that long.
    pub(crate) fn unregister(&self, id: &str, last_h: u32, stale_for: Option<Duration>) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(ttl) = stale_for {
            let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            stale.retain(|_, (_, expiry)| *expiry > now);
            stale.insert(id.to_owned(), (last_h, now + ttl));
        }
    }

    /// Hand a connection to the session `id` if it belongs to `user`.
    pub(crate) fn resume(
        &self,
        id: &str,
        user: &BareJid,
        resumption: Resumption,
    ) -> Result<FullJid, Refused> {
        let target = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.get(id)
                .filter(|entry| entry.jid.same_bare(user))
                .map(|entry| (entry.jid.clone(), entry.handover.clone()))
        };
        let Some((jid, handover)) = target else {
            return Err(Refused::NotFound(self.stale_h(id), Box::new(resumption)));
        };
        match handover.try_send(Box::new(resumption)) {
            Ok(()) => Ok(jid),
            Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => {
                Err(Refused::Gone(self.stale_h(id), r))
            }
        }
    }

    fn stale_h(&self, id: &str) -> Option<u32> {
        let stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        stale
            .get(id)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(h, _)| *h)
    }
}
