//! Black-box tests of client streams: TLS, SASL, binding, stream errors.

mod common;

use std::time::Duration;

use common::{
    DIRECT_TLS, PLAIN, STARTTLS, TestServer,
    client::{Client, Closed},
};

#[tokio::test]
async fn scram_sha_256_login_over_starttls_binds_the_requested_resource() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::connect(server.addr(STARTTLS)).await;
    let features = client.open("localhost").await;
    assert!(features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert!(
        !client.mechanisms().contains(&"PLAIN".to_owned()),
        "no PLAIN before TLS"
    );
    client.starttls("localhost", &server.cert()).await;
    assert_eq!(
        client.mechanisms(),
        ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    );
    client
        .scram("SCRAM-SHA-256", "alice", "wonderland")
        .await
        .unwrap();
    let features = client.open("localhost").await;
    assert!(features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
    assert_eq!(client.bind(Some("phone")).await, "alice@localhost/phone");
    server.shutdown().await;
}

#[tokio::test]
async fn scram_sha_256_login_over_direct_tls() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client =
        Client::connect_tls(server.addr(DIRECT_TLS), &server.cert(), "localhost").await;
    let features = client.open("localhost").await;
    assert!(!features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    client
        .scram("SCRAM-SHA-256", "alice", "wonderland")
        .await
        .unwrap();
    client.open("localhost").await;
    assert!(
        client.bind(None).await.starts_with("alice@localhost/"),
        "server-chosen resource"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn scram_sha_1_and_plain_work_over_tls() {
    let mut server = TestServer::standard().await;
    server.add_user("bob@example.org", "builder").await;
    let mut client =
        Client::connect_tls(server.addr(DIRECT_TLS), &server.cert(), "example.org").await;
    client.open("example.org").await;
    client.scram("SCRAM-SHA-1", "bob", "builder").await.unwrap();
    let mut client =
        Client::connect_tls(server.addr(DIRECT_TLS), &server.cert(), "example.org").await;
    client.open("example.org").await;
    client.plain("bob", "builder").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_password_fails_with_not_authorized() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client =
        Client::connect_tls(server.addr(DIRECT_TLS), &server.cert(), "localhost").await;
    client.open("localhost").await;
    assert_eq!(
        client
            .scram("SCRAM-SHA-256", "alice", "looking-glass")
            .await,
        Err("not-authorized".into())
    );
    assert_eq!(
        client.scram("SCRAM-SHA-256", "nobody", "x").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        client.plain("alice", "looking-glass").await,
        Err("not-authorized".into())
    );
    // Third failure: the stream is terminated (RFC 6120 section 6.4.5).
    assert_eq!(
        client.closed().await,
        Closed::StreamError("policy-violation".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn usernames_are_case_folded() {
    let mut server = TestServer::standard().await;
    server.add_user("Alice@LocalHost", "wonderland").await;
    let mut client =
        Client::connect_tls(server.addr(DIRECT_TLS), &server.cert(), "localhost").await;
    client.open("localhost").await;
    client
        .scram("SCRAM-SHA-256", "ALICE", "wonderland")
        .await
        .unwrap();
    client.open("localhost").await;
    assert_eq!(client.bind(Some("r")).await, "alice@localhost/r");
    server.shutdown().await;
}

#[tokio::test]
async fn plain_is_refused_on_a_tls_listener_before_starttls() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::connect(server.addr(STARTTLS)).await;
    client.open("localhost").await;
    assert_eq!(
        client.plain("alice", "wonderland").await,
        Err("encryption-required".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_is_offered_on_a_listener_without_tls() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    let features = client.open("localhost").await;
    assert!(!features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert!(client.mechanisms().contains(&"PLAIN".to_owned()));
    client.plain("alice", "wonderland").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn starttls_required_offers_no_mechanism_before_tls() {
    let mut server = TestServer::start(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"
[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls_required"
"#,
    )
    .await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::connect(server.addr(0)).await;
    let features = client.open("localhost").await;
    let starttls = features
        .get_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .unwrap();
    assert!(starttls.has_child("required", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert!(client.mechanisms().is_empty());
    assert_eq!(
        client.scram("SCRAM-SHA-256", "alice", "wonderland").await,
        Err("encryption-required".into())
    );
    client.starttls("localhost", &server.cert()).await;
    client
        .scram("SCRAM-SHA-256", "alice", "wonderland")
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_host_gets_host_unknown() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client
        .send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.test' version='1.0'>")
        .await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("host-unknown".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_version_gets_unsupported_version() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client
        .send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>")
        .await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("unsupported-version".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_xml_gets_not_well_formed() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client.open("localhost").await;
    client.send("<message><body>unclosed</message>").await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("not-well-formed".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_before_the_stream_header_gets_a_stream_error() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client.send("GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("not-well-formed".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_stanza_closes_the_stream_with_policy_violation() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::login(&server, "alice@localhost", "wonderland", "r").await;
    let body = "x".repeat(5000);
    client
        .send(&format!(
            "<message to='alice@localhost'><body>{body}</body></message>"
        ))
        .await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("policy-violation".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_unauthenticated_stream_gets_connection_timeout() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client.open("localhost").await;
    // state_timeout is 300 ms on this listener.
    assert_eq!(
        client.closed().await,
        Closed::StreamError("connection-timeout".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stanza_before_authentication_is_not_authorized() {
    let mut server = TestServer::standard().await;
    let mut client = Client::connect(server.addr(PLAIN)).await;
    client.open("localhost").await;
    client
        .send("<message to='alice@localhost'><body>hi</body></message>")
        .await;
    assert_eq!(
        client.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn binding_the_same_resource_again_replaces_the_old_session_with_conflict() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut first = Client::login(&server, "alice@localhost", "wonderland", "phone").await;
    let mut second = Client::login(&server, "alice@localhost", "wonderland", "phone").await;
    assert_eq!(first.closed().await, Closed::StreamError("conflict".into()));
    // The new session works.
    second
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(second.next().await.attr("type"), Some("result"));
    assert_eq!(server.running.as_ref().unwrap().server.sessions.count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_legacy_session_iq_is_answered() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::login(&server, "alice@localhost", "wonderland", "r").await;
    let features = client.features.clone().unwrap();
    assert!(features.has_child("session", "urn:ietf:params:xml:ns:xmpp-session"));
    client
        .send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    let reply = client.next().await;
    assert_eq!(
        (reply.attr("type"), reply.attr("id")),
        (Some("result"), Some("s1"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn whitespace_keepalives_are_accepted() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::login(&server, "alice@localhost", "wonderland", "r").await;
    client.send(" \n ").await;
    client
        .send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(client.next().await.attr("type"), Some("result"));
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_closing_its_stream_gets_the_closing_tag() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut client = Client::login(&server, "alice@localhost", "wonderland", "r").await;
    client.send("</stream:stream>").await;
    assert_eq!(client.closed().await, Closed::StreamClose);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_get_resource_constraint() {
    let mut server = TestServer::start(
        r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"
[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_connections = 2
"#,
    )
    .await;
    let mut a = Client::connect(server.addr(0)).await;
    a.open("localhost").await;
    let mut b = Client::connect(server.addr(0)).await;
    b.open("localhost").await;
    let mut c = Client::connect(server.addr(0)).await;
    assert_eq!(
        c.closed().await,
        Closed::StreamError("resource-constraint".into())
    );
    drop(a);
    // A slot frees up once a connection ends.
    let mut tries = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut d = Client::connect(server.addr(0)).await;
        d.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").await;
        match d.next_frame().await {
            Some(herald_stream::Frame::StreamOpen(_)) if d.next().await.name() == "features" => {
                break;
            }
            _ => {}
        }
        tries += 1;
        assert!(tries < 40, "the freed slot was never reused");
    }
    drop(b);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_system_shutdown_to_every_session() {
    let mut server = TestServer::standard().await;
    server.add_user("alice@localhost", "wonderland").await;
    let mut bound = Client::login(&server, "alice@localhost", "wonderland", "r").await;
    let mut unauthenticated = Client::connect(server.addr(STARTTLS)).await;
    unauthenticated.open("localhost").await;
    server.shutdown().await;
    assert_eq!(
        bound.closed().await,
        Closed::StreamError("system-shutdown".into())
    );
    assert_eq!(
        unauthenticated.closed().await,
        Closed::StreamError("system-shutdown".into())
    );
}
