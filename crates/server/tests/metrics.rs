//! `/metrics` after a push round (docs/operations.md): the counters an operator graphs, read
//! with a Prometheus text-format parser. Alone in its test binary: the recorder is global to
//! the process.

mod common;

use std::time::Duration;

use common::{TestServer, admin::request, client::Client, component::Component};
use herald_stream::Frame;

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

[[listen.http]]
port = 0
ip_address = "127.0.0.1"
[[listen.http.handlers.mongoose_prometheus_handler]]
path = "/metrics"

[instrumentation.prometheus]

[modules.mod_disco]
[modules.mod_offline]
[modules.mod_stream_management]
[modules.mod_event_pusher.push]
"#;

/// The samples of a scrape, by name and labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn of(http: std::net::SocketAddr) -> Scrape {
        let response = request(http, "GET", "/metrics", None).await;
        assert_eq!(response.status, 200);
        assert!(
            response.headers.contains("text/plain"),
            "{}",
            response.headers
        );
        let lines = response.body.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format"))
    }

    /// The value of `name` with these labels (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                _ => 0.0,
            })
            .sum()
    }

    fn histogram_count(&self, name: &str) -> f64 {
        self.value(&format!("{name}_count"), &[])
            .max(self.value(name, &[]))
    }
}

#[tokio::test]
async fn metrics_after_a_push_round_count_what_happened() {
    let server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let running = server.running.as_ref().unwrap();
    let http = running.http_addrs[0];
    let mut app = Component::connect(running.service_addrs[0], "push.localhost", "secret").await;

    let mut alice = Client::login(&server, "alice@localhost", "a-pass", "phone").await;
    alice
        .send("<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='n1'/></iq>")
        .await;
    assert_eq!(alice.next_non_presence().await.attr("type"), Some("result"));
    alice.send("</stream:stream>").await;
    alice.closed().await;

    let mut bob = Client::online(&server, "bob@localhost", "b-pass", "desk", 0).await;
    let before = Scrape::of(http).await;
    assert_eq!(before.value("herald_sessions", &[]), 1.0, "bob is bound");
    assert_eq!(before.value("herald_connections", &[("kind", "c2s")]), 1.0);
    assert_eq!(
        before.value("herald_connections", &[("kind", "component")]),
        1.0
    );
    assert_eq!(before.value("herald_push_enables_total", &[]), 1.0);

    // Three messages to alice, offline: stored, and each pushed; the app server accepts two
    // and answers the third with a wait error.
    for n in 0..3 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='m{n}'><body>hi {n}</body></message>"
        ))
        .await;
    }
    for n in 0..3 {
        let Some(Frame::Element(publish)) = app.frame(Duration::from_secs(10)).await else {
            panic!("expected publish {n}");
        };
        let (id, to) = (publish.attr("id").unwrap(), publish.attr("from").unwrap());
        let reply = if n < 2 {
            format!("<iq type='result' id='{id}' from='push.localhost' to='{to}'/>")
        } else {
            format!(
                "<iq type='error' id='{id}' from='push.localhost' to='{to}'><error type='wait'>\
                 <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        };
        app.send(&reply).await;
    }
    // The outcomes are counted when the replies are read, and a message is stored after its
    // push is queued.
    let mut after = Scrape::of(http).await;
    for _ in 0..50 {
        if after.value("herald_push_notifications_total", &[]) >= 3.0
            && after.value("herald_offline_stored_total", &[]) >= 3.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = Scrape::of(http).await;
    }
    let delivered = [("outcome", "delivered")];
    let transient = [("outcome", "transient_error")];
    assert_eq!(
        after.value("herald_push_notifications_total", &delivered),
        2.0
    );
    assert_eq!(
        after.value("herald_push_notifications_total", &transient),
        1.0
    );
    assert_eq!(after.value("herald_offline_stored_total", &[]), 3.0);
    assert!(
        after.value("herald_stanzas_routed_total", &[("kind", "message")])
            - before.value("herald_stanzas_routed_total", &[("kind", "message")])
            >= 3.0
    );
    assert_eq!(
        after.histogram_count("herald_push_publish_duration_seconds"),
        3.0
    );
    assert!(after.histogram_count("herald_store_duration_seconds") >= 3.0);

    // Alice comes back: her three messages are delivered from offline storage.
    let mut alice = Client::online(&server, "alice@localhost", "a-pass", "phone", 0).await;
    let mut bodies = 0;
    while bodies < 3 {
        let stanza = alice.next().await;
        if stanza.name() == "message" {
            bodies += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = Scrape::of(http).await;
    assert_eq!(back.value("herald_offline_delivered_total", &[]), 3.0);
    assert_eq!(back.value("herald_sessions", &[]), 2.0);
}
