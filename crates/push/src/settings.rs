//! Per-conversation notification settings the account keeps in its PEP storage (XEP-0492,
//! Chat Notification Settings, version 0.1): the node `urn:xmpp:notification-settings:1`
//! holds one item per conversation, its id the conversation's bare JID, its payload
//!
//! ```xml
//! <notify xmlns='urn:xmpp:notification-settings:1'><never/></notify>
//! ```
//!
//! with `<always/>`, `<on-mention/>` or `<never/>`. Every client of the account shares them;
//! the push decision respects them (skip reasons `muted` and `not_mentioned`). Calls always
//! notify.
//!
//! Each user's settings are read once and kept in memory; a change to the node (a publish,
//! a retraction, the node purged or deleted) is reported by the PEP module's `pep_changed`
//! hook and the user's settings are read again at the next notification.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use herald_core::pep::ITEMS;
use herald_storage::UserDataStore;
use herald_stream::Bare;
use jid::BareJid;
use minidom::Element;

use crate::{
    events::Message,
    extensions::mentions,
    vocabulary::{Payload, Skip},
};

/// The PEP node, and the namespace of its payloads.
pub const NODE: &str = "urn:xmpp:notification-settings:1";

/// Users whose settings are kept, at most (beyond, all are read again).
const CACHED_USERS: usize = 100_000;

/// What the user wants notified of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSetting {
    /// Every message.
    Always,
    /// Messages that mention the user.
    OnMention,
    /// None.
    Never,
}

impl ChatSetting {
    /// The setting in a stored `<item/>`; `None` when it holds none.
    pub fn from_item(item: &Element) -> Option<ChatSetting> {
        let notify = item.get_child("notify", NODE)?;
        notify.children().find_map(|child| match child.name() {
            "always" => Some(ChatSetting::Always),
            "on-mention" => Some(ChatSetting::OnMention),
            "never" => Some(ChatSetting::Never),
            _ => None,
        })
    }

    /// Whether `message` to `user` notifies under this setting. A call always does.
    pub fn allows(self, user: &BareJid, message: &Message, payload: &Payload) -> Result<(), Skip> {
        if payload.subject().kind.is_call() {
            return Ok(());
        }
        match self {
            ChatSetting::Always => Ok(()),
            ChatSetting::Never => Err(Skip::Muted),
            ChatSetting::OnMention if mentioned(user, message) => Ok(()),
            ChatSetting::OnMention => Err(Skip::NotMentioned),
        }
    }
}

/// Whether `message` mentions `user`: a reference of type `mention` to the account
/// (XEP-0372), or the account's name as a word of the body.
pub fn mentioned(user: &BareJid, message: &Message) -> bool {
    let uri = format!("xmpp:{user}");
    let referenced = message.stanza.children().any(|child| {
        child.is("reference", "urn:xmpp:reference:0")
            && child.attr("type") == Some("mention")
            && child
                .attr("uri")
                .is_some_and(|target| target.split(['?', '/']).next() == Some(uri.as_str()))
    });
    referenced
        || user
            .node()
            .is_some_and(|name| mentions(&message.first_body().unwrap_or_default(), name.as_str()))
}

/// The users' settings, read from their PEP storage when first needed.
#[derive(Default)]
pub struct NotificationSettings {
    users: Mutex<HashMap<BareJid, Arc<HashMap<String, ChatSetting>>>>,
}

impl NotificationSettings {
    fn users(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<BareJid, Arc<HashMap<String, ChatSetting>>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `user` set for `conversation`, if anything. A store failure is logged and
    /// counts as no setting (the message still notifies).
    pub async fn of(
        &self,
        store: &dyn UserDataStore,
        user: &BareJid,
        conversation: &BareJid,
    ) -> Option<ChatSetting> {
        let cached = self.users().get(user).cloned();
        let settings = match cached {
            Some(settings) => settings,
            None => {
                let settings = Arc::new(read(store, user).await?);
                let mut users = self.users();
                if users.len() >= CACHED_USERS {
                    users.clear();
                }
                users.insert(user.clone(), Arc::clone(&settings));
                settings
            }
        };
        settings.get(conversation.as_str()).copied()
    }

    /// `user`'s settings changed: read them again when next needed.
    pub fn forget(&self, user: &BareJid) {
        self.users().remove(user);
    }
}

/// Every setting of `user`; `None` when the store failed.
async fn read(store: &dyn UserDataStore, user: &BareJid) -> Option<HashMap<String, ChatSetting>> {
    let entries = match store.list(user, ITEMS, NODE).await {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%error, %user, "cannot read the notification settings (XEP-0492)");
            return None;
        }
    };
    let mut settings = HashMap::new();
    for entry in entries {
        let Ok(item) = entry.value.parse::<Element>() else {
            continue;
        };
        // The item id is the conversation's JID, compared in its normal form.
        let Some(conversation) = jid::Jid::new(&entry.item).ok().map(|jid| jid.bare()) else {
            continue;
        };
        if let Some(setting) = ChatSetting::from_item(&item) {
            settings.insert(conversation.to_string(), setting);
        }
    }
    Some(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Message {
        Message::parse(xml.parse().unwrap()).unwrap()
    }

    fn alice() -> BareJid {
        BareJid::new("alice@example.com").unwrap()
    }

    #[test]
    fn the_setting_is_read_from_the_stored_item() {
        let item = |inner: &str| -> Element {
            format!(
                "<item xmlns='http://jabber.org/protocol/pubsub' id='bob@example.com'>\
                     <notify xmlns='{NODE}'>{inner}</notify></item>"
            )
            .parse()
            .unwrap()
        };
        assert_eq!(
            ChatSetting::from_item(&item("<never/>")),
            Some(ChatSetting::Never)
        );
        assert_eq!(
            ChatSetting::from_item(&item("<on-mention/>")),
            Some(ChatSetting::OnMention)
        );
        assert_eq!(
            ChatSetting::from_item(&item("<always/>")),
            Some(ChatSetting::Always)
        );
        assert_eq!(ChatSetting::from_item(&item("<other/>")), None);
    }

    #[test]
    fn a_mention_is_a_reference_to_the_account_or_its_name_in_the_body() {
        let plain = message(
            "<message xmlns='jabber:client' from='room@muc.example.com/bob' to='alice@example.com' \
             type='groupchat'><body>lunch?</body></message>",
        );
        assert!(!mentioned(&alice(), &plain));
        let named = message(
            "<message xmlns='jabber:client' from='room@muc.example.com/bob' to='alice@example.com' \
             type='groupchat'><body>Alice, lunch?</body></message>",
        );
        assert!(mentioned(&alice(), &named));
        let referenced = message(
            "<message xmlns='jabber:client' from='room@muc.example.com/bob' to='alice@example.com' \
             type='groupchat'><body>Al, lunch?</body>\
             <reference xmlns='urn:xmpp:reference:0' type='mention' uri='xmpp:alice@example.com' begin='0' end='2'/></message>",
        );
        assert!(mentioned(&alice(), &referenced));
    }

    #[test]
    fn never_mutes_on_mention_waits_for_one_and_calls_always_ring() {
        let chat = message(
            "<message xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' \
             type='chat'><body>hi</body></message>",
        );
        let summary = Payload::summary(1, "bob@example.com", "hi");
        assert_eq!(
            ChatSetting::Never.allows(&alice(), &chat, &summary),
            Err(Skip::Muted)
        );
        assert_eq!(
            ChatSetting::OnMention.allows(&alice(), &chat, &summary),
            Err(Skip::NotMentioned)
        );
        assert_eq!(
            ChatSetting::Always.allows(&alice(), &chat, &summary),
            Ok(())
        );
        let call = Payload::call("bob@example.com", "propose", "c");
        assert_eq!(ChatSetting::Never.allows(&alice(), &chat, &call), Ok(()));
    }
}
