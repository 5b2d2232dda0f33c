//! The behaviour every [`RosterStore`] engine must have: one suite, run against each engine.
//!
//! Each behaviour is a public async function that panics when the store misbehaves.
//! [`run_roster_store_conformance`] runs them all on one store; inside this crate,
//! `roster_store_conformance_tests!` turns each into its own `#[tokio::test]` for an engine.
//! Every behaviour uses users of its own domain, so they can share one store.

use std::sync::Arc;

use jid::BareJid;

use crate::StorageError;
use crate::roster::{RosterItem, RosterStore, SubscriptionState};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            an_unknown_user_has_an_empty_roster,
            update_creates_an_item_and_reports_before_and_after,
            every_state_and_field_round_trips,
            groups_come_back_sorted_without_duplicates,
            an_update_that_changes_nothing_is_reported_unchanged,
            an_update_to_none_deletes_the_item,
            deleting_a_missing_item_changes_nothing,
            the_contact_argument_names_the_item,
            items_are_sorted_by_contact,
            rosters_of_different_users_are_separate,
            contacts_on_other_domains_and_services_are_kept,
            remove_all_deletes_the_roster_and_its_version,
            bump_version_gives_a_new_version_each_time,
            a_domain_only_jid_is_an_invalid_user,
        }
    };
}

/// Defines one `#[tokio::test]` per behaviour. `$open` names an async fn returning a value
/// with `fn roster(&self) -> Arc<dyn RosterStore>`, called afresh for each test.
#[cfg(test)]
macro_rules! roster_store_conformance_tests {
    // `optional`: `$open` returns an `Option`, `None` when the engine is not available here
    // (a PostgreSQL server that is not reachable); the test then returns.
    ((optional $open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(opened) = $open().await else { return };
                $crate::roster::conformance::$case(opened.roster().as_ref()).await;
            }
        )*
    };
    (optional $open:path) => {
        $crate::roster::conformance::with_cases!(roster_store_conformance_tests!(optional $open));
    };
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let opened = $open().await;
                $crate::roster::conformance::$case(opened.roster().as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::roster::conformance::with_cases!(roster_store_conformance_tests!($open));
    };
}

#[cfg(test)]
pub(crate) use roster_store_conformance_tests;
#[cfg(test)]
pub(crate) use with_cases;

/// Run every behaviour of the suite against `store`; panics on the first misbehaviour.
pub async fn run_roster_store_conformance(store: Arc<dyn RosterStore>) {
    macro_rules! run_each {
        (($store:expr) $($case:ident),* $(,)?) => {
            $(
                tracing::debug!(case = stringify!($case), "roster store conformance");
                $case($store).await;
            )*
        };
    }
    with_cases!(run_each!(store.as_ref()));
}

fn jid(text: &str) -> BareJid {
    BareJid::new(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn item(contact: &str, state: SubscriptionState) -> RosterItem {
    RosterItem {
        state,
        ..RosterItem::new(jid(contact))
    }
}

/// Store `item` as the user's item for its contact, whatever was there.
async fn put(store: &dyn RosterStore, user: &BareJid, item: RosterItem) {
    let contact = item.contact.clone();
    store
        .update(user, &contact, Box::new(move |_| Some(item)))
        .await
        .unwrap();
}

/// A user the store never saw has no items and no version.
pub async fn an_unknown_user_has_an_empty_roster(store: &dyn RosterStore) {
    let user = jid("juliet@unknown.roster.test");
    assert!(store.items(&user).await.unwrap().is_empty());
    assert_eq!(
        store
            .item(&user, &jid("romeo@montague.test"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.version(&user).await.unwrap(), None);
}

/// `update` on a missing item sees `None`, stores what it returns and reports both sides.
pub async fn update_creates_an_item_and_reports_before_and_after(store: &dyn RosterStore) {
    let user = jid("juliet@create.roster.test");
    let romeo = jid("romeo@montague.test");
    let wanted = item("romeo@montague.test", SubscriptionState::NonePendingOut);
    let expected = wanted.clone();
    let update = store
        .update(
            &user,
            &romeo,
            Box::new(move |current| {
                assert_eq!(current, None);
                Some(wanted)
            }),
        )
        .await
        .unwrap();
    assert_eq!(update.before, None);
    assert_eq!(update.after.as_ref(), Some(&expected));
    assert!(update.changed());
    assert_eq!(store.item(&user, &romeo).await.unwrap(), Some(expected));
}

/// Every subscription state, a name, an ask message and groups come back as stored.
pub async fn every_state_and_field_round_trips(store: &dyn RosterStore) {
    use SubscriptionState as S;
    let user = jid("juliet@states.roster.test");
    let states = [
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
    for (n, state) in states.into_iter().enumerate() {
        let stored = RosterItem {
            contact: jid(&format!("contact{n}@states.test")),
            name: Some(format!("Contact «{n}»")),
            state,
            ask_message: (n % 2 == 0).then(|| format!("let me in {n}")),
            groups: vec!["Friends".into(), format!("Group {n}")],
        };
        put(store, &user, stored.clone()).await;
        assert_eq!(
            store.item(&user, &stored.contact).await.unwrap(),
            Some(stored)
        );
    }
    assert_eq!(store.items(&user).await.unwrap().len(), states.len());
}

/// Groups are returned sorted (code point order), each once.
pub async fn groups_come_back_sorted_without_duplicates(store: &dyn RosterStore) {
    let user = jid("juliet@groups.roster.test");
    let mut stored = item("romeo@montague.test", SubscriptionState::Both);
    stored.groups = vec!["Zeta".into(), "Alpha".into(), "Zeta".into(), "Émile".into()];
    put(store, &user, stored).await;
    let read = store
        .item(&user, &jid("romeo@montague.test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.groups, ["Alpha", "Zeta", "Émile"]);
}

/// An edit returning the current item reports no change.
pub async fn an_update_that_changes_nothing_is_reported_unchanged(store: &dyn RosterStore) {
    let user = jid("juliet@unchanged.roster.test");
    let romeo = jid("romeo@montague.test");
    put(
        store,
        &user,
        item("romeo@montague.test", SubscriptionState::To),
    )
    .await;
    let update = store
        .update(&user, &romeo, Box::new(|current| current.cloned()))
        .await
        .unwrap();
    assert!(!update.changed());
    assert_eq!(update.before, update.after);
}

/// An edit returning `None` deletes the item, groups included.
pub async fn an_update_to_none_deletes_the_item(store: &dyn RosterStore) {
    let user = jid("juliet@delete.roster.test");
    let romeo = jid("romeo@montague.test");
    let mut stored = item("romeo@montague.test", SubscriptionState::Both);
    stored.groups = vec!["Friends".into()];
    put(store, &user, stored.clone()).await;
    let update = store
        .update(&user, &romeo, Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!(update.before, Some(stored));
    assert_eq!(update.after, None);
    assert_eq!(store.item(&user, &romeo).await.unwrap(), None);
    // Created again, it has no groups left over.
    put(
        store,
        &user,
        item("romeo@montague.test", SubscriptionState::None),
    )
    .await;
    let again = store.item(&user, &romeo).await.unwrap().unwrap();
    assert!(again.groups.is_empty(), "{again:?}");
}

/// Deleting an item that does not exist is no change.
pub async fn deleting_a_missing_item_changes_nothing(store: &dyn RosterStore) {
    let user = jid("juliet@delete-missing.roster.test");
    let update = store
        .update(&user, &jid("nobody@nowhere.test"), Box::new(|_| None))
        .await
        .unwrap();
    assert!(!update.changed());
    assert!(store.items(&user).await.unwrap().is_empty());
}

/// The item is stored under the `contact` argument, whatever contact the edit returned.
pub async fn the_contact_argument_names_the_item(store: &dyn RosterStore) {
    let user = jid("juliet@argument.roster.test");
    let romeo = jid("romeo@montague.test");
    let update = store
        .update(
            &user,
            &romeo,
            Box::new(|_| Some(item("tybalt@capulet.test", SubscriptionState::None))),
        )
        .await
        .unwrap();
    assert_eq!(update.after.unwrap().contact, romeo);
    assert_eq!(
        store
            .items(&user)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.contact)
            .collect::<Vec<_>>(),
        [romeo]
    );
}

/// `items` lists by contact JID in code point order.
pub async fn items_are_sorted_by_contact(store: &dyn RosterStore) {
    let user = jid("juliet@sorted.roster.test");
    for contact in ["zoe@a.test", "bob@b.test", "émile@a.test", "alice@c.test"] {
        put(store, &user, item(contact, SubscriptionState::None)).await;
    }
    let contacts: Vec<String> = store
        .items(&user)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.contact.to_string())
        .collect();
    assert_eq!(
        contacts,
        ["alice@c.test", "bob@b.test", "zoe@a.test", "émile@a.test"]
    );
}

/// Two users, including the same localpart on two domains, have separate rosters.
pub async fn rosters_of_different_users_are_separate(store: &dyn RosterStore) {
    let first = jid("juliet@first.separate.roster.test");
    let second = jid("juliet@second.separate.roster.test");
    let third = jid("nurse@first.separate.roster.test");
    put(
        store,
        &first,
        item("romeo@montague.test", SubscriptionState::Both),
    )
    .await;
    put(
        store,
        &second,
        item("tybalt@capulet.test", SubscriptionState::To),
    )
    .await;
    assert_eq!(store.items(&first).await.unwrap().len(), 1);
    assert_eq!(
        store.items(&second).await.unwrap()[0].contact,
        jid("tybalt@capulet.test")
    );
    assert!(store.items(&third).await.unwrap().is_empty());
    store.bump_version(&first).await.unwrap();
    assert_eq!(store.version(&second).await.unwrap(), None);
}

/// Contacts may be on any domain and may have no localpart.
pub async fn contacts_on_other_domains_and_services_are_kept(store: &dyn RosterStore) {
    let user = jid("juliet@services.roster.test");
    for contact in [
        "pubsub.example.org",
        "Romeo@Montague.TEST",
        "zoë@unicode.test",
    ] {
        put(store, &user, item(contact, SubscriptionState::To)).await;
    }
    let contacts: Vec<BareJid> = store
        .items(&user)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.contact)
        .collect();
    assert_eq!(
        contacts,
        [
            jid("pubsub.example.org"),
            jid("romeo@montague.test"),
            jid("zoë@unicode.test")
        ]
    );
}

/// `remove_all` deletes the user's items, groups and version, only the user's, and counts.
pub async fn remove_all_deletes_the_roster_and_its_version(store: &dyn RosterStore) {
    let user = jid("juliet@remove.roster.test");
    let other = jid("romeo@remove.roster.test");
    for contact in ["a@x.test", "b@x.test"] {
        let mut stored = item(contact, SubscriptionState::Both);
        stored.groups = vec!["G".into()];
        put(store, &user, stored).await;
    }
    put(
        store,
        &other,
        item("juliet@remove.roster.test", SubscriptionState::Both),
    )
    .await;
    store.bump_version(&user).await.unwrap();
    assert_eq!(store.remove_all(&user).await.unwrap(), 2);
    assert!(store.items(&user).await.unwrap().is_empty());
    assert_eq!(store.version(&user).await.unwrap(), None);
    assert_eq!(store.items(&other).await.unwrap().len(), 1);
    assert_eq!(store.remove_all(&user).await.unwrap(), 0);
    put(store, &user, item("a@x.test", SubscriptionState::None)).await;
    assert!(
        store.items(&user).await.unwrap()[0].groups.is_empty(),
        "groups of a removed roster came back"
    );
}

/// Each `bump_version` stores and returns a version no earlier call returned.
pub async fn bump_version_gives_a_new_version_each_time(store: &dyn RosterStore) {
    let user = jid("juliet@version.roster.test");
    let mut seen = Vec::new();
    for _ in 0..5 {
        let version = store.bump_version(&user).await.unwrap();
        assert!(!seen.contains(&version), "{version} given twice");
        assert_eq!(store.version(&user).await.unwrap().as_ref(), Some(&version));
        seen.push(version);
    }
}

/// A JID without a localpart names a server, not an account: every method rejects it.
pub async fn a_domain_only_jid_is_an_invalid_user(store: &dyn RosterStore) {
    let domain = jid("domain-only.roster.test");
    let contact = jid("romeo@montague.test");
    let invalid = |result: Result<(), StorageError>| {
        assert!(
            matches!(result, Err(StorageError::InvalidUser(ref jid)) if jid == "domain-only.roster.test"),
            "{result:?}"
        );
    };
    invalid(store.items(&domain).await.map(drop));
    invalid(store.item(&domain, &contact).await.map(drop));
    invalid(
        store
            .update(&domain, &contact, Box::new(|_| None))
            .await
            .map(drop),
    );
    invalid(store.remove_all(&domain).await.map(drop));
    invalid(store.version(&domain).await.map(drop));
    invalid(store.bump_version(&domain).await.map(drop));
}
