//! Black-box tests of the `herald` binary itself: the CLI, exit codes, start-up errors,
//! the embedded default and graceful shutdown on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::client::{Client, Closed};

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env_remove("RUST_LOG").env_remove("HERALD_DATA");
    command
}

fn write_config(dir: &Path, listener: &str) -> std::path::PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\nhosts = [\"localhost\"]\ndata_dir = \"data\"\n\n[[listen.c2s]]\n{listener}\n\n[modules.mod_disco]\n[modules.mod_ping]\n"
        ),
    )
    .unwrap();
    path
}

/// Start `herald serve` and return it with the address it printed.
fn serve(args: &[&str], dir: &Path) -> (Child, SocketAddr) {
    let mut child = herald()
        .args(args)
        .arg("serve")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("herald printed nothing").unwrap();
    let addr = line
        .strip_prefix("herald: c2s listening on ")
        .unwrap_or_else(|| panic!("unexpected: {line}"));
    let addr = addr.parse().unwrap();
    // Keep reading stdout in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("herald did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_ends_sessions_with_system_shutdown_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 0\nip_address = \"127.0.0.1\"");
    let config = config.to_str().unwrap();
    let added = herald()
        .args(["--config", config, "user", "add", "alice@localhost", "pw"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let (mut child, addr) = serve(&["--config", config], dir.path());
    let mut client = Client::connect(addr).await;
    client.open("localhost").await;
    client.plain("alice", "pw").await.unwrap();
    client.open("localhost").await;
    client.bind(Some("r")).await;
    sigterm(&child);
    assert_eq!(
        client.closed().await,
        Closed::StreamError("system-shutdown".into())
    );
    let status = wait_with_deadline(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn user_add_list_remove_round_trip_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 0");
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        herald()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        run(&["user", "add", "Bob@LocalHost", "pw"])
            .status
            .success()
    );
    let again = run(&["user", "add", "bob@localhost", "pw"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("bob@localhost already exists"));
    // --config also works after the subcommand.
    let list = herald()
        .args(["user", "list", "--config", config])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "bob@localhost\n");
    let wrong_domain = run(&["user", "add", "carol@elsewhere.test", "pw"]);
    assert_eq!(wrong_domain.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&wrong_domain.stderr).contains("elsewhere.test is not served here")
    );
    assert!(run(&["user", "remove", "bob@localhost"]).status.success());
    let missing = run(&["user", "remove", "bob@localhost"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    assert_eq!(String::from_utf8_lossy(&run(&["user", "list"]).stdout), "");
}

#[tokio::test]
async fn user_add_reads_the_password_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 0\nip_address = \"127.0.0.1\"");
    let mut child = herald()
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "carol@localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    // An empty line is refused as a usage error.
    let mut empty = herald()
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "dave@localhost", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    empty.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert_eq!(empty.wait().unwrap().code(), Some(64));
    // The password read is the one that logs in (over a plaintext loopback listener).
    let (mut server, addr) = serve(&["--config", config.to_str().unwrap()], dir.path());
    let mut client = Client::connect(addr).await;
    client.open("localhost").await;
    client
        .scram("SCRAM-SHA-256", "carol", "from stdin")
        .await
        .unwrap();
    sigterm(&server);
    assert!(wait_with_deadline(&mut server, Duration::from_secs(15)).success());
}

#[test]
fn a_bad_key_is_refused_with_its_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[general]\nhosts = [\"localhost\"]\n\n[[listen.c2s]]\nport = 5222\ntls.mode = \"startls\"\n").unwrap();
    for command in ["check-config", "serve"] {
        let out = herald()
            .arg("--config")
            .arg(&path)
            .arg(command)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("bad.toml:6"), "{stderr}");
        assert!(stderr.contains("listen.c2s[0].tls.mode"), "{stderr}");
    }
}

#[test]
fn an_unreadable_push_service_ca_file_stops_start_up_naming_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    let text = "[general]\nhosts = [\"localhost\"]\ndata_dir = \"data\"\n\
                [[listen.c2s]]\nport = 0\nip_address = \"127.0.0.1\"\n\
                [modules.mod_event_pusher.push]\nvirtual_pubsub_hosts = [\"virtual.@HOST@\"]\n\
                [modules.mod_push_service_mongoosepush]\npool_name = \"mongoose_push_http\"\n\
                [outgoing_pools.http.mongoose_push_http]\n\
                connection.host = \"https://localhost:8443\"\n\
                connection.tls.cacertfile = \"missing-ca.pem\"\n";
    std::fs::write(&path, text).unwrap();
    for command in ["check-config", "serve"] {
        let out = herald()
            .arg("--config")
            .arg(&path)
            .arg(command)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("outgoing_pools.http.mongoose_push_http")
                && stderr.contains("missing-ca.pem"),
            "{command}: {stderr}"
        );
    }
    // With the file present, check-config describes the service.
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("missing-ca.pem"), ca.cert.pem()).unwrap();
    let out = herald()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "push service: https://localhost:8443/v3, 100 connections (pool mongoose_push_http)"
        ),
        "{stdout}"
    );
}

#[test]
fn check_config_describes_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 5223\ntls.mode = \"tls\"");
    let out = herald()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("c2s 0.0.0.0:5223: DirectTls, self-signed certificate"),
        "{stdout}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = herald()
        .args(["--config", "/nonexistent/herald.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/herald.toml"));
}

#[test]
fn a_busy_port_stops_start_up_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("port = {port}\nip_address = \"127.0.0.1\""),
    );
    let out = herald()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
    );
}

/// The README's first command: `herald serve` with no configuration serves localhost on
/// 127.0.0.1:5222 with STARTTLS and a generated certificate.
#[tokio::test]
async fn the_embedded_default_serves_localhost_with_starttls_on_5222() {
    if std::net::TcpListener::bind("127.0.0.1:5222").is_err() {
        eprintln!("SKIPPED: 127.0.0.1:5222 is in use on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("herald-data");
    let added = herald()
        .current_dir(dir.path())
        .args(["user", "add", "alice@localhost", "pw"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let (mut child, addr) = serve(&[], dir.path());
    assert_eq!(addr, "127.0.0.1:5222".parse().unwrap());
    let mut client = Client::connect(addr).await;
    client.open("localhost").await;
    assert!(
        client.mechanisms().is_empty(),
        "no SASL mechanism in clear text: {:?}",
        client.features
    );
    client
        .starttls(
            "localhost",
            &data.join(herald_stream::tls::SELF_SIGNED_CERT),
        )
        .await;
    client.scram("SCRAM-SHA-256", "alice", "pw").await.unwrap();
    client.open("localhost").await;
    client.bind(None).await;
    client
        .send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(client.next().await.attr("type"), Some("result"));
    assert!(data.join("herald.sqlite3").exists());
    sigterm(&child);
    assert!(wait_with_deadline(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn db_migrate_applies_the_schema_once_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 0");
    let migrate = || {
        herald()
            .args(["db", "migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = migrate();
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("applied migration 1: accounts"), "{stdout}");
    assert!(
        stdout.contains("applied migration 4: push registrations"),
        "{stdout}"
    );
    let second = migrate();
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "the schema is up to date; nothing to apply\n"
    );
}

#[tokio::test]
async fn db_migrate_and_user_commands_work_on_postgresql() {
    let Some(database) = herald_storage::test_database::TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "port = 0");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&database.config_section(2));
    text.push_str("[auth]\nmethods = [\"rdbms\"]\n");
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str]| {
        herald()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let migrated = run(&["db", "migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let stdout = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        stdout.contains("applied migration 4: push registrations"),
        "{stdout}"
    );
    assert!(
        run(&["user", "add", "alice@localhost", "pw"])
            .status
            .success()
    );
    let list = run(&["user", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout), "alice@localhost\n");
    let removed = run(&["user", "remove", "alice@localhost"]);
    assert!(removed.status.success(), "{removed:?}");
    assert_eq!(String::from_utf8_lossy(&run(&["user", "list"]).stdout), "");
    // Nothing was written to the embedded store.
    assert!(!dir.path().join("data").join("herald.sqlite3").exists());
    let described = run(&["check-config"]);
    let stdout = String::from_utf8_lossy(&described.stdout);
    assert!(
        stdout.contains("database: PostgreSQL ") && stdout.contains(database.name()),
        "{stdout}"
    );
}
