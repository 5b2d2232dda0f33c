//! Offline messages (XEP-0160), `[modules.mod_offline]`: a message of type chat or normal
//! with content worth keeping, for an account with no available resource, is stored and
//! delivered in order, stamped with a XEP-0203 `<delay/>`, when the account next sends
//! available presence with a non-negative priority.
//!
//! The module's whole surface is [`Offline::register`]: the `offline_message` hook stores
//! (late, so that modules running earlier can add metadata, which is stored with the message),
//! `user_available` delivers, `user_removed` deletes.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use herald_storage::offline::{NewOfflineMessage, Stored};
use herald_stream::Bare;
use jid::{BareJid, Jid};
use minidom::Element;
use serde::Deserialize;
use xmpp_parsers::{
    date::DateTime,
    delay::Delay,
    ns,
    stanza_error::{DefinedCondition, ErrorType},
};

use crate::{
    Server,
    config::{self, Integer, Invalid, KeyPath, Section},
    envelope::{Envelope, Meta},
    hooks::{Flow, Handler, OfflineMessage, Priority, UserAvailable, UserRemoved},
    module::{Module, Registrar},
    sessions::{SessionHandle, SessionId},
};

/// XEP-0160 section 5: the feature a server storing offline messages may advertise.
const MSGOFFLINE: &str = "msgoffline";

/// Options of `mod_offline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineConfig {
    /// `max_user_offline_messages`: messages kept per account; more are refused with
    /// `resource-constraint`.
    pub max_user_offline_messages: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            max_user_offline_messages: 100,
        }
    }
}

/// `[modules.mod_offline]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawOffline {
    /// See [`OfflineConfig::max_user_offline_messages`].
    pub max_user_offline_messages: Option<Integer>,
    /// The store (MongooseIM's `backend`); the server checks it against its storage engine.
    pub backend: Option<String>,
}

impl Section for OfflineConfig {
    type Raw = RawOffline;

    fn from_raw(raw: RawOffline, at: &KeyPath) -> Result<Self, Invalid> {
        let max_user_offline_messages = match raw.max_user_offline_messages {
            Some(n) => config::integer(
                n,
                1,
                "at least 1 (messages)",
                &at.key("max_user_offline_messages"),
            )?,
            None => OfflineConfig::default().max_user_offline_messages,
        };
        Ok(OfflineConfig {
            max_user_offline_messages,
        })
    }
}

/// The offline messages module.
#[derive(Debug)]
pub struct Offline {
    config: OfflineConfig,
}

impl Offline {
    /// The module with its options.
    pub fn new(config: OfflineConfig) -> Arc<Offline> {
        Arc::new(Offline { config })
    }
}

impl Module for Offline {
    fn name(&self) -> &'static str {
        "mod_offline"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(MSGOFFLINE);
        let hooks = r.hooks();
        hooks
            .offline_message
            .add(Priority::LATE, Arc::new(Store(Arc::clone(&self))));
        hooks
            .user_available
            .add(Priority::NORMAL, Arc::new(Deliver));
        hooks.user_removed.add(Priority::NORMAL, Arc::new(Remove));
    }
}

/// Why a message is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// Nothing a user would miss: chat states, receipts alone (XEP-0160 section 3 leaves it to
    /// the server; XEP-0334 hints can ask either way).
    NothingToKeep,
    /// A `<no-store/>` hint (XEP-0334).
    NoStoreHint,
}

const HINTS: &str = herald_stream::ns::HINTS;

/// Payloads that are a message's content even without a body: end-to-end encrypted
/// messages (OMEMO, OpenPGP) and invitations.
const CONTENT: &[(&str, &str)] = &[
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
    ("x", "jabber:x:conference"),
];

/// Whether a message is worth storing.
fn worth_storing(message: &Element) -> Result<(), Skip> {
    if message.has_child("no-store", HINTS) {
        return Err(Skip::NoStoreHint);
    }
    let has_content = message.has_child("store", HINTS)
        || message.has_child("body", herald_stream::ns::CLIENT)
        || message.has_child("subject", herald_stream::ns::CLIENT)
        || CONTENT
            .iter()
            .any(|(name, namespace)| message.has_child(name, *namespace));
    if has_content {
        Ok(())
    } else {
        Err(Skip::NothingToKeep)
    }
}

/// `offline_message`: store the message, or refuse it when the account's store is full.
struct Store(Arc<Offline>);

#[async_trait::async_trait]
impl Handler<OfflineMessage> for Store {
    async fn call(&self, server: &Server, event: &mut OfflineMessage) -> Flow {
        // XEP-0160 section 3: groupchat messages are not stored.
        if matches!(
            event.stanza.kind,
            herald_stream::stanza::StanzaKind::Message(
                herald_stream::stanza::MessageType::Groupchat
            )
        ) {
            return Flow::Continue;
        }
        if let Err(skip) = worth_storing(&event.stanza.element) {
            tracing::debug!(user = %event.recipient, ?skip, "offline message not stored");
            return Flow::Continue;
        }
        // The stanza's text, if the archive made it on the message's way here (the same
        // stanza, not serialised twice).
        let text = event.meta.take_text();
        let made: String;
        // A message held by a session and routed again keeps its original time.
        let (stanza, stored_at): (&str, _) = if has_own_delay(server, &event.stanza.element) {
            let mut element = event.stanza.element.clone();
            let held_since = take_own_delay(server, &mut element);
            made = herald_stream::serialise::to_string(&element);
            (&made, held_since.unwrap_or_else(SystemTime::now))
        } else if let Some(text) = &text {
            (text, SystemTime::now())
        } else {
            made = herald_stream::serialise::to_string(&event.stanza.element);
            (&made, SystemTime::now())
        };
        let from = event
            .stanza
            .from
            .clone()
            .unwrap_or_else(|| Jid::from(event.recipient.clone()));
        let message = NewOfflineMessage {
            from: &from,
            stored_at,
            stanza,
            metadata: &event.meta.to_stored(),
        };
        let limit = self.0.config.max_user_offline_messages;
        // RFC 6121 section 8.5.2.2.1 does not store for accounts that do not exist (the router
        // bounces those); the engine checks in the same step as it stores.
        let accounts = server.storage.accounts();
        let started = std::time::Instant::now();
        let stored = server
            .storage
            .offline()
            .store_for_account(accounts.as_ref(), &event.recipient, message, limit)
            .await;
        crate::metrics::store_latency("offline_store", started);
        match stored {
            Ok(Some(Stored::Stored(_))) => {
                crate::metrics::offline_stored();
                // The account may have come online while the message was on its way to
                // storage: its session read what was stored before this commit and would
                // otherwise keep this one until the next login. Ask it to read again.
                for session in server.sessions.message_targets(&event.recipient) {
                    session.want_offline();
                }
            }
            Ok(None) => return Flow::Continue,
            Ok(Some(Stored::Full)) => {
                tracing::info!(user = %event.recipient, limit, "offline storage full; message refused");
                server.bounce(
                    &event.stanza,
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                );
            }
            Err(error) => {
                tracing::error!(user = %event.recipient, %error, "cannot store an offline message");
                server.bounce(
                    &event.stanza,
                    ErrorType::Wait,
                    DefinedCondition::InternalServerError,
                );
            }
        }
        Flow::Stop
    }
}

/// `user_available`: a resource with a non-negative priority gets the stored messages.
struct Deliver;

#[async_trait::async_trait]
impl Handler<UserAvailable> for Deliver {
    async fn call(&self, server: &Server, event: &mut UserAvailable) -> Flow {
        // XEP-0160 section 3: delivered when the user sends presence with priority >= 0
        // (a negative priority means "never deliver bare-JID messages here"): at initial
        // presence, or when a resource's priority stops being negative.
        let was_deliverable = event.previous_priority.is_some_and(|p| p >= 0);
        if event.priority < 0 || was_deliverable {
            return Flow::Continue;
        }
        // The session pulls them itself, at its client's pace (see [`OfflineFeed`]).
        if let Some(session) = server.sessions.get(&event.session) {
            session.want_offline();
        }
        Flow::Continue
    }
}

/// Which session delivers each account's stored messages: one at a time, so that two
/// resources logging in together do not both get (and both remove) the same messages. A
/// session keeps its claim until everything it read was acknowledged, or until it ends; what
/// it then leaves unacknowledged stays stored and is offered to the account's other
/// available sessions.
#[derive(Debug, Default)]
pub(crate) struct OfflineClaims {
    by_user: Mutex<HashMap<BareJid, SessionId>>,
}

impl OfflineClaims {
    /// Claim the user's stored messages for `session`; `false` when another session has them.
    fn claim(&self, user: &BareJid, session: SessionId) -> bool {
        let mut claims = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        *claims.entry(user.clone()).or_insert(session) == session
    }

    /// Give up `session`'s claim, if it holds one; returns whether it did.
    fn release(&self, user: &BareJid, session: SessionId) -> bool {
        let mut claims = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if claims.get(user) == Some(&session) {
            claims.remove(user);
            return true;
        }
        false
    }
}

/// Stored messages this many at most are read from storage at once.
const PAGE: usize = 64;

/// One session's delivery of its account's stored messages (XEP-0160), driven by the session
/// loop: it reads a page when its client has room for more (XEP-0198: the unacknowledged
/// buffer is never overrun), and each message is removed from storage only once delivered,
/// so that a connection lost or a server killed during login loses nothing.
#[derive(Debug)]
pub(crate) struct OfflineFeed {
    user: BareJid,
    /// The id of the last message read from storage.
    after: i64,
    /// Everything stored was read (until [`OfflineFeed::look_again`]).
    exhausted: bool,
}

impl OfflineFeed {
    /// Start delivering the user's stored messages to `session`, unless another session of the
    /// account is delivering them.
    pub(crate) fn start(server: &Server, session: &SessionHandle) -> Option<OfflineFeed> {
        let user = session.jid.bare();
        server
            .offline_claims
            .claim(&user, session.id)
            .then_some(OfflineFeed {
                user,
                after: 0,
                exhausted: false,
            })
    }

    /// Whether everything stored has been read.
    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Read on: messages may have been stored since the last page.
    pub(crate) fn look_again(&mut self) {
        self.exhausted = false;
    }

    /// The next stored messages, at most `room`, ready to write (stamped with their XEP-0203
    /// `<delay/>`, carrying the metadata modules stored with them), each with its storage id.
    /// `None` when there is nothing left (or storage cannot be read: the messages stay stored
    /// for a later login); the feed is then exhausted.
    pub(crate) async fn next(
        &mut self,
        server: &Server,
        room: usize,
    ) -> Option<Vec<(i64, Envelope)>> {
        if self.exhausted {
            return None;
        }
        let store = server.storage.offline();
        let messages = match store
            .page(&self.user, self.after, room.clamp(1, PAGE))
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::error!(user = %self.user, %error, "cannot read offline messages");
                Vec::new()
            }
        };
        let Some(last) = messages.last().map(|m| m.id) else {
            self.exhausted = true;
            return None;
        };
        self.after = last;
        let domain = Jid::from(BareJid::from_parts(None, self.user.domain()));
        let mut ready = Vec::with_capacity(messages.len());
        for message in messages {
            let Ok(mut element) = message.stanza.parse::<Element>() else {
                tracing::warn!(user = %self.user, id = message.id, "dropping an offline message that does not parse");
                delivered(server, &self.user, &[message.id]).await;
                continue;
            };
            if let Some(delay) = delay(&domain, message.stored_at, Some(OFFLINE_STORAGE)) {
                element.append_child(delay);
            }
            // The metadata travels on with the message (into the stream-management buffer,
            // to the unacknowledged-message hook).
            ready.push((
                message.id,
                Envelope::with_meta(element, Meta::from_stored(&message.metadata)),
            ));
        }
        Some(ready)
    }

    /// Delivery is over: give up the claim. When the session ends with messages written but
    /// never acknowledged (`offer_rest`), they are still stored: offer them to the account's
    /// other sessions.
    pub(crate) fn end(self, server: &Server, session: SessionId, offer_rest: bool) {
        if server.offline_claims.release(&self.user, session) && offer_rest {
            for other in server.sessions.message_targets(&self.user) {
                if other.id != session {
                    other.want_offline();
                }
            }
        }
    }
}

/// Remove delivered messages from storage: acknowledged under XEP-0198, written and flushed
/// otherwise. A failure leaves them stored: delivered again at a later login, never lost.
pub(crate) async fn delivered(server: &Server, user: &BareJid, ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    crate::metrics::offline_delivered(ids.len());
    let started = std::time::Instant::now();
    let removed = server.storage.offline().remove(user, ids).await;
    crate::metrics::store_latency("offline_remove", started);
    if let Err(error) = removed {
        tracing::error!(%user, %error, "cannot remove delivered offline messages");
    }
}

/// The text of the `<delay/>` of a message from offline storage, as in XEP-0160's example.
const OFFLINE_STORAGE: &str = "Offline Storage";

/// Whether the message carries a `<delay/>` that this server put on it (`from` one of its
/// domains).
fn has_own_delay(server: &Server, message: &Element) -> bool {
    message.children().any(|child| {
        child.is("delay", ns::DELAY)
            && child
                .attr("from")
                .is_some_and(|from| server.is_local_domain(from))
    })
}

/// Take this server's `<delay/>` off a message and return its time: a message held in a
/// session and routed again keeps the time the server first handled it (XEP-0203: the
/// original time), and gets only one `<delay/>`.
fn take_own_delay(server: &Server, message: &mut Element) -> Option<SystemTime> {
    let mut foreign = Vec::new();
    let mut own = None;
    while let Some(delay) = message.remove_child("delay", ns::DELAY) {
        if delay
            .attr("from")
            .is_some_and(|from| server.is_local_domain(from))
        {
            own = Some(delay);
            break;
        }
        foreign.push(delay);
    }
    for delay in foreign {
        message.append_child(delay);
    }
    let delay = own?;
    let stamp = DateTime::from_str(delay.attr("stamp")?).ok()?;
    let micros = u64::try_from(stamp.0.timestamp_micros()).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_micros(micros))
}

/// Stamp a message that a session held and is routing again with the time it was first
/// written to the client (XEP-0203), unless this server already put a `<delay/>` on it.
pub(crate) fn stamp_held(server: &Server, message: &mut Element, at: SystemTime) {
    let Some(domain) = message
        .attr("to")
        .and_then(|to| Jid::new(to).ok())
        .map(|to| Jid::from(BareJid::from_parts(None, to.domain())))
    else {
        return;
    };
    if !has_own_delay(server, message)
        && let Some(delay) = delay(&domain, at, None)
    {
        message.append_child(delay);
    }
}

/// XEP-0203: `<delay from='domain' stamp='...'>text</delay>`.
fn delay(domain: &Jid, at: SystemTime, text: Option<&str>) -> Option<Element> {
    let stamp = DateTime::from_str(&xep0082(at)).ok()?;
    Some(
        Delay {
            from: Some(domain.clone()),
            stamp,
            data: text.map(str::to_owned),
        }
        .into(),
    )
}

/// A time in the XEP-0082 DateTime profile, UTC, to the millisecond:
/// `2002-09-10T23:08:25.123Z`.
pub(crate) fn xep0082(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01, counting in 400-year eras of
/// 146 097 days that start on March 1st (so the leap day ends a year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `user_removed`: the account's messages go with it.
struct Remove;

#[async_trait::async_trait]
impl Handler<UserRemoved> for Remove {
    async fn call(&self, server: &Server, event: &mut UserRemoved) -> Flow {
        if let Err(error) = server.storage.offline().remove_all(&event.user).await {
            tracing::error!(user = %event.user, %error, "cannot delete the offline messages of a removed account");
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn a_body_or_an_encrypted_payload_is_worth_storing() {
        assert_eq!(
            worth_storing(&message(
                "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
            )),
            Ok(())
        );
        assert_eq!(
            worth_storing(&message(
                "<message xmlns='jabber:client'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"
            )),
            Ok(())
        );
    }

    #[test]
    fn a_chat_state_alone_is_not_worth_storing_unless_hinted() {
        let composing = "<message xmlns='jabber:client' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
        assert_eq!(worth_storing(&message(composing)), Err(Skip::NothingToKeep));
        let hinted = "<message xmlns='jabber:client' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/>\
             <store xmlns='urn:xmpp:hints'/></message>";
        assert_eq!(worth_storing(&message(hinted)), Ok(()));
    }

    #[test]
    fn a_no_store_hint_wins_over_a_body() {
        assert_eq!(
            worth_storing(&message(
                "<message xmlns='jabber:client'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
            )),
            Err(Skip::NoStoreHint)
        );
    }

    /// The race the fix closes: the account logs in while a message for it is on its way to
    /// storage; its session has already read what was stored, so the commit must wake it.
    #[tokio::test]
    async fn a_message_stored_after_its_recipient_came_online_wakes_the_session() {
        let storage = herald_storage::Storage::open_sqlite_in_memory()
            .await
            .unwrap();
        let user = BareJid::new("u@h").unwrap();
        let credentials = herald_sasl::Credentials::from_password("pw", 4096).unwrap();
        storage
            .accounts()
            .create(&user, &credentials)
            .await
            .unwrap();
        let server = Server::new(Vec::new(), storage, &[]);
        let store = Store(Offline::new(OfflineConfig::default()));
        let event = |body: &str| OfflineMessage {
            recipient: user.clone(),
            stanza: herald_stream::Stanza::parse(message(&format!(
                "<message xmlns='jabber:client' from='v@h/r' to='u@h' type='chat'>\
                 <body>{body}</body></message>"
            )))
            .unwrap(),
            meta: Meta::default(),
        };
        let (handle, _inbox) = SessionHandle::new(jid::FullJid::new("u@h/phone").unwrap());
        server.sessions.bind(handle.clone());

        // Bound but not available: nothing to wake.
        assert_eq!(store.call(&server, &mut event("one")).await, Flow::Stop);
        let woken = || tokio::time::timeout(Duration::from_millis(50), handle.offline.notified());
        assert!(
            woken().await.is_err(),
            "a session that is not available was woken"
        );

        server.sessions.set_availability(
            &handle.jid,
            handle.id,
            crate::sessions::Availability::Available {
                priority: 0,
                presence: crate::sessions::StoredPresence::new(&Element::bare(
                    "presence",
                    "jabber:client",
                )),
            },
        );
        assert_eq!(store.call(&server, &mut event("two")).await, Flow::Stop);
        assert!(
            woken().await.is_ok(),
            "the available session was not told to read again"
        );
        assert_eq!(server.storage.offline().list(&user).await.unwrap().len(), 2);
    }

    #[test]
    fn stamps_follow_xep_0082() {
        assert_eq!(xep0082(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // XEP-0203's example stamp.
        let example = UNIX_EPOCH + Duration::from_secs(1_031_699_305);
        assert_eq!(xep0082(example), "2002-09-10T23:08:25.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_250);
        assert_eq!(xep0082(leap), "2000-02-29T00:00:00.250Z");
        assert_eq!(
            xep0082(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn the_delay_names_the_domain_and_the_stamp() {
        let domain = Jid::new("capulet.com").unwrap();
        let stamp = UNIX_EPOCH + Duration::from_secs(1_031_699_305);
        let delay = delay(&domain, stamp, Some(OFFLINE_STORAGE)).unwrap();
        assert!(delay.is("delay", "urn:xmpp:delay"));
        assert_eq!(delay.attr("from"), Some("capulet.com"));
        let parsed = DateTime::from_str(delay.attr("stamp").unwrap()).unwrap();
        assert_eq!(parsed, DateTime::from_str("2002-09-10T23:08:25Z").unwrap());
        assert_eq!(delay.text(), "Offline Storage");
    }
}
