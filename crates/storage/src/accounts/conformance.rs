//! The behaviour every [`AccountStore`] engine must have: one suite, run against each engine.
//!
//! Each behaviour is a public async function that panics when the store misbehaves.
//! [`run_account_store_conformance`] runs them all on one store; inside this crate,
//! `account_store_conformance_tests!` turns each into its own `#[tokio::test]` for an engine.
//! Every behaviour uses accounts of its own domain, so they can share one store, which must
//! start empty.

use std::sync::Arc;

use herald_sasl::{Credentials, ScramSecrets};
use jid::BareJid;

use crate::{AccountStore, StorageError};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite, so the list is
/// written once for both [`run_account_store_conformance`] and the per-engine tests.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            create_then_credentials_round_trip,
            create_twice_is_already_exists,
            credentials_of_a_missing_account_are_none,
            exists_follows_create_and_remove,
            remove_returns_true_then_false,
            a_removed_account_can_be_created_again,
            set_credentials_replaces_the_credentials,
            set_credentials_of_a_missing_account_is_not_found,
            extreme_secrets_round_trip,
            jid_case_variants_are_the_same_account,
            a_non_ascii_localpart_round_trips,
            the_same_localpart_on_two_domains_is_two_accounts,
            a_domain_only_jid_is_an_invalid_user,
            list_of_a_domain_is_sorted_by_localpart,
            list_of_all_is_sorted_by_domain_then_localpart,
            list_normalises_the_domain,
        }
    };
}

/// Defines one `#[tokio::test]` per behaviour. `$open` names an async fn returning a value
/// with `fn accounts(&self) -> Arc<dyn AccountStore>` (typically a [`crate::Storage`] plus
/// whatever must outlive it), called afresh for each test.
#[cfg(test)]
macro_rules! account_store_conformance_tests {
    // `optional`: `$open` returns an `Option`, `None` when the engine is not available here
    // (a PostgreSQL server that is not reachable); the test then returns.
    ((optional $open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(opened) = $open().await else { return };
                $crate::accounts::conformance::$case(opened.accounts().as_ref()).await;
            }
        )*
    };
    (optional $open:path) => {
        $crate::accounts::conformance::with_cases!(account_store_conformance_tests!(optional $open));
    };
    // Called back by `with_cases!` with the list of behaviours.
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let opened = $open().await;
                $crate::accounts::conformance::$case(opened.accounts().as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::accounts::conformance::with_cases!(account_store_conformance_tests!($open));
    };
}

#[cfg(test)]
pub(crate) use account_store_conformance_tests;
#[cfg(test)]
pub(crate) use with_cases;

/// Run every behaviour of the suite against `store`, which must start empty; panics on the
/// first misbehaviour.
pub async fn run_account_store_conformance(store: Arc<dyn AccountStore>) {
    macro_rules! run_each {
        (($store:expr) $($case:ident),* $(,)?) => {
            $(
                tracing::debug!(case = stringify!($case), "account store conformance");
                $case($store).await;
            )*
        };
    }
    with_cases!(run_each!(store.as_ref()));
}

/// A bare JID from a literal.
fn jid(text: &str) -> BareJid {
    BareJid::new(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

/// Credentials whose every field depends on `seed`, with the real SHA-1/SHA-256 key lengths.
pub(crate) fn credentials(seed: u8) -> Credentials {
    let secrets = |len: usize, iterations: u32| ScramSecrets {
        salt: vec![seed; 16],
        iterations,
        stored_key: vec![seed.wrapping_add(1); len],
        server_key: vec![seed.wrapping_add(2); len],
    };
    Credentials {
        sha1: secrets(20, 4096 + u32::from(seed)),
        sha256: secrets(32, 8192 + u32::from(seed)),
    }
}

/// `(domain, localpart)` of a listed account, the order [`AccountStore::list`] sorts by.
fn sort_key(user: &BareJid) -> (String, String) {
    let localpart = user
        .node()
        .map(|node| node.as_str().to_owned())
        .unwrap_or_default();
    (user.domain().as_str().to_owned(), localpart)
}

/// What `create` then `credentials` gives back is what was stored, for both hashes.
pub async fn create_then_credentials_round_trip(store: &dyn AccountStore) {
    let user = jid("juliet@round-trip.test");
    store.create(&user, &credentials(1)).await.unwrap();
    assert_eq!(
        store.credentials(&user).await.unwrap(),
        Some(credentials(1))
    );
}

/// Creating an existing account fails with `AlreadyExists` and keeps its credentials.
pub async fn create_twice_is_already_exists(store: &dyn AccountStore) {
    let user = jid("juliet@duplicate.test");
    store.create(&user, &credentials(1)).await.unwrap();
    let again = store.create(&user, &credentials(2)).await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists)),
        "{again:?}"
    );
    assert_eq!(
        store.credentials(&user).await.unwrap(),
        Some(credentials(1))
    );
}

/// An account never created has no credentials.
pub async fn credentials_of_a_missing_account_are_none(store: &dyn AccountStore) {
    let user = jid("nobody@missing.test");
    assert_eq!(store.credentials(&user).await.unwrap(), None);
}

/// `exists` is false before `create`, true after, false after `remove`.
pub async fn exists_follows_create_and_remove(store: &dyn AccountStore) {
    let user = jid("juliet@exists.test");
    assert!(!store.exists(&user).await.unwrap());
    store.create(&user, &credentials(1)).await.unwrap();
    assert!(store.exists(&user).await.unwrap());
    store.remove(&user).await.unwrap();
    assert!(!store.exists(&user).await.unwrap());
}

/// `remove` reports that the account existed the first time only, and forgets its credentials.
pub async fn remove_returns_true_then_false(store: &dyn AccountStore) {
    let user = jid("juliet@remove.test");
    store.create(&user, &credentials(1)).await.unwrap();
    assert!(store.remove(&user).await.unwrap());
    assert!(!store.remove(&user).await.unwrap());
    assert_eq!(store.credentials(&user).await.unwrap(), None);
}

/// After `remove`, the same JID can register again, with new credentials.
pub async fn a_removed_account_can_be_created_again(store: &dyn AccountStore) {
    let user = jid("juliet@recreate.test");
    store.create(&user, &credentials(1)).await.unwrap();
    store.remove(&user).await.unwrap();
    store.create(&user, &credentials(2)).await.unwrap();
    assert_eq!(
        store.credentials(&user).await.unwrap(),
        Some(credentials(2))
    );
}

/// `set_credentials` replaces both hashes' secrets of an existing account, and only its own.
pub async fn set_credentials_replaces_the_credentials(store: &dyn AccountStore) {
    let user = jid("juliet@password-change.test");
    let other = jid("romeo@password-change.test");
    store.create(&user, &credentials(1)).await.unwrap();
    store.create(&other, &credentials(1)).await.unwrap();
    store.set_credentials(&user, &credentials(2)).await.unwrap();
    assert_eq!(
        store.credentials(&user).await.unwrap(),
        Some(credentials(2))
    );
    assert_eq!(
        store.credentials(&other).await.unwrap(),
        Some(credentials(1))
    );
}

/// `set_credentials` on an account that does not exist is `NotFound` and does not create it.
pub async fn set_credentials_of_a_missing_account_is_not_found(store: &dyn AccountStore) {
    let user = jid("nobody@set-missing.test");
    let result = store.set_credentials(&user, &credentials(1)).await;
    assert!(matches!(result, Err(StorageError::NotFound)), "{result:?}");
    assert!(!store.exists(&user).await.unwrap());
}

/// Secrets are stored as given, whatever their lengths and iteration counts.
pub async fn extreme_secrets_round_trip(store: &dyn AccountStore) {
    let user = jid("juliet@extremes.test");
    let extremes = Credentials {
        sha1: ScramSecrets {
            salt: Vec::new(),
            iterations: 1,
            stored_key: vec![0; 20],
            server_key: vec![0xff; 20],
        },
        sha256: ScramSecrets {
            salt: (0..=255).collect(),
            iterations: u32::MAX,
            stored_key: vec![0xff; 32],
            server_key: vec![0; 32],
        },
    };
    store.create(&user, &extremes).await.unwrap();
    assert_eq!(store.credentials(&user).await.unwrap(), Some(extremes));
}

/// `User@Example.org` and `user@example.org` (as normalised by the `jid` crate) are one account.
pub async fn jid_case_variants_are_the_same_account(store: &dyn AccountStore) {
    let upper = jid("Juliet@Case.TEST");
    let lower = jid("juliet@case.test");
    store.create(&upper, &credentials(1)).await.unwrap();
    assert!(store.exists(&lower).await.unwrap());
    let again = store.create(&lower, &credentials(2)).await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists)),
        "{again:?}"
    );
    store
        .set_credentials(&lower, &credentials(3))
        .await
        .unwrap();
    assert_eq!(
        store.credentials(&upper).await.unwrap(),
        Some(credentials(3))
    );
    assert_eq!(
        store.list(Some("case.test")).await.unwrap(),
        [jid("juliet@case.test")]
    );
    assert!(store.remove(&lower).await.unwrap());
    assert!(!store.exists(&upper).await.unwrap());
}

/// A localpart outside ASCII is stored and listed back unchanged.
pub async fn a_non_ascii_localpart_round_trips(store: &dyn AccountStore) {
    let user = jid("Zoë@unicode.test");
    store.create(&user, &credentials(1)).await.unwrap();
    assert!(store.exists(&jid("zoë@unicode.test")).await.unwrap());
    assert_eq!(store.list(Some("unicode.test")).await.unwrap(), [user]);
}

/// The domain is part of the key: the same localpart on two domains is two accounts.
pub async fn the_same_localpart_on_two_domains_is_two_accounts(store: &dyn AccountStore) {
    let first = jid("juliet@first.scoped.test");
    let second = jid("juliet@second.scoped.test");
    store.create(&first, &credentials(1)).await.unwrap();
    assert!(!store.exists(&second).await.unwrap());
    store.create(&second, &credentials(2)).await.unwrap();
    assert!(store.remove(&first).await.unwrap());
    assert_eq!(
        store.credentials(&second).await.unwrap(),
        Some(credentials(2))
    );
}

/// A JID without a localpart names a server, not an account: every method rejects it.
pub async fn a_domain_only_jid_is_an_invalid_user(store: &dyn AccountStore) {
    let domain = jid("domain-only.test");
    let invalid = |result: Result<(), StorageError>| {
        assert!(
            matches!(result, Err(StorageError::InvalidUser(ref jid)) if jid == "domain-only.test"),
            "{result:?}"
        );
    };
    invalid(store.create(&domain, &credentials(1)).await);
    invalid(store.set_credentials(&domain, &credentials(1)).await);
    invalid(store.credentials(&domain).await.map(drop));
    invalid(store.exists(&domain).await.map(drop));
    invalid(store.remove(&domain).await.map(drop));
    assert!(
        store
            .list(Some("domain-only.test"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `list(Some(domain))` gives that domain's accounts only, by localpart in code point order.
pub async fn list_of_a_domain_is_sorted_by_localpart(store: &dyn AccountStore) {
    for user in ["émile", "zoe", "bob", "alice"] {
        store
            .create(&jid(&format!("{user}@list.test")), &credentials(1))
            .await
            .unwrap();
    }
    store
        .create(&jid("carol@other.list.test"), &credentials(1))
        .await
        .unwrap();
    let listed = store.list(Some("list.test")).await.unwrap();
    let expected: Vec<BareJid> = ["alice", "bob", "zoe", "émile"]
        .map(|user| jid(&format!("{user}@list.test")))
        .into();
    assert_eq!(listed, expected);
    assert!(
        store
            .list(Some("empty.list.test"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `list(None)` gives every account, sorted by domain first, then localpart.
pub async fn list_of_all_is_sorted_by_domain_then_localpart(store: &dyn AccountStore) {
    for user in [
        "b@b.all.test",
        "a@b.all.test",
        "c@a.all.test",
        "b@a.all.test",
    ] {
        store.create(&jid(user), &credentials(1)).await.unwrap();
    }
    let listed = store.list(None).await.unwrap();
    // Other behaviours may share this store: their accounts may be listed too.
    assert!(
        listed
            .windows(2)
            .all(|pair| sort_key(&pair[0]) < sort_key(&pair[1])),
        "not sorted by (domain, localpart): {listed:?}"
    );
    let ours: Vec<BareJid> = listed
        .into_iter()
        .filter(|user| user.domain().ends_with(".all.test"))
        .collect();
    let expected: Vec<BareJid> = [
        "b@a.all.test",
        "c@a.all.test",
        "a@b.all.test",
        "b@b.all.test",
    ]
    .map(jid)
    .into();
    assert_eq!(ours, expected);
}

/// The domain given to `list` is normalised like a JID's; one no JID can have lists nothing.
pub async fn list_normalises_the_domain(store: &dyn AccountStore) {
    let user = jid("juliet@normalised.list.test");
    store.create(&user, &credentials(1)).await.unwrap();
    assert_eq!(
        store.list(Some("Normalised.LIST.test")).await.unwrap(),
        [user]
    );
    assert!(store.list(Some("not a domain")).await.unwrap().is_empty());
    assert!(store.list(Some("")).await.unwrap().is_empty());
}
