//! Black-box tests of the message archive (XEP-0313) with stanza ids (XEP-0359) and result
//! set management (XEP-0059): paging, filters, offline delivery, hints, preferences.

mod common;

use std::time::Duration;

use common::{TestServer, client::Client, component::Component};
use herald_stream::Frame;
use minidom::Element;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_disco]
[modules.mod_roster]
[modules.mod_offline]
[modules.mod_carboncopy]
[modules.mod_blocking]
[modules.mod_mam]
[modules.mod_stream_management]
[modules.mod_event_pusher.push]

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"
"#;

async fn server() -> TestServer {
    let server = TestServer::start(CONFIG).await;
    for user in ["alice", "bob", "carol"] {
        server
            .add_user(&format!("{user}@localhost"), &format!("{user}-pass"))
            .await;
    }
    server
}

async fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::online(
        server,
        &format!("{user}@localhost"),
        &format!("{user}-pass"),
        resource,
        0,
    )
    .await
}

async fn until(client: &mut Client, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
    for _ in 0..500 {
        let element = client.next().await;
        if matches(&element) {
            return element;
        }
    }
    panic!("never got {what}");
}

fn body(message: &Element) -> String {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

/// The stanza-id the archive of `by` gave a message.
fn stanza_id(message: &Element, by: &str) -> Option<String> {
    message
        .children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned)
}

/// A query's results and its `<fin/>`.
struct Answer {
    /// (archive id, the archived message).
    items: Vec<(String, Element)>,
    /// Each result's `<delay stamp/>`.
    stamps: Vec<String>,
    fin: Element,
}

impl Answer {
    fn bodies(&self) -> Vec<String> {
        self.items.iter().map(|(_, m)| body(m)).collect()
    }
    fn complete(&self) -> bool {
        self.fin.attr("complete") == Some("true")
    }
    fn rsm(&self, name: &str) -> Option<String> {
        self.fin
            .get_child("set", RSM)
            .and_then(|set| set.get_child(name, RSM))
            .map(Element::text)
    }
}

/// A query with only a page (`set`) and extra children of `<query/>` (`extra`).
async fn query_with(client: &mut Client, id: &str, set: &str, extra: &str) -> Answer {
    client
        .send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='q-{id}'><set xmlns='{RSM}'>{set}</set>{extra}</query></iq>"
        ))
        .await;
    collect(client, id).await
}

/// Send a MAM query (`fields`: form fields; `set`: the RSM element's children) and collect
/// its results up to the IQ result.
async fn query(client: &mut Client, id: &str, fields: &[(&str, &[&str])], set: &str) -> Answer {
    let mut form = String::new();
    if !fields.is_empty() {
        form.push_str(&format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
        ));
        for (var, values) in fields {
            form.push_str(&format!("<field var='{var}'>"));
            for value in *values {
                form.push_str(&format!("<value>{value}</value>"));
            }
            form.push_str("</field>");
        }
        form.push_str("</x>");
    }
    let set = if set.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='{RSM}'>{set}</set>")
    };
    client
        .send(&format!(
            "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='q-{id}'>{form}{set}</query></iq>"
        ))
        .await;
    collect(client, id).await
}

/// The results of query `id`, up to its IQ result.
async fn collect(client: &mut Client, id: &str) -> Answer {
    let mut items = Vec::new();
    let mut stamps = Vec::new();
    loop {
        let element = client.next().await;
        if element.name() == "iq" && element.attr("id") == Some(id) {
            assert_eq!(element.attr("type"), Some("result"), "{element:?}");
            let fin = element.get_child("fin", MAM).expect("a fin").clone();
            return Answer { items, stamps, fin };
        }
        if let Some(result) = element.get_child("result", MAM) {
            assert_eq!(
                result.attr("queryid").map(str::to_owned),
                Some(format!("q-{id}"))
            );
            let forwarded = result.get_child("forwarded", FORWARD).expect("forwarded");
            stamps.push(
                forwarded
                    .get_child("delay", "urn:xmpp:delay")
                    .and_then(|d| d.attr("stamp"))
                    .expect("a delay stamp")
                    .to_owned(),
            );
            let message = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.get_child("message", "jabber:client"))
                .expect("a forwarded message")
                .clone();
            items.push((result.attr("id").unwrap().to_owned(), message));
        }
    }
}

#[tokio::test]
async fn thirty_messages_page_by_page_with_rsm_and_by_contact_time_and_ids() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    let mut carol = online(&server, "carol", "desk").await;
    let mut delivered = Vec::new();
    for n in 0..30 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat'><body>m{n}</body></message>"
        ))
        .await;
        let message = until(&mut alice, "bob's message", |e| e.name() == "message").await;
        delivered.push(stanza_id(&message, "alice@localhost").expect("a stanza-id"));
    }
    carol
        .send("<message to='alice@localhost' type='chat'><body>from carol</body></message>")
        .await;
    until(&mut alice, "carol's message", |e| e.name() == "message").await;

    // Page by page: 20, then 10 more with `complete`.
    let first = query(
        &mut alice,
        "p1",
        &[("with", &["bob@localhost"])],
        "<max>20</max>",
    )
    .await;
    assert_eq!(
        first.bodies(),
        (0..20).map(|n| format!("m{n}")).collect::<Vec<_>>()
    );
    assert!(!first.complete());
    assert_eq!(first.rsm("count").as_deref(), Some("30"));
    assert_eq!(first.rsm("first").as_deref(), Some(delivered[0].as_str()));
    let last = first.rsm("last").unwrap();
    let second = query(
        &mut alice,
        "p2",
        &[("with", &["bob@localhost"])],
        &format!("<max>20</max><after>{last}</after>"),
    )
    .await;
    assert_eq!(
        second.bodies(),
        (20..30).map(|n| format!("m{n}")).collect::<Vec<_>>()
    );
    assert!(second.complete());
    // The archive's ids are the stanza-ids the messages were delivered with.
    let ids: Vec<String> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ids, delivered);

    // The last page (before with no id), and by ids.
    let tail = query(&mut alice, "p3", &[], "<max>5</max><before/>").await;
    assert_eq!(tail.bodies(), ["m26", "m27", "m28", "m29", "from carol"]);
    // flip-page: the same page, newest first.
    let flipped = query_with(&mut alice, "pf", "<max>3</max><before/>", "<flip-page/>").await;
    assert_eq!(flipped.bodies(), ["from carol", "m29", "m28"]);
    let by_ids = query(
        &mut alice,
        "p4",
        &[("ids", &[delivered[3].as_str(), delivered[7].as_str()])],
        "",
    )
    .await;
    assert_eq!(by_ids.bodies(), ["m3", "m7"]);

    // By time: from the 26th message's stamp (milliseconds, so the one before may share it).
    let stamp = second.stamps[5].clone();
    let since = query(
        &mut alice,
        "p9",
        &[("start", &[stamp.as_str()]), ("with", &["bob@localhost"])],
        "",
    )
    .await;
    let bodies = since.bodies();
    assert!(
        bodies.ends_with(&["m25", "m26", "m27", "m28", "m29"].map(String::from)),
        "{bodies:?}"
    );
    let until_stamp = query(
        &mut alice,
        "p10",
        &[("end", &[stamp.as_str()]), ("with", &["bob@localhost"])],
        "<max>50</max>",
    )
    .await;
    // A prefix of the conversation; with `start` at the same stamp, nothing is missed.
    let before = until_stamp.bodies();
    assert_eq!(
        before,
        (0..before.len())
            .map(|n| format!("m{n}"))
            .collect::<Vec<_>>()
    );
    assert!(before.len() + since.items.len() >= 30, "{before:?}");
    let all = query(&mut alice, "p5", &[("with", &["carol@localhost"])], "").await;
    assert_eq!(all.bodies(), ["from carol"]);
    let future = query(
        &mut alice,
        "p6",
        &[("start", &["2100-01-01T00:00:00Z"])],
        "",
    )
    .await;
    assert!(future.items.is_empty() && future.complete());
    let past = query(&mut alice, "p7", &[("end", &["2000-01-01T00:00:00Z"])], "").await;
    assert!(past.items.is_empty());
    let now = query(
        &mut alice,
        "p8",
        &[("start", &["2000-01-01T00:00:00Z"])],
        "<max>50</max>",
    )
    .await;
    assert_eq!(now.items.len(), 31);

    // Bob's archive has what he sent.
    let sent = query(
        &mut bob,
        "b1",
        &[("with", &["alice@localhost"])],
        "<max>50</max>",
    )
    .await;
    assert_eq!(sent.items.len(), 30);

    // An unknown id is item-not-found; nobody reads another's archive.
    alice
        .send(&format!(
            "<iq type='set' id='bad'><query xmlns='{MAM}'><set xmlns='{RSM}'><after>12345</after></set></query></iq>"
        ))
        .await;
    let bad = until(&mut alice, "the error", |e| e.attr("id") == Some("bad")).await;
    assert_eq!(bad.attr("type"), Some("error"));
    carol
        .send(&format!(
            "<iq type='set' id='spy' to='alice@localhost'><query xmlns='{MAM}'/></iq>"
        ))
        .await;
    let spy = until(&mut carol, "the refusal", |e| e.attr("id") == Some("spy")).await;
    assert_eq!(spy.attr("type"), Some("error"));
}

#[tokio::test]
async fn an_offline_message_is_delivered_and_archived_with_the_same_stanza_id() {
    let server = server().await;
    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<message to='alice@localhost' type='chat'><body>while away</body></message>")
        .await;
    bob.send(
        "<message to='alice@localhost' type='chat'><body>forget me</body><no-store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = online(&server, "alice", "phone").await;
    let stored = until(&mut alice, "the stored message", |e| {
        e.name() == "message" && body(e) == "while away"
    })
    .await;
    let id = stanza_id(&stored, "alice@localhost").expect("a stanza-id on the stored message");
    let answer = query(&mut alice, "q", &[], "").await;
    assert_eq!(answer.bodies(), ["while away"], "no-store is not archived");
    assert_eq!(answer.items[0].0, id);
}

#[tokio::test]
async fn a_forged_stanza_id_is_replaced_and_preferences_never_stop_archiving() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    let mut carol = online(&server, "carol", "desk").await;
    bob.send(&format!(
        "<message to='alice@localhost' type='chat'><body>x</body><stanza-id xmlns='{SID}' by='alice@localhost' id='forged'/></message>"
    ))
    .await;
    let got = until(&mut alice, "bob's message", |e| e.name() == "message").await;
    let ids: Vec<_> = got.children().filter(|c| c.is("stanza-id", SID)).collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].attr("id"), Some("forged"));

    alice
        .send(&format!(
            "<iq type='set' id='prefs'><prefs xmlns='{MAM}' default='always'><always/><never><jid>carol@localhost</jid></never></prefs></iq>"
        ))
        .await;
    let reply = until(&mut alice, "the prefs result", |e| {
        e.attr("id") == Some("prefs")
    })
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    carol
        .send("<message to='alice@localhost' type='chat'><body>not kept</body></message>")
        .await;
    let from_carol = until(&mut alice, "carol's message", |e| e.name() == "message").await;
    assert_eq!(stanza_id(&from_carol, "alice@localhost"), None);
    bob.send("<message to='alice@localhost' type='chat'><body>kept</body></message>")
        .await;
    until(&mut alice, "bob's message", |e| e.name() == "message").await;
    let answer = query(&mut alice, "q", &[], "").await;
    assert_eq!(answer.bodies(), ["x", "kept"]);
    alice
        .send(&format!(
            "<iq type='get' id='pg'><prefs xmlns='{MAM}'/></iq>"
        ))
        .await;
    let prefs = until(&mut alice, "the prefs", |e| e.attr("id") == Some("pg")).await;
    let never = prefs
        .get_child("prefs", MAM)
        .unwrap()
        .get_child("never", MAM)
        .unwrap();
    assert_eq!(never.children().next().unwrap().text(), "carol@localhost");
}

#[tokio::test]
async fn the_push_names_the_archived_message_a_woken_phone_finds() {
    let server = server().await;
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    let mut app = Component::connect(addr, "push.localhost", "secret").await;
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "phone").await;
    alice
        .send("<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='n1'/></iq>")
        .await;
    let reply = until(&mut alice, "the enable result", |e| {
        e.attr("id") == Some("push")
    })
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    alice.send("</stream:stream>").await;
    alice.closed().await;

    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<message to='alice@localhost' type='chat'><body>wake up</body></message>")
        .await;
    let publish = match app.frame(Duration::from_secs(10)).await {
        Some(Frame::Element(publish)) => publish,
        other => panic!("expected a publish, got {other:?}"),
    };
    fn find(element: &Element, var: &str) -> Option<String> {
        if element.name() == "field" && element.attr("var") == Some(var) {
            return element.children().next().map(Element::text);
        }
        element.children().find_map(|child| find(child, var))
    }
    let pushed_id = find(&publish, "x-stanza-id");
    let pushed_id = pushed_id.unwrap_or_else(|| panic!("no x-stanza-id in {publish:?}"));
    app.send(&format!(
        "<iq type='result' id='{}' from='push.localhost' to='{}'/>",
        publish.attr("id").unwrap(),
        publish.attr("from").unwrap()
    ))
    .await;

    let mut alice = online(&server, "alice", "phone").await;
    let answer = query(&mut alice, "q", &[("ids", &[pushed_id.as_str()])], "").await;
    assert_eq!(answer.bodies(), ["wake up"]);
}

#[tokio::test]
async fn a_resumed_stream_resends_a_message_under_the_id_the_archive_has() {
    let server = server().await;
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "phone").await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let id = alice
        .next()
        .await
        .attr("id")
        .expect("a resumption id")
        .to_owned();
    alice.send("<presence/>").await;
    until(&mut alice, "the presence echo", |e| e.name() == "presence").await;
    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<message to='alice@localhost' type='chat'><body>once</body></message>")
        .await;
    let first = until(&mut alice, "bob's message", |e| e.name() == "message").await;
    let archived_id = stanza_id(&first, "alice@localhost").expect("a stanza-id");
    // The connection dies before the phone acknowledges anything; it resumes.
    drop(alice);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut phone = Client::connect(server.addr(common::STARTTLS)).await;
    phone.open("localhost").await;
    phone.starttls("localhost", &server.cert()).await;
    phone
        .scram("SCRAM-SHA-256", "alice", "alice-pass")
        .await
        .unwrap();
    phone.open("localhost").await;
    phone
        .send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
        ))
        .await;
    assert_eq!(phone.next().await.name(), "resumed");
    let again = until(&mut phone, "the resent message", |e| e.name() == "message").await;
    assert_eq!(
        stanza_id(&again, "alice@localhost"),
        Some(archived_id.clone())
    );
    let answer = query(&mut phone, "q", &[], "").await;
    assert_eq!(answer.items.len(), 1, "archived once");
    assert_eq!(answer.items[0].0, archived_id);
}

#[tokio::test]
async fn removing_an_account_deletes_its_archive_and_preferences() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<message to='alice@localhost' type='chat'><body>gone soon</body></message>")
        .await;
    until(&mut alice, "bob's message", |e| e.name() == "message").await;
    alice
        .send(&format!(
            "<iq type='set' id='prefs'><prefs xmlns='{MAM}' default='roster'/></iq>"
        ))
        .await;
    until(&mut alice, "the prefs result", |e| {
        e.attr("id") == Some("prefs")
    })
    .await;
    alice
        .send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    until(&mut alice, "the removal", |e| e.attr("id") == Some("rm")).await;
    let storage = &server.running.as_ref().unwrap().server.storage;
    let owner = jid::BareJid::new("alice@localhost").unwrap();
    let page = storage
        .archive()
        .query(&owner, &herald_storage::archive::ArchiveQuery::all(10))
        .await
        .unwrap();
    assert_eq!(page.count, 0);
    assert!(
        storage
            .user_data()
            .list(&owner, "mam_prefs", "")
            .await
            .unwrap()
            .is_empty()
    );
    // Bob's own archive keeps what he sent (committed with what the writer held when
    // alice's archive was removed).
    let bob_jid = jid::BareJid::new("bob@localhost").unwrap();
    let his = storage
        .archive()
        .query(&bob_jid, &herald_storage::archive::ArchiveQuery::all(10))
        .await
        .unwrap();
    assert_eq!(his.count, 1);
}

#[tokio::test]
async fn a_message_between_two_accounts_has_one_id_in_both_archives_and_each_sides_preferences() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    alice
        .send("<message to='bob@localhost/desk' type='chat'><body>one row</body></message>")
        .await;
    let got = until(&mut bob, "alice's message", |e| e.name() == "message").await;
    let id = stanza_id(&got, "bob@localhost").expect("bob's stanza-id");
    let his = query(&mut bob, "b1", &[("with", &["alice@localhost"])], "").await;
    assert_eq!(his.bodies(), ["one row"]);
    assert_eq!(
        his.items[0].0, id,
        "bob's archive id is the stanza-id he saw"
    );
    let hers = query(&mut alice, "a1", &[("with", &["bob@localhost/desk"])], "").await;
    assert_eq!(hers.bodies(), ["one row"]);
    assert_eq!(hers.items[0].0, id, "alice's archive gave it the same id");

    // Alice never archives messages with carol; carol's archive keeps hers, under an id of
    // its own that alice never sees.
    let mut carol = online(&server, "carol", "desk").await;
    alice
        .send(&format!(
            "<iq type='set' id='prefs'><prefs xmlns='{MAM}' default='always'><always/><never><jid>carol@localhost</jid></never></prefs></iq>"
        ))
        .await;
    until(&mut alice, "the prefs result", |e| {
        e.attr("id") == Some("prefs")
    })
    .await;
    alice
        .send("<message to='carol@localhost' type='chat'><body>hers only</body></message>")
        .await;
    let got = until(&mut carol, "alice's message", |e| e.name() == "message").await;
    let carols = stanza_id(&got, "carol@localhost").expect("carol's stanza-id");
    let answer = query(&mut carol, "c1", &[], "").await;
    assert_eq!(answer.bodies(), ["hers only"]);
    assert_eq!(answer.items[0].0, carols);
    let answer = query(&mut alice, "a2", &[], "").await;
    assert_eq!(answer.bodies(), ["one row"], "not in alice's archive");
    // And the other way: carol writes back, alice's archive still leaves it out.
    carol
        .send("<message to='alice@localhost' type='chat'><body>reply</body></message>")
        .await;
    let got = until(&mut alice, "carol's reply", |e| e.name() == "message").await;
    assert_eq!(stanza_id(&got, "alice@localhost"), None);
    let answer = query(&mut carol, "c2", &[], "").await;
    assert_eq!(answer.bodies(), ["hers only", "reply"]);
}

#[tokio::test]
async fn a_message_refused_or_for_no_account_is_still_in_its_senders_archive() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    bob.send(
        "<iq type='set' id='block'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>",
    )
    .await;
    until(&mut bob, "the block result", |e| {
        e.attr("id") == Some("block")
    })
    .await;
    alice
        .send("<message to='bob@localhost' id='m1' type='chat'><body>refused</body></message>")
        .await;
    let error = until(&mut alice, "the refusal", |e| {
        e.name() == "message" && e.attr("type") == Some("error")
    })
    .await;
    assert_eq!(error.attr("id"), Some("m1"));
    alice
        .send("<message to='nobody@localhost' id='m2' type='chat'><body>to no one</body></message>")
        .await;
    until(&mut alice, "the bounce", |e| {
        e.name() == "message" && e.attr("id") == Some("m2")
    })
    .await;
    // The sender's archive kept both, as it keeps what leaves for another server.
    let hers = query(&mut alice, "a1", &[], "").await;
    assert_eq!(hers.bodies(), ["refused", "to no one"]);
    let his = query(&mut bob, "b1", &[], "").await;
    assert!(his.bodies().is_empty(), "{:?}", his.bodies());
}
