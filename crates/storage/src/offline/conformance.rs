//! The behaviour every [`OfflineStore`] engine must have: one suite, run against each engine.
//!
//! Each behaviour is a public async function that panics when the store misbehaves.
//! [`run_offline_store_conformance`] runs them all on one store; inside this crate,
//! `offline_store_conformance_tests!` turns each into its own `#[tokio::test]` for an engine.
//! Every behaviour uses users of its own domain, so they can share one store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::{BareJid, Jid};

use crate::StorageError;
use crate::offline::{NewOfflineMessage, OfflineStore, Stored, StoredMessage};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            a_user_without_messages_has_none,
            messages_come_back_in_order_with_everything_kept,
            take_removes_the_messages,
            list_leaves_the_messages_in_place,
            pages_follow_the_storing_order_and_leave_messages_in_place,
            remove_deletes_only_the_named_messages_of_that_user,
            ids_increase_in_storing_order,
            a_full_store_stores_nothing_and_the_limit_is_per_user,
            concurrent_stores_never_overshoot_the_limit,
            set_metadata_changes_one_message_only,
            remove_all_deletes_only_that_users_messages,
            a_domain_only_jid_is_an_invalid_user,
        }
    };
}

/// Defines one `#[tokio::test]` per behaviour. `$open` names an async fn returning a value
/// with `fn offline(&self) -> Arc<dyn OfflineStore>`, called afresh for each test.
#[cfg(test)]
macro_rules! offline_store_conformance_tests {
    // `optional`: `$open` returns an `Option`, `None` when the engine is not available here
    // (a PostgreSQL server that is not reachable); the test then returns.
    ((optional $open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(opened) = $open().await else { return };
                $crate::offline::conformance::$case(opened.offline().as_ref()).await;
            }
        )*
    };
    (optional $open:path) => {
        $crate::offline::conformance::with_cases!(offline_store_conformance_tests!(optional $open));
    };
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let opened = $open().await;
                $crate::offline::conformance::$case(opened.offline().as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::offline::conformance::with_cases!(offline_store_conformance_tests!($open));
    };
}

#[cfg(test)]
pub(crate) use offline_store_conformance_tests;
#[cfg(test)]
pub(crate) use with_cases;

/// Run every behaviour of the suite against `store`; panics on the first misbehaviour.
pub async fn run_offline_store_conformance(store: Arc<dyn OfflineStore>) {
    macro_rules! run_each {
        (($store:expr) $($case:ident),* $(,)?) => {
            $(
                tracing::debug!(case = stringify!($case), "offline store conformance");
                $case($store).await;
            )*
        };
    }
    with_cases!(run_each!(store.as_ref()));
}

const LIMIT: usize = 100;

fn jid(text: &str) -> BareJid {
    BareJid::new(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn romeo() -> Jid {
    Jid::new("romeo@montague.test/orchard").unwrap()
}

/// A time with whole microseconds, as the store keeps them.
fn at(seconds: u64, micros: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(u64::from(micros))
}

fn stanza(n: usize) -> String {
    format!("<message xmlns='jabber:client' type='chat'><body>message {n} ✓</body></message>")
}

/// Store message `n` for `user` with the default limit; panics unless it was stored.
async fn store_nth(store: &dyn OfflineStore, user: &BareJid, n: usize) -> i64 {
    let text = stanza(n);
    let metadata = format!("{{\"n\":{n}}}");
    let from = romeo();
    let message = NewOfflineMessage {
        from: &from,
        stored_at: at(1_700_000_000 + n as u64, 123_456),
        stanza: &text,
        metadata: &metadata,
    };
    match store.store(user, message, LIMIT).await.unwrap() {
        Stored::Stored(id) => id,
        Stored::Full => panic!("the store is full after {n} messages"),
    }
}

fn bodies(messages: &[StoredMessage]) -> Vec<String> {
    messages.iter().map(|m| m.stanza.clone()).collect()
}

/// A user the store never saw has no messages.
pub async fn a_user_without_messages_has_none(store: &dyn OfflineStore) {
    let user = jid("juliet@empty.offline.test");
    assert!(store.list(&user).await.unwrap().is_empty());
    assert!(store.take(&user).await.unwrap().is_empty());
    assert_eq!(store.count(&user).await.unwrap(), 0);
}

/// Messages come back in storing order with sender, time, stanza and metadata unchanged.
pub async fn messages_come_back_in_order_with_everything_kept(store: &dyn OfflineStore) {
    let user = jid("juliet@order.offline.test");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(store_nth(store, &user, n).await);
    }
    let messages = store.list(&user).await.unwrap();
    assert_eq!(messages.len(), 3);
    for (n, message) in messages.iter().enumerate() {
        assert_eq!(message.id, ids[n]);
        assert_eq!(message.from, romeo());
        assert_eq!(message.stored_at, at(1_700_000_000 + n as u64, 123_456));
        assert_eq!(message.stanza, stanza(n));
        assert_eq!(message.metadata, format!("{{\"n\":{n}}}"));
    }
    assert_eq!(store.count(&user).await.unwrap(), 3);
}

/// `take` returns the messages in order and removes them.
pub async fn take_removes_the_messages(store: &dyn OfflineStore) {
    let user = jid("juliet@take.offline.test");
    for n in 0..4 {
        store_nth(store, &user, n).await;
    }
    let taken = store.take(&user).await.unwrap();
    assert_eq!(bodies(&taken), (0..4).map(stanza).collect::<Vec<_>>());
    assert!(store.take(&user).await.unwrap().is_empty());
    assert_eq!(store.count(&user).await.unwrap(), 0);
}

/// `list` does not remove anything.
pub async fn list_leaves_the_messages_in_place(store: &dyn OfflineStore) {
    let user = jid("juliet@list.offline.test");
    store_nth(store, &user, 0).await;
    assert_eq!(store.list(&user).await.unwrap().len(), 1);
    assert_eq!(store.list(&user).await.unwrap().len(), 1);
    assert_eq!(store.take(&user).await.unwrap().len(), 1);
}

/// `page` returns at most `limit` messages after an id, oldest first, and removes nothing.
pub async fn pages_follow_the_storing_order_and_leave_messages_in_place(store: &dyn OfflineStore) {
    let user = jid("juliet@page.offline.test");
    let other = jid("romeo@page.offline.test");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(store_nth(store, &user, n).await);
        store_nth(store, &other, 10 + n).await;
    }
    let first = store.page(&user, 0, 2).await.unwrap();
    assert_eq!(bodies(&first), vec![stanza(0), stanza(1)]);
    let second = store.page(&user, first[1].id, 2).await.unwrap();
    assert_eq!(bodies(&second), vec![stanza(2), stanza(3)]);
    let last = store.page(&user, second[1].id, 10).await.unwrap();
    assert_eq!(bodies(&last), vec![stanza(4)]);
    assert!(store.page(&user, ids[4], 10).await.unwrap().is_empty());
    assert_eq!(
        store.count(&user).await.unwrap(),
        5,
        "paging removes nothing"
    );
    assert_eq!(
        store.page(&user, 0, 10).await.unwrap()[0].metadata,
        "{\"n\":0}"
    );
}

/// `remove` deletes exactly the named messages, and never another user's.
pub async fn remove_deletes_only_the_named_messages_of_that_user(store: &dyn OfflineStore) {
    let user = jid("juliet@remove-ids.offline.test");
    let other = jid("romeo@remove-ids.offline.test");
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(store_nth(store, &user, n).await);
    }
    let foreign = store_nth(store, &other, 9).await;
    assert_eq!(
        store
            .remove(&user, &[ids[0], ids[2], foreign])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        bodies(&store.list(&user).await.unwrap()),
        vec![stanza(1), stanza(3)]
    );
    assert_eq!(
        store.count(&other).await.unwrap(),
        1,
        "another user's id is ignored"
    );
    assert_eq!(
        store.remove(&user, &[ids[0]]).await.unwrap(),
        0,
        "already gone"
    );
    assert_eq!(store.remove(&user, &[]).await.unwrap(), 0);
}

/// Ids grow with every message stored, across users and after messages were taken.
pub async fn ids_increase_in_storing_order(store: &dyn OfflineStore) {
    let first = jid("juliet@ids.offline.test");
    let second = jid("romeo@ids.offline.test");
    let a = store_nth(store, &first, 0).await;
    let b = store_nth(store, &second, 1).await;
    store.take(&first).await.unwrap();
    store.take(&second).await.unwrap();
    let c = store_nth(store, &first, 2).await;
    assert!(a < b && b < c, "{a} {b} {c}");
}

/// At the limit nothing more is stored; another user's messages do not count.
pub async fn a_full_store_stores_nothing_and_the_limit_is_per_user(store: &dyn OfflineStore) {
    let user = jid("juliet@full.offline.test");
    let other = jid("romeo@full.offline.test");
    let from = romeo();
    let message = NewOfflineMessage {
        from: &from,
        stored_at: at(1_700_000_000, 0),
        stanza: "<message xmlns='jabber:client'/>",
        metadata: "",
    };
    for _ in 0..2 {
        assert!(matches!(
            store.store(&user, message, 2).await.unwrap(),
            Stored::Stored(_)
        ));
    }
    assert_eq!(store.store(&user, message, 2).await.unwrap(), Stored::Full);
    assert_eq!(store.count(&user).await.unwrap(), 2);
    assert!(matches!(
        store.store(&other, message, 2).await.unwrap(),
        Stored::Stored(_)
    ));
    store.take(&user).await.unwrap();
    assert!(matches!(
        store.store(&user, message, 2).await.unwrap(),
        Stored::Stored(_)
    ));
}

/// Many senders storing for one user at once: exactly `limit` messages are kept, the others
/// are refused as full.
pub async fn concurrent_stores_never_overshoot_the_limit(store: &dyn OfflineStore) {
    let user = jid("juliet@concurrent.offline.test");
    let from = romeo();
    let message = NewOfflineMessage {
        from: &from,
        stored_at: at(1_700_000_000, 0),
        stanza: "<message xmlns='jabber:client'/>",
        metadata: "",
    };
    let attempts: Vec<_> = (0..24)
        .map(|_| Box::pin(store.store(&user, message, 5)))
        .collect();
    let results = join_all(attempts).await;
    let stored = results
        .iter()
        .filter(|result| matches!(result, Ok(Stored::Stored(_))))
        .count();
    let full = results
        .iter()
        .filter(|result| matches!(result, Ok(Stored::Full)))
        .count();
    assert_eq!((stored, full), (5, 19), "{results:?}");
    assert_eq!(store.count(&user).await.unwrap(), 5);
}

/// [`OfflineStore::store_for_account`]: nothing is stored for a missing account; an existing
/// one gets its messages up to the limit, then `Full`. Needs the account store of the same
/// storage.
pub async fn store_for_account_stores_only_for_existing_accounts(
    accounts: &dyn crate::AccountStore,
    store: &dyn OfflineStore,
) {
    let user = jid("juliet@accounts.offline.test");
    let from = romeo();
    let message = NewOfflineMessage {
        from: &from,
        stored_at: at(1_700_000_000, 0),
        stanza: "<message xmlns='jabber:client'/>",
        metadata: "",
    };
    assert_eq!(
        store
            .store_for_account(accounts, &user, message, 2)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.count(&user).await.unwrap(), 0);
    let credentials = herald_sasl::Credentials::from_password("pass", 4096).unwrap();
    accounts.create(&user, &credentials).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            store
                .store_for_account(accounts, &user, message, 2)
                .await
                .unwrap(),
            Some(Stored::Stored(_))
        ));
    }
    assert_eq!(
        store
            .store_for_account(accounts, &user, message, 2)
            .await
            .unwrap(),
        Some(Stored::Full)
    );
    assert_eq!(store.count(&user).await.unwrap(), 2);
    accounts.remove(&user).await.unwrap();
    store.remove_all(&user).await.unwrap();
    assert_eq!(
        store
            .store_for_account(accounts, &user, message, 2)
            .await
            .unwrap(),
        None
    );
}

/// Polls every future until all are ready, concurrently on the current task.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(&mut *future).poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// `set_metadata` changes the named message of that user only, and reports a missing one.
pub async fn set_metadata_changes_one_message_only(store: &dyn OfflineStore) {
    let user = jid("juliet@metadata.offline.test");
    let other = jid("romeo@metadata.offline.test");
    let first = store_nth(store, &user, 0).await;
    store_nth(store, &user, 1).await;
    assert!(
        store
            .set_metadata(&user, first, "{\"pushed\":[\"phone\"]}")
            .await
            .unwrap()
    );
    let messages = store.list(&user).await.unwrap();
    assert_eq!(messages[0].metadata, "{\"pushed\":[\"phone\"]}");
    assert_eq!(messages[1].metadata, "{\"n\":1}");
    assert!(!store.set_metadata(&other, first, "x").await.unwrap());
    store.take(&user).await.unwrap();
    assert!(!store.set_metadata(&user, first, "x").await.unwrap());
}

/// `remove_all` deletes the user's messages, counts them, and leaves other users' alone.
pub async fn remove_all_deletes_only_that_users_messages(store: &dyn OfflineStore) {
    let user = jid("juliet@remove.offline.test");
    let other = jid("romeo@remove.offline.test");
    for n in 0..3 {
        store_nth(store, &user, n).await;
    }
    store_nth(store, &other, 9).await;
    assert_eq!(store.remove_all(&user).await.unwrap(), 3);
    assert_eq!(store.count(&user).await.unwrap(), 0);
    assert_eq!(store.count(&other).await.unwrap(), 1);
    assert_eq!(store.remove_all(&user).await.unwrap(), 0);
}

/// A JID without a localpart names a server, not an account: every method rejects it.
pub async fn a_domain_only_jid_is_an_invalid_user(store: &dyn OfflineStore) {
    let domain = jid("domain-only.offline.test");
    let from = romeo();
    let message = NewOfflineMessage {
        from: &from,
        stored_at: at(0, 0),
        stanza: "<message xmlns='jabber:client'/>",
        metadata: "",
    };
    let invalid = |result: Result<(), StorageError>| {
        assert!(
            matches!(result, Err(StorageError::InvalidUser(ref jid)) if jid == "domain-only.offline.test"),
            "{result:?}"
        );
    };
    invalid(store.store(&domain, message, LIMIT).await.map(drop));
    invalid(store.list(&domain).await.map(drop));
    invalid(store.take(&domain).await.map(drop));
    invalid(store.page(&domain, 0, 1).await.map(drop));
    invalid(store.remove(&domain, &[1]).await.map(drop));
    invalid(store.count(&domain).await.map(drop));
    invalid(store.set_metadata(&domain, 1, "").await.map(drop));
    invalid(store.remove_all(&domain).await.map(drop));
}
