//! Black-box tests of what operators use (docs/operations.md): the HTTP listener's health
//! endpoints, the admin API against a running server with an app server played by a component
//! (XEP-0114), the `herald push|session|user` commands over that API, and JSON logs that tell
//! a test push's story by its request id.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{
    TestServer,
    admin::request,
    client::{Client, Closed},
    component::Component,
};
use herald_stream::Frame;
use minidom::Element;

const TOKEN: &str = "test-admin-token-0123456789";
const APP_SERVER: &str = "push.localhost";
const PUSH: &str = "urn:xmpp:push:0";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

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
[[listen.http.handlers.mongoose_admin_api]]
token = "test-admin-token-0123456789"

[modules.mod_disco]
[modules.mod_offline]
[modules.mod_stream_management]

[modules.mod_event_pusher.push]
wpool.workers = 4
"#;

struct Setup {
    server: TestServer,
    app: Component,
    http: SocketAddr,
}

async fn setup() -> Setup {
    let server = TestServer::start(CONFIG).await;
    server.add_user("alice@localhost", "a-pass").await;
    server.add_user("bob@localhost", "b-pass").await;
    let running = server.running.as_ref().unwrap();
    let app = Component::connect(running.service_addrs[0], APP_SERVER, "secret").await;
    let http = running.http_addrs[0];
    Setup { server, app, http }
}

/// Alice enables `node` with a secret in her publish-options, then goes offline.
async fn enable(server: &TestServer, node: &str) {
    let mut alice = Client::login(server, "alice@localhost", "a-pass", "phone").await;
    alice
        .send(&format!(
            "<iq type='set' id='en'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='{node}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='secret'><value>very-secret-value</value></field>\
             <field var='endpoint'><value>https://push.example</value></field>\
             </x></enable></iq>"
        ))
        .await;
    let reply = alice.next_non_presence().await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    alice.send("</stream:stream>").await;
    alice.closed().await;
}

/// The next publish the app server receives.
async fn publish(app: &mut Component) -> Element {
    match app.frame(Duration::from_secs(10)).await {
        Some(Frame::Element(iq)) => iq,
        other => panic!("expected a publish, got {other:?}"),
    }
}

async fn answer(app: &mut Component, publish: &Element, error: Option<(&str, &str)>) {
    let id = publish.attr("id").unwrap();
    let to = publish.attr("from").unwrap();
    let xml = match error {
        None => format!("<iq type='result' id='{id}' from='{APP_SERVER}' to='{to}'/>"),
        Some((type_, condition)) => format!(
            "<iq type='error' id='{id}' from='{APP_SERVER}' to='{to}'>\
             <error type='{type_}'><{condition} xmlns='{STANZAS}'/></error></iq>"
        ),
    };
    app.send(&xml).await;
}

#[tokio::test]
async fn health_and_ready_answer_without_a_token() {
    let s = setup().await;
    let health = request(s.http, "GET", "/health", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = request(s.http, "GET", "/ready", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(request(s.http, "GET", "/nothing", None).await.status, 404);
}

#[tokio::test]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let s = setup().await;
    let path = "/api/users/alice@localhost/push";
    let missing = request(s.http, "GET", path, None).await;
    assert_eq!(missing.status, 401);
    assert!(
        missing
            .headers
            .to_lowercase()
            .contains("www-authenticate: bearer")
    );
    let wrong = request(s.http, "GET", path, Some("test-admin-token-0123456780")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "a valid bearer token is required");
    // Nothing was done on the way: the refusal comes before the request is looked at.
    let bad = request(s.http, "DELETE", "/api/users/alice@localhost", Some("nope")).await;
    assert_eq!(bad.status, 401);
    let ok = request(s.http, "GET", path, Some(TOKEN)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn the_admin_api_answers_bad_jids_and_unknown_paths_precisely() {
    let s = setup().await;
    let token = Some(TOKEN);
    let no_local = request(s.http, "GET", "/api/users/localhost/push", token).await;
    assert_eq!(no_local.status, 400, "{}", no_local.body);
    let foreign = request(s.http, "GET", "/api/users/a@elsewhere.example/push", token).await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let method = request(s.http, "PUT", "/api/users/alice@localhost/push", token).await;
    assert_eq!(method.status, 405, "{}", method.body);
    let unknown = request(s.http, "GET", "/api/groups", token).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn list_test_push_and_disable_work_end_to_end() {
    let mut s = setup().await;
    enable(&s.server, "node-one-1234567").await;
    enable(&s.server, "node-two-7654321").await;
    let base = "/api/users/alice%40localhost/push";

    let list = request(s.http, "GET", base, Some(TOKEN)).await.json();
    let registrations = list["registrations"].as_array().unwrap();
    assert_eq!(registrations.len(), 2, "{list}");
    let first = &registrations[0];
    assert_eq!(first["pubsub"], APP_SERVER);
    assert_eq!(first["form"]["endpoint"], "https://push.example");
    let secret = first["form"]["secret"].as_str().unwrap();
    assert!(
        !secret.contains("very-secret-value"),
        "secrets are masked: {secret}"
    );
    assert_eq!(
        first["node"], "node-one-1234567",
        "the node is what an operator names"
    );
    assert!(first["created"].as_u64().unwrap() > 1_700_000_000);
    assert!(first["last_success"].is_null() && first["last_error"].is_null());

    // A test push to the first: the app server gets a publish and accepts it.
    let http = s.http;
    let test = tokio::spawn(async move {
        request(
            http,
            "POST",
            "/api/users/alice@localhost/push/test?node=node-one-1234567",
            Some(TOKEN),
        )
        .await
    });
    let published = publish(&mut s.app).await;
    let node = published
        .get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .and_then(|p| p.get_child("publish", "http://jabber.org/protocol/pubsub"))
        .and_then(|p| p.attr("node"))
        .unwrap()
        .to_owned();
    assert_eq!(node, "node-one-1234567");
    answer(&mut s.app, &published, None).await;
    let report = test.await.unwrap().json();
    assert_eq!(report["outcome"], "delivered", "{report}");
    assert_eq!(report["answer"], "result");
    assert_eq!(report["request_id"].as_str().unwrap().len(), 16);

    // A test push to the second, which the app server refuses for good: disabled.
    let test = tokio::spawn(async move {
        request(
            http,
            "POST",
            "/api/users/alice@localhost/push/test?node=node-two-7654321",
            Some(TOKEN),
        )
        .await
    });
    let published = publish(&mut s.app).await;
    answer(&mut s.app, &published, Some(("cancel", "item-not-found"))).await;
    let report = test.await.unwrap().json();
    assert_eq!(report["outcome"], "rejected_and_disabled", "{report}");
    assert_eq!(report["answer"], "error cancel item-not-found");

    let list = request(s.http, "GET", base, Some(TOKEN)).await.json();
    let registrations = list["registrations"].as_array().unwrap();
    assert_eq!(registrations.len(), 1, "{list}");
    assert!(
        registrations[0]["last_success"].as_u64().is_some(),
        "{list}"
    );

    // Disable what is left; a second time there is nothing to disable.
    let disabled = request(s.http, "DELETE", base, Some(TOKEN)).await;
    assert_eq!(
        (disabled.status, disabled.json()["disabled"].as_u64()),
        (200, Some(1))
    );
    let again = request(s.http, "DELETE", base, Some(TOKEN)).await;
    assert_eq!(again.status, 404);
    let none = request(s.http, "POST", &format!("{base}/test"), Some(TOKEN)).await;
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(
        s.app.frame(Duration::from_millis(300)).await.is_none(),
        "no publish without a registration"
    );
}

#[tokio::test]
async fn sessions_are_listed_and_kicked_and_a_removed_account_loses_its_sessions() {
    let s = setup().await;
    let mut phone = Client::online(&s.server, "alice@localhost", "a-pass", "phone", 1).await;
    let mut laptop = Client::login(&s.server, "alice@localhost", "a-pass", "laptop").await;
    let sessions = request(
        s.http,
        "GET",
        "/api/users/alice@localhost/sessions",
        Some(TOKEN),
    )
    .await
    .json();
    let mut listed: Vec<(String, bool)> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["resource"].as_str().unwrap().to_owned(),
                s["available"].as_bool().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("laptop".to_owned(), false), ("phone".to_owned(), true)]
    );

    let kicked = request(
        s.http,
        "DELETE",
        "/api/users/alice@localhost/sessions?resource=laptop",
        Some(TOKEN),
    )
    .await;
    assert_eq!(kicked.json()["kicked"][0], "alice@localhost/laptop");
    assert_eq!(
        laptop.closed().await,
        Closed::StreamError("policy-violation".into())
    );
    let missing = request(
        s.http,
        "DELETE",
        "/api/users/alice@localhost/sessions?resource=laptop",
        Some(TOKEN),
    )
    .await;
    assert_eq!(missing.status, 404);

    let removed = request(s.http, "DELETE", "/api/users/alice@localhost", Some(TOKEN)).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(
        phone.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    let alice = jid::BareJid::new("alice@localhost").unwrap();
    let server = &s.server.running.as_ref().unwrap().server;
    assert!(!server.storage.accounts().exists(&alice).await.unwrap());
    let again = request(s.http, "DELETE", "/api/users/alice@localhost", Some(TOKEN)).await;
    assert_eq!(again.status, 404);
}

// ---------------------------------------------------------------------------------------
// The binary: the CLI over the admin API, and JSON logs.

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("RUST_LOG").env_remove("HERALD_DATA");
    command
}

/// `herald serve` with JSON logs at debug level into `log`; the addresses it printed, by kind.
struct Served {
    child: Child,
    c2s: SocketAddr,
    service: SocketAddr,
    http: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    cert: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let data = dir.join("data");
    let config = CONFIG
        .replace("{DATA}", &data.display().to_string())
        .replace(
            "[general]\n",
            "[general]\nloglevel = \"debug\"\nlog_format = \"json\"\n",
        );
    let path = dir.join("herald.toml");
    std::fs::write(&path, &config).unwrap();
    for user in ["alice@localhost", "bob@localhost"] {
        let status = herald()
            .args(["-c", path.to_str().unwrap(), "user", "add", user, "pass"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let log = dir.join("herald.log");
    let mut child = herald()
        .args(["-c", path.to_str().unwrap(), "serve"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = |kind: &str| -> SocketAddr {
        let line = lines.next().expect("herald printed its listeners").unwrap();
        line.strip_prefix(&format!("herald: {kind} listening on "))
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .parse()
            .unwrap()
    };
    let (c2s, service, http) = (addr("c2s"), addr("service"), addr("http"));
    std::thread::spawn(move || for _ in lines {});
    // The commands read a file naming the bound port.
    let cli = dir.join("cli.toml");
    std::fs::write(
        &cli,
        config.replacen(
            "port = 0\nip_address = \"127.0.0.1\"\n[[listen.http",
            &format!(
                "port = {}\nip_address = \"127.0.0.1\"\n[[listen.http",
                http.port()
            ),
            1,
        ),
    )
    .unwrap();
    Served {
        child,
        c2s,
        service,
        http,
        config: cli,
        log,
        cert: data.join(herald_stream::tls::SELF_SIGNED_CERT),
    }
}

/// Run a command against `served`'s configuration; its exit code, stdout and stderr.
async fn run(served: &Served, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .env_remove("RUST_LOG")
        .arg("-c")
        .arg(&served.config)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_commands_print_what_they_did_or_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path());
    let mut app = Component::connect(served.service, APP_SERVER, "secret").await;
    let mut alice =
        Client::login_at(served.c2s, &served.cert, "alice@localhost", "pass", "phone").await;
    alice
        .send(&format!("<iq type='set' id='en'><enable xmlns='{PUSH}' jid='{APP_SERVER}' node='cli-node-123456'/></iq>"))
        .await;
    assert_eq!(alice.next_non_presence().await.attr("type"), Some("result"));

    let (code, out, _) = run(&served, &["push", "list", "alice@localhost"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("push.localhost"), "{out}");

    let (code, out, _) = run(&served, &["session", "list", "alice@localhost"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "alice@localhost/phone\tunavailable")
    );

    // A test push: the command waits for the app server's answer.
    let test = tokio::spawn({
        let config = served.config.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .arg("-c")
                .arg(config)
                .args(["push", "test", "alice@localhost"])
                .output()
                .await
                .unwrap()
        }
    });
    let published = publish(&mut app).await;
    answer(&mut app, &published, None).await;
    let output = test.await.unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.starts_with("test push to alice@localhost: delivered"),
        "{out}"
    );
    let request_id = out
        .trim()
        .rsplit("request id ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();

    // The push's story in the JSON logs, found by its request id.
    let story = story(&served.log, &request_id).await;
    for message in [
        "push: test push requested",
        "push published",
        "push: test push answered",
    ] {
        assert!(
            story.iter().any(|m| m == message),
            "{message} missing from {story:?}"
        );
    }

    let (code, out, _) = run(
        &served,
        &[
            "push",
            "disable",
            "alice@localhost",
            "--node",
            "cli-node-123456",
        ],
    )
    .await;
    assert_eq!(
        (code, out.trim()),
        (0, "disabled 1 push registration(s) of alice@localhost")
    );
    let (code, _, err) = run(&served, &["push", "test", "alice@localhost"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("no such push registration (HTTP 404)"),
        "{err}"
    );

    let (code, out, _) = run(&served, &["session", "kick", "alice@localhost"]).await;
    assert_eq!((code, out.trim()), (0, "closed alice@localhost/phone"));
    assert_eq!(
        alice.closed().await,
        Closed::StreamError("policy-violation".into())
    );

    // `user remove` goes through the server, which closes the live session.
    let mut bob = Client::login_at(served.c2s, &served.cert, "bob@localhost", "pass", "desk").await;
    let (code, out, _) = run(&served, &["user", "remove", "bob@localhost"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "removed bob@localhost (its live sessions closed)")
    );
    assert_eq!(
        bob.closed().await,
        Closed::StreamError("not-authorized".into())
    );
    let (code, _, err) = run(&served, &["user", "remove", "bob@localhost"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("bob@localhost does not exist"), "{err}");

    // A wrong token: refused, and said so.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&served.config)
            .unwrap()
            .replace(TOKEN, "another-token-of-enough-length"),
    )
    .unwrap();
    let output = herald()
        .args([
            "-c",
            wrong.to_str().unwrap(),
            "session",
            "list",
            "alice@localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&output.stderr).contains("a valid bearer token is required"));
    let _ = served.http;
}

/// The messages of the log lines carrying `request_id` (every line must be JSON).
async fn story(log: &Path, request_id: &str) -> Vec<String> {
    // The lines are written as they happen; the last may still be on its way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(log).unwrap();
    let mut story = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if value["fields"]["request_id"] == request_id {
            story.push(
                value["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    story
}

#[tokio::test]
async fn commands_say_when_no_server_answers_or_no_admin_api_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    // An admin API on a port where nothing listens.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = CONFIG
        .replace("{DATA}", &dir.path().join("data").display().to_string())
        .replacen(
            "port = 0\nip_address = \"127.0.0.1\"\n[[listen.http",
            &format!("port = {port}\nip_address = \"127.0.0.1\"\n[[listen.http"),
            1,
        );
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, config).unwrap();
    let output = herald()
        .args([
            "-c",
            path.to_str().unwrap(),
            "push",
            "list",
            "alice@localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is the server running?"));
    // Without a running server, `user remove` works on the store as before.
    assert!(
        herald()
            .args([
                "-c",
                path.to_str().unwrap(),
                "user",
                "add",
                "carol@localhost",
                "pw"
            ])
            .status()
            .unwrap()
            .success()
    );
    let output = herald()
        .args([
            "-c",
            path.to_str().unwrap(),
            "user",
            "remove",
            "carol@localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        format!(
            "[general]\nhosts = [\"localhost\"]\ndata_dir = \"{}\"\n",
            dir.path().join("d2").display()
        ),
    )
    .unwrap();
    let output = herald()
        .args([
            "-c",
            plain.to_str().unwrap(),
            "session",
            "list",
            "alice@localhost",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("mongoose_admin_api"));
}

#[tokio::test]
async fn the_commands_reach_an_https_admin_api_and_trust_only_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // The listener's certificate names no IP address: the command pins the file's leaf.
    let identity = rcgen::generate_simple_self_signed(vec!["herald.example".into()]).unwrap();
    let (cert, key) = (dir.path().join("http.pem"), dir.path().join("http.key"));
    std::fs::write(&cert, identity.cert.pem()).unwrap();
    std::fs::write(&key, identity.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        "tls.certfile = \"{}\"\ntls.keyfile = \"{}\"\n[[listen.http",
        cert.display(),
        key.display()
    );
    let config = CONFIG.replacen(
        "ip_address = \"127.0.0.1\"\n[[listen.http",
        &format!("ip_address = \"127.0.0.1\"\n{tls}"),
        1,
    );
    let server = TestServer::start(&config).await;
    server.add_user("alice@localhost", "a-pass").await;
    let http = server.running.as_ref().unwrap().http_addrs[0];
    let _alice = Client::login(&server, "alice@localhost", "a-pass", "phone").await;

    let cli = dir.path().join("cli.toml");
    let text = config
        .replace("{DATA}", &dir.path().join("cli-data").display().to_string())
        .replacen(
            "port = 0\nip_address = \"127.0.0.1\"\ntls.certfile",
            &format!(
                "port = {}\nip_address = \"127.0.0.1\"\ntls.certfile",
                http.port()
            ),
            1,
        );
    std::fs::write(&cli, &text).unwrap();
    let run = |config: PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("-c")
            .arg(config)
            .args(["session", "list", "alice@localhost"])
            .output()
            .await
            .unwrap()
    };
    let output = run(cli.clone()).await;
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(out.trim(), "alice@localhost/phone\tunavailable");

    // Plain HTTP to the TLS listener gets no answer.
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buffer)).await;
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"));

    // A command whose file names another certificate refuses the server's.
    let other = rcgen::generate_simple_self_signed(vec!["herald.example".into()]).unwrap();
    let (other_cert, other_key) = (dir.path().join("other.pem"), dir.path().join("other.key"));
    std::fs::write(&other_cert, other.cert.pem()).unwrap();
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        text.replace(
            &cert.display().to_string(),
            &other_cert.display().to_string(),
        )
        .replace(&key.display().to_string(), &other_key.display().to_string()),
    )
    .unwrap();
    let output = run(wrong).await;
    assert_eq!(output.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the admin API"));
}
