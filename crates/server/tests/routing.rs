//! Black-box tests of routing, presence among a user's resources, disco and ping.

mod common;

use std::time::Duration;

use common::{TestServer, client::Client};

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

async fn server_with_users() -> TestServer {
    let server = TestServer::standard().await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    server
}

fn error_condition(stanza: &minidom::Element) -> Option<String> {
    let error = stanza.get_child("error", "jabber:client")?;
    error
        .children()
        .find(|c| c.ns() == STANZAS)
        .map(|c| c.name().to_owned())
}

#[tokio::test]
async fn two_users_exchange_messages_with_stamped_from() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "phone", 0).await;
    // A forged from is replaced by the sender's full JID (RFC 6120 section 8.1.2.1).
    alice
        .send("<message to='bob@localhost' from='mallory@localhost/x' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let got = bob.next_non_presence().await;
    assert_eq!(got.attr("from"), Some("alice@localhost/laptop"));
    assert_eq!(got.attr("id"), Some("m1"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hi bob"
    );
    bob.send("<message to='alice@localhost/laptop' type='chat'><body>hi alice</body></message>")
        .await;
    let got = alice.next_non_presence().await;
    assert_eq!(got.attr("from"), Some("bob@localhost/phone"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hi alice"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_user_with_no_available_resource_is_bounced_with_service_unavailable() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    alice
        .send("<message to='bob@localhost' type='chat' id='m2'><body>anyone?</body></message>")
        .await;
    let bounce = alice.next_non_presence().await;
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("id"), Some("m2"));
    assert_eq!(bounce.attr("from"), Some("bob@localhost"));
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
    // Headline messages are dropped silently (RFC 6121 section 8.5.2.2.1).
    alice
        .send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    assert!(alice.nothing_within(Duration::from_millis(200)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bound_but_unavailable_resource_does_not_get_bare_jid_messages() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    let mut bob = Client::login(&server, "bob@localhost", "b-pass", "phone").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>x</body></message>")
        .await;
    assert_eq!(
        error_condition(&alice.next_non_presence().await).as_deref(),
        Some("service-unavailable")
    );
    // ...but a message to its full JID is delivered.
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>direct</body></message>")
        .await;
    assert_eq!(
        bob.next()
            .await
            .get_child("body", "jabber:client")
            .unwrap()
            .text(),
        "direct"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bare_jid_messages_go_to_the_highest_priority_resources_only() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    let mut low = Client::online(&server, "bob@localhost", "b-pass", "low", 1).await;
    let mut high = Client::online(&server, "bob@localhost", "b-pass", "high", 10).await;
    let mut negative = Client::online(&server, "bob@localhost", "b-pass", "neg", -1).await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>to the best</body></message>")
        .await;
    let got = high.next_non_presence().await;
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "to the best"
    );
    for other in [&mut low, &mut negative] {
        let received = other.drain(Duration::from_millis(200)).await;
        assert!(
            received.iter().all(|s| s.name() == "presence"),
            "{received:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_missing_resource_falls_back_to_the_bare_jid() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "phone", 0).await;
    alice
        .send("<message to='bob@localhost/gone' type='chat'><body>still for you</body></message>")
        .await;
    assert_eq!(
        bob.next_non_presence()
            .await
            .get_child("body", "jabber:client")
            .unwrap()
            .text(),
        "still for you"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_a_remote_domain_gets_remote_server_not_found() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    alice
        .send("<message to='someone@remote.test' type='chat' id='r1'><body>x</body></message>")
        .await;
    assert_eq!(
        error_condition(&alice.next_non_presence().await).as_deref(),
        Some("remote-server-not-found")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn presence_reaches_the_users_other_resources() {
    let mut server = server_with_users().await;
    let mut phone = Client::online(&server, "alice@localhost", "a-pass", "phone", 5).await;
    let mut laptop = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    // The phone sees the laptop come online...
    let seen = phone.next().await;
    assert_eq!(
        (seen.name(), seen.attr("from")),
        ("presence", Some("alice@localhost/laptop"))
    );
    // ...and the laptop learns of the phone's presence right after its own echo.
    let received = laptop.drain(Duration::from_millis(200)).await;
    assert!(
        received
            .iter()
            .any(|p| p.attr("from") == Some("alice@localhost/phone")),
        "{received:?}"
    );
    // Going unavailable is broadcast too.
    laptop.send("<presence type='unavailable'/>").await;
    let seen = phone.next().await;
    assert_eq!(
        (seen.attr("type"), seen.attr("from")),
        (Some("unavailable"), Some("alice@localhost/laptop"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_resource_receives_the_presence_of_the_users_other_resources() {
    let mut server = server_with_users().await;
    let _phone = Client::online(&server, "alice@localhost", "a-pass", "phone", 5).await;
    let mut laptop = Client::login(&server, "alice@localhost", "a-pass", "laptop").await;
    laptop.send("<presence><show>away</show></presence>").await;
    let mut from = Vec::new();
    for _ in 0..2 {
        from.push(laptop.next().await.attr("from").unwrap().to_owned());
    }
    from.sort();
    assert_eq!(from, ["alice@localhost/laptop", "alice@localhost/phone"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_broadcasts_unavailable() {
    let mut server = server_with_users().await;
    let mut phone = Client::online(&server, "alice@localhost", "a-pass", "phone", 5).await;
    let laptop = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    assert_eq!(
        phone.next().await.attr("from"),
        Some("alice@localhost/laptop")
    );
    drop(laptop);
    let seen = phone.next().await;
    assert_eq!(
        (seen.attr("type"), seen.attr("from")),
        (Some("unavailable"), Some("alice@localhost/laptop"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_invalid_priority_is_a_bad_request() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "r").await;
    alice
        .send("<presence><priority>1000</priority></presence>")
        .await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("bad-request")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn directed_presence_reaches_the_contact() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "phone", 0).await;
    alice
        .send("<presence to='bob@localhost'><show>chat</show></presence>")
        .await;
    let got = bob.next().await;
    assert_eq!(
        (got.name(), got.attr("from")),
        ("presence", Some("alice@localhost/laptop"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn disco_info_lists_the_registered_features_and_items_list_extra_domains() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "r").await;
    alice.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let reply = alice.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("id"), reply.attr("from")),
        (Some("result"), Some("d1"), Some("localhost"))
    );
    let query = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let identity = query
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("server"), Some("im"))
    );
    let features: Vec<_> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for expected in [
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:xmpp:ping",
    ] {
        assert!(
            features.contains(&expected),
            "{expected} missing from {features:?}"
        );
    }
    alice.send("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    let reply = alice.next().await;
    let items: Vec<_> = reply
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children()
        .filter_map(|c| c.attr("jid"))
        .map(str::to_owned)
        .collect();
    assert_eq!(items, ["pubsub.localhost"]);
    // An unknown node is item-not-found.
    alice.send("<iq type='get' id='d3' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='nope'/></iq>").await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("item-not-found")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn ping_to_the_server_and_without_to_is_answered() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "r").await;
    alice
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let reply = alice.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("id")),
        (Some("result"), Some("p1"))
    );
    alice
        .send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(alice.next().await.attr("type"), Some("result"));
    server.shutdown().await;
}

#[tokio::test]
async fn an_iq_in_an_unknown_namespace_gets_service_unavailable() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "r").await;
    alice
        .send("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
        .await;
    let reply = alice.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("id")),
        (Some("error"), Some("u1"))
    );
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("service-unavailable")
    );
    // An iq with two payloads is a bad request.
    alice.send("<iq type='get' id='u2' to='localhost'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>").await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("bad-request")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn iqs_route_between_full_jids_and_replies_come_back() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "laptop").await;
    let mut bob = Client::login(&server, "bob@localhost", "b-pass", "phone").await;
    alice.send("<iq type='get' id='v1' to='bob@localhost/phone'><query xmlns='jabber:iq:version'/></iq>").await;
    let request = bob.next().await;
    assert_eq!(
        (request.attr("from"), request.attr("id")),
        (Some("alice@localhost/laptop"), Some("v1"))
    );
    bob.send("<iq type='result' id='v1' to='alice@localhost/laptop'><query xmlns='jabber:iq:version'><name>t</name></query></iq>").await;
    let reply = alice.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("from")),
        (Some("result"), Some("bob@localhost/phone"))
    );
    // To an absent resource: service-unavailable.
    alice.send("<iq type='get' id='v2' to='bob@localhost/tablet'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("service-unavailable")
    );
    // To another user's bare JID, answered by the server without revealing the account.
    alice.send("<iq type='get' id='v3' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert_eq!(
        error_condition(&alice.next().await).as_deref(),
        Some("service-unavailable")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_never_answered_with_errors() {
    let mut server = server_with_users().await;
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "laptop", 0).await;
    alice
        .send("<message to='bob@localhost' type='error'><body>x</body></message>")
        .await;
    alice
        .send("<iq type='error' id='e1' to='bob@localhost/none'/>")
        .await;
    assert!(alice.nothing_within(Duration::from_millis(300)).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_malformed_to_gets_jid_malformed() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "laptop").await;
    alice
        .send("<message to='a@b@c' id='j1'><body>x</body></message>")
        .await;
    let reply = alice.next().await;
    assert_eq!(reply.attr("id"), Some("j1"));
    assert_eq!(error_condition(&reply).as_deref(), Some("jid-malformed"));
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_first_level_element_gets_unsupported_stanza_type() {
    let mut server = server_with_users().await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "laptop").await;
    alice.send("<foo xmlns='urn:example'/>").await;
    assert_eq!(
        alice.closed().await,
        common::client::Closed::StreamError("unsupported-stanza-type".into())
    );
    server.shutdown().await;
}
