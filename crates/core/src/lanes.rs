//! Recipient lanes: messages for accounts with no session to take them (offline storage and
//! push, the `offline_message` hook), sent by components and other servers, are handled off
//! the sender's read loop, in order for each recipient.
//!
//! Handling such a message waits for storage (a group commit, milliseconds). A component
//! fanning one message out to a thousand offline room members, or a server link carrying
//! many users' messages, waited for a thousand commits in a row on its own connection (issue
//! 18, item 2). Instead the router hands the message to its recipient's lane and reads on: a
//! lane is a task, started when a recipient has a message to handle and ended when none
//! waits, that handles them one after the other, so a recipient's messages are stored (and
//! counted against `max_user_offline_messages`) in the order they were routed; [`LANES`]
//! lanes handle a message at once, and their stores share commits. A recipient waits only
//! for its own earlier messages, never behind another's commit.
//!
//! A client's message is handled on the client's own read loop, as before (`Sender::Waits`):
//! measured side by side, 20 clients pushing to 1,000 offline users went about 13 % faster
//! and spent about 15 % less CPU per message inline than through lanes (docs/BENCHMARKS.md,
//! "Off the read loop"), and a client's XEP-0198 `h` then counts a message once stored with
//! nothing more to track. When a lane holds messages for the recipient, the client's message
//! joins it and the client waits for it there, so it cannot overtake them.
//!
//! Order with the recipient's sessions: while a lane holds messages for an account, the
//! router sends that account's next messages through the lane too, even when a session has
//! come online meanwhile; the lane then delivers them to it. A message the lane stores after
//! the account came online wakes its session (see `offline`), which reads storage again.
//!
//! Bounded: the lanes hold [`QUEUED`] messages in all; a sender that finds them full waits
//! (its reads pause), which is the back-pressure. At shutdown the lanes are drained after the
//! connections closed and before storage closes ([`Lanes::drain`]); a message routed after
//! that is handled inline.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use herald_stream::stanza::{MessageType, Stanza};
use jid::BareJid;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::task::TaskTracker;

use crate::{Server, envelope::Meta};

/// How many lanes run at once by default (`general.recipient_lanes`): messages for
/// different recipients are handled concurrently up to this many at a time (and share the
/// storage engine's commits). More is not faster on SQLite: with every message in lanes (a
/// first design), 128 pushed about a third less than 32 flat out on 2 cores (their lookups
/// and stores contend for the pool's threads and the allocator), 8 and 16 less too
/// (docs/BENCHMARKS.md, "Off the read loop").
pub const LANES: usize = 32;

/// Messages all lanes hold at most before senders wait: a component's fan-out to a couple
/// of thousand offline users is taken at once; beyond, what waits is cheaper as bytes in the
/// sender's socket than as parsed stanzas here.
pub const QUEUED: usize = 2048;

/// Who routes a message that may go to a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    /// A client: the message is handled before the client's next stanza is read (on its
    /// read loop, or in the recipient's lane if that holds earlier messages).
    Waits,
    /// A component, another server or the server itself: the message is handed to the lane.
    HandsOver,
}

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
    done: Option<oneshot::Sender<()>>,
    /// Its place among the [`QUEUED`].
    room: OwnedSemaphorePermit,
}

/// The lanes of a server: one per recipient with messages to handle (by a hash of the bare
/// JID), each a task while it has any.
pub struct Lanes {
    inner: Option<Arc<Inner>>,
    hasher: RandomState,
}

/// The lanes of one shard: for each, what waits behind the message being handled.
type Waiting = HashMap<u64, VecDeque<Queued>>;

/// Maps the lanes are spread over, so that routing on several threads rarely meets on a lock.
const SHARDS: usize = 16;

struct Inner {
    server: Weak<Server>,
    /// The messages waiting behind the one each lane is handling, in [`SHARDS`] maps by key
    /// (every message to a bare JID asks whether its recipient has a lane).
    waiting: Vec<Mutex<Waiting>>,
    /// Lanes handling a message at once.
    running: Semaphore,
    /// Messages held, at most.
    room: Arc<Semaphore>,
    closed: AtomicBool,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("inline", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

impl Lanes {
    /// Lanes for `server`, `running` of them at once; none (every message handled inline)
    /// when `running` is 0 or the server is built outside a Tokio runtime.
    pub(crate) fn new(server: &Weak<Server>, running: usize) -> Lanes {
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        Lanes {
            inner: (running > 0 && runtime).then(|| {
                Arc::new(Inner {
                    server: Weak::clone(server),
                    waiting: (0..SHARDS).map(|_| Mutex::default()).collect(),
                    running: Semaphore::new(running),
                    room: Arc::new(Semaphore::new(QUEUED)),
                    closed: AtomicBool::new(false),
                    tasks: TaskTracker::new(),
                })
            }),
            hasher: RandomState::new(),
        }
    }

    /// Whether a lane holds messages for `to` (a later message must follow them).
    pub(crate) fn holds(&self, to: &BareJid) -> bool {
        self.inner.as_ref().is_some_and(|inner| {
            let key = self.hasher.hash_one(to);
            lock(inner.shard(key)).contains_key(&key)
        })
    }

    /// Hand a message to its recipient's lane, waiting while the lanes are full; handled
    /// inline when there are no lanes or they were drained. A client's message is handled
    /// before this returns: inline, or in the lane when the lane holds earlier ones.
    pub(crate) async fn submit(&self, server: &Server, job: Job, sender: Sender) {
        if sender == Sender::Waits && !self.holds(&job.to) {
            return handle(server, job).await;
        }
        let room = match &self.inner {
            Some(inner) if !inner.closed.load(Ordering::Acquire) => {
                Arc::clone(&inner.room).acquire_owned().await.ok()
            }
            _ => None,
        };
        let (Some(inner), Some(room)) = (&self.inner, room) else {
            return handle(server, job).await;
        };
        let (done, handled) = match sender {
            Sender::Waits => {
                let (done, handled) = oneshot::channel();
                (Some(done), Some(handled))
            }
            Sender::HandsOver => (None, None),
        };
        let key = self.hasher.hash_one(&job.to);
        let queued = Queued { job, done, room };
        crate::metrics::lane_queued();
        {
            let mut waiting = lock(inner.shard(key));
            match waiting.get_mut(&key) {
                Some(lane) => lane.push_back(queued),
                None => {
                    waiting.insert(key, VecDeque::new());
                    inner.tasks.spawn(run(Arc::clone(inner), key, queued));
                }
            }
        }
        if let Some(handled) = handled {
            // Closed without a value too once handled (or if the lane's task ended).
            let _ = handled.await;
        }
    }

    /// Stop taking messages and wait until the lanes handled what they hold (a graceful
    /// shutdown, after the connections closed and before storage closes); later messages
    /// are handled inline.
    pub async fn drain(&self) {
        let Some(inner) = &self.inner else { return };
        inner.closed.store(true, Ordering::Release);
        inner.room.close();
        inner.tasks.close();
        inner.tasks.wait().await;
    }
}

impl Inner {
    /// The map that holds lane `key`.
    fn shard(&self, key: u64) -> &Mutex<Waiting> {
        &self.waiting[usize::try_from(key % SHARDS as u64).unwrap_or(0)]
    }
}

/// Handle a message now. Boxed as a `dyn Future`: routing in a lane can come back to
/// [`Lanes::submit`] (which starts lanes), so without this the future's type would contain
/// itself and its `Send` could not be proved.
fn handle(server: &Server, job: Job) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(server.run_lane_job(job))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lane: its recipient's messages one after the other, each when a place among the
/// running lanes is free, until none waits.
async fn run(inner: Arc<Inner>, key: u64, mut next: Queued) {
    loop {
        let Some(server) = inner.server.upgrade() else {
            return;
        };
        {
            let _running = inner.running.acquire().await;
            handle(&server, next.job).await;
        }
        drop(server);
        crate::metrics::lane_done();
        drop(next.done);
        drop(next.room);
        let following = {
            let mut waiting = lock(inner.shard(key));
            let following = waiting.get_mut(&key).and_then(VecDeque::pop_front);
            if following.is_none() {
                waiting.remove(&key);
            }
            following
        };
        match following {
            Some(queued) => next = queued,
            None => return,
        }
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

    /// A message from a component (handed over to the lane).
    async fn from_component(server: &Server, body: &str) {
        let component = Jid::new("v@h/r").unwrap();
        server
            .route(Origin::Component(&component), chat(body))
            .await;
    }

    /// A message from a client (which waits for it to be handled).
    async fn from_client(server: &Server, body: &str) {
        let client = FullJid::new("v@h/r").unwrap();
        server.route(Origin::Client(&client), chat(body)).await;
    }

    async fn until_taken(taken: &Mutex<Vec<String>>, count: usize) {
        for _ in 0..500 {
            if lock(taken).len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {count} handled", lock(taken).len());
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
        // A component's message for an absent account: its lane holds it at the gate, and
        // the component reads on.
        from_component(&server, "one").await;
        let user = BareJid::new("u@h").unwrap();
        assert!(server.lanes.holds(&user));
        // (Had the account come online before the lane took the message, the lane would
        // deliver it: it routes again.)
        tokio::time::sleep(Duration::from_millis(20)).await;

        // The account comes online; a client's next message must not overtake the first:
        // it joins the lane, and the client waits for it there.
        let (handle, mut inbox) = SessionHandle::new(FullJid::new("u@h/phone").unwrap());
        server.sessions.bind(handle.clone());
        server.sessions.set_availability(
            &handle.jid,
            handle.id,
            Availability::Available {
                priority: 0,
                presence: crate::sessions::StoredPresence::new(&Element::bare(
                    "presence",
                    "jabber:client",
                )),
            },
        );
        let client = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { from_client(&server, "two").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(inbox.try_recv().is_none(), "the second overtook the first");
        assert!(
            !client.is_finished(),
            "the client did not wait for its message"
        );

        permits.add_permits(1);
        client.await.unwrap();
        assert_eq!(*lock(&taken), ["one"]);
        assert_eq!(body_of(&inbox.try_recv().unwrap()), "two");
        assert!(!server.lanes.holds(&user));

        // Nothing held: a message for the online account goes straight to it.
        from_component(&server, "three").await;
        assert_eq!(body_of(&inbox.try_recv().unwrap()), "three");
    }

    #[tokio::test]
    async fn one_recipients_messages_are_handled_in_the_order_routed() {
        let (server, permits, taken) = server().await;
        permits.add_permits(1_000);
        for n in 0..200 {
            if n % 3 == 0 {
                from_client(&server, &n.to_string()).await;
            } else {
                from_component(&server, &n.to_string()).await;
            }
        }
        until_taken(&taken, 200).await;
        let expected: Vec<String> = (0..200).map(|n| n.to_string()).collect();
        assert_eq!(*lock(&taken), expected);
    }

    #[tokio::test]
    async fn a_component_reads_on_while_a_client_waits_for_its_message() {
        let (server, permits, taken) = server().await;
        // The gate is shut: a component's message is handed over at once.
        tokio::time::timeout(Duration::from_secs(5), from_component(&server, "c"))
            .await
            .expect("the component waited for storage");
        assert!(lock(&taken).is_empty());
        permits.add_permits(1);
        until_taken(&taken, 1).await;
        // A client's is handled before route returns.
        permits.add_permits(1);
        from_client(&server, "d").await;
        assert_eq!(*lock(&taken), ["c", "d"]);
    }

    #[tokio::test]
    async fn draining_handles_what_the_lanes_hold_and_later_messages_inline() {
        let (server, permits, taken) = server().await;
        from_component(&server, "held").await;
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
        // After the drain a component's message is handled before route returns.
        from_component(&server, "late").await;
        assert_eq!(*lock(&taken), ["held", "late"]);
    }
}
