//! Rosters (RFC 6121 section 2): each account's contact list, with every contact's name,
//! groups and presence subscription state (RFC 6121 section 3 and appendix A).
//!
//! The store keeps what the protocol needs and nothing of the protocol itself: which state
//! follows which stanza is decided by the server (`herald-core`'s roster module), which reads
//! and writes one item at a time through [`RosterStore::update`], atomically.
//!
//! A contact is a bare JID, already normalised by the `jid` crate; it may be on another domain
//! or have no localpart (a service such as `pubsub.example.org`).

#[doc(hidden)]
pub mod conformance;

use jid::BareJid;

use crate::StorageError;

/// The subscription part of a roster item as the client sees it (RFC 6121 section 2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// Neither receives the other's presence.
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both receive each other's presence.
    Both,
}

/// The nine subscription states between a user and one contact, from the user's side
/// (RFC 6121 appendix A.1). "Pending Out": the user asked for the contact's presence and the
/// contact has not answered; "Pending In": the contact asked for the user's presence and the
/// user has not answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// "None".
    #[default]
    None,
    /// "None + Pending Out".
    NonePendingOut,
    /// "None + Pending In".
    NonePendingIn,
    /// "None + Pending Out+In".
    NonePendingOutIn,
    /// "To".
    To,
    /// "To + Pending In".
    ToPendingIn,
    /// "From".
    From,
    /// "From + Pending Out".
    FromPendingOut,
    /// "Both".
    Both,
}

impl SubscriptionState {
    /// The state made of a subscription and the two pending flags, `None` for the three
    /// combinations that cannot exist (a pending request for a subscription already held).
    pub fn from_parts(
        subscription: Subscription,
        pending_out: bool,
        pending_in: bool,
    ) -> Option<SubscriptionState> {
        use SubscriptionState as S;
        Some(match (subscription, pending_out, pending_in) {
            (Subscription::None, false, false) => S::None,
            (Subscription::None, true, false) => S::NonePendingOut,
            (Subscription::None, false, true) => S::NonePendingIn,
            (Subscription::None, true, true) => S::NonePendingOutIn,
            (Subscription::To, false, false) => S::To,
            (Subscription::To, false, true) => S::ToPendingIn,
            (Subscription::From, false, false) => S::From,
            (Subscription::From, true, false) => S::FromPendingOut,
            (Subscription::Both, false, false) => S::Both,
            _ => return None,
        })
    }

    /// The subscription without the pending flags.
    pub fn subscription(self) -> Subscription {
        use SubscriptionState as S;
        match self {
            S::None | S::NonePendingOut | S::NonePendingIn | S::NonePendingOutIn => {
                Subscription::None
            }
            S::To | S::ToPendingIn => Subscription::To,
            S::From | S::FromPendingOut => Subscription::From,
            S::Both => Subscription::Both,
        }
    }

    /// Whether the user's request for the contact's presence awaits an answer (shown to
    /// clients as `ask='subscribe'`).
    pub fn pending_out(self) -> bool {
        use SubscriptionState as S;
        matches!(
            self,
            S::NonePendingOut | S::NonePendingOutIn | S::FromPendingOut
        )
    }

    /// Whether the contact's request for the user's presence awaits the user's answer.
    pub fn pending_in(self) -> bool {
        use SubscriptionState as S;
        matches!(
            self,
            S::NonePendingIn | S::NonePendingOutIn | S::ToPendingIn
        )
    }

    /// Whether the user receives the contact's presence ("to" or "both").
    pub fn has_to(self) -> bool {
        matches!(self.subscription(), Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence ("from" or "both").
    pub fn has_from(self) -> bool {
        matches!(self.subscription(), Subscription::From | Subscription::Both)
    }
}

/// One contact in a user's roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID.
    pub contact: BareJid,
    /// The name the user gave the contact, if any.
    pub name: Option<String>,
    /// The subscription state between the user and the contact.
    pub state: SubscriptionState,
    /// The status text that came with the contact's pending subscription request (RFC 6121
    /// section 3.1.3), delivered again with the stored request.
    pub ask_message: Option<String>,
    /// The groups the user put the contact in; the store returns them sorted, without
    /// duplicates.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// A new item for `contact`: no name, no groups, no subscription.
    pub fn new(contact: BareJid) -> RosterItem {
        RosterItem {
            contact,
            name: None,
            state: SubscriptionState::None,
            ask_message: None,
            groups: Vec::new(),
        }
    }
}

/// What [`RosterStore::update`] did: the item before and after (`None`: no item).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemUpdate {
    /// The item as it was.
    pub before: Option<RosterItem>,
    /// The item as it is now.
    pub after: Option<RosterItem>,
}

impl ItemUpdate {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// A change to one roster item: given the current item, the item to keep (`None` deletes it).
pub type ItemEdit<'a> = Box<dyn FnOnce(Option<&RosterItem>) -> Option<RosterItem> + Send + 'a>;

/// The rosters of the server's accounts. Engines implement it; the server uses it through
/// `Arc<dyn RosterStore>` from [`Storage::roster`](crate::Storage::roster).
///
/// Every method taking a `user` fails with [`StorageError::InvalidUser`] when the JID has no
/// localpart. The store does not check that the account exists: rosters are removed with
/// [`RosterStore::remove_all`] when an account is.
#[async_trait::async_trait]
pub trait RosterStore: Send + Sync + 'static {
    /// Every item of the user's roster, sorted by contact JID (code point order), groups
    /// sorted; empty for an unknown user.
    async fn items(&self, user: &BareJid) -> Result<Vec<RosterItem>, StorageError>;

    /// The user's item for `contact`, if any.
    async fn item(
        &self,
        user: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError>;

    /// Read, change and write the user's item for `contact` as one atomic step: `edit` gets the
    /// current item and returns the one to keep, whose `contact` is replaced by `contact`;
    /// `None` deletes the item. Nothing is written when the item does not change.
    async fn update(
        &self,
        user: &BareJid,
        contact: &BareJid,
        edit: ItemEdit<'_>,
    ) -> Result<ItemUpdate, StorageError>;

    /// Delete the user's whole roster and its version; returns how many items there were.
    async fn remove_all(&self, user: &BareJid) -> Result<usize, StorageError>;

    /// The roster version last stored with [`RosterStore::bump_version`] (XEP-0237), if any.
    async fn version(&self, user: &BareJid) -> Result<Option<String>, StorageError>;

    /// Record that the user's roster changed: store and return a new version, different from
    /// every earlier one of this user.
    async fn bump_version(&self, user: &BareJid) -> Result<String, StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SubscriptionState; 9] = [
        SubscriptionState::None,
        SubscriptionState::NonePendingOut,
        SubscriptionState::NonePendingIn,
        SubscriptionState::NonePendingOutIn,
        SubscriptionState::To,
        SubscriptionState::ToPendingIn,
        SubscriptionState::From,
        SubscriptionState::FromPendingOut,
        SubscriptionState::Both,
    ];

    #[test]
    fn every_state_is_rebuilt_from_its_parts() {
        for state in ALL {
            assert_eq!(
                SubscriptionState::from_parts(
                    state.subscription(),
                    state.pending_out(),
                    state.pending_in()
                ),
                Some(state)
            );
        }
    }

    #[test]
    fn a_pending_request_for_a_subscription_already_held_is_not_a_state() {
        assert_eq!(
            SubscriptionState::from_parts(Subscription::To, true, false),
            None
        );
        assert_eq!(
            SubscriptionState::from_parts(Subscription::From, false, true),
            None
        );
        assert_eq!(
            SubscriptionState::from_parts(Subscription::Both, true, true),
            None
        );
    }

    #[test]
    fn to_and_from_follow_the_subscription() {
        let to: Vec<_> = ALL.into_iter().filter(|s| s.has_to()).collect();
        let from: Vec<_> = ALL.into_iter().filter(|s| s.has_from()).collect();
        assert_eq!(
            to,
            [
                SubscriptionState::To,
                SubscriptionState::ToPendingIn,
                SubscriptionState::Both
            ]
        );
        assert_eq!(
            from,
            [
                SubscriptionState::From,
                SubscriptionState::FromPendingOut,
                SubscriptionState::Both
            ]
        );
    }
}
