//! The behaviour every [`RegistrationStore`] engine must have: one suite, run against each
//! engine (the SQLite engine in memory and in a file, the memory engine; PostgreSQL when it
//! lands).
//!
//! Each behaviour is a public async function that panics when the store misbehaves, using
//! owners of its own domain so that all can share one store.
//! [`run_registration_store_conformance`] runs them all on one store;
//! `registration_store_conformance_tests!(open)` makes each its own `#[tokio::test]`, where
//! `open` is an async fn returning `(guard, Arc<dyn RegistrationStore>)` and the guard keeps
//! whatever must outlive the store (a temporary directory).

use std::{sync::Arc, time::Duration};

use jid::BareJid;

use super::{
    PendingPush, PublishOptions, Registration, RegistrationKey, RegistrationStore, StoredRoute,
    from_micros,
};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            enable_then_list_round_trips,
            re_enabling_the_same_key_overwrites_the_form,
            another_node_or_pubsub_is_another_registration,
            list_is_per_owner_and_oldest_first,
            disable_removes_one_registration,
            disabling_an_absent_registration_is_not_an_error,
            disable_all_removes_every_node_at_one_pubsub_only,
            remove_user_removes_all_of_the_users_registrations,
            remove_domain_removes_that_domains_users_only,
            forms_with_unusual_text_round_trip,
            extensions_round_trip_and_re_enabling_replaces_them,
            hibernating_sessions_are_kept_until_they_end_or_are_taken,
            pending_notifications_are_kept_until_done_and_a_message_is_notified_once_per_registration,
        }
    };
}
#[cfg(test)]
pub(crate) use with_cases;

/// Defines one `#[tokio::test]` per behaviour for the engine opened by `$open`.
#[cfg(test)]
macro_rules! registration_store_conformance_tests {
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (_guard, store) = $open().await;
                $crate::registrations::conformance::$case(store.as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::registrations::conformance::with_cases!(registration_store_conformance_tests!($open));
    };
}
#[cfg(test)]
pub(crate) use registration_store_conformance_tests;

/// Run every behaviour against `store`; panics on the first misbehaviour.
pub async fn run_registration_store_conformance(store: Arc<dyn RegistrationStore>) {
    macro_rules! run_each {
        (($store:expr) $($case:ident),* $(,)?) => {
            $(
                tracing::debug!(case = stringify!($case), "registration store conformance");
                $case($store).await;
            )*
        };
    }
    with_cases!(run_each!(store.as_ref()));
}

fn jid(text: &str) -> BareJid {
    BareJid::new(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn key(owner: &str, pubsub: &str, node: &str) -> RegistrationKey {
    RegistrationKey {
        owner: jid(owner),
        pubsub: jid(pubsub),
        node: node.to_owned(),
    }
}

fn form(pairs: &[(&str, &str)]) -> PublishOptions {
    pairs
        .iter()
        .map(|(var, value)| ((*var).to_owned(), (*value).to_owned()))
        .collect()
}

/// A registration created `seconds` (and some microseconds) after the epoch.
fn registration(key: RegistrationKey, form: PublishOptions, seconds: u64) -> Registration {
    Registration {
        key,
        form,
        created_at: from_micros(0) + Duration::from_micros(seconds * 1_000_000 + 123_456),
        extensions: crate::extensions::Extensions::default(),
    }
}

/// What `enable` stores, `list` gives back: key, form and time to the microsecond.
pub async fn enable_then_list_round_trips(store: &dyn RegistrationStore) {
    let stored = registration(
        key(
            "alice@round-trip.test",
            "push.example.com",
            "yxs32uqsflafdk3iuqo",
        ),
        form(&[("service", "apns"), ("device_id", "TOKEN")]),
        1_700_000_000,
    );
    store.enable(&stored).await.unwrap();
    assert_eq!(
        store.list(&jid("alice@round-trip.test")).await.unwrap(),
        [stored]
    );
}

/// What a client asked beyond XEP-0357 (Tigase's extensions) comes back as it was stored, and
/// re-enabling without them clears them.
pub async fn extensions_round_trip_and_re_enabling_replaces_them(store: &dyn RegistrationStore) {
    let enable: minidom::Element = "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'>\
         <encrypt xmlns='tigase:push:encrypt:0' alg='aes-128-gcm' key='AAECAwQFBgcICQoLDA0ODw=='/>\
         <priority xmlns='tigase:push:priority:0'/>\
         <muted xmlns='tigase:push:filter:muted:0'><item jid='Quiet@Example.com'/></muted>\
         <groupchat xmlns='tigase:push:filter:groupchat:0'>\
           <room jid='room@muc.example.com' allow='mentioned' nick='Al \"1\"'/></groupchat>\
         <jingle xmlns='tigase:push:jingle:0'/></enable>"
        .parse()
        .unwrap();
    let extensions = crate::extensions::Extensions::parse(&enable).unwrap();
    assert!(extensions.encrypt.is_some() && extensions.priority && extensions.jingle);
    let k = key("alice@extensions.test", "push.example.com", "n1");
    let stored = registration(k.clone(), form(&[]), 5).with_extensions(extensions);
    store.enable(&stored).await.unwrap();
    assert_eq!(
        store.list(&jid("alice@extensions.test")).await.unwrap(),
        [stored]
    );
    let plain = registration(k, form(&[]), 6);
    store.enable(&plain).await.unwrap();
    assert_eq!(
        store.list(&jid("alice@extensions.test")).await.unwrap(),
        [plain]
    );
}

/// Enabling an existing key replaces its form (and time): re-enable overwrites.
pub async fn re_enabling_the_same_key_overwrites_the_form(store: &dyn RegistrationStore) {
    let k = key("alice@overwrite.test", "push.example.com", "n1");
    store
        .enable(&registration(k.clone(), form(&[("secret", "old")]), 10))
        .await
        .unwrap();
    let newer = registration(k, form(&[("secret", "new"), ("x", "y")]), 20);
    store.enable(&newer).await.unwrap();
    assert_eq!(
        store.list(&jid("alice@overwrite.test")).await.unwrap(),
        [newer]
    );
}

/// Another node, or the same node on another pubsub service, is another device.
pub async fn another_node_or_pubsub_is_another_registration(store: &dyn RegistrationStore) {
    let owner = "alice@devices.test";
    for (seconds, (pubsub, node)) in [
        ("push.example.com", "n1"),
        ("push.example.com", "n2"),
        ("other.example.com", "n1"),
    ]
    .into_iter()
    .enumerate()
    {
        store
            .enable(&registration(
                key(owner, pubsub, node),
                form(&[]),
                seconds as u64,
            ))
            .await
            .unwrap();
    }
    assert_eq!(store.list(&jid(owner)).await.unwrap().len(), 3);
}

/// `list` gives only the owner's registrations, oldest first.
pub async fn list_is_per_owner_and_oldest_first(store: &dyn RegistrationStore) {
    let later = registration(
        key("alice@list.test", "push.example.com", "b"),
        form(&[]),
        50,
    );
    let earlier = registration(
        key("alice@list.test", "push.example.com", "a"),
        form(&[]),
        40,
    );
    let other = registration(key("bob@list.test", "push.example.com", "a"), form(&[]), 30);
    for r in [&later, &earlier, &other] {
        store.enable(r).await.unwrap();
    }
    assert_eq!(
        store.list(&jid("alice@list.test")).await.unwrap(),
        [earlier, later]
    );
    assert!(
        store
            .list(&jid("carol@list.test"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `disable` removes exactly that key and says it existed.
pub async fn disable_removes_one_registration(store: &dyn RegistrationStore) {
    let keep = registration(
        key("alice@disable.test", "push.example.com", "keep"),
        form(&[]),
        1,
    );
    let gone = key("alice@disable.test", "push.example.com", "gone");
    store.enable(&keep).await.unwrap();
    store
        .enable(&registration(gone.clone(), form(&[]), 2))
        .await
        .unwrap();
    assert!(store.disable(&gone).await.unwrap());
    assert_eq!(
        store.list(&jid("alice@disable.test")).await.unwrap(),
        [keep]
    );
}

/// Disabling what is not there succeeds and reports nothing removed.
pub async fn disabling_an_absent_registration_is_not_an_error(store: &dyn RegistrationStore) {
    let absent = key("alice@absent.test", "push.example.com", "n");
    assert!(!store.disable(&absent).await.unwrap());
    assert!(
        store
            .disable_all(&absent.owner, &absent.pubsub)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `disable_all` removes every node of the owner at that pubsub service, and nothing else.
pub async fn disable_all_removes_every_node_at_one_pubsub_only(store: &dyn RegistrationStore) {
    let owner = "alice@disable-all.test";
    let other_pubsub = registration(key(owner, "other.example.com", "n1"), form(&[]), 3);
    let other_owner = registration(
        key("bob@disable-all.test", "push.example.com", "n1"),
        form(&[]),
        4,
    );
    for node in ["n1", "n2"] {
        store
            .enable(&registration(
                key(owner, "push.example.com", node),
                form(&[]),
                1,
            ))
            .await
            .unwrap();
    }
    store.enable(&other_pubsub).await.unwrap();
    store.enable(&other_owner).await.unwrap();
    let mut removed = store
        .disable_all(&jid(owner), &jid("push.example.com"))
        .await
        .unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            key(owner, "push.example.com", "n1"),
            key(owner, "push.example.com", "n2")
        ]
    );
    assert_eq!(store.list(&jid(owner)).await.unwrap(), [other_pubsub]);
    assert_eq!(
        store.list(&jid("bob@disable-all.test")).await.unwrap(),
        [other_owner]
    );
}

/// `remove_user` forgets the account's registrations and no one else's.
pub async fn remove_user_removes_all_of_the_users_registrations(store: &dyn RegistrationStore) {
    let bob = registration(
        key("bob@remove-user.test", "push.example.com", "n"),
        form(&[]),
        1,
    );
    for node in ["n1", "n2"] {
        store
            .enable(&registration(
                key("alice@remove-user.test", "push.example.com", node),
                form(&[]),
                1,
            ))
            .await
            .unwrap();
    }
    store.enable(&bob).await.unwrap();
    assert_eq!(
        store
            .remove_user(&jid("alice@remove-user.test"))
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .list(&jid("alice@remove-user.test"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list(&jid("bob@remove-user.test")).await.unwrap(),
        [bob]
    );
}

/// `remove_domain` forgets the registrations of that domain's users, not of a domain that
/// merely ends the same way, and not registrations *at* a pubsub service of that domain.
pub async fn remove_domain_removes_that_domains_users_only(store: &dyn RegistrationStore) {
    let sub = registration(
        key("alice@sub.gone.test", "push.gone.test", "n"),
        form(&[]),
        1,
    );
    let lookalike = registration(
        key("alice@notgone.test", "push.example.com", "n"),
        form(&[]),
        1,
    );
    for user in ["alice@gone.test", "bob@gone.test"] {
        store
            .enable(&registration(
                key(user, "push.example.com", "n"),
                form(&[]),
                1,
            ))
            .await
            .unwrap();
    }
    store.enable(&sub).await.unwrap();
    store.enable(&lookalike).await.unwrap();
    assert_eq!(store.remove_domain("gone.test").await.unwrap(), 2);
    assert!(
        store
            .list(&jid("alice@gone.test"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list(&jid("alice@sub.gone.test")).await.unwrap(),
        [sub]
    );
    assert_eq!(
        store.list(&jid("alice@notgone.test")).await.unwrap(),
        [lookalike]
    );
}

/// Field names and values are stored as given: quotes, non-ASCII, empty values, JSON syntax.
pub async fn forms_with_unusual_text_round_trip(store: &dyn RegistrationStore) {
    let stored = registration(
        key(
            "zoë@unusual.test",
            "push.example.com",
            "node with spaces/and\"quotes\"",
        ),
        form(&[
            ("secret", "{\"not\": \"json\"}"),
            ("empty", ""),
            ("ünïcode", "✓ 🚀"),
            ("quote'\"", "\\back\\slash"),
        ]),
        7,
    );
    store.enable(&stored).await.unwrap();
    assert_eq!(
        store.list(&jid("zoë@unusual.test")).await.unwrap(),
        [stored]
    );
}

/// Hibernating sessions are recorded with the registration that wakes them (a second record
/// of one session replaces the first), forgotten when they end or their account goes, and
/// taken once, oldest first.
pub async fn hibernating_sessions_are_kept_until_they_end_or_are_taken(
    store: &dyn RegistrationStore,
) {
    let full = |text: &str| jid::FullJid::new(text).unwrap();
    let phone = full("ann@sleep.example/phone");
    let tablet = full("ann@sleep.example/tablet");
    let gone = full("zed@sleep.example/phone");
    let ended = full("bea@sleep.example/phone");
    let first = key("ann@sleep.example", "push.example", "n1");
    let second = key("ann@sleep.example", "push.example", "n2");
    store.hibernating(&phone, &first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    store.hibernating(&tablet, &second).await.unwrap();
    store.hibernating(&phone, &second).await.unwrap();
    store
        .hibernating(&gone, &key("zed@sleep.example", "push.example", "z"))
        .await
        .unwrap();
    store
        .hibernating(&ended, &key("bea@sleep.example", "push.example", "b"))
        .await
        .unwrap();
    store.hibernation_ended(&ended).await.unwrap();
    store.remove_user(&jid("zed@sleep.example")).await.unwrap();
    let taken = store.take_hibernating().await.unwrap();
    assert_eq!(
        taken,
        vec![(tablet, second.clone()), (phone, second)],
        "oldest first; a session's last record wins"
    );
    assert!(
        store.take_hibernating().await.unwrap().is_empty(),
        "taken once"
    );
}

/// Pending notifications are kept, oldest first, with their ids and routes until finished; a
/// message is pending once per registration (one without identity is never left out).
pub async fn pending_notifications_are_kept_until_done_and_a_message_is_notified_once_per_registration(
    store: &dyn RegistrationStore,
) {
    let push = |node: &str, message: Option<&str>, route: StoredRoute, at: i64| PendingPush {
        key: key("ann@outbox.example", "push.example", node),
        message: message.map(str::to_owned),
        route,
        created_at: from_micros(1_700_000_000_000_000 + at),
    };
    let xmpp = StoredRoute::Xmpp("<iq xmlns='jabber:client' type='set'/>".into());
    let http = StoredRoute::Http {
        device: "dev'ice".into(),
        body: "{\"service\":\"apns\"}".into(),
    };
    let base = 7_000_000_000_i64;
    store
        .add_pending(&[
            (base + 3, push("n1", Some("m1"), xmpp.clone(), 1)),
            (base + 1, push("n2", Some("m1"), http.clone(), 2)),
            (base + 2, push("n1", None, xmpp.clone(), 3)),
        ])
        .await
        .unwrap();
    store
        .add_pending(&[
            (base + 4, push("n1", Some("m1"), xmpp.clone(), 4)),
            (base + 5, push("n1", None, xmpp.clone(), 5)),
        ])
        .await
        .unwrap();
    let mine = |all: Vec<(i64, PendingPush)>| -> Vec<(i64, PendingPush)> {
        all.into_iter()
            .filter(|(_, p)| p.key.owner.as_str() == "ann@outbox.example")
            .collect()
    };
    let pending = mine(store.pending().await.unwrap());
    let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [base + 3, base + 1, base + 2, base + 5],
        "oldest first; m1 once for n1; no identity, no suppression"
    );
    assert_eq!(pending[0].1, push("n1", Some("m1"), xmpp.clone(), 1));
    assert_eq!(pending[1].1, push("n2", Some("m1"), http, 2));
    store.finish_pending(&ids[..2]).await.unwrap();
    store.finish_pending(&[base + 99]).await.unwrap();
    let left: Vec<i64> = mine(store.pending().await.unwrap())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, ids[2..]);
    // Once finished, the message may be pending again.
    store
        .add_pending(&[(base + 6, push("n1", Some("m1"), xmpp, 6))])
        .await
        .unwrap();
    assert_eq!(mine(store.pending().await.unwrap()).len(), 3);
    store
        .finish_pending(&[base + 2, base + 5, base + 6])
        .await
        .unwrap();
    assert!(mine(store.pending().await.unwrap()).is_empty());
}
