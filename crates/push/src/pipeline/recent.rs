//! The registrations notified for messages pushed on the unacknowledged path (spec section 7),
//! remembered for a while: the stream-management buffer hands a message back to the router
//! without what was notified, so when its session ends and the message is re-routed, the
//! pipeline looks here to keep "at most one push per (message, registration)".
//!
//! Only messages with an `id` can be recognised. The table is bounded: past its capacity the
//! oldest entry goes, and entries expire after their time to live.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::events::{MessageKey, Notified};

/// How long an entry is kept: longer than the default resumption timeout (600 s).
pub const TTL: Duration = Duration::from_secs(15 * 60);

/// How many messages are remembered at most.
pub const CAPACITY: usize = 100_000;

/// Recently notified messages.
#[derive(Debug)]
pub struct Recent {
    entries: Mutex<HashMap<MessageKey, (Instant, Notified)>>,
    ttl: Duration,
    capacity: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(TTL, CAPACITY)
    }
}

impl Recent {
    /// A table keeping `capacity` entries for `ttl` each.
    pub fn new(ttl: Duration, capacity: usize) -> Recent {
        Recent {
            entries: Mutex::default(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<MessageKey, (Instant, Notified)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add `notified` to what is remembered for the message `key`.
    pub fn remember(&self, key: MessageKey, notified: &Notified) {
        let now = Instant::now();
        let mut entries = self.entries();
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries
            .entry(key)
            .or_insert_with(|| (now, Notified::default()));
        entry.0 = now;
        for registration in notified.iter() {
            entry.1.insert(registration.clone());
        }
    }

    /// What was remembered for the message `key`, if it has not expired.
    pub fn recall(&self, key: &MessageKey) -> Option<Notified> {
        let entries = self.entries();
        let (at, notified) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| notified.clone())
    }
}

#[cfg(test)]
mod tests {
    use jid::BareJid;

    use super::*;
    use crate::{events::Message, registrations::RegistrationKey};

    fn key(id: &str) -> MessageKey {
        Message::parse(
            format!("<message xmlns='jabber:client' from='a@x/r' to='b@x' id='{id}'/>")
                .parse()
                .unwrap(),
        )
        .unwrap()
        .key()
        .unwrap()
    }

    fn notified(node: &str) -> Notified {
        let mut notified = Notified::default();
        notified.insert(RegistrationKey {
            owner: BareJid::new("b@x").unwrap(),
            pubsub: BareJid::new("push.x").unwrap(),
            node: node.into(),
        });
        notified
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_remembered_is_merged_and_expires() {
        let recent = Recent::new(Duration::from_secs(60), 10);
        recent.remember(key("m1"), &notified("phone"));
        recent.remember(key("m1"), &notified("tablet"));
        assert_eq!(recent.recall(&key("m1")).unwrap().iter().count(), 2);
        assert!(recent.recall(&key("m2")).is_none());
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(recent.recall(&key("m1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn past_capacity_the_oldest_entry_goes() {
        let recent = Recent::new(Duration::from_secs(60), 2);
        recent.remember(key("m1"), &notified("a"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        recent.remember(key("m2"), &notified("a"));
        recent.remember(key("m3"), &notified("a"));
        assert!(recent.recall(&key("m1")).is_none());
        assert!(recent.recall(&key("m2")).is_some());
        assert!(recent.recall(&key("m3")).is_some());
    }
}
