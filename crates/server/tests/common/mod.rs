//! The black-box test harness: a server started in-process on 127.0.0.1:0 from a real
//! configuration file, and a small XMPP client speaking raw XML over real sockets, with
//! real TLS (verified against the server's generated certificate) and a SCRAM client
//! written from RFC 5802 independently of the server's.

#![allow(dead_code)]

pub mod admin;
pub mod client;
pub mod component;
pub mod http;
pub mod phone;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use herald_server::{
    app::{self, Running},
    config::Config,
};
use jid::BareJid;

/// A running server with its own data directory.
pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl TestServer {
    /// Start a server from the body of a configuration file; `{DATA}` is replaced by the
    /// temporary data directory.
    pub async fn start(config: &str) -> TestServer {
        TestServer::try_start(config).await.unwrap()
    }

    /// [`TestServer::start`], with start-up's error (a fixed port taken meanwhile).
    pub async fn try_start(config: &str) -> Result<TestServer, app::AppError> {
        let dir = tempfile::tempdir().unwrap();
        let text = config.replace("{DATA}", &dir.path().join("data").display().to_string());
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let running = app::start(&config).await?;
        Ok(TestServer {
            running: Some(running),
            dir,
            config,
        })
    }

    /// The default test server: localhost and example.org, one STARTTLS listener, one
    /// direct-TLS listener and one plaintext listener, disco and ping.
    pub async fn standard() -> TestServer {
        TestServer::start(STANDARD).await
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        self.running.as_ref().unwrap().c2s_addrs[index]
    }

    /// The generated self-signed certificate, for clients to trust.
    pub fn cert(&self) -> PathBuf {
        self.config
            .general
            .data_dir
            .join(herald_stream::tls::SELF_SIGNED_CERT)
    }

    pub async fn add_user(&self, jid: &str, password: &str) {
        let credentials = herald_sasl::Credentials::from_password(password, 4096).unwrap();
        let server = &self.running.as_ref().unwrap().server;
        server
            .storage
            .accounts()
            .create(&BareJid::new(jid).unwrap(), &credentials)
            .await
            .unwrap();
    }

    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(5)).await;
        }
    }
}

pub const STANDARD: &str = r#"
[general]
hosts = ["localhost", "example.org"]
data_dir = "{DATA}"
loglevel = "warning"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_stanza_size = 4096
tls.mode = "starttls"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "tls"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_stanza_size = 4096
state_timeout = 300

[modules.mod_disco]
extra_domains = ["pubsub.localhost"]
[modules.mod_ping]
"#;

/// Index of the STARTTLS listener in [`STANDARD`].
pub const STARTTLS: usize = 0;
/// Index of the direct-TLS listener in [`STANDARD`].
pub const DIRECT_TLS: usize = 1;
/// Index of the plaintext listener in [`STANDARD`].
pub const PLAIN: usize = 2;
