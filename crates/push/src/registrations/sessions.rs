//! The registration enabled in each session (push.md section 3: "remembered on the current
//! session, one per session, the last enable"), for the enhanced and hints plugins, which push
//! a session's unacknowledged messages to that session's own device.
//!
//! Kept in the session's own state (`herald_core::session_state`), so it lives and dies with
//! the session; a disable clears it on every session of the account.

use std::sync::Mutex;

use herald_core::sessions::{SessionHandle, SessionRegistry};
use jid::{BareJid, FullJid};

use super::RegistrationKey;

/// The last registration enabled in one session.
#[derive(Debug, Default)]
pub struct EnabledInSession(Mutex<Option<RegistrationKey>>);

impl EnabledInSession {
    fn key(&self) -> std::sync::MutexGuard<'_, Option<RegistrationKey>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `key` was enabled in `session`; replaces what the session had.
    pub fn remember(session: &SessionHandle, key: RegistrationKey) {
        *session.state.get_or_default::<EnabledInSession>().key() = Some(key);
    }

    /// The registration enabled in the session bound to `resource`, if any.
    pub fn of_session(sessions: &SessionRegistry, resource: &FullJid) -> Option<RegistrationKey> {
        sessions
            .get(resource)?
            .state
            .get::<EnabledInSession>()?
            .key()
            .clone()
    }

    /// Clear, on every session of `owner`, the registrations at `pubsub` (with `node` when
    /// given): what a disable does.
    pub fn forget(
        sessions: &SessionRegistry,
        owner: &BareJid,
        pubsub: &BareJid,
        node: Option<&str>,
    ) {
        for resource in sessions.resources(owner) {
            if let Some(enabled) = resource.handle.state.get::<EnabledInSession>() {
                let mut key = enabled.key();
                if key.as_ref().is_some_and(|key| {
                    key.pubsub == *pubsub && node.is_none_or(|node| key.node == node)
                }) {
                    *key = None;
                }
            }
        }
    }

    /// Clear one registration on every session of its owner (it was disabled).
    pub fn forget_key(sessions: &SessionRegistry, key: &RegistrationKey) {
        EnabledInSession::forget(sessions, &key.owner, &key.pubsub, Some(&key.node));
    }

    /// Clear every registration on the sessions of `owner` (the account was deleted).
    pub fn forget_user(sessions: &SessionRegistry, owner: &BareJid) {
        for resource in sessions.resources(owner) {
            if let Some(enabled) = resource.handle.state.get::<EnabledInSession>() {
                *enabled.key() = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::sessions::SessionHandle;

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

    /// A registry with alice's sessions bound on `names`.
    fn bound(names: &[&str]) -> SessionRegistry {
        let registry = SessionRegistry::default();
        for name in names {
            let (handle, _inbox) = SessionHandle::new(resource(name));
            registry.bind(handle);
        }
        registry
    }

    fn remember(registry: &SessionRegistry, name: &str, node: &str) {
        EnabledInSession::remember(&registry.get(&resource(name)).unwrap(), key(node));
    }

    #[test]
    fn a_session_keeps_only_its_last_enable() {
        let table = bound(&["phone", "tablet"]);
        remember(&table, "phone", "a");
        remember(&table, "phone", "b");
        remember(&table, "tablet", "c");
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("phone")),
            Some(key("b"))
        );
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("tablet")),
            Some(key("c"))
        );
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("watch")),
            None
        );
    }

    #[test]
    fn disable_clears_matching_entries_on_every_session() {
        let table = bound(&["phone", "tablet"]);
        let k = key("a");
        remember(&table, "phone", "a");
        remember(&table, "tablet", "b");
        EnabledInSession::forget(&table, &k.owner, &k.pubsub, Some("a"));
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("phone")),
            None
        );
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("tablet")),
            Some(key("b"))
        );
        EnabledInSession::forget(&table, &k.owner, &k.pubsub, None);
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("tablet")),
            None
        );
    }

    #[test]
    fn what_an_ended_session_enabled_ends_with_it() {
        let table = bound(&["phone", "tablet"]);
        remember(&table, "phone", "a");
        remember(&table, "tablet", "b");
        let phone = table.get(&resource("phone")).unwrap();
        table.unbind(&resource("phone"), phone.id);
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("phone")),
            None
        );
        assert_eq!(
            EnabledInSession::of_session(&table, &resource("tablet")),
            Some(key("b"))
        );
    }
}
