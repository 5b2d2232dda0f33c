//! Black-box tests of virtual pubsub hosts and the MongoosePush HTTP push service
//! `docs/modules/push.md` section 8): herald started from a real configuration file, clients
//! speaking raw XML over real sockets, and the push service played by a real local HTTP/1.1
//! (or HTTPS) server (`common/http.rs`) that records each request and answers as the test
//! needs. Covers MongooseIM's `mod_push_service_mongoosepush` cases for APNs and FCM.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{TestServer, client::Client, component::Component, http::PushService, http::Recorded};
use herald_server::config::Config;
use minidom::Element;
use serde_json::{Map, Value, json};

const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA_FORMS: &str = "jabber:x:data";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// The virtual pubsub host `virtual.@HOST@` for alice's domain.
const VIRTUAL: &str = "virtual.localhost";
/// The virtual pubsub host listed as an exact domain.
const EXACT: &str = "push.example.com";

/// How long a request that is going to arrive may take.
const WAIT: Duration = Duration::from_secs(5);
/// A quiet period long enough for a request that was going to happen to have arrived.
const QUIET: Duration = Duration::from_millis(500);
/// Time for herald to act on an answer it has just received (disable a registration, put a
/// connection back into its pool). Not an assertion.
const SETTLE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Configuration.

/// How herald reaches the push service.
struct Http<'a> {
    url: String,
    api_version: &'a str,
    path_prefix: &'a str,
    request_timeout: u32,
    max_http_connections: u32,
    /// Extra lines of the pool table, e.g. `connection.tls.cacertfile = "..."`.
    tls: String,
}

impl Http<'_> {
    fn to(service: &PushService) -> Http<'static> {
        Http {
            url: service.url(),
            api_version: "v3",
            path_prefix: "/",
            request_timeout: 2000,
            max_http_connections: 10,
            tls: match service.ca_file() {
                Some(ca) => cacertfile(ca),
                None => String::new(),
            },
        }
    }
}

fn cacertfile(ca: &Path) -> String {
    format!("connection.tls.cacertfile = \"{}\"\n", ca.display())
}

fn config(http: &Http) -> String {
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

[modules.mod_event_pusher.push]
wpool.workers = 4
# These cases test what one answer does; retries have their own (tests/retries.rs).
retry.max_retries = 0
# MongooseIM's payload (message-count 1) and one notification per message: unread counts and
# pacing have their own cases (tests/notifications.rs).
unread_count = false
pacing.rate_limit = 0
# One user holds a registration per case of the option matrix.
max_registrations = 100
virtual_pubsub_hosts = ["virtual.@HOST@", "{EXACT}"]

[modules.mod_push_service_mongoosepush]
pool_name = "mongoose_push_http"
api_version = "{api_version}"
max_http_connections = {max_http_connections}

[outgoing_pools.http.mongoose_push_http]
connection.host = "{url}"
connection.path_prefix = "{path_prefix}"
connection.request_timeout = {request_timeout}
{tls}"#,
        api_version = http.api_version,
        url = http.url,
        path_prefix = http.path_prefix,
        request_timeout = http.request_timeout,
        max_http_connections = http.max_http_connections,
        tls = http.tls,
    )
}

struct Setup {
    server: TestServer,
    http: PushService,
}

async fn start(http: PushService, config: &str) -> Setup {
    let server = TestServer::start(config).await;
    for (user, password) in [
        ("alice@localhost", "a-pass"),
        ("bob@localhost", "b-pass"),
        ("carol@localhost", "c-pass"),
    ] {
        server.add_user(user, password).await;
    }
    Setup { server, http }
}

/// Plain HTTP, API v3, path prefix `/`.
async fn setup() -> Setup {
    let http = PushService::plain().await;
    let config = config(&Http::to(&http));
    start(http, &config).await
}

// ---------------------------------------------------------------------------------------
// Clients.

/// Send an IQ and return the reply (skipping presence).
async fn iq(client: &mut Client, xml: &str) -> Element {
    client.send(xml).await;
    client.next_non_presence().await
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

fn enable_iq(jid: &str, node: &str, form: &str) -> String {
    format!(
        "<iq type='set' id='en-{node}'><enable xmlns='{PUSH}' jid='{jid}' node='{node}'>{form}</enable></iq>"
    )
}

/// One registration: pubsub JID, node, publish-options fields.
type Registration<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Log alice in (no presence), enable every registration, and log out: she is offline.
async fn enable_for_alice(server: &TestServer, registrations: &[Registration<'_>]) {
    let mut alice = Client::login(server, "alice@localhost", "a-pass", "phone").await;
    for (jid, node, fields) in registrations {
        let reply = iq(&mut alice, &enable_iq(jid, node, &options_form(fields))).await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    }
    alice.send("</stream:stream>").await;
    alice.closed().await;
}

/// Alice enables one registration at `virtual.localhost` for `service` and `device`.
async fn enable_device(server: &TestServer, node: &str, service: &str, device: &str) {
    enable_for_alice(
        server,
        &[(
            VIRTUAL,
            node,
            vec![("service", service), ("device_id", device)],
        )],
    )
    .await;
}

async fn bob_online(server: &TestServer) -> Client {
    Client::online(server, "bob@localhost", "b-pass", "laptop", 0).await
}

async fn carol_online(server: &TestServer) -> Client {
    Client::online(server, "carol@localhost", "c-pass", "desk", 0).await
}

fn chat(to: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='m'><body>{body}</body></message>")
}

/// Bob sends alice (offline) a chat message.
async fn bob_to_alice(bob: &mut Client, body: &str) {
    bob.send(&chat("alice@localhost", body)).await;
}

/// The body of the next message `client` receives.
async fn next_body(client: &mut Client) -> String {
    loop {
        let stanza = client.next().await;
        if stanza.name() == "message" {
            return stanza
                .get_child("body", "jabber:client")
                .map(Element::text)
                .unwrap_or_default();
        }
    }
}

/// Bob's message to carol (online) arrives: routing works.
async fn routing_works(bob: &mut Client, carol: &mut Client, body: &str) {
    bob.send(&chat("carol@localhost", body)).await;
    assert_eq!(next_body(carol).await, body);
}

// ---------------------------------------------------------------------------------------
// The push service's side.

/// The next request; panics if none arrives within [`WAIT`].
async fn request(http: &mut PushService) -> Recorded {
    http.next_request(WAIT)
        .await
        .expect("a request to the push service")
}

/// Asserts that no request arrives within [`QUIET`].
async fn assert_quiet(http: &mut PushService, why: &str) {
    if let Some(request) = http.next_request(QUIET).await {
        panic!("{why}: unexpected request {request:?}");
    }
}

/// Asserts the request is a JSON POST to `path` with exactly `body`.
fn assert_notification(request: &Recorded, path: &str, body: &Value) {
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(request.path, path, "{request:?}");
    assert_eq!(
        request.media_type().as_deref(),
        Some("application/json"),
        "{request:?}"
    );
    assert_eq!(&request.body, body, "the JSON body of {path}");
}

/// The body of a visible notification from `sender`.
fn alert(service: &str, body: &str, sender: &str) -> Value {
    json!({
        "service": service,
        "alert": {"body": body, "title": sender, "tag": sender, "badge": 1},
    })
}

/// The body of a silent notification from `sender`.
fn silent(service: &str, body: &str, sender: &str) -> Value {
    json!({
        "service": service,
        "data": {
            "message-count": 1,
            "last-message-sender": sender,
            "last-message-body": body,
        },
    })
}

/// `value` with `fields` added at the top level.
fn with(mut value: Value, fields: &[(&str, &str)]) -> Value {
    let object = value.as_object_mut().unwrap();
    for (key, field) in fields {
        object.insert((*key).to_owned(), Value::String((*field).to_owned()));
    }
    value
}

/// `value` with `fields` added to its `alert`.
fn with_in_alert(mut value: Value, fields: &[(&str, &str)]) -> Value {
    let alert: &mut Map<String, Value> = value["alert"].as_object_mut().unwrap();
    for (key, field) in fields {
        alert.insert((*key).to_owned(), Value::String((*field).to_owned()));
    }
    value
}

// ---------------------------------------------------------------------------------------
// A component (XEP-0114), for a room sending groupchat and a real pubsub service.

/// A component connected to `server`'s service listener as `name`.
async fn connect_component(server: &TestServer, name: &str) -> Component {
    let addr = server.running.as_ref().unwrap().service_addrs[0];
    Component::connect(addr, name, "secret").await
}

// ---------------------------------------------------------------------------------------
// The request.

#[tokio::test]
async fn a_chat_message_to_an_offline_user_is_posted_as_an_alert_to_the_v3_endpoint() {
    let mut s = setup().await;
    enable_device(&s.server, "n1", "apns", "DEVICE").await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "OH, HAI!").await;
    let request = request(&mut s.http).await;
    assert_notification(
        &request,
        "/v3/notification/DEVICE",
        &alert("apns", "OH, HAI!", "bob@localhost"),
    );
    assert_quiet(&mut s.http, "exactly one request per message").await;
    // The message was stored for alice, not bounced to bob.
    assert!(bob.nothing_within(QUIET).await);
    s.server.shutdown().await;
}

#[tokio::test]
async fn silent_true_posts_the_summary_as_data_with_an_integer_count() {
    let mut s = setup().await;
    enable_for_alice(
        &s.server,
        &[(
            VIRTUAL,
            "n1",
            vec![
                ("service", "fcm"),
                ("device_id", "SILENT"),
                ("silent", "true"),
            ],
        )],
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "quietly").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/SILENT",
        &silent("fcm", "quietly", "bob@localhost"),
    );
    s.server.shutdown().await;
}

/// MongooseIM's `mod_push_service_mongoosepush` cases, for APNs and FCM: one registration
/// per case, all notified by one message.
#[tokio::test]
async fn every_option_case_shapes_the_request_for_apns_and_fcm() {
    let mut s = setup().await;
    let body = "table";
    let sender = "bob@localhost";
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        fn(&str) -> Value,
    );
    let cases: Vec<Case> = vec![
        ("priority-high", vec![("priority", "high")], |svc| {
            with(
                alert(svc, "table", "bob@localhost"),
                &[("priority", "high")],
            )
        }),
        ("silent", vec![("silent", "true")], |svc| {
            silent(svc, "table", "bob@localhost")
        }),
        (
            "silent-priority",
            vec![("silent", "true"), ("priority", "high")],
            |svc| {
                with(
                    silent(svc, "table", "bob@localhost"),
                    &[("priority", "high")],
                )
            },
        ),
        (
            "click-action",
            vec![("click_action", "a.b.c.OPEN_CHAT")],
            |svc| {
                with_in_alert(
                    alert(svc, "table", "bob@localhost"),
                    &[("click_action", "a.b.c.OPEN_CHAT")],
                )
            },
        ),
        ("no-click-action", vec![], |svc| {
            alert(svc, "table", "bob@localhost")
        }),
        ("topic", vec![("topic", "com.example.app")], |svc| {
            with(
                alert(svc, "table", "bob@localhost"),
                &[("topic", "com.example.app")],
            )
        }),
        ("sound", vec![("sound", "bing.caf")], |svc| {
            with_in_alert(
                alert(svc, "table", "bob@localhost"),
                &[("sound", "bing.caf")],
            )
        }),
        (
            "copied-as-strings",
            vec![
                ("mode", "dev"),
                ("mutable_content", "true"),
                ("time_to_live", "3600"),
                ("tags", "never-forwarded"),
            ],
            |svc| {
                with(
                    alert(svc, "table", "bob@localhost"),
                    &[
                        ("mode", "dev"),
                        ("mutable_content", "true"),
                        ("time_to_live", "3600"),
                    ],
                )
            },
        ),
        (
            "silent-ignores-alert-fields",
            vec![
                ("silent", "true"),
                ("click_action", "OPEN"),
                ("sound", "bing.caf"),
                ("topic", "com.example.app"),
            ],
            |svc| {
                with(
                    silent(svc, "table", "bob@localhost"),
                    &[("topic", "com.example.app")],
                )
            },
        ),
        ("silent-false", vec![("silent", "false")], |svc| {
            alert(svc, "table", "bob@localhost")
        }),
        ("silent-not-exactly-true", vec![("silent", "True")], |svc| {
            alert(svc, "table", "bob@localhost")
        }),
    ];
    let mut registrations = Vec::new();
    let mut expected = BTreeMap::new();
    let devices: Vec<(String, &'static str, &Case)> = ["apns", "fcm"]
        .iter()
        .flat_map(|svc| {
            cases
                .iter()
                .map(move |case| (format!("{svc}-{}", case.0), *svc, case))
        })
        .collect();
    for (device, svc, (_, options, make)) in &devices {
        let mut fields = vec![("service", *svc), ("device_id", device.as_str())];
        fields.extend(options.iter().copied());
        registrations.push((VIRTUAL, device.as_str(), fields));
        expected.insert(format!("/v3/notification/{device}"), make(svc));
    }
    enable_for_alice(&s.server, &registrations).await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, body).await;
    let mut got = BTreeMap::new();
    for _ in 0..expected.len() {
        let request = request(&mut s.http).await;
        assert_eq!(request.method, "POST", "{request:?}");
        assert_eq!(
            request.media_type().as_deref(),
            Some("application/json"),
            "{request:?}"
        );
        assert!(
            got.insert(request.path.clone(), request.body.clone())
                .is_none(),
            "one request per registration: {request:?}"
        );
    }
    assert_quiet(&mut s.http, "one request per registration").await;
    for (path, want) in &expected {
        assert_eq!(got.get(path), Some(want), "{path} (sender {sender})");
    }
    assert_eq!(got.len(), expected.len());
    s.server.shutdown().await;
}

#[tokio::test]
async fn api_v2_and_the_path_prefix_shape_the_url() {
    let http = PushService::plain().await;
    let config = config(&Http {
        api_version: "v2",
        path_prefix: "/mongoose/",
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "fcm", "DEVICE2").await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "v2").await;
    assert_notification(
        &request(&mut s.http).await,
        "/mongoose/v2/notification/DEVICE2",
        &alert("fcm", "v2", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn an_exact_domain_virtual_host_is_posted_over_http() {
    let mut s = setup().await;
    enable_for_alice(
        &s.server,
        &[(
            EXACT,
            "n1",
            vec![("service", "apns"), ("device_id", "EXACTDEV")],
        )],
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "exact").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/EXACTDEV",
        &alert("apns", "exact", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_registration_at_a_non_virtual_host_is_published_over_xmpp_not_http() {
    let mut s = setup().await;
    let mut pubsub = connect_component(&s.server, "pubsub.localhost").await;
    enable_for_alice(
        &s.server,
        &[(
            "pubsub.localhost",
            "real",
            vec![("service", "apns"), ("device_id", "XMPPDEV")],
        )],
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "over xmpp").await;
    let publish = pubsub.next_named("iq", WAIT).await.expect("a publish");
    let node = publish
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("publish", PUBSUB))
        .and_then(|p| p.attr("node"));
    assert_eq!(node, Some("real"), "{publish:?}");
    assert_quiet(&mut s.http, "a real pubsub service is not virtual").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_virtual_host_registration_is_never_published_over_xmpp() {
    let mut s = setup().await;
    // Even a component answering at the virtual host's name gets no publish.
    let mut component = connect_component(&s.server, VIRTUAL).await;
    enable_device(&s.server, "n1", "apns", "VIRTDEV").await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "http only").await;
    assert_eq!(request(&mut s.http).await.path, "/v3/notification/VIRTDEV");
    match component.frame(QUIET).await {
        None => {}
        Some(other) => panic!("nothing goes to the virtual host over XMPP: {other:?}"),
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_device_id_cannot_leave_its_path_segment() {
    let mut s = setup().await;
    let device = "../../admin?x=1 y#z/w";
    enable_for_alice(
        &s.server,
        &[(
            VIRTUAL,
            "odd",
            vec![("service", "fcm"), ("device_id", device)],
        )],
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "odd device").await;
    let request = request(&mut s.http).await;
    let segment = request
        .path
        .strip_prefix("/v3/notification/")
        .unwrap_or_else(|| panic!("{request:?}"));
    assert!(
        !segment.contains(['/', '?', '#']),
        "the device id stays one segment: {request:?}"
    );
    assert_eq!(percent_decode(segment), device);
    assert_eq!(request.body, alert("fcm", "odd device", "bob@localhost"));
    s.server.shutdown().await;
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_groupchat_message_is_posted_with_the_room_nick_as_sender() {
    let mut s = setup().await;
    let mut room = connect_component(&s.server, "muc.localhost").await;
    enable_for_alice(
        &s.server,
        &[
            (
                VIRTUAL,
                "loud",
                vec![("service", "apns"), ("device_id", "LOUD")],
            ),
            (
                VIRTUAL,
                "quiet",
                vec![
                    ("service", "fcm"),
                    ("device_id", "QUIET"),
                    ("silent", "true"),
                ],
            ),
        ],
    )
    .await;
    room.send(
        "<message type='groupchat' from='Room@muc.localhost/Bob' to='alice@localhost' id='g1'>\
         <body>hi all</body></message>",
    )
    .await;
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let request = request(&mut s.http).await;
        got.insert(request.path.clone(), request);
    }
    let sender = "room@muc.localhost/bob";
    assert_notification(
        &got["/v3/notification/LOUD"],
        "/v3/notification/LOUD",
        &alert("apns", "hi all", sender),
    );
    assert_notification(
        &got["/v3/notification/QUIET"],
        "/v3/notification/QUIET",
        &silent("fcm", "hi all", sender),
    );
    assert_quiet(&mut s.http, "one request per registration").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_message_to_an_online_user_is_not_posted() {
    let mut s = setup().await;
    enable_device(&s.server, "n1", "apns", "DEVICE").await;
    let mut alice = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 0).await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "you're here").await;
    assert_eq!(next_body(&mut alice).await, "you're here");
    assert_quiet(&mut s.http, "alice is online").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_registration_without_service_or_device_id_sends_nothing_and_others_still_work() {
    let mut s = setup().await;
    enable_for_alice(
        &s.server,
        &[
            (VIRTUAL, "no-service", vec![("device_id", "NOSERVICE")]),
            (VIRTUAL, "no-device", vec![("service", "apns")]),
            (VIRTUAL, "nothing", vec![]),
        ],
    )
    .await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "incomplete").await;
    assert_quiet(&mut s.http, "incomplete options send nothing").await;
    // The server still routes, and a correct registration beside them is still posted.
    let mut carol = carol_online(&s.server).await;
    routing_works(&mut bob, &mut carol, "still routing").await;
    enable_device(&s.server, "good", "fcm", "GOOD").await;
    bob_to_alice(&mut bob, "complete").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/GOOD",
        &alert("fcm", "complete", "bob@localhost"),
    );
    assert_quiet(&mut s.http, "only the complete registration").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn disco_on_the_server_domain_lists_push() {
    let mut s = setup().await;
    let mut alice = Client::login(&s.server, "alice@localhost", "a-pass", "phone").await;
    let reply = iq(
        &mut alice,
        &format!("<iq type='get' id='disco' to='localhost'><query xmlns='{DISCO_INFO}'/></iq>"),
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let features: Vec<&str> = reply
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    assert!(features.contains(&PUSH), "{features:?}");
    s.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The push service's answers.

#[tokio::test]
async fn a_410_on_v3_disables_the_registration() {
    let mut s = setup().await;
    enable_device(&s.server, "gone", "apns", "GONE").await;
    enable_device(&s.server, "kept", "apns", "KEPT").await;
    s.http.set_status_for("/v3/notification/GONE", 410);
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "first").await;
    let mut paths = vec![
        request(&mut s.http).await.path,
        request(&mut s.http).await.path,
    ];
    paths.sort();
    assert_eq!(paths, ["/v3/notification/GONE", "/v3/notification/KEPT"]);
    tokio::time::sleep(SETTLE).await;
    bob_to_alice(&mut bob, "second").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/KEPT",
        &alert("apns", "second", "bob@localhost"),
    );
    assert_quiet(&mut s.http, "the 410 disabled GONE's registration").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_500_on_v2_keeps_the_registration() {
    let http = PushService::plain().await;
    let config = config(&Http {
        api_version: "v2",
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "EXPIRED").await;
    s.http.set_status(500);
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "first").await;
    assert_eq!(request(&mut s.http).await.path, "/v2/notification/EXPIRED");
    tokio::time::sleep(SETTLE).await;
    bob_to_alice(&mut bob, "second").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v2/notification/EXPIRED",
        &alert("apns", "second", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_503_keeps_the_registration_and_the_server_keeps_working() {
    let mut s = setup().await;
    enable_device(&s.server, "n1", "fcm", "BUSY").await;
    s.http.set_status(503);
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "first").await;
    assert_eq!(request(&mut s.http).await.path, "/v3/notification/BUSY");
    tokio::time::sleep(SETTLE).await;
    routing_works(&mut bob, &mut carol, "after the 503").await;
    s.http.set_status(200);
    bob_to_alice(&mut bob, "second").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/BUSY",
        &alert("fcm", "second", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_connection_failure_keeps_the_registration() {
    let mut s = setup().await;
    enable_device(&s.server, "n1", "apns", "FLAKY").await;
    s.http.refuse(true);
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "lost").await;
    assert!(
        s.http.wait_for_connections(1, WAIT).await,
        "herald tried to connect"
    );
    assert_quiet(&mut s.http, "connections are closed unanswered").await;
    routing_works(&mut bob, &mut carol, "after the failure").await;
    s.http.refuse(false);
    bob_to_alice(&mut bob, "delivered").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/FLAKY",
        &alert("apns", "delivered", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_push_service_that_never_answers_does_not_slow_delivery_to_online_users() {
    let http = PushService::plain().await;
    // Far longer than the client's patience: if routing waited for the push, carol's message
    // would not arrive in time.
    let config = config(&Http {
        request_timeout: 60_000,
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "SLOW").await;
    s.http.hang(true);
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "unanswered").await;
    assert_eq!(request(&mut s.http).await.path, "/v3/notification/SLOW");
    assert_eq!(s.http.pending(), 1);
    routing_works(&mut bob, &mut carol, "prompt").await;
    assert_eq!(
        s.http.pending(),
        1,
        "carol's message arrived while the push request was still unanswered"
    );
    // Once the service answers again, later messages are pushed.
    s.http.hang(false);
    bob_to_alice(&mut bob, "answered").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/SLOW",
        &alert("apns", "answered", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_request_timeout_keeps_the_registration() {
    let http = PushService::plain().await;
    let config = config(&Http {
        request_timeout: 1000,
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "TIMEOUT").await;
    s.http.hang(true);
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "too slow").await;
    assert_eq!(request(&mut s.http).await.path, "/v3/notification/TIMEOUT");
    // Past herald's request timeout (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    routing_works(&mut bob, &mut carol, "after the timeout").await;
    s.http.hang(false);
    bob_to_alice(&mut bob, "in time").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/TIMEOUT",
        &alert("apns", "in time", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn at_most_max_http_connections_requests_are_in_flight() {
    let http = PushService::plain().await;
    let config = config(&Http {
        max_http_connections: 2,
        request_timeout: 60_000,
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    let devices = ["D1", "D2", "D3", "D4"];
    let registrations: Vec<Registration> = devices
        .iter()
        .map(|device| {
            (
                VIRTUAL,
                *device,
                vec![("service", "apns"), ("device_id", *device)],
            )
        })
        .collect();
    enable_for_alice(&s.server, &registrations).await;
    s.http.hang(true);
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "four devices").await;
    let mut seen = vec![
        request(&mut s.http).await.device().to_owned(),
        request(&mut s.http).await.device().to_owned(),
    ];
    assert_quiet(&mut s.http, "two requests in flight at most").await;
    assert_eq!(s.http.pending(), 2);
    s.http.hang(false);
    seen.push(request(&mut s.http).await.device().to_owned());
    seen.push(request(&mut s.http).await.device().to_owned());
    seen.sort();
    assert_eq!(seen, devices);
    assert!(
        s.http.connections() <= 2,
        "{} connections",
        s.http.connections()
    );
    s.server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Connections.

/// Three notifications, one after the other, and how many TCP connections they took.
async fn three_sequential_notifications(s: &mut Setup, device: &str) -> usize {
    enable_device(&s.server, "n1", "apns", device).await;
    let mut bob = bob_online(&s.server).await;
    for n in 0..3 {
        let body = format!("sequential {n}");
        bob_to_alice(&mut bob, &body).await;
        assert_notification(
            &request(&mut s.http).await,
            &format!("/v3/notification/{device}"),
            &alert("apns", &body, "bob@localhost"),
        );
        tokio::time::sleep(SETTLE).await;
    }
    s.http.connections()
}

#[tokio::test]
async fn sequential_notifications_reuse_one_keep_alive_connection() {
    let mut s = setup().await;
    assert_eq!(three_sequential_notifications(&mut s, "KEEP").await, 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_with_the_configured_test_ca_posts_and_keeps_the_connection_alive() {
    let http = PushService::tls().await;
    assert!(http.url().starts_with("https://localhost:"));
    let config = config(&Http::to(&http));
    let mut s = start(http, &config).await;
    assert_eq!(three_sequential_notifications(&mut s, "TLSDEV").await, 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_with_verify_mode_peer_and_the_test_ca_posts() {
    let http = PushService::tls().await;
    let mut settings = Http::to(&http);
    settings
        .tls
        .push_str("connection.tls.verify_mode = \"peer\"\n");
    let mut s = start(http, &config(&settings)).await;
    enable_device(&s.server, "n1", "fcm", "PEER").await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "verified").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/PEER",
        &alert("fcm", "verified", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_to_a_service_whose_ca_is_not_configured_posts_nothing_and_the_server_keeps_working()
{
    let http = PushService::tls().await;
    // Verification is on by default, and the test CA is not among the trusted ones.
    let config = config(&Http {
        tls: String::new(),
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "UNTRUSTED").await;
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "untrusted").await;
    assert!(
        s.http.wait_for_connections(1, WAIT).await,
        "herald tried to connect"
    );
    assert_quiet(&mut s.http, "the certificate is not trusted").await;
    routing_works(&mut bob, &mut carol, "still routing").await;
    bob_to_alice(&mut bob, "untrusted again").await;
    assert_quiet(&mut s.http, "the certificate is still not trusted").await;
    routing_works(&mut bob, &mut carol, "still routing again").await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_with_verify_mode_none_posts_to_an_untrusted_service() {
    let http = PushService::tls().await;
    let config = config(&Http {
        tls: "connection.tls.verify_mode = \"none\"\n".to_owned(),
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "NOVERIFY").await;
    let mut bob = bob_online(&s.server).await;
    bob_to_alice(&mut bob, "unverified").await;
    assert_notification(
        &request(&mut s.http).await,
        "/v3/notification/NOVERIFY",
        &alert("apns", "unverified", "bob@localhost"),
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn https_with_another_ca_configured_posts_nothing() {
    let http = PushService::tls().await;
    let other = PushService::tls().await;
    let config = config(&Http {
        tls: cacertfile(other.ca_file().unwrap()),
        ..Http::to(&http)
    });
    let mut s = start(http, &config).await;
    enable_device(&s.server, "n1", "apns", "WRONGCA").await;
    let mut bob = bob_online(&s.server).await;
    let mut carol = carol_online(&s.server).await;
    bob_to_alice(&mut bob, "wrong CA").await;
    assert!(
        s.http.wait_for_connections(1, WAIT).await,
        "herald tried to connect"
    );
    assert_quiet(&mut s.http, "the certificate is signed by another CA").await;
    routing_works(&mut bob, &mut carol, "still routing").await;
    s.server.shutdown().await;
    drop(other);
}

// ---------------------------------------------------------------------------------------
// Configuration errors.

#[tokio::test]
async fn invalid_mongoosepush_settings_stop_start_up_naming_the_key() {
    let http = PushService::plain().await;
    let good = config(&Http::to(&http));
    let dir = tempfile::tempdir().unwrap();
    let text = good.replace("{DATA}", &dir.path().join("data").display().to_string());
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, &text).unwrap();
    assert!(Config::load(&path).is_ok(), "the base configuration loads");
    for (from, to, key) in [
        (
            "api_version = \"v3\"",
            "api_version = \"v1\"",
            "api_version",
        ),
        (
            "pool_name = \"mongoose_push_http\"",
            "pool_name = \"missing\"",
            "pool_name",
        ),
        (
            "max_http_connections = 10",
            "max_http_connections = 0",
            "max_http_connections",
        ),
        (
            &format!("connection.host = \"{}\"", http.url()),
            "connection.host = \"127.0.0.1:8443\"",
            "connection.host",
        ),
        (
            "connection.request_timeout = 2000",
            "connection.request_timeout = 2000\nconnection.tls.verify_mode = \"sometimes\"",
            "verify_mode",
        ),
        (
            "max_http_connections = 10",
            "max_http_connections = 10\nunknown_key = 1",
            "unknown_key",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        match Config::load(&path) {
            Ok(_) => panic!("{to} was accepted"),
            Err(error) => assert!(
                error.to_string().contains(key),
                "{to}: the message names {key}: {error}"
            ),
        }
    }
}
