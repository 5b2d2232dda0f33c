//! What personal eventing knows of who wants notifications (XEP-0163 section 4.3, "filtered
//! notifications" with XEP-0115 Entity Capabilities): the features behind each caps
//! `node#ver` (a bounded cache, filled by asking one entity that advertised it and checking
//! the hash, XEP-0115 section 5.4), and the caps of the remote contacts' resources that sent
//! presence to a local account (local resources' presence is in the session registry).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use herald_stream::Bare;
use jid::{BareJid, FullJid};

/// Most remote resources remembered; beyond, new ones are not notified until one leaves.
const MAX_REMOTE_RESOURCES: usize = 100_000;
/// Most accounts waiting for one caps query.
const MAX_WAITERS: usize = 1000;
/// Most (account, resource) pairs remembered as served their last items; beyond, the memory
/// starts over (at worst a resource gets the last items again with its next presence).
const MAX_SERVED: usize = 100_000;

/// The features of one caps hash.
pub type Features = Arc<HashSet<String>>;

/// Caps knowledge shared by the module.
#[derive(Debug)]
pub struct Interest {
    capacity: usize,
    known: Mutex<HashMap<String, Features>>,
    /// `node#ver` being asked for, with the (account, resource) pairs waiting for the answer.
    waiting: Mutex<HashMap<String, Vec<(BareJid, FullJid)>>>,
    /// Remote resources by bare JID: resource → caps.
    remote: Mutex<HashMap<BareJid, HashMap<String, String>>>,
    remote_count: Mutex<usize>,
    /// The resources each account sent its last items to since they came online, with the
    /// caps they had: a presence update is not a login.
    served: Mutex<HashMap<(BareJid, FullJid), String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What to do about a caps hash seen in presence.
pub enum Seen {
    /// Its features are known.
    Known(Features),
    /// Unknown and nobody asked yet: the caller asks.
    Ask,
    /// Already being asked; the caller was added to the waiters.
    Waiting,
}

impl Interest {
    /// Knowledge of at most `capacity` caps hashes.
    pub fn new(capacity: usize) -> Interest {
        Interest {
            capacity: capacity.max(1),
            known: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            remote_count: Mutex::new(0),
            served: Mutex::new(HashMap::new()),
        }
    }

    /// The features of `caps`, if known.
    pub fn features(&self, caps: &str) -> Option<Features> {
        lock(&self.known).get(caps).cloned()
    }

    /// `caps` arrived in presence from `from` to `user`.
    pub fn seen(&self, caps: &str, user: &BareJid, from: &FullJid) -> Seen {
        if let Some(features) = self.features(caps) {
            return Seen::Known(features);
        }
        let mut waiting = lock(&self.waiting);
        match waiting.get_mut(caps) {
            Some(waiters) => {
                if waiters.len() < MAX_WAITERS {
                    waiters.push((user.clone(), from.clone()));
                }
                Seen::Waiting
            }
            None => {
                waiting.insert(caps.to_owned(), vec![(user.clone(), from.clone())]);
                Seen::Ask
            }
        }
    }

    /// The answer for `caps` (verified features, or `None` when the query failed); returns the
    /// waiters.
    pub fn learned(&self, caps: &str, features: Option<Features>) -> Vec<(BareJid, FullJid)> {
        if let Some(features) = features {
            let mut known = lock(&self.known);
            if known.len() >= self.capacity
                && let Some(evicted) = known.keys().next().cloned()
            {
                known.remove(&evicted);
            }
            known.insert(caps.to_owned(), features);
        }
        lock(&self.waiting).remove(caps).unwrap_or_default()
    }

    /// A remote resource is available with `caps` (or left, with `None`).
    pub fn remote(&self, from: &FullJid, caps: Option<String>) {
        let mut remote = lock(&self.remote);
        let mut count = lock(&self.remote_count);
        let bare = from.bare();
        let resource = from.resource().to_string();
        match caps {
            Some(caps) => {
                let resources = remote.entry(bare).or_default();
                if !resources.contains_key(&resource) {
                    if *count >= MAX_REMOTE_RESOURCES {
                        return;
                    }
                    *count += 1;
                }
                resources.insert(resource, caps);
            }
            None => {
                if let Some(resources) = remote.get_mut(&bare) {
                    if resources.remove(&resource).is_some() {
                        *count -= 1;
                    }
                    if resources.is_empty() {
                        remote.remove(&bare);
                    }
                }
            }
        }
    }

    /// Whether `resource`, with `caps`, is new to `owner` (it came online, or its caps
    /// changed) and so gets the owner's last items; it is remembered as served.
    pub fn first_presence(&self, owner: &BareJid, resource: &FullJid, caps: &str) -> bool {
        let mut served = lock(&self.served);
        let key = (owner.clone(), resource.clone());
        if served.get(&key).is_some_and(|seen| seen == caps) {
            return false;
        }
        if served.len() >= MAX_SERVED && !served.contains_key(&key) {
            served.clear();
        }
        served.insert(key, caps.to_owned());
        true
    }

    /// `resource` went offline for `owner`: its next available presence is a login again.
    pub fn offline(&self, owner: &BareJid, resource: &FullJid) {
        lock(&self.served).remove(&(owner.clone(), resource.clone()));
    }

    /// The remote resources of `contact` with their caps.
    pub fn remote_resources(&self, contact: &BareJid) -> Vec<(FullJid, String)> {
        lock(&self.remote)
            .get(contact)
            .map(|resources| {
                resources
                    .iter()
                    .filter_map(|(resource, caps)| {
                        let full = FullJid::new(&format!("{contact}/{resource}")).ok()?;
                        Some((full, caps.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(list: &[&str]) -> Features {
        Arc::new(list.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn one_query_per_caps_and_every_waiter_is_answered() {
        let interest = Interest::new(2);
        let a = BareJid::new("a@x").unwrap();
        let b = BareJid::new("b@x").unwrap();
        let c = FullJid::new("c@y/phone").unwrap();
        assert!(matches!(interest.seen("n#1", &a, &c), Seen::Ask));
        assert!(matches!(interest.seen("n#1", &b, &c), Seen::Waiting));
        let waiters = interest.learned("n#1", Some(features(&["x+notify"])));
        assert_eq!(waiters.len(), 2);
        assert!(matches!(interest.seen("n#1", &a, &c), Seen::Known(_)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let interest = Interest::new(2);
        for caps in ["n#1", "n#2", "n#3"] {
            interest.learned(caps, Some(features(&[])));
        }
        let known = ["n#1", "n#2", "n#3"]
            .iter()
            .filter(|caps| interest.features(caps).is_some())
            .count();
        assert_eq!(known, 2);
    }

    #[test]
    fn only_the_first_presence_of_a_resource_is_served_until_it_leaves_or_its_caps_change() {
        let interest = Interest::new(2);
        let owner = BareJid::new("a@x").unwrap();
        let phone = FullJid::new("c@y/phone").unwrap();
        assert!(interest.first_presence(&owner, &phone, "n#1"));
        assert!(!interest.first_presence(&owner, &phone, "n#1"));
        assert!(interest.first_presence(&owner, &phone, "n#2"));
        interest.offline(&owner, &phone);
        assert!(interest.first_presence(&owner, &phone, "n#2"));
        let other = BareJid::new("b@x").unwrap();
        assert!(interest.first_presence(&other, &phone, "n#2"));
    }

    #[test]
    fn remote_resources_come_and_go() {
        let interest = Interest::new(2);
        let phone = FullJid::new("c@y/phone").unwrap();
        interest.remote(&phone, Some("n#1".to_owned()));
        let contact = phone.bare();
        assert_eq!(
            interest.remote_resources(&contact),
            [(phone.clone(), "n#1".to_owned())]
        );
        interest.remote(&phone, None);
        assert!(interest.remote_resources(&contact).is_empty());
    }
}
