//! What the pipeline remembers between messages (docs/modules/push.md, "Unread counts" and
//! "Calls"): each user's unread count, which `message-count` carries, and the calls whose
//! proposal was notified, so that a retraction cancels only a call the phone knows of.
//!
//! Both live in memory: a restart starts the counts from zero (the messages themselves are
//! in offline storage and the archive).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use jid::BareJid;

/// Conversations counted apart per user; beyond, the rest are counted together.
const CONVERSATIONS: usize = 1000;

/// Each user's messages notified since they were last active, per conversation (the sender's
/// bare JID, or the room's).
#[derive(Debug, Default)]
pub struct Unread {
    users: Mutex<HashMap<BareJid, HashMap<BareJid, u32>>>,
}

impl Unread {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, HashMap<BareJid, u32>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one more message for `user` in `conversation`; the user's total.
    pub fn add(&self, user: &BareJid, conversation: &BareJid) -> u32 {
        let mut users = self.users();
        let counts = users.entry(user.clone()).or_default();
        let bucket = if counts.len() < CONVERSATIONS || counts.contains_key(conversation) {
            conversation.clone()
        } else {
            // The user's own JID stands for every conversation beyond the limit.
            user.clone()
        };
        let count = counts.entry(bucket).or_insert(0);
        *count = count.saturating_add(1);
        counts
            .values()
            .fold(0u32, |total, n| total.saturating_add(*n))
    }

    /// The user's total.
    pub fn total(&self, user: &BareJid) -> u32 {
        self.users().get(user).map_or(0, |counts| {
            counts.values().fold(0u32, |t, n| t.saturating_add(*n))
        })
    }

    /// The user is active again: nothing is unread.
    pub fn reset(&self, user: &BareJid) {
        self.users().remove(user);
    }

    /// The user has seen `conversation` (a displayed marker, XEP-0333).
    pub fn read(&self, user: &BareJid, conversation: &BareJid) {
        let mut users = self.users();
        if let Some(counts) = users.get_mut(user) {
            counts.remove(conversation);
            if counts.is_empty() {
                users.remove(user);
            }
        }
    }
}

/// How long a notified proposal can still be cancelled.
pub const CALL_MEMORY: Duration = Duration::from_secs(600);

/// The calls whose proposal was notified lately, by (callee, session id).
#[derive(Debug, Default)]
pub struct Calls {
    proposed: Mutex<HashMap<(BareJid, String), Instant>>,
}

impl Calls {
    fn proposed(&self) -> std::sync::MutexGuard<'_, HashMap<(BareJid, String), Instant>> {
        self.proposed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A proposal of call `sid` to `user` was notified.
    pub fn proposed_to(&self, user: &BareJid, sid: &str) {
        let mut proposed = self.proposed();
        if proposed.len() > 4096 {
            proposed.retain(|_, at| at.elapsed() < CALL_MEMORY);
        }
        proposed.insert((user.clone(), sid.to_owned()), Instant::now());
    }

    /// Whether a proposal of call `sid` to `user` was notified lately; forgets it.
    pub fn take(&self, user: &BareJid, sid: &str) -> bool {
        self.proposed()
            .remove(&(user.clone(), sid.to_owned()))
            .is_some_and(|at| at.elapsed() < CALL_MEMORY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(text: &str) -> BareJid {
        BareJid::new(text).unwrap()
    }

    #[test]
    fn the_count_rises_per_message_and_resets_when_the_user_is_active() {
        let unread = Unread::default();
        let bob = jid("bob@example.com");
        assert_eq!(unread.add(&bob, &jid("alice@example.com")), 1);
        assert_eq!(unread.add(&bob, &jid("alice@example.com")), 2);
        assert_eq!(unread.add(&bob, &jid("carol@example.com")), 3);
        assert_eq!(unread.total(&jid("dave@example.com")), 0);
        unread.reset(&bob);
        assert_eq!(unread.total(&bob), 0);
        assert_eq!(unread.add(&bob, &jid("alice@example.com")), 1);
    }

    #[test]
    fn a_displayed_marker_clears_its_conversation_only() {
        let unread = Unread::default();
        let bob = jid("bob@example.com");
        unread.add(&bob, &jid("alice@example.com"));
        unread.add(&bob, &jid("alice@example.com"));
        unread.add(&bob, &jid("carol@example.com"));
        unread.read(&bob, &jid("alice@example.com"));
        assert_eq!(unread.total(&bob), 1);
        unread.read(&bob, &jid("carol@example.com"));
        assert!(unread.users().is_empty());
    }

    #[test]
    fn conversations_beyond_the_limit_are_counted_together() {
        let unread = Unread::default();
        let bob = jid("bob@example.com");
        for n in 0..CONVERSATIONS + 10 {
            unread.add(&bob, &jid(&format!("c{n}@example.com")));
        }
        assert_eq!(unread.total(&bob) as usize, CONVERSATIONS + 10);
        assert_eq!(unread.users()[&bob].len(), CONVERSATIONS + 1);
    }

    #[test]
    fn a_call_is_cancelled_once_and_only_if_proposed() {
        let calls = Calls::default();
        let bob = jid("bob@example.com");
        assert!(!calls.take(&bob, "s1"));
        calls.proposed_to(&bob, "s1");
        assert!(!calls.take(&jid("eve@example.com"), "s1"));
        assert!(calls.take(&bob, "s1"));
        assert!(!calls.take(&bob, "s1"));
    }
}
