//! Offline messages (XEP-0160), `[modules.mod_offline]`: a message of type chat or normal
//! with content worth keeping, for an account with no available resource, is stored and
//! delivered in order, stamped with a XEP-0203 `<delay/>`, when the account next sends
//! available presence with a non-negative priority.
//!
//! The module's whole surface is [`Offline::register`]: the `offline_message` hook stores
//! (late, so that modules running earlier can add metadata, which is stored with the message),
//! `user_available` delivers, `user_removed` deletes.

use std::{
    str::FromStr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use herald_storage::offline::{NewOfflineMessage, Stored, StoredMessage};
use jid::{BareJid, Jid};
use minidom::Element;
use xmpp_parsers::{
    date::DateTime,
    delay::Delay,
    stanza_error::{DefinedCondition, ErrorType},
};

use crate::{
    Server,
    hooks::{Flow, Handler, OfflineMessage, Priority, UserAvailable, UserRemoved},
    module::{Module, Registrar},
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

const HINTS: &str = "urn:xmpp:hints";

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
        let stanza = String::from(&event.stanza.element);
        let from = event
            .stanza
            .from
            .clone()
            .unwrap_or_else(|| Jid::from(event.recipient.clone()));
        let message = NewOfflineMessage {
            from: &from,
            stored_at: SystemTime::now(),
            stanza: &stanza,
            metadata: &event.metadata,
        };
        let limit = self.0.config.max_user_offline_messages;
        // RFC 6121 section 8.5.2.2.1 does not store for accounts that do not exist (the router
        // bounces those); the engine checks in the same step as it stores.
        let accounts = server.storage.accounts();
        match server
            .storage
            .offline()
            .store_for_account(accounts.as_ref(), &event.recipient, message, limit)
            .await
        {
            Ok(Some(Stored::Stored(_))) => {}
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
        let user = event.session.to_bare();
        let store = server.storage.offline();
        let messages = match store.take(&user).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::error!(%user, %error, "cannot read offline messages");
                return Flow::Continue;
            }
        };
        let Some(session) = server.sessions.get(&event.session) else {
            restore(server, &user, &messages).await;
            return Flow::Continue;
        };
        let domain = Jid::from(BareJid::from_parts(None, user.domain()));
        for (delivered, message) in messages.iter().enumerate() {
            let Ok(mut element) = message.stanza.parse::<Element>() else {
                tracing::warn!(%user, id = message.id, "dropping an offline message that does not parse");
                continue;
            };
            if let Some(delay) = delay(&domain, message.stored_at) {
                element.append_child(delay);
            }
            // The metadata travels on with the message (into the stream-management buffer
            // and back here if it is never acknowledged); it is never written to the client.
            herald_stream::stanza::set_internal_metadata(&mut element, &message.metadata);
            if !session.deliver(element) {
                // The session is gone or stuck: keep what it could not take.
                restore(server, &user, &messages[delivered..]).await;
                break;
            }
        }
        Flow::Continue
    }
}

/// Put back messages that were taken but not delivered, with their original time.
async fn restore(server: &Server, user: &BareJid, messages: &[StoredMessage]) {
    let store = server.storage.offline();
    for message in messages {
        let again = NewOfflineMessage {
            from: &message.from,
            stored_at: message.stored_at,
            stanza: &message.stanza,
            metadata: &message.metadata,
        };
        if let Err(error) = store.store(user, again, usize::MAX).await {
            tracing::error!(%user, %error, "lost an offline message that could not be delivered");
        }
    }
}

/// XEP-0203: `<delay from='domain' stamp='...'>Offline Storage</delay>`, as in XEP-0160's
/// example.
fn delay(domain: &Jid, stored_at: SystemTime) -> Option<Element> {
    let stamp = DateTime::from_str(&xep0082(stored_at)).ok()?;
    Some(
        Delay {
            from: Some(domain.clone()),
            stamp,
            data: Some("Offline Storage".to_owned()),
        }
        .into(),
    )
}

/// A time in the XEP-0082 DateTime profile, UTC, to the millisecond:
/// `2002-09-10T23:08:25.123Z`.
fn xep0082(time: SystemTime) -> String {
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
        let delay = delay(&domain, stamp).unwrap();
        assert!(delay.is("delay", "urn:xmpp:delay"));
        assert_eq!(delay.attr("from"), Some("capulet.com"));
        let parsed = DateTime::from_str(delay.attr("stamp").unwrap()).unwrap();
        assert_eq!(parsed, DateTime::from_str("2002-09-10T23:08:25Z").unwrap());
        assert_eq!(delay.text(), "Offline Storage");
    }
}
