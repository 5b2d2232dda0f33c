//! The behaviour every [`UserDataStore`] engine must have: one suite, run against each engine.
//! Each behaviour uses owners of its own domain, so they can share one store.

use std::sync::Arc;

use jid::BareJid;

use crate::user_data::{Entry, UserDataStore};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            put_then_get_round_trips_and_put_replaces,
            list_is_per_scope_in_last_write_order,
            delete_removes_one_row,
            delete_scope_removes_that_scope_only,
            trim_keeps_the_latest_rows,
            remove_user_removes_every_row_of_that_user_only,
            unusual_text_round_trips,
            owners_are_the_accounts_with_rows_of_a_kind_each_once,
        }
    };
}

/// Defines one `#[tokio::test]` per behaviour. `$open` names an async fn returning a value
/// with `fn user_data(&self) -> Arc<dyn UserDataStore>` (`optional`: an `Option`, `None` when
/// the engine is not reachable here).
#[cfg(test)]
macro_rules! user_data_store_conformance_tests {
    ((optional $open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(opened) = $open().await else { return };
                $crate::user_data::conformance::$case(opened.user_data().as_ref()).await;
            }
        )*
    };
    (optional $open:path) => {
        $crate::user_data::conformance::with_cases!(user_data_store_conformance_tests!(optional $open));
    };
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let opened = $open().await;
                $crate::user_data::conformance::$case(opened.user_data().as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::user_data::conformance::with_cases!(user_data_store_conformance_tests!($open));
    };
}

#[cfg(test)]
pub(crate) use user_data_store_conformance_tests;
#[cfg(test)]
pub(crate) use with_cases;

/// Run every behaviour of the suite against `store`; panics on the first misbehaviour.
pub async fn run_user_data_store_conformance(store: Arc<dyn UserDataStore>) {
    macro_rules! run_each {
        (($store:expr) $($case:ident),* $(,)?) => {
            $( $case($store).await; )*
        };
    }
    with_cases!(run_each!(store.as_ref()));
}

fn user(text: &str) -> BareJid {
    BareJid::new(text).unwrap()
}

fn items(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.item.as_str()).collect()
}

/// A written row reads back; writing the same name replaces its value.
pub async fn put_then_get_round_trips_and_put_replaces(store: &dyn UserDataStore) {
    let owner = user("alice@put.example");
    assert_eq!(store.get(&owner, "vcard", "", "").await.unwrap(), None);
    store
        .put(&owner, "vcard", "", "", "<vCard/>")
        .await
        .unwrap();
    assert_eq!(
        store.get(&owner, "vcard", "", "").await.unwrap().as_deref(),
        Some("<vCard/>")
    );
    store
        .put(&owner, "vcard", "", "", "<vCard>2</vCard>")
        .await
        .unwrap();
    assert_eq!(
        store.get(&owner, "vcard", "", "").await.unwrap().as_deref(),
        Some("<vCard>2</vCard>")
    );
    let other = user("bob@put.example");
    assert_eq!(store.get(&other, "vcard", "", "").await.unwrap(), None);
}

/// A scope lists its rows oldest write first; rewriting a row makes it the latest; other
/// scopes and kinds are apart.
pub async fn list_is_per_scope_in_last_write_order(store: &dyn UserDataStore) {
    let owner = user("alice@list.example");
    for item in ["a", "b", "c"] {
        store
            .put(&owner, "pep_item", "n1", item, item)
            .await
            .unwrap();
    }
    store.put(&owner, "pep_item", "n2", "x", "x").await.unwrap();
    store.put(&owner, "block", "", "a", "").await.unwrap();
    store
        .put(&owner, "pep_item", "n1", "a", "a2")
        .await
        .unwrap();
    let listed = store.list(&owner, "pep_item", "n1").await.unwrap();
    assert_eq!(items(&listed), ["b", "c", "a"]);
    assert_eq!(listed[2].value, "a2");
    assert_eq!(
        items(&store.list(&owner, "pep_item", "n2").await.unwrap()),
        ["x"]
    );
    assert!(
        store
            .list(&owner, "pep_item", "n3")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Delete removes exactly one row and says whether it was there.
pub async fn delete_removes_one_row(store: &dyn UserDataStore) {
    let owner = user("alice@delete.example");
    store.put(&owner, "block", "", "x@y", "").await.unwrap();
    store.put(&owner, "block", "", "z@y", "").await.unwrap();
    assert!(store.delete(&owner, "block", "", "x@y").await.unwrap());
    assert!(!store.delete(&owner, "block", "", "x@y").await.unwrap());
    assert_eq!(
        items(&store.list(&owner, "block", "").await.unwrap()),
        ["z@y"]
    );
}

/// Deleting a scope leaves the other scopes and users alone.
pub async fn delete_scope_removes_that_scope_only(store: &dyn UserDataStore) {
    let owner = user("alice@scope.example");
    let other = user("bob@scope.example");
    for scope in ["n1", "n2"] {
        store
            .put(&owner, "pep_item", scope, "i", "v")
            .await
            .unwrap();
        store
            .put(&other, "pep_item", scope, "i", "v")
            .await
            .unwrap();
    }
    assert_eq!(
        store.delete_scope(&owner, "pep_item", "n1").await.unwrap(),
        1
    );
    assert!(
        store
            .list(&owner, "pep_item", "n1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list(&owner, "pep_item", "n2").await.unwrap().len(), 1);
    assert_eq!(store.list(&other, "pep_item", "n1").await.unwrap().len(), 1);
}

/// Trim keeps the latest `keep` rows of a scope (all of them when there are fewer; none for 0).
pub async fn trim_keeps_the_latest_rows(store: &dyn UserDataStore) {
    let owner = user("alice@trim.example");
    for item in ["1", "2", "3", "4", "5"] {
        store
            .put(&owner, "pep_item", "n", item, item)
            .await
            .unwrap();
    }
    store
        .put(&owner, "pep_item", "other", "o", "o")
        .await
        .unwrap();
    assert_eq!(store.trim(&owner, "pep_item", "n", 10).await.unwrap(), 0);
    assert_eq!(store.trim(&owner, "pep_item", "n", 2).await.unwrap(), 3);
    assert_eq!(
        items(&store.list(&owner, "pep_item", "n").await.unwrap()),
        ["4", "5"]
    );
    assert_eq!(store.trim(&owner, "pep_item", "n", 0).await.unwrap(), 2);
    assert!(
        store
            .list(&owner, "pep_item", "n")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list(&owner, "pep_item", "other").await.unwrap().len(),
        1
    );
}

/// Removing a user deletes all its rows of every kind and nobody else's.
pub async fn remove_user_removes_every_row_of_that_user_only(store: &dyn UserDataStore) {
    let owner = user("alice@remove.example");
    let other = user("bob@remove.example");
    for who in [&owner, &other] {
        store.put(who, "vcard", "", "", "<vCard/>").await.unwrap();
        store.put(who, "block", "", "x@y", "").await.unwrap();
        store.put(who, "pep_item", "n", "i", "v").await.unwrap();
    }
    store.remove_user(&owner).await.unwrap();
    for (kind, scope) in [("vcard", ""), ("block", ""), ("pep_item", "n")] {
        assert!(store.list(&owner, kind, scope).await.unwrap().is_empty());
        assert_eq!(store.list(&other, kind, scope).await.unwrap().len(), 1);
    }
}

/// Quotes, non-ASCII text and XML come back as written.
pub async fn unusual_text_round_trips(store: &dyn UserDataStore) {
    let owner = user("élise@unusual.example");
    let value = "<item xmlns='urn:x'>'quoted' \"double\" ünïcode ✓ \\ %_</item>";
    store
        .put(&owner, "pep_item", "urn:x:node'1", "id %_'", value)
        .await
        .unwrap();
    let listed = store
        .list(&owner, "pep_item", "urn:x:node'1")
        .await
        .unwrap();
    assert_eq!(
        listed,
        [Entry {
            item: "id %_'".to_owned(),
            value: value.to_owned()
        }]
    );
}

/// The owners of a kind are the accounts with rows of it, in any scope, each once; an account
/// whose rows of the kind are gone is not one, nor one with rows of another kind only.
pub async fn owners_are_the_accounts_with_rows_of_a_kind_each_once(store: &dyn UserDataStore) {
    let (a, b, c) = (
        user("a@owners.example"),
        user("b@owners.example"),
        user("c@owners.example"),
    );
    store.put(&a, "owners_kind", "", "x", "1").await.unwrap();
    store.put(&a, "owners_kind", "s", "y", "2").await.unwrap();
    store.put(&b, "owners_kind", "", "x", "").await.unwrap();
    store.put(&c, "owners_other", "", "x", "").await.unwrap();
    let owners = |listed: Vec<BareJid>| {
        let mut texts: Vec<String> = listed
            .iter()
            .map(ToString::to_string)
            .filter(|owner| owner.ends_with("@owners.example"))
            .collect();
        texts.sort();
        texts
    };
    assert_eq!(
        owners(store.owners("owners_kind").await.unwrap()),
        ["a@owners.example", "b@owners.example"]
    );
    store.delete_scope(&b, "owners_kind", "").await.unwrap();
    assert_eq!(
        owners(store.owners("owners_kind").await.unwrap()),
        ["a@owners.example"]
    );
}
