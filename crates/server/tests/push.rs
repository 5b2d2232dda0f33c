//! Black-box tests of push notifications (XEP-0357, `docs/modules/push.md`) over real
//! sockets: clients speaking raw XML, and the app server played by an external component
//! (XEP-0114) that answers publishes as each test needs. Covers MongooseIM's own push cases.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{TestServer, client::Client, component::Component};
use herald_stream::Frame;
use jid::BareJid;
use minidom::Element;

const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA_FORMS: &str = "jabber:x:data";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// A quiet period long enough for a publish that was going to happen to have arrived.
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

[modules.mod_disco]
[modules.mod_offline]

[modules.mod_event_pusher.push]
backend = "mnesia"
wpool.workers = 4
plugin_module = "mod_event_pusher_push_plugin_defaults"
# These cases test what one answer does; retries have their own (tests/retries.rs).
retry.max_retries = 0
# MongooseIM's payload (message-count 1) and one notification per message: unread counts and
# pacing have their own cases (tests/notifications.rs).
unread_count = false
pacing.rate_limit = 0
"#;

const WITHOUT_PUSH: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[modules.mod_disco]
"#;

const APP_SERVER: &str = "push.localhost";

// ---------------------------------------------------------------------------------------
// The app server: a component written from XEP-0114.

struct AppServer(Component);

impl std::ops::Deref for AppServer {
    type Target = Component;
    fn deref(&self) -> &Component {
        &self.0
    }
}

impl std::ops::DerefMut for AppServer {
    fn deref_mut(&mut self) -> &mut Component {
        &mut self.0
    }
}

impl AppServer {
    async fn connect(addr: SocketAddr) -> AppServer {
        AppServer(Component::connect(addr, APP_SERVER, "secret").await)
    }

    /// The next publish; panics after 10 s.
    async fn publish(&mut self) -> Publish {
        match self.frame(Duration::from_secs(10)).await {
            Some(Frame::Element(iq)) => Publish::from(iq),
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    /// Whether no publish arrives within [`QUIET`].
    async fn nothing(&mut self) -> bool {
        match self.frame(QUIET).await {
            None => true,
            Some(other) => panic!("expected no publish, got {other:?}"),
        }
    }

    async fn answer_result(&mut self, publish: &Publish) {
        let xml = format!(
            "<iq type='result' id='{}' from='{APP_SERVER}' to='{}'/>",
            publish.id, publish.from
        );
        self.send(&xml).await;
    }

    async fn answer_error(&mut self, publish: &Publish, type_: &str, condition: &str) {
        let xml = format!(
            "<iq type='error' id='{}' from='{APP_SERVER}' to='{}'>\
             <error type='{type_}'><{condition} xmlns='{STANZAS}'/></error></iq>",
            publish.id, publish.from
        );
        self.send(&xml).await;
    }
}

/// A publish IQ as the app server received it.
#[derive(Debug)]
struct Publish {
    id: String,
    from: String,
    to: String,
    node: String,
    /// The notification's summary fields, in order, FORM_TYPE first.
    summary: Vec<(String, String)>,
    /// The publish-options fields, FORM_TYPE first; `None` when the element is absent.
    options: Option<Vec<(String, String)>>,
    item_id: Option<String>,
}

fn form_fields(x: &Element) -> Vec<(String, String)> {
    x.children()
        .filter(|f| f.is("field", DATA_FORMS))
        .map(|f| {
            let value = f
                .get_child("value", DATA_FORMS)
                .map(Element::text)
                .unwrap_or_default();
            (f.attr("var").unwrap_or_default().to_owned(), value)
        })
        .collect()
}

impl From<Element> for Publish {
    fn from(iq: Element) -> Publish {
        assert_eq!(iq.name(), "iq", "{iq:?}");
        assert_eq!(iq.attr("type"), Some("set"), "{iq:?}");
        let pubsub = iq.get_child("pubsub", PUBSUB).expect("a pubsub payload");
        let publish = pubsub.get_child("publish", PUBSUB).expect("a publish");
        let item = publish.get_child("item", PUBSUB).expect("an item");
        let notification = item
            .get_child("notification", PUSH)
            .expect("a notification");
        let summary = notification
            .get_child("x", DATA_FORMS)
            .expect("a summary form");
        assert_eq!(summary.attr("type"), Some("submit"));
        let options = pubsub.get_child("publish-options", PUBSUB).map(|options| {
            form_fields(options.get_child("x", DATA_FORMS).expect("an options form"))
        });
        Publish {
            id: iq.attr("id").expect("an id").to_owned(),
            from: iq.attr("from").unwrap_or_default().to_owned(),
            to: iq.attr("to").unwrap_or_default().to_owned(),
            node: publish.attr("node").unwrap_or_default().to_owned(),
            summary: form_fields(summary),
            options,
            item_id: item.attr("id").map(str::to_owned),
        }
    }
}

impl Publish {
    fn field(&self, var: &str) -> Option<&str> {
        self.summary
            .iter()
            .find(|(name, _)| name == var)
            .map(|(_, value)| value.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

struct Setup {
    server: TestServer,
    app: AppServer,
}

async fn setup() -> Setup {
    setup_with(CONFIG).await
}

async fn setup_with(config: &str) -> Setup {
    let server = TestServer::start(config).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    let app = AppServer::connect(addr).await;
    Setup { server, app }
}

/// Send an IQ and return the reply (skipping presence).
async fn iq(client: &mut Client, xml: &str) -> Element {
    client.send(xml).await;
    client.next_non_presence().await
}

fn enable_iq(node: &str, form: &str) -> String {
    format!(
        "<iq type='set' id='en-{node}'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='{node}'>{form}</enable></iq>"
    )
}

fn options_form(fields: &[(&str, &str)]) -> String {
    let mut xml = format!(
        "<x xmlns='{DATA_FORMS}' type='submit'><field var='FORM_TYPE'>\
         <value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
    );
    for (var, value) in fields {
        xml.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    xml.push_str("</x>");
    xml
}

/// Log alice in (no presence), enable `node` with `form`, and log out.
async fn enable_for_alice(server: &TestServer, node: &str, form: &str) {
    let mut alice = Client::login(server, "alice@localhost", "a-pass", "phone").await;
    let reply = iq(&mut alice, &enable_iq(node, form)).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    alice.send("</stream:stream>").await;
    alice.closed().await;
}

/// Bob, online, sends alice a message.
async fn bob_sends(bob: &mut Client, message: &str) {
    bob.send(message).await;
}

fn chat(body: &str) -> String {
    format!("<message to='alice@localhost' type='chat' id='m'><body>{body}</body></message>")
}

/// The error type and condition of an error reply.
fn error_of(reply: &Element) -> (String, String) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    let error = reply
        .children()
        .find(|c| c.name() == "error")
        .expect("an error element");
    let condition = error
        .children()
        .find(|c| c.ns() == STANZAS)
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (error.attr("type").unwrap_or_default().to_owned(), condition)
}

/// Send a push IQ from a logged-in client; assert `modify/bad-request` echoing the request.
async fn assert_bad_request(client: &mut Client, payload: &str) {
    let reply = iq(client, &format!("<iq type='set' id='bad'>{payload}</iq>")).await;
    assert_eq!(
        error_of(&reply),
        ("modify".into(), "bad-request".into()),
        "{payload}"
    );
    let echoed = reply.children().next().unwrap();
    assert_ne!(echoed.name(), "error", "the request is echoed: {reply:?}");
}

async fn alice(server: &TestServer) -> Client {
    Client::login(server, "alice@localhost", "a-pass", "phone").await
}

async fn bob_online(server: &TestServer) -> Client {
    Client::online(server, "bob@localhost", "b-pass", "laptop", 0).await
}

// ---------------------------------------------------------------------------------------
// Enable and disable (push.md section 3).

#[tokio::test]
async fn enable_fails_with_missing_attributes() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    // Without xmlns the child is in jabber:client: no protocol at all, answered by the router
    // (without the echo, which only the push module adds).
    let reply = iq(
        &mut alice,
        &format!("<iq type='set' id='bad'><enable jid='{APP_SERVER}' node='n'/></iq>"),
    )
    .await;
    assert_eq!(error_of(&reply), ("modify".into(), "bad-request".into()));
    assert_bad_request(&mut alice, &format!("<enable xmlns='{PUSH}' node='n'/>")).await;
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='{APP_SERVER}'/>"),
    )
    .await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn enable_fails_with_invalid_attributes_and_forms() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='' node='n'/>"),
    )
    .await;
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='{APP_SERVER}' node=''/>"),
    )
    .await;
    // A form field without value.
    let no_value = options_form(&[]).replace("</x>", "<field var='secret'/></x>");
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'>{no_value}</enable>"),
    )
    .await;
    // A form with the wrong FORM_TYPE.
    let wrong_type = options_form(&[("secret", "s")]).replace(
        "http://jabber.org/protocol/pubsub#publish-options",
        "urn:example:wrong",
    );
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'>{wrong_type}</enable>"),
    )
    .await;
    // A form not of type submit.
    let not_submit = options_form(&[("secret", "s")]).replace("type='submit'", "type='form'");
    assert_bad_request(
        &mut alice,
        &format!("<enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'>{not_submit}</enable>"),
    )
    .await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn iq_get_is_not_allowed() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    let reply = iq(
        &mut alice,
        &format!("<iq type='get' id='g'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'/></iq>"),
    )
    .await;
    assert_eq!(error_of(&reply), ("cancel".into(), "not-allowed".into()));
    assert!(reply.has_child("enable", PUSH), "echoed: {reply:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn enable_succeeds_without_form_and_with_form() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    let reply = iq(&mut alice, &enable_iq("no-form", "")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    assert_eq!(reply.attr("id"), Some("en-no-form"));
    assert!(reply.children().next().is_none(), "an empty result");
    let reply = iq(
        &mut alice,
        &enable_iq("with-form", &options_form(&[("secret", "s")])),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn enable_is_accepted_at_the_server_domain_and_the_own_bare_jid() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    for to in ["localhost", "alice@localhost"] {
        let reply = iq(
            &mut alice,
            &format!("<iq type='set' id='t' to='{to}'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'/></iq>"),
        )
        .await;
        assert_eq!(reply.attr("type"), Some("result"), "to {to}: {reply:?}");
    }
    // Not on another user's behalf.
    let reply = iq(
        &mut alice,
        &format!("<iq type='set' id='t' to='bob@localhost'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='n'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn disable_fails_without_jid_or_with_an_empty_jid_or_node() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    assert_bad_request(&mut alice, &format!("<disable xmlns='{PUSH}' node='n'/>")).await;
    assert_bad_request(
        &mut alice,
        &format!("<disable xmlns='{PUSH}' jid='' node='n'/>"),
    )
    .await;
    assert_bad_request(
        &mut alice,
        &format!("<disable xmlns='{PUSH}' jid='{APP_SERVER}' node=''/>"),
    )
    .await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn disable_all_and_disable_node_succeed_with_nothing_enabled() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    for payload in [
        format!("<disable xmlns='{PUSH}' jid='{APP_SERVER}'/>"),
        format!("<disable xmlns='{PUSH}' jid='{APP_SERVER}' node='never-enabled'/>"),
    ] {
        let reply = iq(&mut alice, &format!("<iq type='set' id='d'>{payload}</iq>")).await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    }
    s.server.shutdown().await;
}

async fn disco_features(client: &mut Client, to: &str) -> Vec<String> {
    let reply = iq(
        client,
        &format!("<iq type='get' id='disco' to='{to}'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    reply
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn disco_lists_the_push_feature_on_the_domain_and_the_account_when_configured() {
    let mut s = setup().await;
    let mut alice = alice(&s.server).await;
    assert!(
        disco_features(&mut alice, "localhost")
            .await
            .contains(&PUSH.to_owned())
    );
    assert!(
        disco_features(&mut alice, "alice@localhost")
            .await
            .contains(&PUSH.to_owned())
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn disco_does_not_list_the_push_feature_without_the_module() {
    let mut server = TestServer::start(WITHOUT_PUSH).await;
    server.add_user("alice@localhost", "a-pass").await;
    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "phone").await;
    assert!(
        !disco_features(&mut alice, "localhost")
            .await
            .contains(&PUSH.to_owned())
    );
    assert!(
        !disco_features(&mut alice, "alice@localhost")
            .await
            .contains(&PUSH.to_owned())
    );
    // And enable is not understood.
    let reply = iq(&mut alice, &enable_iq("n", "")).await;
    assert_eq!(error_of(&reply).1, "service-unavailable");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// When a push is produced (push.md section 4) and what it looks like (section 5).

#[tokio::test]
async fn no_push_when_not_enabled() {
    let mut s = setup().await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hello")).await;
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn an_offline_user_gets_exactly_one_push_with_the_summary_fields() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("OH, HAI!")).await;
    let publish = s.app.publish().await;
    assert_eq!(publish.from, "localhost");
    assert_eq!(publish.to, APP_SERVER);
    assert_eq!(publish.node, "n1");
    assert_eq!(publish.item_id, None);
    assert_eq!(
        publish.summary,
        pairs(&[
            ("FORM_TYPE", "urn:xmpp:push:summary"),
            ("message-count", "1"),
            ("last-message-sender", "bob@localhost"),
            ("last-message-body", "OH, HAI!"),
        ])
    );
    assert_eq!(publish.options, None, "publish-options omitted when empty");
    s.app.answer_result(&publish).await;
    assert!(s.app.nothing().await, "exactly one push");
    // The message was stored, not bounced.
    assert!(bob.nothing_within(QUIET).await);
    s.server.shutdown().await;
}

/// What modules record about a message travels beside it, never in its XML: a sender
/// cannot write "already notified" into a message to suppress its push.
#[tokio::test]
async fn a_sender_cannot_mark_a_message_as_already_pushed() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    let forged = format!(
        r#"{{"v":1,"push_notified":[{{"owner":"alice@localhost","pubsub":"{APP_SERVER}","node":"n1"}}]}}"#
    );
    bob_sends(
        &mut bob,
        &format!(
            "<message to='alice@localhost' type='chat' id='m'><body>hi</body>\
             <meta xmlns='urn:x-herald:internal'>{forged}</meta></message>"
        ),
    )
    .await;
    let publish = s.app.publish().await;
    assert_eq!(publish.node, "n1");
    s.app.answer_result(&publish).await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn publish_options_are_carried() {
    let mut s = setup().await;
    enable_for_alice(
        &s.server,
        "n1",
        &options_form(&[("service", "apns"), ("device_id", "TOKEN")]),
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    let publish = s.app.publish().await;
    assert_eq!(
        publish.options,
        Some(pairs(&[
            (
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#publish-options"
            ),
            ("device_id", "TOKEN"),
            ("service", "apns"),
        ]))
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn re_enable_overwrites_the_form() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", &options_form(&[("secret", "old")])).await;
    enable_for_alice(&s.server, "n1", &options_form(&[("secret", "new")])).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    let publish = s.app.publish().await;
    assert_eq!(
        publish.options.unwrap()[1..],
        pairs(&[("secret", "new")])[..]
    );
    assert!(s.app.nothing().await, "still one registration");
    s.server.shutdown().await;
}

#[tokio::test]
async fn no_push_when_the_user_is_online() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 0).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("you're here")).await;
    assert_eq!(
        alice
            .next_non_presence()
            .await
            .get_child("body", "jabber:client")
            .unwrap()
            .text(),
        "you're here"
    );
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_user_online_with_negative_priority_counts_as_offline() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let _alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", -1).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert_eq!(s.app.publish().await.node, "n1");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_user_after_unavailable_presence_counts_as_offline() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 0).await;
    alice.send("<presence type='unavailable'/>").await;
    let _ = alice.drain(Duration::from_millis(200)).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert_eq!(s.app.publish().await.node, "n1");
    s.server.shutdown().await;
}

#[tokio::test]
async fn no_push_after_disable() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut alice = alice(&s.server).await;
    let reply = iq(
        &mut alice,
        &format!(
            "<iq type='set' id='d'><disable xmlns='{PUSH}' jid='{APP_SERVER}' node='n1'/></iq>"
        ),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"));
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn disable_without_node_removes_every_node_at_that_service() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    enable_for_alice(&s.server, "n2", "").await;
    let mut alice = alice(&s.server).await;
    let reply = iq(
        &mut alice,
        &format!("<iq type='set' id='d'><disable xmlns='{PUSH}' jid='{APP_SERVER}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"));
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn no_push_after_the_account_was_removed_and_re_created() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let server = &s.server.running.as_ref().unwrap().server;
    let alice_jid = BareJid::new("alice@localhost").unwrap();
    assert!(server.remove_account(&alice_jid).await.unwrap());
    s.server.add_user("alice@localhost", "a-pass").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn no_push_for_headline_normal_error_bodiless_and_empty_body_messages() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    for message in [
        "<message to='alice@localhost' type='headline'><body>news</body></message>",
        "<message to='alice@localhost' type='normal'><body>plain</body></message>",
        "<message to='alice@localhost'><body>untyped</body></message>",
        "<message to='alice@localhost' type='error'><body>oops</body></message>",
        "<message to='alice@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message to='alice@localhost' type='chat'><body></body></message>",
    ] {
        bob_sends(&mut bob, message).await;
    }
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_whitespace_only_body_pushes() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("   ")).await;
    assert_eq!(
        s.app.publish().await.field("last-message-body"),
        Some("   ")
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn two_registrations_get_one_push_each() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "phone", "").await;
    enable_for_alice(&s.server, "tablet", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    let mut nodes = vec![s.app.publish().await.node, s.app.publish().await.node];
    nodes.sort();
    assert_eq!(nodes, ["phone", "tablet"]);
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The app server's answer (push.md section 5).

#[tokio::test]
async fn a_cancel_error_disables_the_registration() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("first")).await;
    let publish = s.app.publish().await;
    s.app
        .answer_error(&publish, "cancel", "item-not-found")
        .await;
    tokio::time::sleep(QUIET).await;
    bob_sends(&mut bob, &chat("second")).await;
    assert!(s.app.nothing().await, "the registration was disabled");
    s.server.shutdown().await;
}

#[tokio::test]
async fn wait_and_modify_errors_keep_the_registration() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    for (type_, condition) in [
        ("wait", "resource-constraint"),
        ("modify", "not-acceptable"),
    ] {
        bob_sends(&mut bob, &chat(type_)).await;
        let publish = s.app.publish().await;
        s.app.answer_error(&publish, type_, condition).await;
    }
    bob_sends(&mut bob, &chat("still there")).await;
    assert_eq!(
        s.app.publish().await.field("last-message-body"),
        Some("still there")
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn an_app_server_that_never_answers_blocks_nothing() {
    // Three publishes wait on the silent app server; one app server has at most
    // `wpool.workers - 1` in flight, so five workers leave it room for the later one.
    let mut s = setup_with(&CONFIG.replace("wpool.workers = 4", "wpool.workers = 5")).await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    for n in 0..3 {
        bob_sends(&mut bob, &chat(&format!("unanswered {n}"))).await;
        s.app.publish().await;
    }
    // Routing still works meanwhile, and later messages still push.
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 0).await;
    let delivered = alice.drain(QUIET).await;
    assert_eq!(
        delivered.iter().filter(|m| m.name() == "message").count(),
        3,
        "the offline messages: {delivered:?}"
    );
    alice.send("</stream:stream>").await;
    alice.closed().await;
    bob_sends(&mut bob, &chat("later")).await;
    assert_eq!(
        s.app.publish().await.field("last-message-body"),
        Some("later")
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_pushed_message_stored_offline_is_delivered_at_login_and_not_pushed_again() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("while you were away")).await;
    let publish = s.app.publish().await;
    s.app.answer_result(&publish).await;
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 0).await;
    let message = alice.next_non_presence().await;
    assert_eq!(
        message.get_child("body", "jabber:client").unwrap().text(),
        "while you were away"
    );
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", &options_form(&[("secret", "kept")])).await;
    s.server.shutdown().await;
    let running = herald_server::app::start(&s.server.config).await.unwrap();
    let addr = running.service_addrs[0];
    s.server.running = Some(running);
    let mut app = AppServer::connect(addr).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("after restart")).await;
    let publish = app.publish().await;
    assert_eq!(publish.node, "n1");
    assert_eq!(
        publish.options.unwrap()[1..],
        pairs(&[("secret", "kept")])[..]
    );
    s.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Stream management (push.md section 7).

fn sm_config(plugin: &str) -> String {
    format!(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{{DATA}}"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"

[modules.mod_disco]
[modules.mod_offline]
[modules.mod_stream_management]
resume_timeout = 2

[modules.mod_event_pusher.push]
plugin_module = "{plugin}"
"#
    )
}

async fn sm_setup(plugin: &str) -> Setup {
    let server = TestServer::start(&sm_config(plugin)).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    let app = AppServer::connect(addr).await;
    Setup { server, app }
}

/// Alice's phone: logged in, push enabled for `node` in this session, stream management with
/// resumption, available.
async fn alice_phone_with_sm(server: &TestServer, node: &str) -> Client {
    let mut phone = alice(server).await;
    let reply = iq(&mut phone, &enable_iq(node, "")).await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    phone
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    assert_eq!(phone.next().await.name(), "enabled");
    phone.send("<presence/>").await;
    loop {
        let e = phone.next().await;
        if e.name() == "presence" && e.attr("from") == phone.jid.as_deref() {
            break;
        }
    }
    phone
}

async fn next_message(client: &mut Client) -> Element {
    loop {
        let e = client.next().await;
        if e.name() == "message" {
            return e;
        }
    }
}

fn chat_with_id(id: &str) -> String {
    format!("<message to='alice@localhost' type='chat' id='{id}'><body>{id}</body></message>")
}

#[tokio::test]
async fn enhanced_pushes_a_waiting_sessions_messages_to_its_own_device_once() {
    let mut s = sm_setup("enhanced").await;
    enable_for_alice(&s.server, "tablet", "").await;
    let mut phone = alice_phone_with_sm(&s.server, "phone").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat_with_id("m1")).await;
    assert_eq!(next_message(&mut phone).await.attr("id"), Some("m1"));
    // The phone never acknowledges m1, and its connection dies.
    drop(phone);
    let publish = s.app.publish().await;
    assert_eq!(
        (publish.node.as_str(), publish.field("last-message-body")),
        ("phone", Some("m1"))
    );
    s.app.answer_result(&publish).await;
    // While the session waits, a new message also goes to the phone only.
    bob_sends(&mut bob, &chat_with_id("m2")).await;
    let publish = s.app.publish().await;
    assert_eq!(
        (publish.node.as_str(), publish.field("last-message-body")),
        ("phone", Some("m2"))
    );
    s.app.answer_result(&publish).await;
    // The session times out: the messages are routed again to the now offline user, and go
    // to the registrations not yet notified (the tablet), never twice to the phone.
    let mut late = Vec::new();
    for _ in 0..2 {
        let publish = s.app.publish().await;
        s.app.answer_result(&publish).await;
        late.push((
            publish.node.clone(),
            publish.field("last-message-body").unwrap().to_owned(),
        ));
    }
    late.sort();
    assert_eq!(
        late,
        [
            ("tablet".to_owned(), "m1".to_owned()),
            ("tablet".to_owned(), "m2".to_owned())
        ]
    );
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn defaults_waits_for_a_resumable_session_to_end_before_pushing() {
    let mut s = sm_setup("defaults").await;
    let mut phone = alice_phone_with_sm(&s.server, "phone").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat_with_id("m1")).await;
    assert_eq!(next_message(&mut phone).await.attr("id"), Some("m1"));
    drop(phone);
    // The user still counts as online while the session waits for resumption...
    assert!(s.app.nothing().await);
    // ...and once it ends, the message is pushed exactly once.
    let publish = s.app.publish().await;
    assert_eq!(
        (publish.node.as_str(), publish.field("last-message-body")),
        ("phone", Some("m1"))
    );
    s.app.answer_result(&publish).await;
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn hints_never_pushes_no_store_and_pushes_calls() {
    let mut s = sm_setup("mod_event_pusher_push_plugin_hints").await;
    enable_for_alice(&s.server, "phone", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(
        &mut bob,
        "<message to='alice@localhost' type='chat' id='h1'><body>secret</body>\
         <no-store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    assert!(s.app.nothing().await);
    // no-copy does not block a push (only no-store does).
    bob_sends(
        &mut bob,
        "<message to='alice@localhost' type='chat' id='h2'><body>copy</body>\
         <no-copy xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    let publish = s.app.publish().await;
    assert_eq!(publish.field("last-message-body"), Some("copy"));
    s.app.answer_result(&publish).await;
    bob_sends(
        &mut bob,
        "<message to='alice@localhost' type='chat' id='call1'>\
         <propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894'>\
         <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>\
         <store xmlns='urn:xmpp:hints'/></message>",
    )
    .await;
    let publish = s.app.publish().await;
    assert_eq!(
        publish.summary,
        pairs(&[
            ("FORM_TYPE", "urn:xmpp:push:summary"),
            ("message-sender", "bob@localhost"),
            ("jingle-message", "propose"),
            ("jingle-session-id", "ca3cf894"),
        ])
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn herald_user_remove_deletes_the_registrations() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    s.server.shutdown().await;
    herald_server::app::user_remove(&s.server.config, "alice@localhost")
        .await
        .unwrap();
    let running = herald_server::app::start(&s.server.config).await.unwrap();
    let addr = running.service_addrs[0];
    s.server.running = Some(running);
    s.server.add_user("alice@localhost", "a-pass").await;
    let mut app = AppServer::connect(addr).await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hi")).await;
    assert!(app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_groupchat_message_to_an_offline_member_pushes_with_the_room_nick_as_sender() {
    let mut s = setup().await;
    enable_for_alice(&s.server, "n1", "").await;
    // The app server's component plays the room too.
    s.app
        .send(&format!(
            "<message type='groupchat' from='Room@{APP_SERVER}/Bob' to='alice@localhost' id='g1'><body>hi all</body></message>"
        ))
        .await;
    // Groupchat is not stored offline: the room gets an error back, and the publish.
    let mut bounce = None;
    let mut publish = None;
    while bounce.is_none() || publish.is_none() {
        match s.app.frame(Duration::from_secs(10)).await {
            Some(Frame::Element(e)) if e.name() == "message" => bounce = Some(e),
            Some(Frame::Element(e)) if e.name() == "iq" => publish = Some(Publish::from(e)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bounce.unwrap().attr("type"), Some("error"));
    let publish = publish.unwrap();
    assert_eq!(
        publish.summary,
        pairs(&[
            ("FORM_TYPE", "urn:xmpp:push:summary"),
            ("message-count", "1"),
            ("last-message-sender", &format!("room@{APP_SERVER}/bob")),
            ("last-message-body", "hi all"),
        ])
    );
    s.app.answer_result(&publish).await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_pushed_message_delivered_from_offline_storage_and_never_acknowledged_is_stored_again_without_a_second_push()
 {
    let mut s = sm_setup("defaults").await;
    enable_for_alice(&s.server, "phone", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat_with_id("m1")).await;
    let publish = s.app.publish().await;
    assert_eq!(publish.field("last-message-body"), Some("m1"));
    s.app.answer_result(&publish).await;
    // The phone comes back with stream management: m1 comes from offline storage...
    let mut phone = alice_phone_with_sm(&s.server, "phone").await;
    assert_eq!(next_message(&mut phone).await.attr("id"), Some("m1"));
    // ...is never acknowledged, and the connection dies; the session times out (2 s).
    drop(phone);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.app.nothing().await,
        "m1 was already pushed to this registration"
    );
    // m1 went back to offline storage: the next login gets it again.
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "laptop", 0).await;
    assert_eq!(next_message(&mut alice).await.attr("id"), Some("m1"));
    assert!(s.app.nothing().await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn two_sessions_in_resumption_can_push_the_same_message_to_the_same_device_twice() {
    // push.md section 7: the documented duplicate pattern with the enhanced plugin.
    let mut s = sm_setup("enhanced").await;
    let mut first = alice_phone_with_sm(&s.server, "device").await;
    let mut bob = bob_online(&s.server).await;
    let mut second = Client::login(&s.server, "alice@localhost", "a-pass", "tablet").await;
    let reply = iq(&mut second, &enable_iq("device", "")).await;
    assert_eq!(reply.attr("type"), Some("result"));
    second
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    assert_eq!(second.next().await.name(), "enabled");
    second.send("<presence/>").await;
    let _ = second.drain(QUIET).await;
    let _ = first.drain(QUIET).await;
    bob_sends(&mut bob, &chat_with_id("m1")).await;
    assert_eq!(next_message(&mut first).await.attr("id"), Some("m1"));
    assert_eq!(next_message(&mut second).await.attr("id"), Some("m1"));
    drop(first);
    drop(second);
    let mut pushes = Vec::new();
    for _ in 0..2 {
        let publish = s.app.publish().await;
        s.app.answer_result(&publish).await;
        pushes.push((
            publish.node.clone(),
            publish.field("last-message-body").unwrap().to_owned(),
        ));
    }
    assert_eq!(
        pushes,
        [
            ("device".to_owned(), "m1".to_owned()),
            ("device".to_owned(), "m1".to_owned())
        ]
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_groupchat_of_an_ended_session_is_pushed_with_the_room_nick_as_sender() {
    let mut s = sm_setup("defaults").await;
    let mut phone = alice_phone_with_sm(&s.server, "phone").await;
    s.app
        .send(&format!(
            "<message type='groupchat' from='room@{APP_SERVER}/carol' to='alice@localhost/phone' id='g1'><body>hello room</body></message>"
        ))
        .await;
    assert_eq!(next_message(&mut phone).await.attr("id"), Some("g1"));
    drop(phone);
    // While the session waits nothing is pushed; when it times out (2 s) the message is
    // routed again, the user is offline, and the push names the room occupant.
    let mut publish = None;
    while publish.is_none() {
        match s.app.frame(Duration::from_secs(10)).await {
            Some(Frame::Element(e)) if e.name() == "iq" => publish = Some(Publish::from(e)),
            Some(Frame::Element(e)) if e.name() == "message" => {
                assert_eq!(
                    e.attr("type"),
                    Some("error"),
                    "groupchat is bounced, not stored"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let publish = publish.unwrap();
    assert_eq!(
        publish.field("last-message-sender"),
        Some(format!("room@{APP_SERVER}/carol").as_str())
    );
    assert_eq!(publish.field("last-message-body"), Some("hello room"));
    s.app.answer_result(&publish).await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn enabling_past_max_registrations_replaces_the_oldest() {
    let config = CONFIG.replace(
        "wpool.workers = 4",
        "wpool.workers = 4\nmax_registrations = 2",
    );
    let mut s = setup_with(&config).await;
    for node in ["oldest", "middle", "newest"] {
        enable_for_alice(&s.server, node, "").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Re-enabling a kept registration does not push another one out.
    enable_for_alice(&s.server, "middle", "").await;
    let mut bob = bob_online(&s.server).await;
    bob_sends(&mut bob, &chat("hello")).await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let publish = s.app.publish().await;
        s.app.answer_result(&publish).await;
        nodes.push(publish.node.clone());
    }
    nodes.sort();
    assert_eq!(nodes, ["middle", "newest"]);
    assert!(s.app.nothing().await, "the oldest was replaced");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_flood_to_one_user_at_a_silent_app_server_does_not_delay_another_users_push() {
    // Three workers: one app server has at most two publishes in flight, and one recipient
    // at most a share of the queue.
    let config = CONFIG.replace("wpool.workers = 4", "wpool.workers = 3");
    let mut s = setup_with(&config).await;
    s.server.add_user("carol@localhost", "c-pass").await;
    let addr = s.server.running.as_ref().unwrap().service_addrs[0];
    // An app server that takes publishes and never answers.
    let mut silent =
        common::component::Component::connect(addr, "silent.localhost", "secret").await;
    // Alice has the most registrations allowed (10), all at the silent app server.
    let mut alice = Client::login(&s.server, "alice@localhost", "a-pass", "phone").await;
    for n in 0..10 {
        let reply = iq(
            &mut alice,
            &format!(
                "<iq type='set' id='e{n}'><enable xmlns='{PUSH}' jid='silent.localhost' node='node-{n}'/></iq>"
            ),
        )
        .await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    }
    alice.send("</stream:stream>").await;
    alice.closed().await;
    // Carol has one, at the app server that answers.
    let mut carol = Client::login(&s.server, "carol@localhost", "c-pass", "phone").await;
    let reply = iq(&mut carol, &enable_iq("carols-phone", "")).await;
    assert_eq!(reply.attr("type"), Some("result"));
    carol.send("</stream:stream>").await;
    carol.closed().await;

    let mut bob = bob_online(&s.server).await;
    for n in 0..30 {
        bob_sends(&mut bob, &chat(&format!("flood {n}"))).await;
    }
    let started = std::time::Instant::now();
    bob.send("<message to='carol@localhost' type='chat' id='c'><body>for carol</body></message>")
        .await;
    let publish = s.app.publish().await;
    let waited = started.elapsed();
    assert_eq!(publish.node, "carols-phone");
    assert_eq!(publish.field("last-message-body"), Some("for carol"));
    // `publish` gives up after 10 s, and the silent app server's publishes wait 32 s for
    // their timeout: carol's went out while they were all still unanswered.
    println!(
        "figure: another user's push {waited:?} after 300 notifications queued for a silent app server"
    );
    // The silent app server got its share: two publishes, not every worker.
    let mut held = 0;
    while let Some(Frame::Element(_)) = silent.frame(QUIET).await {
        held += 1;
    }
    assert_eq!(held, 2, "at most workers - 1 publishes to one app server");
    s.server.shutdown().await;
}
