//! Black-box tests of what mobile clients check for around push: Message Carbons
//! (XEP-0280), Client State Indication (XEP-0352), Blocking (XEP-0191), Personal Eventing
//! (XEP-0163) with Entity Capabilities (XEP-0115), vCard-temp (XEP-0054), Software Version
//! (XEP-0092), contact addresses (XEP-0157), and the features as Conversations' compliance
//! tester looks for them (disco on the server and on the account's bare JID).

mod common;

use std::time::Duration;

use base64::Engine;
use common::{TestServer, client::Client, component::Component};
use herald_stream::Frame;
use minidom::Element;
use sha1::Digest;

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const CAPS: &str = "http://jabber.org/protocol/caps";
const DEVICES: &str = "urn:xmpp:omemo:2:devices";
const QUIET: Duration = Duration::from_millis(400);

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[modules.mod_ping]
[modules.mod_disco]
[[modules.mod_disco.server_info]]
name = "abuse-addresses"
urls = ["mailto:abuse@localhost"]
[modules.mod_roster]
[modules.mod_offline]
[modules.mod_stream_management]
[modules.mod_event_pusher.push]
[modules.mod_carboncopy]
[modules.mod_csi]
[modules.mod_blocking]
[modules.mod_pep]
[modules.mod_vcard]
[modules.mod_version]
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

async fn login(server: &TestServer, user: &str, resource: &str) -> Client {
    Client::login(
        server,
        &format!("{user}@localhost"),
        &format!("{user}-pass"),
        resource,
    )
    .await
}

/// Log in and send initial presence (with `extra` inside), reading up to its echo.
async fn online_with(server: &TestServer, user: &str, resource: &str, extra: &str) -> Client {
    let mut client = login(server, user, resource).await;
    client.send(&format!("<presence>{extra}</presence>")).await;
    let me = client.jid.clone();
    until(&mut client, "the presence echo", |e| {
        e.name() == "presence" && e.attr("from") == me.as_deref()
    })
    .await;
    client
}

async fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    online_with(server, user, resource, "").await
}

/// Read until an element matches, dropping the others.
async fn until(client: &mut Client, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
    for _ in 0..200 {
        let element = client.next().await;
        if matches(&element) {
            return element;
        }
    }
    panic!("never got {what}");
}

/// Send an IQ and read until its reply.
async fn iq(client: &mut Client, id: &str, xml: &str) -> Element {
    client.send(xml).await;
    until(client, id, |e| e.name() == "iq" && e.attr("id") == Some(id)).await
}

fn error_condition(reply: &Element) -> (String, Vec<String>) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    let error = reply.children().find(|c| c.name() == "error").unwrap();
    (
        error.attr("type").unwrap_or_default().to_owned(),
        error.children().map(|c| c.name().to_owned()).collect(),
    )
}

fn body(message: &Element) -> String {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
        .unwrap_or_default()
}

/// `a` and `b` subscribe to each other's presence (RFC 6121 section 3), both online.
async fn befriend(a: &mut Client, a_jid: &str, b: &mut Client, b_jid: &str) {
    subscribe(a, a_jid, b, b_jid).await;
    subscribe(b, b_jid, a, a_jid).await;
    // Presence flows both ways now; let it settle.
    a.drain(QUIET).await;
    b.drain(QUIET).await;
}

/// `x` asks for `y`'s presence and `y` approves.
async fn subscribe(x: &mut Client, x_jid: &str, y: &mut Client, y_jid: &str) {
    x.send(&format!("<presence type='subscribe' to='{y_jid}'/>"))
        .await;
    until(y, "the subscription request", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    y.send(&format!("<presence type='subscribed' to='{x_jid}'/>"))
        .await;
    until(x, "the approval", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribed")
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Message Carbons (XEP-0280)

async fn enable_carbons(client: &mut Client) {
    let reply = iq(
        client,
        "carbons",
        &format!("<iq type='set' id='carbons'><enable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
}

/// The message a carbon copy carries, checking the wrapper.
fn carried(carbon: &Element, direction: &str) -> Element {
    assert_eq!(carbon.attr("from"), Some("alice@localhost"), "{carbon:?}");
    carbon
        .get_child(direction, CARBONS)
        .and_then(|wrapper| wrapper.get_child("forwarded", FORWARD))
        .and_then(|forwarded| forwarded.get_child("message", "jabber:client"))
        .unwrap_or_else(|| panic!("not a {direction} carbon: {carbon:?}"))
        .clone()
}

#[tokio::test]
async fn carbons_copy_sent_and_received_messages_to_the_other_resource_except_private_ones() {
    let server = server().await;
    let mut phone = online(&server, "alice", "phone").await;
    let mut laptop = online(&server, "alice", "laptop").await;
    let mut bob = online(&server, "bob", "desk").await;
    enable_carbons(&mut phone).await;
    enable_carbons(&mut laptop).await;
    phone.drain(QUIET).await;

    // Received: bob writes to the phone; the laptop gets a copy.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='r1'><body>hi phone</body></message>",
    )
    .await;
    let direct = until(&mut phone, "bob's message", |e| e.name() == "message").await;
    assert_eq!(body(&direct), "hi phone");
    let copy = until(&mut laptop, "the received copy", |e| e.name() == "message").await;
    let inner = carried(&copy, "received");
    assert_eq!(body(&inner), "hi phone");
    assert_eq!(inner.attr("from"), Some("bob@localhost/desk"));

    // Sent: the phone writes to bob; the laptop gets a copy, the phone none.
    phone
        .send("<message to='bob@localhost' type='chat' id='s1'><body>hello bob</body></message>")
        .await;
    let copy = until(&mut laptop, "the sent copy", |e| e.name() == "message").await;
    let inner = carried(&copy, "sent");
    assert_eq!(body(&inner), "hello bob");
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    assert_eq!(
        body(&until(&mut bob, "alice's message", |e| e.name() == "message").await),
        "hello bob"
    );

    // Private: no copy, and bob's copy has no private marker.
    phone
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='p1'><body>secret</body><private xmlns='{CARBONS}'/></message>"
        ))
        .await;
    let secret = until(&mut bob, "the private message", |e| e.name() == "message").await;
    assert_eq!(body(&secret), "secret");
    assert!(!secret.has_child("private", CARBONS), "{secret:?}");
    // Headline and groupchat are not copied either; a chat message after them is.
    bob.send("<message to='alice@localhost/phone' type='headline'><body>news</body></message>")
        .await;
    phone
        .send("<message to='bob@localhost' type='chat' id='s2'><body>after</body></message>")
        .await;
    let next = until(&mut laptop, "the next copy", |e| e.name() == "message").await;
    assert_eq!(
        body(&carried(&next, "sent")),
        "after",
        "the private message was copied"
    );
    assert!(
        phone.nothing_within(QUIET).await || {
            // The phone sees headline itself, never a carbon of its own message.
            let elements = phone.drain(QUIET).await;
            elements.iter().all(|e| !e.has_child("sent", CARBONS))
        }
    );

    // Disabled: no more copies.
    let reply = iq(
        &mut laptop,
        "off",
        &format!("<iq type='set' id='off'><disable xmlns='{CARBONS}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"));
    bob.send("<message to='alice@localhost/phone' type='chat'><body>again</body></message>")
        .await;
    until(&mut phone, "bob's message", |e| e.name() == "message").await;
    assert!(laptop.nothing_within(QUIET).await, "a copy after disable");
}

// ---------------------------------------------------------------------------------------
// Client State Indication (XEP-0352)

#[tokio::test]
async fn csi_holds_presence_while_inactive_and_a_chat_message_brings_it_with_it_in_order() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;

    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    bob.send("<presence><show>away</show></presence>").await;
    bob.send("<presence><show>dnd</show></presence>").await;
    assert!(
        alice.nothing_within(Duration::from_millis(600)).await,
        "presence reached an inactive client"
    );

    bob.send("<message to='alice@localhost' type='chat'><body>wake up</body></message>")
        .await;
    let first = alice.next().await;
    assert_eq!(first.name(), "presence", "{first:?}");
    assert_eq!(
        first
            .get_child("show", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("dnd"),
        "the newer presence replaces the held one: {first:?}"
    );
    let second = alice.next().await;
    assert_eq!(body(&second), "wake up", "{second:?}");

    // Inactive again: held until active, then written.
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    bob.send("<presence><show>xa</show></presence>").await;
    assert!(alice.nothing_within(Duration::from_millis(600)).await);
    alice.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let held = until(&mut alice, "the held presence", |e| e.name() == "presence").await;
    assert_eq!(
        held.get_child("show", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("xa")
    );
}

#[tokio::test]
async fn what_was_held_for_an_inactive_phone_comes_with_the_resumed_stream() {
    let server = server().await;
    let mut alice = login(&server, "alice", "phone").await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = alice.next().await;
    let id = enabled.attr("id").expect("a resumption id").to_owned();
    alice.send("<presence/>").await;
    until(&mut alice, "the presence echo", |e| e.name() == "presence").await;
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<presence to='alice@localhost/phone'><show>away</show></presence>")
        .await;
    // (Ack requests may come; the presence may not.)
    assert!(
        alice
            .drain(Duration::from_millis(500))
            .await
            .iter()
            .all(|e| e.name() != "presence"),
        "presence reached an inactive client"
    );
    // The phone's connection goes; it comes back and resumes (having handled nothing).
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
    let resumed = phone.next().await;
    assert_eq!(resumed.name(), "resumed", "{resumed:?}");
    let held = until(&mut phone, "the held presence", |e| {
        e.name() == "presence" && e.attr("from") == Some("bob@localhost/desk")
    })
    .await;
    assert_eq!(
        held.get_child("show", "jabber:client")
            .map(Element::text)
            .as_deref(),
        Some("away")
    );
}

#[tokio::test]
async fn csi_is_offered_as_a_stream_feature() {
    let server = server().await;
    let mut client = Client::connect(server.addr(common::STARTTLS)).await;
    client.open("localhost").await;
    client.starttls("localhost", &server.cert()).await;
    client
        .scram("SCRAM-SHA-256", "alice", "alice-pass")
        .await
        .unwrap();
    let features = client.open("localhost").await;
    assert!(features.has_child("csi", "urn:xmpp:csi:0"), "{features:?}");
    assert!(features.has_child("c", CAPS), "{features:?}");
}

// ---------------------------------------------------------------------------------------
// Blocking (XEP-0191)

#[tokio::test]
async fn a_blocked_sender_gets_an_error_reaches_no_one_and_causes_no_push() {
    let server = server().await;
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    let mut app = Component::connect(addr, "push.localhost", "secret").await;
    let mut alice = login(&server, "alice", "phone").await;
    let list = iq(
        &mut alice,
        "l",
        "<iq type='get' id='l'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        list.get_child("blocklist", "urn:xmpp:blocking")
            .unwrap()
            .children()
            .count(),
        0
    );
    alice
        .send("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>")
        .await;
    // The result and the push to the resource that asked for the list, in either order.
    let (mut reply, mut push) = (None, None);
    while reply.is_none() || push.is_none() {
        let element = alice.next().await;
        match element.attr("type") {
            Some("result") if element.attr("id") == Some("b") => reply = Some(element),
            Some("set") if element.name() == "iq" => push = Some(element),
            _ => {}
        }
    }
    let push = push.unwrap();
    assert_eq!(
        push.get_child("block", "urn:xmpp:blocking")
            .unwrap()
            .get_child("item", "urn:xmpp:blocking")
            .unwrap()
            .attr("jid"),
        Some("bob@localhost")
    );
    // Alice sending to bob is refused with <blocked/>.
    let refused = iq(
        &mut alice,
        "to-bob",
        "<iq type='get' id='to-bob' to='bob@localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let (kind, conditions) = error_condition(&refused);
    assert_eq!(kind, "cancel");
    assert!(
        conditions.contains(&"not-acceptable".to_owned())
            && conditions.contains(&"blocked".to_owned()),
        "{refused:?}"
    );
    let reply = iq(
        &mut alice,
        "push",
        "<iq type='set' id='push'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='n1'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    alice.send("</stream:stream>").await;
    alice.closed().await;

    let mut bob = online(&server, "bob", "desk").await;
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>let me in</body></message>")
        .await;
    let bounce = until(&mut bob, "the bounce", |e| e.name() == "message").await;
    let (_, conditions) = error_condition(&bounce);
    assert_eq!(conditions, ["service-unavailable"]);
    match app.frame(QUIET).await {
        None => {}
        Some(frame) => panic!("a blocked sender caused a push: {frame:?}"),
    }

    // Someone else still gets through, and pushes.
    let mut carol = online(&server, "carol", "desk").await;
    carol
        .send("<message to='alice@localhost' type='chat' id='m2'><body>hello</body></message>")
        .await;
    match app.frame(Duration::from_secs(10)).await {
        Some(Frame::Element(publish)) => assert_eq!(publish.name(), "iq", "{publish:?}"),
        other => panic!("expected a publish, got {other:?}"),
    }

    // Offline storage holds carol's message only.
    let mut alice = login(&server, "alice", "laptop").await;
    alice.send("<presence/>").await;
    let stored = until(&mut alice, "the stored message", |e| e.name() == "message").await;
    assert_eq!(body(&stored), "hello");
    assert!(
        alice
            .drain(QUIET)
            .await
            .iter()
            .all(|e| body(e) != "let me in")
    );

    // Unblocking everything lets bob through again.
    let reply = iq(
        &mut alice,
        "u",
        "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"));
    bob.send("<message to='alice@localhost' type='chat'><body>now?</body></message>")
        .await;
    let now = until(&mut alice, "bob's message", |e| e.name() == "message").await;
    assert_eq!(body(&now), "now?");
}

// ---------------------------------------------------------------------------------------
// PEP (XEP-0163) with caps (XEP-0115)

/// A client's caps: its identity and features, the `<c/>` element and the ver.
fn caps(features: &[&str]) -> (String, String) {
    let mut sorted: Vec<&str> = features.to_vec();
    sorted.sort();
    let mut s = String::from("client/phone//test client<");
    for feature in &sorted {
        s.push_str(feature);
        s.push('<');
    }
    let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
    (
        format!("<c xmlns='{CAPS}' hash='sha-1' node='https://test.client' ver='{ver}'/>"),
        ver,
    )
}

/// Answer the server's disco#info query for the caps node (XEP-0115 section 6.2).
async fn answer_caps_query(client: &mut Client, features: &[&str]) {
    let query = until(client, "the caps query", |e| {
        e.name() == "iq" && e.attr("type") == Some("get") && e.has_child("query", DISCO_INFO)
    })
    .await;
    let node = query
        .get_child("query", DISCO_INFO)
        .unwrap()
        .attr("node")
        .unwrap()
        .to_owned();
    let mut xml = format!(
        "<iq type='result' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='{node}'>\
         <identity category='client' type='phone' name='test client'/>",
        query.attr("id").unwrap(),
        query.attr("from").unwrap()
    );
    for feature in features {
        xml.push_str(&format!("<feature var='{feature}'/>"));
    }
    xml.push_str("</query></iq>");
    client.send(&xml).await;
}

fn publish_devices(id: &str, device: &str, options: Option<&str>) -> String {
    let options = options
        .map(|access| {
            format!(
                "<publish-options><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='pubsub#access_model'><value>{access}</value></field></x></publish-options>"
            )
        })
        .unwrap_or_default();
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{DEVICES}'>\
         <item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='{device}'/></devices></item>\
         </publish>{options}</pubsub></iq>"
    )
}

fn items_request(id: &str, owner: &str, node: &str) -> String {
    format!(
        "<iq type='get' id='{id}' to='{owner}'><pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub></iq>"
    )
}

#[tokio::test]
async fn an_open_omemo_device_list_is_fetched_by_a_stranger_and_a_presence_node_is_refused() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let reply = iq(&mut alice, "p1", &publish_devices("p1", "42", Some("open"))).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let published = reply
        .get_child("pubsub", PUBSUB)
        .unwrap()
        .get_child("publish", PUBSUB)
        .unwrap();
    assert_eq!(
        published.get_child("item", PUBSUB).unwrap().attr("id"),
        Some("current")
    );
    // A precondition that does not hold is refused.
    let reply = iq(
        &mut alice,
        "p2",
        &publish_devices("p2", "43", Some("presence")),
    )
    .await;
    let (kind, conditions) = error_condition(&reply);
    assert_eq!(kind, "cancel");
    assert_eq!(conditions, ["conflict", "precondition-not-met"]);
    // A node with the default access model (presence).
    let reply = iq(
        &mut alice,
        "p3",
        &format!(
            "<iq type='set' id='p3'><pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:avatar:metadata'>\
             <item id='a1'><metadata xmlns='urn:xmpp:avatar:metadata'/></item></publish></pubsub></iq>"
        ),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");

    let mut carol = online(&server, "carol", "desk").await;
    let reply = iq(
        &mut carol,
        "i1",
        &items_request("i1", "alice@localhost", DEVICES),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let items = reply
        .get_child("pubsub", PUBSUB)
        .unwrap()
        .get_child("items", PUBSUB)
        .unwrap();
    let item = items.get_child("item", PUBSUB).unwrap();
    assert_eq!(item.attr("id"), Some("current"));
    let device = item
        .get_child("devices", "urn:xmpp:omemo:2")
        .unwrap()
        .get_child("device", "urn:xmpp:omemo:2")
        .unwrap();
    assert_eq!(
        device.attr("id"),
        Some("42"),
        "the refused publish changed nothing"
    );

    let reply = iq(
        &mut carol,
        "i2",
        &items_request("i2", "alice@localhost", "urn:xmpp:avatar:metadata"),
    )
    .await;
    let (kind, conditions) = error_condition(&reply);
    assert_eq!(kind, "auth");
    assert_eq!(
        conditions,
        ["not-authorized", "presence-subscription-required"]
    );
    assert!(
        reply
            .get_child("error", "jabber:client")
            .unwrap()
            .has_child("presence-subscription-required", ERRORS)
    );
    // Nobody but the owner publishes.
    let reply = iq(
        &mut carol,
        "p4",
        &publish_devices("p4", "1", None).replace(
            "<iq type='set' id='p4'>",
            "<iq type='set' id='p4' to='alice@localhost'>",
        ),
    )
    .await;
    assert_eq!(error_condition(&reply).1, ["forbidden"]);
}

#[tokio::test]
async fn a_subscribed_contact_whose_caps_ask_is_notified_and_gets_the_last_item_at_login() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;
    bob.send("</stream:stream>").await;
    bob.closed().await;
    let notify = format!("{DEVICES}+notify");
    let features = [DISCO_INFO, notify.as_str()];
    let (c, _) = caps(&features);

    // Bob comes online with caps asking for device lists: the server asks what they mean.
    let mut bob = login(&server, "bob", "desk").await;
    bob.send(&format!("<presence>{c}</presence>")).await;
    answer_caps_query(&mut bob, &features).await;
    bob.drain(QUIET).await;

    // Alice publishes: bob is notified.
    let reply = iq(&mut alice, "p1", &publish_devices("p1", "7", None)).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let event = until(&mut bob, "the notification", |e| {
        e.name() == "message" && e.has_child("event", EVENT)
    })
    .await;
    assert_eq!(event.attr("from"), Some("alice@localhost"));
    assert_eq!(event.attr("type"), Some("headline"));
    let items = event
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap();
    assert_eq!(items.attr("node"), Some(DEVICES));
    assert_eq!(
        items.get_child("item", EVENT).unwrap().attr("id"),
        Some("current")
    );

    // A contact whose caps do not ask gets nothing.
    let (plain_caps, _) = caps(&[DISCO_INFO]);
    let mut other = login(&server, "bob", "tablet").await;
    other
        .send(&format!("<presence>{plain_caps}</presence>"))
        .await;
    answer_caps_query(&mut other, &[DISCO_INFO]).await;
    other.drain(QUIET).await;
    bob.drain(QUIET).await;
    iq(&mut alice, "p2", &publish_devices("p2", "8", None)).await;
    until(&mut bob, "the second notification", |e| {
        e.has_child("event", EVENT)
    })
    .await;
    assert!(
        other
            .drain(QUIET)
            .await
            .iter()
            .all(|e| !e.has_child("event", EVENT))
    );

    // At login (caps already known: no query), the last item comes with presence.
    let mut laptop = login(&server, "bob", "laptop").await;
    laptop.send(&format!("<presence>{c}</presence>")).await;
    let last = until(&mut laptop, "the last item", |e| {
        e.has_child("event", EVENT)
    })
    .await;
    let item = last
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    let device = item
        .get_child("devices", "urn:xmpp:omemo:2")
        .unwrap()
        .get_child("device", "urn:xmpp:omemo:2")
        .unwrap();
    assert_eq!(device.attr("id"), Some("8"));
    // A presence update is not a login: no second copy.
    laptop
        .send(&format!("<presence><show>away</show>{c}</presence>"))
        .await;
    assert!(
        laptop
            .drain(QUIET)
            .await
            .iter()
            .all(|e| !e.has_child("event", EVENT)),
        "the last item again on a presence update"
    );

    // On subscription: carol, whose caps ask too, subscribes; alice's approval brings the
    // last item.
    let mut carol = login(&server, "carol", "desk").await;
    carol.send(&format!("<presence>{c}</presence>")).await;
    carol.drain(QUIET).await;
    alice.drain(QUIET).await;
    subscribe(&mut carol, "carol@localhost", &mut alice, "alice@localhost").await;
    let last = until(&mut carol, "the last item on subscription", |e| {
        e.has_child("event", EVENT)
    })
    .await;
    assert_eq!(last.attr("from"), Some("alice@localhost"));
}

// ---------------------------------------------------------------------------------------
// vCard, version, server caps and contact addresses; the compliance checks

#[tokio::test]
async fn a_vcard_is_set_by_its_owner_and_read_by_anyone() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let reply = iq(
        &mut alice,
        "v1",
        "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let mut carol = online(&server, "carol", "desk").await;
    let reply = iq(
        &mut carol,
        "v2",
        "<iq type='get' id='v2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let vcard = reply.get_child("vCard", "vcard-temp").unwrap();
    assert_eq!(
        vcard
            .get_child("FN", "vcard-temp")
            .map(Element::text)
            .as_deref(),
        Some("Alice A.")
    );
    let reply = iq(
        &mut carol,
        "v3",
        "<iq type='set' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
    )
    .await;
    assert_eq!(error_condition(&reply).1, ["forbidden"]);
    let reply = iq(
        &mut carol,
        "v4",
        "<iq type='get' id='v4' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        reply
            .get_child("vCard", "vcard-temp")
            .unwrap()
            .children()
            .count(),
        0
    );
}

/// The features of a disco#info result, and its identities as category/type.
fn disco(reply: &Element) -> (Vec<String>, Vec<String>) {
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let query = reply.get_child("query", DISCO_INFO).unwrap();
    (
        query
            .children()
            .filter(|c| c.name() == "feature")
            .map(|c| c.attr("var").unwrap().to_owned())
            .collect(),
        query
            .children()
            .filter(|c| c.name() == "identity")
            .map(|c| {
                format!(
                    "{}/{}",
                    c.attr("category").unwrap(),
                    c.attr("type").unwrap()
                )
            })
            .collect(),
    )
}

#[tokio::test]
async fn the_server_and_the_account_answer_disco_as_conversations_compliance_tester_checks() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let reply = iq(
        &mut alice,
        "d1",
        &format!("<iq type='get' id='d1' to='localhost'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    let (features, identities) = disco(&reply);
    for feature in [
        CARBONS,
        "urn:xmpp:blocking",
        "vcard-temp",
        "jabber:iq:version",
        "urn:xmpp:ping",
    ] {
        assert!(
            features.iter().any(|f| f == feature),
            "server lacks {feature}: {features:?}"
        );
    }
    assert!(identities.contains(&"server/im".to_owned()));
    // XEP-0157: the contact addresses form.
    let query = reply.get_child("query", DISCO_INFO).unwrap();
    let form = query
        .get_child("x", "jabber:x:data")
        .expect("a serverinfo form");
    let abuse = form
        .children()
        .find(|f| f.attr("var") == Some("abuse-addresses"))
        .unwrap();
    assert_eq!(
        abuse.children().next().unwrap().text(),
        "mailto:abuse@localhost"
    );

    // The account's bare JID: push (XEP-0357 section 5), PEP's identity and publish-options.
    let reply = iq(
        &mut alice,
        "d2",
        &format!("<iq type='get' id='d2' to='alice@localhost'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    let (features, identities) = disco(&reply);
    assert!(
        identities.contains(&"pubsub/pep".to_owned()),
        "{identities:?}"
    );
    assert!(
        identities.contains(&"account/registered".to_owned()),
        "{identities:?}"
    );
    for feature in [
        "urn:xmpp:push:0",
        "http://jabber.org/protocol/pubsub#publish-options",
        PUBSUB,
    ] {
        assert!(
            features.iter().any(|f| f == feature),
            "account lacks {feature}: {features:?}"
        );
    }

    // XEP-0092.
    let reply = iq(
        &mut alice,
        "ver",
        "<iq type='get' id='ver' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let query = reply.get_child("query", "jabber:iq:version").unwrap();
    assert_eq!(
        query.get_child("name", "jabber:iq:version").unwrap().text(),
        "herald"
    );

    // XEP-0115: the server's caps, offered in the stream features, name its disco#info.
    let mut client = Client::connect(server.addr(common::STARTTLS)).await;
    client.open("localhost").await;
    client.starttls("localhost", &server.cert()).await;
    client
        .scram("SCRAM-SHA-256", "carol", "carol-pass")
        .await
        .unwrap();
    let stream_features = client.open("localhost").await;
    let c = stream_features
        .get_child("c", CAPS)
        .expect("caps in the stream features");
    let node = format!("{}#{}", c.attr("node").unwrap(), c.attr("ver").unwrap());
    let reply = iq(
        &mut alice,
        "d3",
        &format!(
            "<iq type='get' id='d3' to='localhost'><query xmlns='{DISCO_INFO}' node='{node}'/></iq>"
        ),
    )
    .await;
    // The verification string of XEP-0115 section 5.1, computed here from the answer.
    let query = reply.get_child("query", DISCO_INFO).unwrap();
    let parsed = xmpp_parsers::disco::DiscoInfoResult::try_from(query.clone()).unwrap();
    let mut identities: Vec<String> = parsed
        .identities
        .iter()
        .map(|i| {
            format!(
                "{}/{}/{}/{}",
                i.category,
                i.type_,
                i.lang.as_deref().unwrap_or(""),
                i.name.as_deref().unwrap_or("")
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<String> = disco(&reply).0;
    features.sort();
    let mut s = String::new();
    for item in identities.iter().chain(&features) {
        s.push_str(item);
        s.push('<');
    }
    let form = query.get_child("x", "jabber:x:data").unwrap();
    s.push_str("http://jabber.org/network/serverinfo<abuse-addresses<mailto:abuse@localhost<");
    assert_eq!(
        form.children().count(),
        2,
        "one field besides FORM_TYPE: {form:?}"
    );
    let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
    assert_eq!(
        ver,
        c.attr("ver").unwrap(),
        "the caps hash matches the disco#info"
    );
}

#[tokio::test]
async fn removing_an_account_deletes_its_block_list_vcard_and_pep_nodes() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    iq(&mut alice, "b", "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>").await;
    iq(
        &mut alice,
        "v",
        "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>",
    )
    .await;
    iq(&mut alice, "p", &publish_devices("p", "1", Some("open"))).await;
    let reply = iq(
        &mut alice,
        "rm",
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let storage = &server.running.as_ref().unwrap().server.storage;
    let alice_jid = jid::BareJid::new("alice@localhost").unwrap();
    for (kind, scope) in [
        ("block", ""),
        ("vcard", ""),
        ("pep_node", ""),
        ("pep_item", DEVICES),
    ] {
        assert!(
            storage
                .user_data()
                .list(&alice_jid, kind, scope)
                .await
                .unwrap()
                .is_empty(),
            "{kind} rows left"
        );
    }
}
