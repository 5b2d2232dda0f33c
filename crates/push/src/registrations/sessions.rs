//! The registration enabled in each session (spec section 3: "remembered on the current
//! session, one per session, the last enable"), for the enhanced and hints plugins, which push
//! a session's unacknowledged messages to that session's own device.
//!
//! Kept in memory by the module, keyed by the session's number. Entries of sessions that have
//! ended are dropped whenever the same user enables again, so the table holds at most one
//! stale entry per user.

use std::{collections::HashMap, sync::Mutex};

use herald_core::sessions::SessionId;
use jid::{BareJid, FullJid};

use super::RegistrationKey;

#[derive(Debug, Clone)]
struct Entry {
    session: SessionId,
    resource: FullJid,
    key: RegistrationKey,
}

/// The last registration enabled in each session, by user.
#[derive(Debug, Default)]
pub struct SessionRegistrations {
    users: Mutex<HashMap<BareJid, Vec<Entry>>>,
}

impl SessionRegistrations {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, Vec<Entry>>> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `key` was enabled in session `session` of `resource`; replaces that session's entry.
    /// `live` tells whether a session still runs, to drop the entries of ended ones.
    pub fn remember(
        &self,
        session: SessionId,
        resource: FullJid,
        key: RegistrationKey,
        live: impl Fn(&FullJid, SessionId) -> bool,
    ) {
        let mut users = self.users();
        let entries = users.entry(resource.to_bare()).or_default();
        entries.retain(|entry| entry.session != session && live(&entry.resource, entry.session));
        entries.push(Entry {
            session,
            resource,
            key,
        });
    }

    /// The registration enabled in the latest session bound to `resource`, if any.
    pub fn of_session(&self, resource: &FullJid) -> Option<RegistrationKey> {
        self.users()
            .get(&resource.to_bare())?
            .iter()
            .rev()
            .find(|entry| &entry.resource == resource)
            .map(|entry| entry.key.clone())
    }

    /// Clear, on every session of `owner`, the entries for `pubsub` (and `node` when given):
    /// what a disable does.
    pub fn forget(&self, owner: &BareJid, pubsub: &BareJid, node: Option<&str>) {
        let mut users = self.users();
        if let Some(entries) = users.get_mut(owner) {
            entries.retain(|entry| {
                !(entry.key.pubsub == *pubsub && node.is_none_or(|node| entry.key.node == node))
            });
            if entries.is_empty() {
                users.remove(owner);
            }
        }
    }

    /// Clear the entries of one registration (it was disabled by the app server's answer).
    pub fn forget_key(&self, key: &RegistrationKey) {
        self.forget(&key.owner, &key.pubsub, Some(&key.node));
    }

    /// Clear every entry of `owner` (the account was deleted).
    pub fn forget_user(&self, owner: &BareJid) {
        self.users().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str) -> RegistrationKey {
        RegistrationKey {
            owner: BareJid::new("alice@example.com").unwrap(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: node.to_owned(),
        }
    }

    fn resource(name: &str) -> FullJid {
        FullJid::new(&format!("alice@example.com/{name}")).unwrap()
    }

    #[test]
    fn a_session_keeps_only_its_last_enable() {
        let table = SessionRegistrations::default();
        table.remember(1, resource("phone"), key("a"), |_, _| true);
        table.remember(1, resource("phone"), key("b"), |_, _| true);
        table.remember(2, resource("tablet"), key("c"), |_, _| true);
        assert_eq!(table.of_session(&resource("phone")), Some(key("b")));
        assert_eq!(table.of_session(&resource("tablet")), Some(key("c")));
        assert_eq!(table.of_session(&resource("watch")), None);
    }

    #[test]
    fn disable_clears_matching_entries_on_every_session() {
        let table = SessionRegistrations::default();
        let k = key("a");
        table.remember(1, resource("phone"), key("a"), |_, _| true);
        table.remember(2, resource("tablet"), key("b"), |_, _| true);
        table.forget(&k.owner, &k.pubsub, Some("a"));
        assert_eq!(table.of_session(&resource("phone")), None);
        assert_eq!(table.of_session(&resource("tablet")), Some(key("b")));
        table.forget(&k.owner, &k.pubsub, None);
        assert_eq!(table.of_session(&resource("tablet")), None);
    }

    #[test]
    fn entries_of_ended_sessions_are_dropped_on_the_next_enable() {
        let table = SessionRegistrations::default();
        table.remember(1, resource("phone"), key("a"), |_, _| true);
        table.remember(2, resource("tablet"), key("b"), |_, session| session != 1);
        assert_eq!(table.of_session(&resource("phone")), None);
        assert_eq!(table.of_session(&resource("tablet")), Some(key("b")));
    }
}
