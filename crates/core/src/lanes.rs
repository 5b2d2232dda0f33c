//! Recipient lanes: messages for accounts with no session to take them (offline storage and
//! push, the `offline_message` hook) are handled off the sender's read loop, in order for
//! each recipient.
//!
//! Handling such a message waits for storage (a group commit, milliseconds). Done inline it
//! held the sender's connection for that long: twenty senders could not go past twenty
//! commits at once, and a component fanning one message out to a thousand offline room
//! members waited for a thousand in a row (issue 18, item 2). Instead the router hands the
//! message to one of [`LANES`] lanes, chosen by the recipient's bare JID, and goes on: each
//! lane is a task that handles its messages one after the other, so a recipient's messages
//! are stored (and counted against `max_user_offline_messages`) in the order they were
//! routed, while the lanes' stores share commits.
//!
//! Order with the recipient's sessions: while a lane holds messages for an account, the
//! router sends that account's next messages through the lane too, even when a session has
//! come online meanwhile; the lane then delivers them to it. A message the lane stores after
//! the account came online wakes its session (see `offline`), which reads storage again.
//!
//! Durability and XEP-0198: a client session with stream management counts a stanza in its
//! `h` only once every message it caused is stored or delivered. The session collects the
//! lanes' completion tickets of each stanza ([`collecting`]) and counts it when they are
//! done; an `<r/>` is answered once everything read before it is counted. Components,
//! federation and sessions without stream management have no acknowledgement to hold back:
//! their messages are handed over and not waited for.
//!
//! Bounded: a lane holds [`LANE_CAPACITY`] messages; a sender that finds it full waits (its
//! reads pause), which is the back-pressure. At shutdown the lanes are drained after the
//! connections closed and before storage closes ([`Lanes::drain`]); a message routed after
//! that is handled inline.

use std::{
    cell::RefCell,
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, Weak},
};

use herald_stream::stanza::{MessageType, Stanza};
use jid::BareJid;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{Server, envelope::Meta};

/// How many lanes by default (`general.recipient_lanes`): messages for different recipients
/// are stored concurrently up to this many at a time (and share the storage engine's
/// commits).
pub const LANES: usize = 128;

/// Messages a lane holds before senders wait.
pub const LANE_CAPACITY: usize = 64;

/// What a lane does with a message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Then {
    /// The `offline_message` hook (storage, push), then a bounce if nothing took it.
    Offline,
    /// Route it to the bare JID now: to the sessions that came online, else as `Offline`.
    Bare(MessageType),
}

/// A message in a lane.
pub(crate) struct Job {
    pub(crate) to: BareJid,
    pub(crate) then: Then,
    pub(crate) stanza: Stanza,
    pub(crate) meta: Meta,
}

struct Queued {
    job: Job,
    key: u64,
    done: Option<oneshot::Sender<()>>,
}

/// One lane: its queue and how many messages it holds for each recipient (by hash).
struct Lane {
    tx: mpsc::Sender<Queued>,
    held: Mutex<HashMap<u64, u32>>,
}

/// The lanes of a server.
pub struct Lanes {
    lanes: Vec<Arc<Lane>>,
    hasher: RandomState,
    closing: CancellationToken,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// The completion tickets of the stanza a client session is routing.
    static TICKETS: RefCell<Vec<oneshot::Receiver<()>>>;
}

/// Run `route` (a session routing one stanza) and return, with its output, a ticket for each
/// message it handed to a lane: each resolves (with a value or closed) once that message is
/// stored, delivered or refused.
pub(crate) async fn collecting<F: Future>(route: F) -> (F::Output, Vec<oneshot::Receiver<()>>) {
    TICKETS
        .scope(RefCell::new(Vec::new()), async {
            let output = route.await;
            (output, TICKETS.with(RefCell::take))
        })
        .await
}

impl Lanes {
    /// No lanes: every message is handled inline (a server built outside a runtime).
    pub(crate) fn none() -> Lanes {
        Lanes {
            lanes: Vec::new(),
            hasher: RandomState::new(),
            closing: CancellationToken::new(),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Start `count` lanes for `server`, when built inside a Tokio runtime (none otherwise:
    /// messages are then handled inline).
    pub(crate) fn start(&mut self, server: &Weak<Server>, count: usize) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut workers = Vec::with_capacity(count);
        for _ in 0..count {
            let (tx, rx) = mpsc::channel(LANE_CAPACITY);
            let lane = Arc::new(Lane {
                tx,
                held: Mutex::new(HashMap::new()),
            });
            workers.push(tokio::spawn(run(
                Weak::clone(server),
                Arc::clone(&lane),
                rx,
                self.closing.clone(),
            )));
            self.lanes.push(lane);
        }
        *self.workers.get_mut().unwrap_or_else(|p| p.into_inner()) = workers;
    }

    fn lane(&self, to: &BareJid) -> Option<(&Lane, u64)> {
        if self.lanes.is_empty() {
            return None;
        }
        let key = self.hasher.hash_one(to);
        let index = usize::try_from(key % self.lanes.len() as u64).unwrap_or(0);
        Some((&self.lanes[index], key))
    }

    /// Whether a lane holds messages for `to` (a later message must follow them).
    pub(crate) fn holds(&self, to: &BareJid) -> bool {
        self.lane(to)
            .is_some_and(|(lane, key)| lock(&lane.held).get(&key).is_some_and(|&count| count > 0))
    }

    /// Hand a message to its recipient's lane, waiting while the lane is full; handled inline
    /// when there are no lanes or they were drained.
    pub(crate) async fn submit(&self, server: &Server, job: Job) {
        let Some((lane, key)) = self.lane(&job.to) else {
            // Boxed: the type of routing in a lane includes this call (a message routed
            // outside a lane comes here), so the future would contain itself.
            return Box::pin(server.run_lane_job(job)).await;
        };
        let (done, ticket) = match TICKETS.try_with(|_| ()) {
            Ok(()) => {
                let (done, ticket) = oneshot::channel();
                (Some(done), Some(ticket))
            }
            Err(_) => (None, None),
        };
        *lock(&lane.held).entry(key).or_insert(0) += 1;
        crate::metrics::lane_queued();
        match lane.tx.send(Queued { job, key, done }).await {
            Ok(()) => {
                if let Some(ticket) = ticket {
                    TICKETS.with(|tickets| tickets.borrow_mut().push(ticket));
                }
            }
            Err(mpsc::error::SendError(queued)) => {
                release(lane, key);
                crate::metrics::lane_done();
                Box::pin(server.run_lane_job(queued.job)).await;
            }
        }
    }

    /// Stop taking messages and wait until the lanes handled what they hold (a graceful
    /// shutdown, after the connections closed and before storage closes).
    pub async fn drain(&self) {
        self.closing.cancel();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for worker in workers {
            let _ = worker.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn release(lane: &Lane, key: u64) {
    let mut held = lock(&lane.held);
    if let Some(count) = held.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            held.remove(&key);
        }
    }
}

/// A lane's task: its messages one after the other, until drained.
async fn run(
    server: Weak<Server>,
    lane: Arc<Lane>,
    mut rx: mpsc::Receiver<Queued>,
    closing: CancellationToken,
) {
    let mut closed = false;
    loop {
        let next = if closed {
            rx.recv().await
        } else {
            tokio::select! {
                next = rx.recv() => next,
                () = closing.cancelled() => {
                    // Senders from now on handle their messages inline; what is queued is
                    // still handled here.
                    rx.close();
                    closed = true;
                    continue;
                }
            }
        };
        let Some(Queued { job, key, done }) = next else {
            return;
        };
        let Some(server) = server.upgrade() else {
            return;
        };
        server.run_lane_job(job).await;
        release(&lane, key);
        crate::metrics::lane_done();
        drop(done);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jid::{FullJid, Jid};
    use minidom::Element;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::{
        Origin,
        hooks::{Flow, Handler, OfflineMessage, Priority},
        module::{Module, Registrar},
        sessions::{Availability, SessionHandle},
    };

    /// Takes every offline message, one per permit, and records its body.
    struct Gate {
        permits: Arc<Semaphore>,
        taken: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Handler<OfflineMessage> for Gate {
        async fn call(&self, _: &Server, event: &mut OfflineMessage) -> Flow {
            self.permits.acquire().await.unwrap().forget();
            let body = event.stanza.element.get_child("body", "jabber:client");
            lock(&self.taken).push(body.map(Element::text).unwrap_or_default());
            Flow::Stop
        }
    }

    struct GateModule(Arc<Semaphore>, Arc<Mutex<Vec<String>>>);

    impl Module for GateModule {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn register(self: Arc<Self>, r: &mut Registrar) {
            let gate = Gate {
                permits: Arc::clone(&self.0),
                taken: Arc::clone(&self.1),
            };
            r.hooks()
                .offline_message
                .add(Priority::NORMAL, Arc::new(gate));
        }
    }

    async fn server() -> (Arc<Server>, Arc<Semaphore>, Arc<Mutex<Vec<String>>>) {
        let storage = herald_storage::Storage::open_sqlite_in_memory()
            .await
            .unwrap();
        let permits = Arc::new(Semaphore::new(0));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let module = Arc::new(GateModule(Arc::clone(&permits), Arc::clone(&taken)));
        let host = jid::DomainPart::new("h").unwrap();
        let server = Server::new(vec![host.into()], storage, &[module]);
        (server, permits, taken)
    }

    fn chat(body: &str) -> Stanza {
        let element: Element = format!(
            "<message xmlns='jabber:client' from='v@h/r' to='u@h' type='chat'><body>{body}</body></message>"
        )
        .parse()
        .unwrap();
        Stanza::parse(element).unwrap()
    }

    async fn route(server: &Server, body: &str) -> Vec<oneshot::Receiver<()>> {
        let sender = FullJid::new("v@h/r").unwrap();
        let ((), tickets) = collecting(server.route(Origin::Client(&sender), chat(body))).await;
        tickets
    }

    fn body_of(envelope: &crate::envelope::Envelope) -> String {
        envelope
            .stanza
            .get_child("body", "jabber:client")
            .map(Element::text)
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_message_that_comes_online_behind_stored_ones_waits_its_turn() {
        let (server, permits, taken) = server().await;
        // One message for an absent account: its lane holds it at the gate, and the sender
        // has a ticket that is not done.
        let mut first = route(&server, "one").await;
        assert_eq!(first.len(), 1);
        let user = BareJid::new("u@h").unwrap();
        assert!(server.lanes.holds(&user));
        // (Had the account come online before the lane took the message, the lane would
        // deliver it: it routes again.)
        tokio::time::sleep(Duration::from_millis(20)).await;

        // The account comes online; the next message must not overtake the first.
        let (handle, mut inbox) = SessionHandle::new(FullJid::new("u@h/phone").unwrap());
        server.sessions.bind(handle.clone());
        server.sessions.set_availability(
            &handle.jid,
            handle.id,
            Availability::Available {
                priority: 0,
                presence: Element::bare("presence", "jabber:client"),
            },
        );
        let second = route(&server, "two").await;
        assert_eq!(second.len(), 1, "the second follows through the lane");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(inbox.try_recv().is_none(), "the second overtook the first");
        assert!(first[0].try_recv().is_err(), "the first is not done yet");

        permits.add_permits(1);
        for ticket in first.into_iter().chain(second) {
            let _ = ticket.await;
        }
        assert_eq!(*lock(&taken), ["one"]);
        assert_eq!(body_of(&inbox.try_recv().unwrap()), "two");
        assert!(!server.lanes.holds(&user));

        // Nothing held: a message for the online account goes straight to it, no ticket.
        assert!(route(&server, "three").await.is_empty());
        assert_eq!(body_of(&inbox.try_recv().unwrap()), "three");
    }

    #[tokio::test]
    async fn one_recipients_messages_are_handled_in_the_order_routed() {
        let (server, permits, taken) = server().await;
        permits.add_permits(1_000);
        let mut tickets = Vec::new();
        for n in 0..200 {
            tickets.extend(route(&server, &n.to_string()).await);
        }
        for ticket in tickets {
            let _ = ticket.await;
        }
        let expected: Vec<String> = (0..200).map(|n| n.to_string()).collect();
        assert_eq!(*lock(&taken), expected);
    }

    #[tokio::test]
    async fn draining_handles_what_the_lanes_hold_and_later_messages_inline() {
        let (server, permits, taken) = server().await;
        // Outside a session (a component, the server): no ticket, the message is handed over.
        let from = Jid::new("v@h/r").unwrap();
        server.route(Origin::Component(&from), chat("held")).await;
        assert!(lock(&taken).is_empty());
        let draining = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.lanes.drain().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !draining.is_finished(),
            "drained before the held message was handled"
        );
        permits.add_permits(2);
        draining.await.unwrap();
        assert_eq!(*lock(&taken), ["held"]);
        // After the drain a message is handled before route returns.
        server.route(Origin::Component(&from), chat("late")).await;
        assert_eq!(*lock(&taken), ["held", "late"]);
    }
}
