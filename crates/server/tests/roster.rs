//! Black-box tests of rosters (RFC 6121 section 2, XEP-0237) and presence subscriptions
//! (sections 3 and 4), with two or three real clients.

mod common;

use std::time::Duration;

use common::{TestServer, client::Client};
use minidom::Element;

const ROSTER: &str = "jabber:iq:roster";

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_roster]
[modules.mod_offline]
"#;

/// Everything that arrives until nothing more comes for `quiet` (a read cancelled by the
/// timeout loses nothing: the client only consumes bytes once a read completes).
async fn received_until_quiet(client: &mut Client, quiet: Duration) -> Vec<Element> {
    let mut out = Vec::new();
    while let Ok(frame) = tokio::time::timeout(quiet, client.next_frame()).await {
        match frame {
            Some(herald_stream::Frame::Element(element)) => out.push(element),
            _ => break,
        }
    }
    out
}

async fn server_with(config: &str, users: &[&str]) -> TestServer {
    let server = TestServer::start(config).await;
    for user in users {
        server
            .add_user(&format!("{user}@localhost"), &format!("{user}-pass"))
            .await;
    }
    server
}

async fn server(users: &[&str]) -> TestServer {
    server_with(CONFIG, users).await
}

/// Log in, fetch the roster (becoming an interested resource), send initial presence and
/// read up to its echo.
async fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut client = Client::login(
        server,
        &format!("{user}@localhost"),
        &format!("{user}-pass"),
        resource,
    )
    .await;
    roster(&mut client).await;
    client.send("<presence/>").await;
    let me = client.jid.clone();
    until(&mut client, "the presence echo", |e| {
        e.name() == "presence" && e.attr("from") == me.as_deref()
    })
    .await;
    client
}

/// Read until an element matches, dropping the others.
async fn until(client: &mut Client, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
    for _ in 0..100 {
        let element = client.next().await;
        if matches(&element) {
            return element;
        }
    }
    panic!("never got {what}");
}

fn presence_of<'a>(kind: &'a str, from: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |e: &Element| {
        e.name() == "presence"
            && e.attr("type").unwrap_or("available") == kind
            && e.attr("from") == Some(from)
    }
}

fn roster_push_for<'a>(jid: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |e: &Element| {
        e.name() == "iq"
            && e.attr("type") == Some("set")
            && e.get_child("query", ROSTER)
                .and_then(|q| q.get_child("item", ROSTER))
                .is_some_and(|item| item.attr("jid") == Some(jid))
    }
}

/// One roster item as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    jid: String,
    name: Option<String>,
    subscription: String,
    ask: Option<String>,
    groups: Vec<String>,
}

fn items(query: &Element) -> Vec<Item> {
    query
        .children()
        .filter(|c| c.is("item", ROSTER))
        .map(|item| Item {
            jid: item.attr("jid").unwrap_or_default().to_owned(),
            name: item.attr("name").map(str::to_owned),
            subscription: item.attr("subscription").unwrap_or("none").to_owned(),
            ask: item.attr("ask").map(str::to_owned),
            groups: item.children().map(|g| g.text()).collect(),
        })
        .collect()
}

/// Send a roster get with `ver` (XEP-0237) and return the result's query, if any.
async fn roster_get(client: &mut Client, ver: Option<&str>) -> Option<Element> {
    let id = format!("get-{}", rand_id());
    let ver = ver.map(|v| format!(" ver='{v}'")).unwrap_or_default();
    client
        .send(&format!(
            "<iq type='get' id='{id}'><query xmlns='{ROSTER}'{ver}/></iq>"
        ))
        .await;
    let reply = until(client, "the roster result", |e| {
        e.name() == "iq" && e.attr("id") == Some(id.as_str())
    })
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    reply.get_child("query", ROSTER).cloned()
}

async fn roster(client: &mut Client) -> Vec<Item> {
    items(&roster_get(client, None).await.expect("a roster"))
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn subscription(items: &[Item], jid: &str) -> Option<(String, Option<String>)> {
    items
        .iter()
        .find(|item| item.jid == jid)
        .map(|item| (item.subscription.clone(), item.ask.clone()))
}

/// Run the four-step handshake of RFC 6121 section 3 between two online clients.
async fn subscribe_both_ways(alice: &mut Client, bob: &mut Client) {
    alice
        .send("<presence to='bob@localhost' type='subscribe'><status>hi Bob</status></presence>")
        .await;
    let request = until(
        bob,
        "alice's request",
        presence_of("subscribe", "alice@localhost"),
    )
    .await;
    assert_eq!(
        request.get_child("status", "jabber:client").unwrap().text(),
        "hi Bob"
    );
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    until(
        alice,
        "bob's approval",
        presence_of("subscribed", "bob@localhost"),
    )
    .await;
    // Section 3.1.5: the approver's presence follows the approval.
    until(
        alice,
        "bob's presence",
        presence_of("available", "bob@localhost/phone"),
    )
    .await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    until(
        alice,
        "bob's request",
        presence_of("subscribe", "bob@localhost"),
    )
    .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    until(
        bob,
        "alice's approval",
        presence_of("subscribed", "alice@localhost"),
    )
    .await;
    until(
        bob,
        "alice's presence",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;
}

#[tokio::test]
async fn a_full_subscription_handshake_ends_in_both_on_both_rosters_and_presence_flows() {
    let mut server = server(&["alice", "bob"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    let mut bob = online(&server, "bob", "phone").await;

    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    // Section 3.1.2: the request shows as a pending item in alice's roster.
    let push = until(
        &mut alice,
        "a roster push",
        roster_push_for("bob@localhost"),
    )
    .await;
    let pushed = items(push.get_child("query", ROSTER).unwrap());
    assert_eq!(
        subscription(&pushed, "bob@localhost"),
        Some(("none".into(), Some("subscribe".into())))
    );
    until(
        &mut bob,
        "alice's request",
        presence_of("subscribe", "alice@localhost"),
    )
    .await;
    // A pending inbound request alone is not shown (RFC 6121 appendix A.1).
    assert_eq!(
        subscription(&roster(&mut bob).await, "alice@localhost"),
        None
    );
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    until(
        &mut alice,
        "bob's approval",
        presence_of("subscribed", "bob@localhost"),
    )
    .await;
    until(
        &mut alice,
        "bob's presence",
        presence_of("available", "bob@localhost/phone"),
    )
    .await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    until(
        &mut alice,
        "bob's request",
        presence_of("subscribe", "bob@localhost"),
    )
    .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    until(
        &mut bob,
        "alice's approval",
        presence_of("subscribed", "alice@localhost"),
    )
    .await;
    until(
        &mut bob,
        "alice's presence",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;

    assert_eq!(
        subscription(&roster(&mut alice).await, "bob@localhost"),
        Some(("both".into(), None))
    );
    assert_eq!(
        subscription(&roster(&mut bob).await, "alice@localhost"),
        Some(("both".into(), None))
    );
    // Presence now flows both ways: updates, and unavailable when a session ends.
    alice.send("<presence><show>away</show></presence>").await;
    let away = until(
        &mut bob,
        "alice's update",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;
    assert_eq!(
        away.get_child("show", "jabber:client").unwrap().text(),
        "away"
    );
    drop(bob);
    until(
        &mut alice,
        "bob going offline",
        presence_of("unavailable", "bob@localhost/phone"),
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscription_request_sent_while_the_contact_is_offline_is_delivered_at_login() {
    let mut server = server(&["alice", "bob"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    alice
        .send(
            "<presence to='bob@localhost' type='subscribe'><status>it is Alice</status></presence>",
        )
        .await;
    until(
        &mut alice,
        "a roster push",
        roster_push_for("bob@localhost"),
    )
    .await;

    let mut bob = Client::login(&server, "bob@localhost", "bob-pass", "phone").await;
    bob.send("<presence/>").await;
    let request = until(
        &mut bob,
        "the stored request",
        presence_of("subscribe", "alice@localhost"),
    )
    .await;
    assert_eq!(request.attr("to"), Some("bob@localhost"));
    assert_eq!(
        request.get_child("status", "jabber:client").unwrap().text(),
        "it is Alice"
    );
    // Approving it completes the subscription.
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    until(
        &mut alice,
        "the approval",
        presence_of("subscribed", "bob@localhost"),
    )
    .await;
    assert_eq!(
        subscription(&roster(&mut alice).await, "bob@localhost"),
        Some(("to".into(), None))
    );
    assert_eq!(
        subscription(&roster(&mut bob).await, "alice@localhost"),
        Some(("from".into(), None))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn initial_presence_probes_contacts_and_reaches_subscribers() {
    let mut server = server(&["alice", "bob"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    let mut bob = online(&server, "bob", "phone").await;
    subscribe_both_ways(&mut alice, &mut bob).await;
    drop(alice);
    until(
        &mut bob,
        "alice going offline",
        presence_of("unavailable", "alice@localhost/laptop"),
    )
    .await;

    // Alice comes back: bob gets her initial presence, she gets bob's by the probe.
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "tablet").await;
    alice
        .send("<presence><status>back</status></presence>")
        .await;
    until(
        &mut alice,
        "bob's presence",
        presence_of("available", "bob@localhost/phone"),
    )
    .await;
    let seen = until(
        &mut bob,
        "alice's presence",
        presence_of("available", "alice@localhost/tablet"),
    )
    .await;
    assert_eq!(
        seen.get_child("status", "jabber:client").unwrap().text(),
        "back"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn presence_goes_only_to_subscribers() {
    let mut server = server(&["alice", "bob", "carol"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    let mut bob = online(&server, "bob", "phone").await;
    let mut carol = online(&server, "carol", "desk").await;
    // Only bob subscribes to alice.
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    until(
        &mut alice,
        "bob's request",
        presence_of("subscribe", "bob@localhost"),
    )
    .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    until(
        &mut bob,
        "alice's presence",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;
    alice.send("<presence><show>dnd</show></presence>").await;
    until(
        &mut bob,
        "alice's update",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;
    let seen = received_until_quiet(&mut carol, Duration::from_millis(300)).await;
    assert!(
        seen.iter()
            .all(|e| e.attr("from") != Some("alice@localhost/laptop")),
        "carol is not subscribed: {seen:?}"
    );
    // Alice is not subscribed to bob: bob's presence does not reach her.
    bob.send("<presence><show>xa</show></presence>").await;
    let seen = received_until_quiet(&mut alice, Duration::from_millis(300)).await;
    assert!(
        seen.iter()
            .all(|e| e.name() != "presence" || e.attr("from") != Some("bob@localhost/phone")),
        "{seen:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn roster_pushes_reach_the_users_other_resources() {
    let mut server = server(&["alice"]).await;
    let mut laptop = online(&server, "alice", "laptop").await;
    let mut phone = online(&server, "alice", "phone").await;
    laptop
        .send(
            "<iq type='set' id='set1'><query xmlns='jabber:iq:roster'>\
             <item jid='nurse@localhost' name='Nurse'><group>Servants</group></item>\
             </query></iq>",
        )
        .await;
    let push = until(
        &mut phone,
        "the roster push",
        roster_push_for("nurse@localhost"),
    )
    .await;
    assert_eq!(push.attr("to"), Some("alice@localhost/phone"));
    let pushed = items(push.get_child("query", ROSTER).unwrap());
    assert_eq!(
        pushed,
        [Item {
            jid: "nurse@localhost".into(),
            name: Some("Nurse".into()),
            subscription: "none".into(),
            ask: None,
            groups: vec!["Servants".into()],
        }]
    );
    // The resource that made the change gets the push too, and its result.
    until(
        &mut laptop,
        "its own push",
        roster_push_for("nurse@localhost"),
    )
    .await;
    let result = until(&mut laptop, "the result", |e| e.attr("id") == Some("set1")).await;
    assert_eq!(result.attr("type"), Some("result"));
    // A resource that never asked for the roster is not interested.
    let mut quiet = Client::login(&server, "alice@localhost", "alice-pass", "quiet").await;
    laptop
        .send(
            "<iq type='set' id='set2'><query xmlns='jabber:iq:roster'>\
             <item jid='nurse@localhost' subscription='remove'/></query></iq>",
        )
        .await;
    let removal = until(
        &mut phone,
        "the removal push",
        roster_push_for("nurse@localhost"),
    )
    .await;
    let item = removal
        .get_child("query", ROSTER)
        .unwrap()
        .get_child("item", ROSTER)
        .unwrap();
    assert_eq!(item.attr("subscription"), Some("remove"));
    assert!(quiet.nothing_within(Duration::from_millis(300)).await);
    assert!(roster(&mut laptop).await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn roster_set_errors_follow_rfc_6121() {
    let mut server = server(&["alice"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    let cases = [
        (
            "<item jid='a@localhost'><group>G</group><group>G</group></item>",
            "bad-request",
        ),
        ("<item jid='a@localhost'><group/></item>", "not-acceptable"),
        (
            "<item jid='a@localhost'/><item jid='b@localhost'/>",
            "bad-request",
        ),
        (
            "<item jid='missing@localhost' subscription='remove'/>",
            "item-not-found",
        ),
    ];
    for (n, (items, condition)) in cases.into_iter().enumerate() {
        alice
            .send(&format!(
                "<iq type='set' id='e{n}'><query xmlns='jabber:iq:roster'>{items}</query></iq>"
            ))
            .await;
        let id = format!("e{n}");
        let reply = until(&mut alice, "the error", |e| {
            e.attr("id") == Some(id.as_str())
        })
        .await;
        assert_eq!(reply.attr("type"), Some("error"), "{items}");
        let error = reply.get_child("error", "jabber:client").unwrap();
        assert!(
            error.has_child(condition, common::client::STANZAS),
            "{items}: {error:?}"
        );
    }
    // Another user's roster is not ours to read.
    alice
        .send("<iq type='get' id='other' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let reply = until(&mut alice, "the error", |e| e.attr("id") == Some("other")).await;
    assert_eq!(reply.attr("type"), Some("error"));
    server.shutdown().await;
}

#[tokio::test]
async fn removing_a_roster_item_cancels_the_subscriptions_both_ways() {
    let mut server = server(&["alice", "bob"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    let mut bob = online(&server, "bob", "phone").await;
    subscribe_both_ways(&mut alice, &mut bob).await;
    alice
        .send(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@localhost' subscription='remove'/></query></iq>",
        )
        .await;
    until(&mut alice, "the result", |e| e.attr("id") == Some("rm")).await;
    until(
        &mut bob,
        "alice's unsubscribe",
        presence_of("unsubscribe", "alice@localhost"),
    )
    .await;
    until(
        &mut bob,
        "alice's unsubscribed",
        presence_of("unsubscribed", "alice@localhost"),
    )
    .await;
    until(
        &mut bob,
        "alice going offline for him",
        presence_of("unavailable", "alice@localhost/laptop"),
    )
    .await;
    assert_eq!(
        subscription(&roster(&mut bob).await, "alice@localhost"),
        Some(("none".into(), None))
    );
    assert!(roster(&mut alice).await.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscription_request_to_a_missing_account_is_answered_unsubscribed() {
    let mut server = server(&["alice"]).await;
    let mut alice = online(&server, "alice", "laptop").await;
    alice
        .send("<presence to='ghost@localhost' type='subscribe'/>")
        .await;
    until(
        &mut alice,
        "the refusal",
        presence_of("unsubscribed", "ghost@localhost"),
    )
    .await;
    assert_eq!(
        subscription(&roster(&mut alice).await, "ghost@localhost"),
        Some(("none".into(), None))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn directed_presence_recipients_get_unavailable_when_the_sender_logs_off() {
    let mut server = server(&["alice", "bob"]).await;
    let alice = online(&server, "alice", "laptop").await;
    let mut alice = alice;
    let mut bob = online(&server, "bob", "phone").await;
    alice
        .send("<presence to='bob@localhost/phone'><show>chat</show></presence>")
        .await;
    until(
        &mut bob,
        "the directed presence",
        presence_of("available", "alice@localhost/laptop"),
    )
    .await;
    alice.send("</stream:stream>").await;
    until(
        &mut bob,
        "the unavailable",
        presence_of("unavailable", "alice@localhost/laptop"),
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn versioning_returns_an_empty_result_when_the_roster_is_up_to_date() {
    for store_current_id in [false, true] {
        let config = CONFIG.replace(
            "[modules.mod_roster]\n",
            &format!(
                "[modules.mod_roster]\nversioning = true\nstore_current_id = {store_current_id}\n"
            ),
        );
        let mut server = server_with(&config, &["alice"]).await;
        let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "laptop").await;
        // XEP-0237 section 2.1: the stream feature after authentication.
        let features = alice.features.clone().unwrap();
        assert!(
            features.has_child("ver", "urn:xmpp:features:rosterver"),
            "{features:?}"
        );
        let first = roster_get(&mut alice, Some("")).await.expect("a roster");
        let version = first.attr("ver").expect("a version").to_owned();
        assert!(items(&first).is_empty());
        // Up to date: an empty result, no <query/>.
        assert_eq!(roster_get(&mut alice, Some(&version)).await, None);
        alice
            .send(
                "<iq type='set' id='v1'><query xmlns='jabber:iq:roster'>\
                 <item jid='nurse@localhost'/></query></iq>",
            )
            .await;
        let push = until(&mut alice, "the push", roster_push_for("nurse@localhost")).await;
        let pushed = push
            .get_child("query", ROSTER)
            .unwrap()
            .attr("ver")
            .expect("a version in the push")
            .to_owned();
        assert_ne!(pushed, version, "store_current_id = {store_current_id}");
        // An old version gets the whole roster with the current version.
        let full = roster_get(&mut alice, Some(&version))
            .await
            .expect("a roster");
        assert_eq!(full.attr("ver"), Some(pushed.as_str()));
        assert_eq!(items(&full).len(), 1);
        assert_eq!(roster_get(&mut alice, Some(&pushed)).await, None);
        // A client that does not ask for versions gets none.
        assert_eq!(
            roster_get(&mut alice, None).await.unwrap().attr("ver"),
            None
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn without_versioning_the_stream_feature_is_absent_and_ver_is_ignored() {
    let mut server = server(&["alice"]).await;
    let mut alice = Client::login(&server, "alice@localhost", "alice-pass", "laptop").await;
    let features = alice.features.clone().unwrap();
    assert!(!features.has_child("ver", "urn:xmpp:features:rosterver"));
    let query = roster_get(&mut alice, Some("")).await.expect("a roster");
    assert_eq!(query.attr("ver"), None);
    server.shutdown().await;
}

/// A component written from XEP-0114, reduced to what the presence test needs.
mod component {
    use std::net::SocketAddr;
    use std::time::Duration;

    use herald_stream::{Frame, StreamParser};
    use minidom::Element;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    pub struct Component {
        tcp: TcpStream,
        parser: StreamParser,
        frames: std::collections::VecDeque<Frame>,
    }

    impl Component {
        pub async fn connect(addr: SocketAddr, domain: &str, secret: &str) -> Component {
            use sha1::Digest;
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut c = Component {
                tcp,
                parser: StreamParser::new(1 << 20),
                frames: Default::default(),
            };
            c.send(&format!(
                "<stream:stream xmlns='jabber:component:accept' \
                 xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
            ))
            .await;
            let Some(Frame::StreamOpen(header)) = c.frame().await else {
                panic!("expected a stream header");
            };
            let id = header.id.expect("a stream id");
            let digest: String = sha1::Sha1::digest(format!("{id}{secret}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            c.send(&format!("<handshake>{digest}</handshake>")).await;
            assert_eq!(c.next().await.name(), "handshake");
            c
        }

        pub async fn send(&mut self, xml: &str) {
            self.tcp.write_all(xml.as_bytes()).await.unwrap();
        }

        async fn frame(&mut self) -> Option<Frame> {
            let mut buf = vec![0u8; 65536];
            loop {
                if let Some(frame) = self.frames.pop_front() {
                    return Some(frame);
                }
                let read =
                    tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut buf)).await;
                let n = read.expect("timed out waiting for the server").unwrap_or(0);
                if n == 0 {
                    return None;
                }
                let mut out = Vec::new();
                self.parser.feed(&buf[..n], &mut out).unwrap();
                self.frames.extend(out);
            }
        }

        pub async fn next(&mut self) -> Element {
            match self.frame().await {
                Some(Frame::Element(e)) => e,
                other => panic!("expected an element, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn presence_to_and_from_a_component_goes_through_the_roster() {
    let config = format!(
        "{CONFIG}\n[[listen.service]]\nport = 0\nip_address = \"127.0.0.1\"\npassword = \"secret\"\n"
    );
    let mut server = server_with(&config, &["alice"]).await;
    let service = server.running.as_ref().unwrap().service_addrs[0];
    let mut gateway = component::Component::connect(service, "gateway.localhost", "secret").await;
    let mut alice = online(&server, "alice", "laptop").await;

    // A subscription to the gateway changes alice's roster and reaches the gateway.
    alice
        .send("<presence to='gateway.localhost' type='subscribe'/>")
        .await;
    let request = gateway.next().await;
    assert_eq!(
        (request.name(), request.attr("type"), request.attr("from")),
        ("presence", Some("subscribe"), Some("alice@localhost"))
    );
    gateway
        .send("<presence from='gateway.localhost' to='alice@localhost' type='subscribed'/>")
        .await;
    until(
        &mut alice,
        "the gateway's approval",
        presence_of("subscribed", "gateway.localhost"),
    )
    .await;
    assert_eq!(
        subscription(&roster(&mut alice).await, "gateway.localhost"),
        Some(("to".into(), None))
    );

    // Directed presence to a room at the component gets unavailable when alice leaves.
    alice
        .send("<presence to='room@gateway.localhost/alice'/>")
        .await;
    let joined = gateway.next().await;
    assert_eq!(joined.attr("to"), Some("room@gateway.localhost/alice"));
    assert_eq!(joined.attr("type"), None);
    drop(alice);
    let left = gateway.next().await;
    assert_eq!(
        (left.attr("type"), left.attr("to"), left.attr("from")),
        (
            Some("unavailable"),
            Some("room@gateway.localhost/alice"),
            Some("alice@localhost/laptop")
        )
    );
    server.shutdown().await;
}
