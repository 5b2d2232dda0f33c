//! The behaviour every [`ArchiveStore`] engine must have: one suite, run against each engine.
//! Each behaviour uses owners of its own domain, so they can share one store.

use std::sync::Arc;

use jid::BareJid;

use crate::archive::{
    ArchiveId, ArchiveQuery, ArchiveStore, ArchivedMessage, Kept, Paging, next_id,
};

/// Calls `$then!((args) case, case, ...)` with every behaviour of the suite.
macro_rules! with_cases {
    ($then:ident ! ($($args:tt)*)) => {
        $then! { ($($args)*)
            pages_forward_and_backward_with_complete_and_count,
            filters_by_with_time_ids_and_text,
            exists_and_remove_user_are_per_owner,
            purge_before_removes_older_messages_only,
            only_accounts_leaves_out_owners_without_an_account,
            a_batch_of_any_size_is_stored_whole_and_in_order,
            a_message_between_two_accounts_is_in_both_archives_until_each_removes_it,
            with_matches_either_sides_resource_and_a_retried_append_changes_nothing,
            a_message_to_oneself_is_found_once,
        }
    };
}

/// Defines one `#[tokio::test]` per behaviour. `$open` names an async fn returning a value
/// with `fn archive(&self) -> Arc<dyn ArchiveStore>` (`optional`: an `Option`).
#[cfg(test)]
macro_rules! archive_store_conformance_tests {
    ((optional $open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(opened) = $open().await else { return };
                $crate::archive::conformance::$case(opened.archive().as_ref()).await;
            }
        )*
    };
    (optional $open:path) => {
        $crate::archive::conformance::with_cases!(archive_store_conformance_tests!(optional $open));
    };
    (($open:path) $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let opened = $open().await;
                $crate::archive::conformance::$case(opened.archive().as_ref()).await;
            }
        )*
    };
    ($open:path) => {
        $crate::archive::conformance::with_cases!(archive_store_conformance_tests!($open));
    };
}

#[cfg(test)]
pub(crate) use archive_store_conformance_tests;
#[cfg(test)]
pub(crate) use with_cases;

/// Run every behaviour of the suite against `store`; panics on the first misbehaviour.
pub async fn run_archive_store_conformance(store: Arc<dyn ArchiveStore>) {
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

/// `n` messages for `owner` with `remote`, bodies `"{prefix}{i}"`; their ids.
async fn fill(
    store: &dyn ArchiveStore,
    owner: &BareJid,
    remote: &str,
    prefix: &str,
    n: usize,
) -> Vec<ArchiveId> {
    let remote = user(remote);
    let messages: Vec<ArchivedMessage> = (0..n)
        .map(|i| {
            // Every other message received from `remote`, the others sent to it.
            let (sender, recipient, kept) = if i % 2 == 0 {
                (remote.clone(), owner.clone(), Kept::Recipient)
            } else {
                (owner.clone(), remote.clone(), Kept::Sender)
            };
            ArchivedMessage {
                id: next_id(),
                sender,
                sender_resource: "r".to_owned(),
                recipient,
                recipient_resource: "r".to_owned(),
                kept,
                origin_id: Some(format!("o{i}")),
                body: format!("{prefix}{i}"),
                message: format!(
                    "<message xmlns='jabber:client'><body>{prefix}{i}</body></message>"
                )
                .into(),
            }
        })
        .collect();
    store.append(messages.clone(), false).await.unwrap();
    messages.iter().map(|m| m.id).collect()
}

fn ids(page: &crate::archive::ArchivePage) -> Vec<ArchiveId> {
    page.items.iter().map(|found| found.id).collect()
}

/// 30 messages: forward pages of 20 then 10 (complete on the last), backward from the end.
pub async fn pages_forward_and_backward_with_complete_and_count(store: &dyn ArchiveStore) {
    let owner = user("alice@pages.example");
    let all = fill(store, &owner, "bob@pages.example", "m", 30).await;
    let mut query = ArchiveQuery::all(20);
    let first = store.query(&owner, &query).await.unwrap();
    assert_eq!(ids(&first), all[..20]);
    assert!(!first.complete);
    assert_eq!(first.count, 30);
    query.paging = Paging::Forward(Some(all[19]));
    let second = store.query(&owner, &query).await.unwrap();
    assert_eq!(ids(&second), all[20..]);
    assert!(second.complete);
    query.paging = Paging::Backward(None);
    let last = store.query(&owner, &query).await.unwrap();
    assert_eq!(ids(&last), all[10..], "the last page, oldest first");
    assert!(!last.complete);
    query.paging = Paging::Backward(Some(all[10]));
    let before = store.query(&owner, &query).await.unwrap();
    assert_eq!(ids(&before), all[..10]);
    assert!(before.complete);
    assert!(first.items[0].message.contains("<body>m0</body>"));
}

/// `with` (bare and resource), time (id) ranges, after/before ids, id lists, text.
pub async fn filters_by_with_time_ids_and_text(store: &dyn ArchiveStore) {
    let owner = user("alice@filters.example");
    let bob = fill(store, &owner, "bob@filters.example", "hello ", 5).await;
    let carol = fill(store, &owner, "carol@filters.example", "Other ", 5).await;
    let mut query = ArchiveQuery::all(50);
    query.with_bare = Some("carol@filters.example".to_owned());
    assert_eq!(ids(&store.query(&owner, &query).await.unwrap()), carol);
    query.with_resource = Some("elsewhere".to_owned());
    assert!(store.query(&owner, &query).await.unwrap().items.is_empty());
    let mut query = ArchiveQuery::all(50);
    query.start = Some(bob[2]);
    query.end = Some(carol[1]);
    let page = store.query(&owner, &query).await.unwrap();
    assert_eq!(ids(&page), [&bob[2..], &carol[..2]].concat());
    assert_eq!(page.count, 5);
    let mut query = ArchiveQuery::all(50);
    query.after_id = Some(bob[3]);
    query.before_id = Some(carol[1]);
    assert_eq!(
        ids(&store.query(&owner, &query).await.unwrap()),
        [bob[4], carol[0]]
    );
    let mut query = ArchiveQuery::all(50);
    query.ids = vec![carol[4], bob[0]];
    assert_eq!(
        ids(&store.query(&owner, &query).await.unwrap()),
        [bob[0], carol[4]]
    );
    let mut query = ArchiveQuery::all(50);
    query.text = Some("OTHER 3".to_owned());
    assert_eq!(ids(&store.query(&owner, &query).await.unwrap()), [carol[3]]);
    query.text = Some("%".to_owned());
    assert!(
        store.query(&owner, &query).await.unwrap().items.is_empty(),
        "% is literal"
    );
}

/// Ids are per owner; removing a user leaves the others.
pub async fn exists_and_remove_user_are_per_owner(store: &dyn ArchiveStore) {
    let alice = user("alice@owners.example");
    let bob = user("bob@owners.example");
    let mine = fill(store, &alice, "x@owners.example", "a", 2).await;
    let his = fill(store, &bob, "x@owners.example", "b", 2).await;
    assert!(store.exists(&alice, mine[0]).await.unwrap());
    assert!(!store.exists(&alice, his[0]).await.unwrap());
    store.remove_user(&alice).await.unwrap();
    assert_eq!(
        store
            .query(&alice, &ArchiveQuery::all(10))
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(
        store
            .query(&bob, &ArchiveQuery::all(10))
            .await
            .unwrap()
            .count,
        2
    );
}

/// Retention deletes what is older than an id, for every owner.
pub async fn purge_before_removes_older_messages_only(store: &dyn ArchiveStore) {
    let owner = user("alice@purge.example");
    let old = fill(store, &owner, "x@purge.example", "old", 3).await;
    let new = fill(store, &owner, "x@purge.example", "new", 2).await;
    assert!(store.purge_before(new[0]).await.unwrap() >= 3);
    assert!(!store.exists(&owner, old[2]).await.unwrap());
    assert_eq!(
        ids(&store.query(&owner, &ArchiveQuery::all(10)).await.unwrap()),
        new
    );
}

/// With `only_accounts`, a message for an owner without an account is left out.
pub async fn only_accounts_leaves_out_owners_without_an_account(store: &dyn ArchiveStore) {
    let ghost = user("nobody@ghosts.example");
    let message = ArchivedMessage {
        id: next_id(),
        sender: user("x@ghosts.example"),
        sender_resource: String::new(),
        recipient: ghost.clone(),
        recipient_resource: String::new(),
        kept: Kept::Recipient,
        origin_id: None,
        body: "boo".to_owned(),
        message: "<message xmlns='jabber:client'/>".into(),
    };
    store.append(vec![message.clone()], true).await.unwrap();
    assert_eq!(
        store
            .query(&ghost, &ArchiveQuery::all(10))
            .await
            .unwrap()
            .count,
        0
    );
    store.append(vec![message], false).await.unwrap();
    assert_eq!(
        store
            .query(&ghost, &ArchiveQuery::all(10))
            .await
            .unwrap()
            .count,
        1
    );
}

/// One append of 1, 7 or 300 messages (more than one statement holds) keeps every message,
/// in id order.
pub async fn a_batch_of_any_size_is_stored_whole_and_in_order(store: &dyn ArchiveStore) {
    for size in [1, 7, 300] {
        let owner = user(&format!("owner{size}@sizes.example"));
        let all = fill(store, &owner, "peer@sizes.example", "s", size).await;
        let mut found = Vec::new();
        let mut paging = Paging::Forward(None);
        loop {
            let page = store
                .query(
                    &owner,
                    &ArchiveQuery {
                        paging,
                        ..ArchiveQuery::all(100)
                    },
                )
                .await
                .unwrap();
            assert_eq!(page.count, size as u64, "count of a batch of {size}");
            found.extend(ids(&page));
            if page.complete {
                break;
            }
            paging = Paging::Forward(found.last().copied());
        }
        assert_eq!(found, all, "a batch of {size}");
    }
}

/// A message from `sender` to `recipient` kept by `kept`, with `text` as body and stanza.
fn between(sender: &BareJid, recipient: &BareJid, kept: Kept, text: &str) -> ArchivedMessage {
    ArchivedMessage {
        id: next_id(),
        sender: sender.clone(),
        sender_resource: "phone".to_owned(),
        recipient: recipient.clone(),
        recipient_resource: String::new(),
        kept,
        origin_id: None,
        body: text.to_owned(),
        message: format!("<message xmlns='jabber:client'><body>{text}</body></message>").into(),
    }
}

async fn count(store: &dyn ArchiveStore, owner: &BareJid, with: Option<&BareJid>) -> u64 {
    let query = ArchiveQuery {
        with_bare: with.map(BareJid::to_string),
        ..ArchiveQuery::all(10)
    };
    store.query(owner, &query).await.unwrap().count
}

/// One message kept by both archives: each finds it, by itself and `with` the other, under
/// the same id; removing one account's archive leaves the other's whole.
pub async fn a_message_between_two_accounts_is_in_both_archives_until_each_removes_it(
    store: &dyn ArchiveStore,
) {
    let alice = user("alice@both.example");
    let bob = user("bob@both.example");
    let carol = user("carol@both.example");
    let shared = between(&alice, &bob, Kept::Both, "hello bob");
    let to_carol = between(&alice, &carol, Kept::Sender, "hello carol");
    let from_carol = between(&carol, &bob, Kept::Both, "hello from carol");
    store
        .append(
            vec![shared.clone(), to_carol.clone(), from_carol.clone()],
            false,
        )
        .await
        .unwrap();
    let all = |owner: &BareJid| {
        let owner = owner.clone();
        async move { ids(&store.query(&owner, &ArchiveQuery::all(10)).await.unwrap()) }
    };
    assert_eq!(all(&alice).await, [shared.id, to_carol.id]);
    assert_eq!(all(&bob).await, [shared.id, from_carol.id]);
    assert_eq!(
        all(&carol).await,
        [from_carol.id],
        "carol's copy of her message to alice is not hers"
    );
    assert_eq!(count(store, &alice, Some(&bob)).await, 1);
    assert_eq!(count(store, &bob, Some(&alice)).await, 1);
    assert_eq!(count(store, &bob, Some(&carol)).await, 1);
    assert_eq!(count(store, &alice, Some(&carol)).await, 1);
    assert!(store.exists(&alice, shared.id).await.unwrap());
    assert!(store.exists(&bob, shared.id).await.unwrap());
    assert!(!store.exists(&carol, shared.id).await.unwrap());
    store.remove_user(&alice).await.unwrap();
    assert_eq!(all(&alice).await, Vec::<ArchiveId>::new());
    assert_eq!(all(&bob).await, [shared.id, from_carol.id], "bob keeps his");
    let page = store.query(&bob, &ArchiveQuery::all(10)).await.unwrap();
    assert!(page.items[0].message.contains("hello bob"));
    store.remove_user(&bob).await.unwrap();
    assert_eq!(all(&bob).await, Vec::<ArchiveId>::new());
    assert_eq!(all(&carol).await, [from_carol.id], "carol keeps hers");
}

/// A query `with` a full JID matches the other side's resource as each archive sees it (the
/// sender's for the recipient, the recipient's for the sender); an append retried (the same
/// rows again, as after a failed commit) changes nothing.
pub async fn with_matches_either_sides_resource_and_a_retried_append_changes_nothing(
    store: &dyn ArchiveStore,
) {
    let alice = user("alice@retried.example");
    let bob = user("bob@retried.example");
    let to_tablet = |text: &str| ArchivedMessage {
        recipient_resource: "tablet".to_owned(),
        ..between(&alice, &bob, Kept::Both, text)
    };
    let first = to_tablet("first");
    let second = to_tablet("second");
    let third = between(&alice, &bob, Kept::Sender, "third");
    let batch = vec![first.clone(), second.clone(), third.clone()];
    store.append(batch.clone(), false).await.unwrap();
    let resource = |with: &BareJid, resource: &str| ArchiveQuery {
        with_bare: Some(with.to_string()),
        with_resource: Some(resource.to_owned()),
        ..ArchiveQuery::all(10)
    };
    let bobs = store.query(&bob, &resource(&alice, "phone")).await.unwrap();
    assert_eq!(
        ids(&bobs),
        [first.id, second.id],
        "by the sender's resource"
    );
    let alices = store
        .query(&alice, &resource(&bob, "tablet"))
        .await
        .unwrap();
    assert_eq!(
        ids(&alices),
        [first.id, second.id],
        "by the recipient's resource"
    );
    assert_eq!(
        store
            .query(&bob, &resource(&alice, "tablet"))
            .await
            .unwrap()
            .count,
        0,
        "not by one's own resource"
    );
    store.append(batch, false).await.unwrap();
    store.append(vec![second.clone()], false).await.unwrap();
    assert_eq!(count(store, &alice, None).await, 3);
    assert_eq!(count(store, &bob, None).await, 2);
}

/// A message to oneself is one message of one's archive, with oneself or not.
pub async fn a_message_to_oneself_is_found_once(store: &dyn ArchiveStore) {
    let alice = user("alice@self.example");
    let note = between(&alice, &alice, Kept::Both, "note to self");
    store.append(vec![note.clone()], false).await.unwrap();
    assert_eq!(count(store, &alice, None).await, 1);
    assert_eq!(count(store, &alice, Some(&alice)).await, 1);
    let page = store.query(&alice, &ArchiveQuery::all(10)).await.unwrap();
    assert_eq!(ids(&page), [note.id]);
}

/// With `only_accounts`, each side is checked on its own: a message between an account and a
/// JID without one (an account removed meanwhile) is kept by the account's side only. Needs
/// the whole storage (its accounts); run by each engine's tests.
pub async fn each_side_is_kept_only_with_an_account(storage: &crate::Storage) {
    let juliet = user("juliet@sides.example");
    let ghost = user("ghost@sides.example");
    let credentials = herald_sasl::Credentials::from_password("pencil", 4096).expect("credentials");
    storage
        .accounts()
        .create(&juliet, &credentials)
        .await
        .expect("an account");
    let store = storage.archive();
    let to_ghost = between(&juliet, &ghost, Kept::Both, "to a ghost");
    let from_ghost = between(&ghost, &juliet, Kept::Both, "from a ghost");
    store
        .append(vec![to_ghost.clone(), from_ghost.clone()], true)
        .await
        .unwrap();
    let page = store.query(&juliet, &ArchiveQuery::all(10)).await.unwrap();
    assert_eq!(ids(&page), [to_ghost.id, from_ghost.id]);
    assert_eq!(count(store.as_ref(), &ghost, None).await, 0);
    // As the server removes an account: the account, then its archive; a message appended
    // after that is not kept for it (an engine that remembers accounts forgets this one).
    assert!(storage.accounts().remove(&juliet).await.unwrap());
    store.remove_user(&juliet).await.unwrap();
    assert_eq!(count(store.as_ref(), &juliet, None).await, 0);
    store
        .append(vec![between(&juliet, &ghost, Kept::Both, "too late")], true)
        .await
        .unwrap();
    assert_eq!(count(store.as_ref(), &juliet, None).await, 0);
    // An account made again under the same name keeps what comes after, and only that.
    storage
        .accounts()
        .create(&juliet, &credentials)
        .await
        .expect("the account again");
    let again = between(&ghost, &juliet, Kept::Both, "welcome back");
    store.append(vec![again.clone()], true).await.unwrap();
    let page = store.query(&juliet, &ArchiveQuery::all(10)).await.unwrap();
    assert_eq!(ids(&page), [again.id]);
    assert_eq!(count(store.as_ref(), &ghost, None).await, 0);
}
