//! A raw-XML XMPP client for tests.

use std::{collections::VecDeque, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use herald_stream::{Frame, StreamParser};
use hmac::{KeyInit, Mac};
use minidom::Element;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use sha2::Digest;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

pub struct Client {
    io: Option<Box<dyn Io>>,
    parser: StreamParser,
    frames: VecDeque<Frame>,
    pub features: Option<Element>,
    pub jid: Option<String>,
}

/// What ended a stream, as seen by the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A stream error with this condition.
    StreamError(String),
    /// `</stream:stream>` without an error.
    StreamClose,
    /// The TCP connection closed without either.
    Eof,
}

fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Client::over(Box::new(tcp))
    }

    pub async fn connect_tls(addr: SocketAddr, cert: &Path, name: &str) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls_config(cert));
        let tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        Client::over(Box::new(tls))
    }

    fn over(io: Box<dyn Io>) -> Client {
        Client {
            io: Some(io),
            parser: StreamParser::new(1 << 20),
            frames: VecDeque::new(),
            features: None,
            jid: None,
        }
    }

    pub async fn send(&mut self, xml: &str) {
        let io = self.io.as_mut().unwrap();
        io.write_all(xml.as_bytes()).await.unwrap();
        io.flush().await.unwrap();
    }

    /// Send and ignore errors (the server may already have closed).
    pub async fn try_send(&mut self, xml: &[u8]) -> std::io::Result<()> {
        let io = self.io.as_mut().unwrap();
        io.write_all(xml).await?;
        io.flush().await
    }

    /// The next frame, or `None` at end of stream; panics after [`TIMEOUT`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(TIMEOUT, self.read_frame())
            .await
            .expect("timed out waiting for the server")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut buf = vec![0u8; 16384];
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let n = self.io.as_mut().unwrap().read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser
                .feed(&buf[..n], &mut out)
                .expect("the server sent bad XML");
            self.frames.extend(out);
        }
    }

    /// The next element; panics on anything else.
    pub async fn next(&mut self) -> Element {
        match self.next_frame().await {
            Some(Frame::Element(element)) => element,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// The next stanza that is not presence (tests that don't care about presence).
    pub async fn next_non_presence(&mut self) -> Element {
        loop {
            let element = self.next().await;
            if element.name() != "presence" {
                return element;
            }
        }
    }

    /// Whether nothing arrives within `wait`.
    pub async fn nothing_within(&mut self, wait: Duration) -> bool {
        if !self.frames.is_empty() {
            return false;
        }
        match tokio::time::timeout(wait, self.read_frame()).await {
            Err(_) => true,
            Ok(frame) => {
                // Keep what arrived for the next read.
                if let Some(frame) = frame {
                    self.frames.push_front(frame);
                }
                false
            }
        }
    }

    /// Everything that arrives until nothing more comes for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Element> {
        let mut out = Vec::new();
        while !self.nothing_within(quiet).await {
            out.push(self.next().await);
        }
        out
    }

    /// Read until the stream ends; report how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next_frame().await {
                None => return Closed::Eof,
                Some(Frame::StreamClose) => return Closed::StreamClose,
                Some(Frame::Element(e))
                    if e.name() == "error" && e.ns() == "http://etherx.jabber.org/streams" =>
                {
                    let condition = e
                        .children()
                        .find(|c| c.ns() == STREAMS)
                        .map(|c| c.name().to_owned());
                    return Closed::StreamError(condition.unwrap_or_default());
                }
                Some(_) => continue,
            }
        }
    }

    /// Open a stream to `domain` and read the header and features.
    pub async fn open(&mut self, domain: &str) -> Element {
        self.parser.reset();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
        ))
        .await;
        match self.next_frame().await {
            Some(Frame::StreamOpen(header)) => assert_eq!(header.from.as_deref(), Some(domain)),
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.next().await;
        assert_eq!(features.name(), "features", "{features:?}");
        self.features = Some(features.clone());
        features
    }

    pub fn mechanisms(&self) -> Vec<String> {
        let features = self.features.as_ref().unwrap();
        features
            .get_child("mechanisms", SASL)
            .map(|m| m.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// STARTTLS on an open stream, then reopen.
    pub async fn starttls(&mut self, domain: &str, cert: &Path) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = self.next().await;
        assert_eq!(proceed.name(), "proceed");
        let io = self.io.take().unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls_config(cert));
        let tls = connector
            .connect(ServerName::try_from(domain.to_owned()).unwrap(), io)
            .await
            .unwrap();
        self.io = Some(Box::new(tls));
        self.frames.clear();
        self.open(domain).await;
    }

    /// SCRAM (RFC 5802) as a client. Returns the SASL failure condition on failure.
    pub async fn scram(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let nonce = B64.encode(rand_bytes());
        let first_bare = format!("n={user},r={nonce}");
        self.send(&format!(
            "<auth xmlns='{SASL}' mechanism='{mechanism}'>{}</auth>",
            B64.encode(format!("n,,{first_bare}"))
        ))
        .await;
        let challenge = self.next().await;
        if challenge.name() == "failure" {
            return Err(failure_condition(&challenge));
        }
        assert_eq!(challenge.name(), "challenge");
        let server_first = String::from_utf8(B64.decode(challenge.text()).unwrap()).unwrap();
        let mut r = "";
        let mut s = "";
        let mut i = 0u32;
        for part in server_first.split(',') {
            match part.split_at(2) {
                ("r=", v) => r = v,
                ("s=", v) => s = v,
                ("i=", v) => i = v.parse().unwrap(),
                _ => {}
            }
        }
        assert!(r.starts_with(&nonce));
        let salt = B64.decode(s).unwrap();
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let (proof, server_signature) = if mechanism == "SCRAM-SHA-1" {
            scram_sha1(password, &salt, i, &auth_message)
        } else {
            scram_sha256(password, &salt, i, &auth_message)
        };
        self.send(&format!(
            "<response xmlns='{SASL}'>{}</response>",
            B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
        ))
        .await;
        let outcome = self.next().await;
        if outcome.name() == "failure" {
            return Err(failure_condition(&outcome));
        }
        assert_eq!(outcome.name(), "success", "{outcome:?}");
        let final_message = String::from_utf8(B64.decode(outcome.text()).unwrap()).unwrap();
        assert_eq!(
            final_message,
            format!("v={}", B64.encode(server_signature)),
            "server signature"
        );
        Ok(())
    }

    pub async fn plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        self.send(&format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
            B64.encode(format!("\0{user}\0{password}"))
        ))
        .await;
        let outcome = self.next().await;
        if outcome.name() == "failure" {
            return Err(failure_condition(&outcome));
        }
        assert_eq!(outcome.name(), "success");
        Ok(())
    }

    /// Bind a resource (server-chosen if `None`) and return the full JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> String {
        let inner = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
        ))
        .await;
        let reply = self.next().await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        let jid = reply
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .unwrap()
            .get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind")
            .unwrap()
            .text();
        self.jid = Some(jid.clone());
        jid
    }

    /// Log in over STARTTLS with SCRAM-SHA-256, bind, optionally send initial presence.
    pub async fn login(
        server: &super::TestServer,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        Client::login_at(
            server.addr(super::STARTTLS),
            &server.cert(),
            user,
            password,
            resource,
        )
        .await
    }

    /// [`Client::login`] to the STARTTLS listener at `addr`, trusting `cert`.
    pub async fn login_at(
        addr: SocketAddr,
        cert: &Path,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let domain = user.split('@').nth(1).unwrap();
        let local = user.split('@').next().unwrap();
        let mut client = Client::connect(addr).await;
        client.open(domain).await;
        client.starttls(domain, cert).await;
        client
            .scram("SCRAM-SHA-256", local, password)
            .await
            .unwrap();
        client.open(domain).await;
        client.bind(Some(resource)).await;
        client
    }

    /// Log in and send initial presence, consuming the server's echo of it.
    pub async fn online(
        server: &super::TestServer,
        user: &str,
        password: &str,
        resource: &str,
        priority: i8,
    ) -> Client {
        let mut client = Client::login(server, user, password, resource).await;
        client
            .send(&format!(
                "<presence><priority>{priority}</priority></presence>"
            ))
            .await;
        loop {
            let echo = client.next().await;
            if echo.name() == "presence" && echo.attr("from") == client.jid.as_deref() {
                break;
            }
        }
        client
    }
}

fn failure_condition(failure: &Element) -> String {
    failure
        .children()
        .next()
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

fn rand_bytes() -> [u8; 18] {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).unwrap();
    b
}

macro_rules! scram_math {
    ($name:ident, $hash:ty) => {
        fn $name(
            password: &str,
            salt: &[u8],
            iterations: u32,
            auth_message: &str,
        ) -> (Vec<u8>, Vec<u8>) {
            let mut salted = vec![0u8; <$hash as Digest>::output_size()];
            pbkdf2::pbkdf2_hmac::<$hash>(password.as_bytes(), salt, iterations, &mut salted);
            let hmac = |key: &[u8], data: &[u8]| {
                let mut mac = <hmac::Hmac<$hash> as KeyInit>::new_from_slice(key).unwrap();
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            };
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = <$hash as Digest>::digest(&client_key).to_vec();
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac(&salted, b"Server Key");
            (proof, hmac(&server_key, auth_message.as_bytes()))
        }
    };
}

scram_math!(scram_sha1, sha1::Sha1);
scram_math!(scram_sha256, sha2::Sha256);
