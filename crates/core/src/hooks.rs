//! Typed hooks: the catalogue of events modules can act on, each with its own event type,
//! handlers ordered by a named priority, and a [`Flow`] that lets a handler stop the run.
//!
//! Add an event by adding a field to [`Hooks`] with its event struct; modules attach
//! handlers in their `register` function through [`crate::module::Registrar::hooks`].

use std::{sync::Arc, time::Duration};

use herald_stream::Stanza;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;

use crate::{Server, sessions::SessionId};

/// Whether later handlers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next handler.
    Continue,
    /// The event is fully handled; skip the remaining handlers.
    Stop,
}

/// When a handler runs relative to others on the same hook (lower first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(pub i32);

impl Priority {
    /// Runs before the default handlers (checks, filters).
    pub const EARLY: Priority = Priority(10);
    /// The default position.
    pub const NORMAL: Priority = Priority(50);
    /// Runs after the default handlers (storage of last resort, notifications).
    pub const LATE: Priority = Priority(90);
}

/// A hook handler for events of type `E`.
#[async_trait::async_trait]
pub trait Handler<E: Send + 'static>: Send + Sync + 'static {
    /// Act on the event; may change it for the handlers that follow.
    async fn call(&self, server: &Server, event: &mut E) -> Flow;
}

/// The handlers of one hook, in priority order.
pub struct HookList<E> {
    handlers: Vec<(Priority, Arc<dyn Handler<E>>)>,
}

impl<E> Default for HookList<E> {
    fn default() -> Self {
        HookList {
            handlers: Vec::new(),
        }
    }
}

impl<E: Send + 'static> HookList<E> {
    /// Attach a handler; handlers of equal priority run in registration order.
    pub fn add(&mut self, priority: Priority, handler: Arc<dyn Handler<E>>) {
        let index = self.handlers.partition_point(|(p, _)| *p <= priority);
        self.handlers.insert(index, (priority, handler));
    }

    /// Whether any handler is attached (lets callers skip building an event).
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Run the handlers in order until one returns [`Flow::Stop`]; returns that flow.
    pub async fn run(&self, server: &Server, event: &mut E) -> Flow {
        for (_, handler) in &self.handlers {
            if handler.call(server, event).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

/// An account was deleted (in-band or by `herald user remove`): modules delete their data.
#[derive(Debug)]
pub struct UserRemoved {
    /// The deleted account.
    pub user: BareJid,
}

/// Why a message written to a session is offered to the `unacked_message` hook: its
/// client may not see it soon, and the push module may wake the device (push.md section 7,
/// `docs/modules/push.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnackedCause {
    /// The session lost its connection and waits for resumption within `resume_timeout`
    /// (XEP-0198 section 5): its user still counts as online.
    Waiting,
    /// The session waits past `resume_timeout` because its client enabled push in it
    /// (hibernation, [`SessionWaiting`]): its user counts as offline, as if it had ended.
    Hibernating,
    /// Written to a connected stream-management session and not acknowledged within
    /// `max_ack_delay` (a phone whose app is suspended with its socket open).
    AckDelayed,
    /// Written to a connected session whose client said it is inactive (XEP-0352).
    Inactive,
}

impl UnackedCause {
    /// The cause as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            UnackedCause::Waiting => "unacknowledged",
            UnackedCause::Hibernating => "hibernating",
            UnackedCause::AckDelayed => "ack_delayed",
            UnackedCause::Inactive => "inactive",
        }
    }
}

/// A message written to a session that its client may not see soon ([`UnackedCause`]):
/// raised for each one buffered when a resumable session loses its connection and for each
/// one arriving while it waits (push.md section 7), for each one a connected session leaves
/// unacknowledged for `max_ack_delay`, and for each one written to an inactive session.
#[derive(Debug)]
pub struct UnackedMessage {
    /// The session.
    pub session: jid::FullJid,
    /// Why the message is offered.
    pub cause: UnackedCause,
    /// The message as it was written to the client.
    pub stanza: minidom::Element,
    /// What modules recorded about the message. Handlers may record more (the push module
    /// records the registrations it notified); the buffer keeps their version, so it travels
    /// on if the message is routed again.
    pub meta: crate::envelope::Meta,
    /// Set by a handler that sent a notification for it (a hibernating session then waits
    /// `resume_timeout` more for its client, [`Hibernate`]).
    pub pushed: bool,
}

/// How long a waiting session may hibernate ([`SessionWaiting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hibernate {
    /// The longest the session waits, counted from the loss of its connection. Past
    /// `resume_timeout` it waits until `resume_timeout` after the first notification sent
    /// for it, and at most this long.
    pub longest: Duration,
    /// When set, the session's end is announced ([`HibernationPhase::Expiring`]) this long
    /// before it comes, so that a wake-up notification makes the device come back in time.
    pub wake_before: Option<Duration>,
}

/// An account's PEP node changed: an item published or retracted, the node created,
/// configured, purged or deleted (XEP-0163). The push module re-reads the notification
/// settings (XEP-0492) when their node changes.
#[derive(Debug)]
pub struct PepChanged {
    /// The account.
    pub owner: BareJid,
    /// The node.
    pub node: String,
}

/// A client said it is active (XEP-0352 `<active/>`): its user is looking at it (the push
/// module resets the user's unread count).
#[derive(Debug)]
pub struct ClientActive {
    /// The session.
    pub session: jid::FullJid,
}

/// A resumable session lost its connection and starts waiting for its client. A handler may
/// let it hibernate past `resume_timeout` (the push module does, for a session whose client
/// enabled push in it: Prosody's and ejabberd's `mod_push_keepalive` behaviour).
#[derive(Debug)]
pub struct SessionWaiting {
    /// The session.
    pub session: jid::FullJid,
    /// Set by a handler that lets the session hibernate.
    pub hibernate: Option<Hibernate>,
}

/// A step in a hibernating session's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HibernationPhase {
    /// `resume_timeout` passed and the session goes on waiting.
    Started,
    /// The session ends in [`Hibernate::wake_before`]; `pending` messages wait in it.
    Expiring {
        /// The messages the session holds.
        pending: usize,
    },
    /// It was resumed, replaced, or expired. Not raised when the server shuts down: a
    /// module that persists hibernating sessions finds them again at start.
    Ended,
}

/// A hibernating session's step ([`HibernationPhase`]).
#[derive(Debug)]
pub struct Hibernation {
    /// The session.
    pub session: jid::FullJid,
    /// What happens.
    pub phase: HibernationPhase,
}

/// A message of type chat, normal or groupchat for a local account with no available resource of
/// non-negative priority (RFC 6121 section 8.5.2.2.1). A handler that takes charge of it
/// (offline storage, XEP-0160) returns [`Flow::Stop`]; if none does, the router bounces it
/// with `service-unavailable`, which is also the answer for an account that does not exist.
#[derive(Debug)]
pub struct OfflineMessage {
    /// The addressed account.
    pub recipient: BareJid,
    /// The message, with `from` stamped and `to` as the sender wrote it.
    pub stanza: herald_stream::Stanza,
    /// What modules recorded about the message (the push module records the registrations
    /// already notified); stored with it and returned with it when it is delivered. Its
    /// stanza's text, when the archive made it, is what storage keeps: a handler that changes
    /// the stanza takes it out ([`crate::envelope::Meta::take_text`]).
    pub meta: crate::envelope::Meta,
}

/// A resource sent available presence, initial or an update (RFC 6121 sections 4.2 and
/// 4.4), after the server processed it: offline messages are delivered here.
#[derive(Debug)]
pub struct UserAvailable {
    /// The resource.
    pub session: jid::FullJid,
    /// Its priority (RFC 6121 section 4.7.2.3).
    pub priority: i8,
    /// Its priority before this presence; `None` for initial presence.
    pub previous_priority: Option<i8>,
}

/// An item left a user's roster (a roster set with `subscription='remove'`, RFC 6121
/// section 2.5, or the account's removal): presence cancels both subscriptions with the
/// contact (section 2.5.2).
#[derive(Debug)]
pub struct RosterItemRemoved {
    /// The roster's owner.
    pub user: BareJid,
    /// The item as it was.
    pub item: herald_storage::roster::RosterItem,
}

/// A message a local client sent, before it is routed (XEP-0280 section 6: sent copies).
#[derive(Debug)]
pub struct MessageSent {
    /// The sending session.
    pub sender: FullJid,
    /// The message, `from` stamped.
    pub stanza: Stanza,
    /// What modules recorded about it; what a handler records here is seen by
    /// [`MessageArriving`]'s handlers when the recipient is local (the archive gives the
    /// recipient's copy the sender's archive id).
    pub meta: crate::envelope::Meta,
}

/// A message for a local account that was handed to some of its sessions (XEP-0280 section
/// 6: received copies go to the others).
#[derive(Debug)]
pub struct MessageDelivered {
    /// The addressed account.
    pub user: BareJid,
    /// The sessions that got it.
    pub delivered: Vec<SessionId>,
    /// The message as delivered.
    pub stanza: Element,
}

/// Which way a stanza goes, seen from the local account whose rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the account, from `peer`.
    In,
    /// From the account, to `peer`.
    Out,
}

/// May a stanza pass between a local account and a peer (XEP-0191 section 3.5)? A handler
/// that refuses sets `blocked`; the caller answers as the stanza's kind asks.
#[derive(Debug)]
pub struct PrivacyCheck {
    /// The local account whose rules apply.
    pub user: BareJid,
    /// The other party.
    pub peer: Jid,
    /// Which way the stanza goes.
    pub direction: Direction,
    /// Set by a handler that refuses it.
    pub blocked: bool,
}

/// Available or unavailable presence from an entity reached a local account (from a contact,
/// local or remote, or the account's own resource): what personal eventing needs to know who
/// is online and interested (XEP-0163 section 4.3).
#[derive(Debug)]
pub struct PresenceIn {
    /// The account the presence is addressed to.
    pub user: BareJid,
    /// The resource it comes from.
    pub from: FullJid,
    /// Its Entity Capabilities (XEP-0115): `node#ver` when it is available and carries them;
    /// `None` for unavailable presence.
    pub caps: Option<String>,
    /// Whether it is available presence.
    pub available: bool,
}

/// A user approved a contact's subscription to their presence (RFC 6121 section 3.1.5): the
/// contact now receives it (personal eventing sends the contact the user's last items).
#[derive(Debug)]
pub struct SubscriptionApproved {
    /// The user whose presence the contact may now see.
    pub user: BareJid,
    /// The contact.
    pub contact: BareJid,
}

/// A message for a local account, before it is delivered or stored (the archive stamps its
/// stanza-id here, XEP-0313 and XEP-0359). Handlers may change the stanza; one placed after
/// the archive's takes the stanza's text out of `meta` when it does
/// ([`crate::envelope::Meta::take_text`]: the archive records it for offline storage). The
/// archive's handler also writes the sender's side of a message between two local accounts
/// (its [`MessageSent`] handler leaves it here): a handler placed before it must not stop the
/// run.
#[derive(Debug)]
pub struct MessageArriving {
    /// The addressed account.
    pub user: BareJid,
    /// The server routes it again (a session's leftovers): it was handled when it first
    /// arrived.
    pub rerouted: bool,
    /// The message.
    pub stanza: Stanza,
    /// What modules recorded about it (as routed from the sender's [`MessageSent`], or as
    /// stored with it).
    pub meta: crate::envelope::Meta,
}

/// A message for a local account that the account's block list refused (XEP-0191 section
/// 3.5), before the router answers it: it never arrives, so the [`MessageArriving`] handlers
/// never see it. What the sender's [`MessageSent`] handlers left to the recipient's is
/// settled here (the archive writes the sender's side it had deferred).
#[derive(Debug)]
pub struct MessageRefused {
    /// The addressed account.
    pub user: BareJid,
    /// The message.
    pub stanza: Stanza,
    /// What modules recorded about it.
    pub meta: crate::envelope::Meta,
}

/// The catalogue of hooks.
#[derive(Default)]
pub struct Hooks {
    /// See [`MessageArriving`].
    pub message_arriving: HookList<MessageArriving>,
    /// See [`MessageRefused`].
    pub message_refused: HookList<MessageRefused>,
    /// See [`SubscriptionApproved`].
    pub subscription_approved: HookList<SubscriptionApproved>,
    /// See [`MessageSent`].
    pub message_sent: HookList<MessageSent>,
    /// See [`MessageDelivered`].
    pub message_delivered: HookList<MessageDelivered>,
    /// See [`PrivacyCheck`].
    pub privacy_check: HookList<PrivacyCheck>,
    /// See [`PresenceIn`].
    pub presence_in: HookList<PresenceIn>,
    /// See [`UserRemoved`].
    pub user_removed: HookList<UserRemoved>,
    /// See [`OfflineMessage`].
    pub offline_message: HookList<OfflineMessage>,
    /// See [`UserAvailable`].
    pub user_available: HookList<UserAvailable>,
    /// See [`ClientActive`].
    pub client_active: HookList<ClientActive>,
    /// See [`PepChanged`].
    pub pep_changed: HookList<PepChanged>,
    /// See [`UnackedMessage`].
    pub unacked_message: HookList<UnackedMessage>,
    /// See [`SessionWaiting`].
    pub session_waiting: HookList<SessionWaiting>,
    /// See [`Hibernation`].
    pub hibernation: HookList<Hibernation>,
    /// See [`RosterItemRemoved`].
    pub roster_item_removed: HookList<RosterItemRemoved>,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Record(&'static str, Arc<Mutex<Vec<&'static str>>>, Flow);

    #[async_trait::async_trait]
    impl Handler<UserRemoved> for Record {
        async fn call(&self, _server: &Server, _event: &mut UserRemoved) -> Flow {
            self.1.lock().unwrap().push(self.0);
            self.2
        }
    }

    #[tokio::test]
    async fn handlers_run_by_priority_and_stop_ends_the_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut list = HookList::default();
        list.add(
            Priority::LATE,
            Arc::new(Record("late", log.clone(), Flow::Continue)),
        );
        list.add(
            Priority::NORMAL,
            Arc::new(Record("normal-1", log.clone(), Flow::Continue)),
        );
        list.add(
            Priority::EARLY,
            Arc::new(Record("early", log.clone(), Flow::Continue)),
        );
        list.add(
            Priority::NORMAL,
            Arc::new(Record("normal-2", log.clone(), Flow::Stop)),
        );
        let storage = herald_storage::Storage::open_sqlite_in_memory()
            .await
            .unwrap();
        let server = Server::new(Vec::new(), storage, &[]);
        let mut event = UserRemoved {
            user: BareJid::new("u@h").unwrap(),
        };
        assert_eq!(list.run(&server, &mut event).await, Flow::Stop);
        assert_eq!(*log.lock().unwrap(), ["early", "normal-1", "normal-2"]);
    }
}
