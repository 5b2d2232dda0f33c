//! Subscription state transitions (RFC 6121 appendix A): what a subscription stanza does to
//! the roster item of each side, and whether it travels on.
//!
//! Pure functions over [`SubscriptionState`]; the presence module applies them to the store.
//! Pre-approval (RFC 6121 section 3.4) is not offered, so an outbound `subscribed` without a
//! pending request changes nothing (section 3.4: a server that does not support it ignores
//! the stanza).

use herald_storage::roster::SubscriptionState;

/// The four presence types that manage subscriptions (RFC 6121 section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// A request for the recipient's presence.
    Subscribe,
    /// An approval of the recipient's request.
    Subscribed,
    /// The sender no longer wants the recipient's presence.
    Unsubscribe,
    /// The sender cancels (or denies) the recipient's subscription.
    Unsubscribed,
}

impl SubscriptionKind {
    /// The presence `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Subscribe => "subscribe",
            SubscriptionKind::Subscribed => "subscribed",
            SubscriptionKind::Unsubscribe => "unsubscribe",
            SubscriptionKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// The effect of a subscription stanza on one side's item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The item's new state.
    pub state: SubscriptionState,
    /// Outbound: the stanza is routed to the contact. Inbound: it is delivered to the
    /// recipient's resources.
    pub forward: bool,
}

/// Appendix A.2: the user sends `kind` to the contact; `state` is the user's item for the
/// contact.
pub fn outbound(state: SubscriptionState, kind: SubscriptionKind) -> Transition {
    use SubscriptionKind as K;
    use SubscriptionState as S;
    let new = match (kind, state) {
        (K::Subscribe, S::None) => S::NonePendingOut,
        (K::Subscribe, S::NonePendingIn) => S::NonePendingOutIn,
        (K::Subscribe, S::From) => S::FromPendingOut,
        (K::Unsubscribe, _) => lose_to(state),
        (K::Subscribed, S::NonePendingIn) => S::From,
        (K::Subscribed, S::NonePendingOutIn) => S::FromPendingOut,
        (K::Subscribed, S::ToPendingIn) => S::Both,
        (K::Unsubscribed, _) => lose_from(state),
        _ => state,
    };
    let forward = match kind {
        // Sections 3.1.2 and 3.3.2: requests and cancellations of the user's own
        // subscription are always routed, so that a contact whose server lost track of the
        // state learns it again.
        K::Subscribe | K::Unsubscribe => true,
        // Sections 3.1.5 and 3.2.2 with appendix A.2: approvals and cancellations are routed
        // only when they change something.
        K::Subscribed | K::Unsubscribed => new != state,
    };
    Transition {
        state: new,
        forward,
    }
}

/// Appendix A.3: the contact's server receives `kind` from the user; `state` is the
/// contact's item for the user. A `subscribe` from a user who already has a subscription is
/// answered by the caller (section 3.1.3: auto-reply `subscribed`) and changes nothing here.
pub fn inbound(state: SubscriptionState, kind: SubscriptionKind) -> Transition {
    use SubscriptionKind as K;
    use SubscriptionState as S;
    let new = match (kind, state) {
        (K::Subscribe, S::None) => S::NonePendingIn,
        (K::Subscribe, S::NonePendingOut) => S::NonePendingOutIn,
        (K::Subscribe, S::To) => S::ToPendingIn,
        (K::Subscribed, S::NonePendingOut) => S::To,
        (K::Subscribed, S::NonePendingOutIn) => S::ToPendingIn,
        (K::Subscribed, S::FromPendingOut) => S::Both,
        // The sender gives up its subscription (or request) to the recipient's presence.
        (K::Unsubscribe, _) => lose_from(state),
        // The sender cancels (or denies) the recipient's subscription to its presence.
        (K::Unsubscribed, _) => lose_to(state),
        _ => state,
    };
    Transition {
        state: new,
        forward: new != state,
    }
}

/// The state without the user's subscription to the contact nor a pending request for it.
fn lose_to(state: SubscriptionState) -> SubscriptionState {
    use SubscriptionState as S;
    match state {
        S::NonePendingOut | S::To => S::None,
        S::NonePendingOutIn | S::ToPendingIn => S::NonePendingIn,
        S::FromPendingOut | S::Both => S::From,
        S::None | S::NonePendingIn | S::From => state,
    }
}

/// The state without the contact's subscription to the user nor a pending request for it.
fn lose_from(state: SubscriptionState) -> SubscriptionState {
    use SubscriptionState as S;
    match state {
        S::NonePendingIn | S::From => S::None,
        S::NonePendingOutIn | S::FromPendingOut => S::NonePendingOut,
        S::ToPendingIn | S::Both => S::To,
        S::None | S::NonePendingOut | S::To => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriptionKind as K;
    use SubscriptionState as S;

    const ALL: [S; 9] = [
        S::None,
        S::NonePendingOut,
        S::NonePendingIn,
        S::NonePendingOutIn,
        S::To,
        S::ToPendingIn,
        S::From,
        S::FromPendingOut,
        S::Both,
    ];

    /// Checks a table in the shape of RFC 6121 appendix A: (existing state, forwarded?,
    /// new state).
    fn check(table: [(S, bool, S); 9], kind: K, transition: fn(S, K) -> Transition, name: &str) {
        for (state, forward, new) in table {
            assert_eq!(
                transition(state, kind),
                Transition {
                    state: new,
                    forward
                },
                "{name} {kind:?} from {state:?}"
            );
        }
    }

    #[test]
    fn inbound_subscribe_follows_appendix_a_3_1() {
        check(
            [
                (S::None, true, S::NonePendingIn),
                (S::NonePendingOut, true, S::NonePendingOutIn),
                (S::NonePendingIn, false, S::NonePendingIn),
                (S::NonePendingOutIn, false, S::NonePendingOutIn),
                (S::To, true, S::ToPendingIn),
                (S::ToPendingIn, false, S::ToPendingIn),
                // Already subscribed: the server auto-replies instead (section 3.1.3).
                (S::From, false, S::From),
                (S::FromPendingOut, false, S::FromPendingOut),
                (S::Both, false, S::Both),
            ],
            K::Subscribe,
            inbound,
            "inbound",
        );
    }

    #[test]
    fn inbound_subscribed_follows_appendix_a_3_2() {
        check(
            [
                (S::None, false, S::None),
                (S::NonePendingOut, true, S::To),
                (S::NonePendingIn, false, S::NonePendingIn),
                (S::NonePendingOutIn, true, S::ToPendingIn),
                (S::To, false, S::To),
                (S::ToPendingIn, false, S::ToPendingIn),
                (S::From, false, S::From),
                (S::FromPendingOut, true, S::Both),
                (S::Both, false, S::Both),
            ],
            K::Subscribed,
            inbound,
            "inbound",
        );
    }

    #[test]
    fn inbound_unsubscribe_follows_appendix_a_3_3() {
        check(
            [
                (S::None, false, S::None),
                (S::NonePendingOut, false, S::NonePendingOut),
                (S::NonePendingIn, true, S::None),
                (S::NonePendingOutIn, true, S::NonePendingOut),
                (S::To, false, S::To),
                (S::ToPendingIn, true, S::To),
                (S::From, true, S::None),
                (S::FromPendingOut, true, S::NonePendingOut),
                (S::Both, true, S::To),
            ],
            K::Unsubscribe,
            inbound,
            "inbound",
        );
    }

    #[test]
    fn inbound_unsubscribed_follows_appendix_a_3_4() {
        check(
            [
                (S::None, false, S::None),
                (S::NonePendingOut, true, S::None),
                (S::NonePendingIn, false, S::NonePendingIn),
                (S::NonePendingOutIn, true, S::NonePendingIn),
                (S::To, true, S::None),
                (S::ToPendingIn, true, S::NonePendingIn),
                (S::From, false, S::From),
                (S::FromPendingOut, true, S::From),
                (S::Both, true, S::From),
            ],
            K::Unsubscribed,
            inbound,
            "inbound",
        );
    }

    #[test]
    fn outbound_subscribed_follows_appendix_a_2_1() {
        check(
            [
                (S::None, false, S::None),
                (S::NonePendingOut, false, S::NonePendingOut),
                (S::NonePendingIn, true, S::From),
                (S::NonePendingOutIn, true, S::FromPendingOut),
                (S::To, false, S::To),
                (S::ToPendingIn, true, S::Both),
                (S::From, false, S::From),
                (S::FromPendingOut, false, S::FromPendingOut),
                (S::Both, false, S::Both),
            ],
            K::Subscribed,
            outbound,
            "outbound",
        );
    }

    #[test]
    fn outbound_unsubscribed_follows_appendix_a_2_2() {
        check(
            [
                (S::None, false, S::None),
                (S::NonePendingOut, false, S::NonePendingOut),
                (S::NonePendingIn, true, S::None),
                (S::NonePendingOutIn, true, S::NonePendingOut),
                (S::To, false, S::To),
                (S::ToPendingIn, true, S::To),
                (S::From, true, S::None),
                (S::FromPendingOut, true, S::NonePendingOut),
                (S::Both, true, S::To),
            ],
            K::Unsubscribed,
            outbound,
            "outbound",
        );
    }

    #[test]
    fn outbound_subscribe_adds_pending_out_and_is_always_routed() {
        check(
            [
                (S::None, true, S::NonePendingOut),
                (S::NonePendingOut, true, S::NonePendingOut),
                (S::NonePendingIn, true, S::NonePendingOutIn),
                (S::NonePendingOutIn, true, S::NonePendingOutIn),
                (S::To, true, S::To),
                (S::ToPendingIn, true, S::ToPendingIn),
                (S::From, true, S::FromPendingOut),
                (S::FromPendingOut, true, S::FromPendingOut),
                (S::Both, true, S::Both),
            ],
            K::Subscribe,
            outbound,
            "outbound",
        );
    }

    #[test]
    fn outbound_unsubscribe_drops_to_and_pending_out_and_is_always_routed() {
        check(
            [
                (S::None, true, S::None),
                (S::NonePendingOut, true, S::None),
                (S::NonePendingIn, true, S::NonePendingIn),
                (S::NonePendingOutIn, true, S::NonePendingIn),
                (S::To, true, S::None),
                (S::ToPendingIn, true, S::NonePendingIn),
                (S::From, true, S::From),
                (S::FromPendingOut, true, S::From),
                (S::Both, true, S::From),
            ],
            K::Unsubscribe,
            outbound,
            "outbound",
        );
    }

    #[test]
    fn a_full_handshake_from_both_sides_ends_in_both() {
        // Juliet subscribes to Romeo; Romeo approves and subscribes back; Juliet approves.
        let (mut juliet, mut romeo) = (S::None, S::None);
        juliet = outbound(juliet, K::Subscribe).state;
        romeo = inbound(romeo, K::Subscribe).state;
        romeo = outbound(romeo, K::Subscribed).state;
        juliet = inbound(juliet, K::Subscribed).state;
        romeo = outbound(romeo, K::Subscribe).state;
        juliet = inbound(juliet, K::Subscribe).state;
        juliet = outbound(juliet, K::Subscribed).state;
        romeo = inbound(romeo, K::Subscribed).state;
        assert_eq!((juliet, romeo), (S::Both, S::Both));
        for state in ALL {
            // Whatever the state, cancelling both ways ends in none.
            let gone = outbound(outbound(state, K::Unsubscribe).state, K::Unsubscribed).state;
            assert_eq!(gone, S::None, "from {state:?}");
        }
    }
}
