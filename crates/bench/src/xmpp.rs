//! A client stream (RFC 6120): connect, STARTTLS, SASL, resource binding, in-band
//! registration (XEP-0077); then the stream is split into a reading and a writing half.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use herald_stream::{Frame, StreamParser};
use minidom::Element;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
};

use crate::{
    error::BenchError,
    scram::{self, Scram},
};

/// How long one negotiation step may wait for the server.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest element the tool accepts.
const MAX_ELEMENT: usize = 1 << 20;

const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const SASL_NS: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const SESSION_NS: &str = "urn:ietf:params:xml:ns:xmpp-session";
const REGISTER_NS: &str = "jabber:iq:register";

/// A byte stream: TCP, possibly upgraded to TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Whether the client upgrades with STARTTLS (RFC 6120 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Upgrade with STARTTLS before authenticating.
    Starttls,
    /// Stay on plaintext (only where the server allows it).
    None,
}

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct Target {
    /// The c2s address (always a loopback address).
    pub addr: SocketAddr,
    /// The XMPP domain.
    pub domain: String,
    /// STARTTLS or plaintext.
    pub tls: TlsMode,
    /// A SASL mechanism to insist on, or the strongest one offered.
    pub mechanism: Option<&'static str>,
    /// Every account's password.
    pub password: String,
}

/// A stream being negotiated.
pub struct Conn {
    io: Box<dyn Io>,
    reader: FrameReader,
}

/// The reading side: a parser and what it has parsed but nobody has taken yet.
struct FrameReader {
    parser: StreamParser,
    frames: VecDeque<Frame>,
    buf: Box<[u8]>,
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader {
            parser: StreamParser::new(MAX_ELEMENT),
            frames: VecDeque::new(),
            buf: vec![0; 32 * 1024].into_boxed_slice(),
        }
    }

    /// The next frame, or `None` at the end of the TCP stream.
    async fn frame<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Frame>, BenchError> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Some(frame));
            }
            let n = io.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let mut out = Vec::new();
            self.parser.feed(&self.buf[..n], &mut out)?;
            self.frames.extend(out);
        }
    }

    /// The next element; a stream error, a stream close or EOF is an error.
    async fn element<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Element, BenchError> {
        match self.frame(io).await? {
            Some(Frame::Element(e)) if e.is("error", STREAMS_NS) => Err(stream_error(&e)),
            Some(Frame::Element(e)) => Ok(e),
            Some(Frame::StreamOpen(_)) => {
                Err(BenchError::Negotiation("unexpected stream header".into()))
            }
            Some(Frame::StreamClose) | None => Err(BenchError::Closed(None)),
        }
    }
}

fn stream_error(error: &Element) -> BenchError {
    BenchError::Closed(error.children().next().map(|c| c.name().to_owned()))
}

async fn step<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| BenchError::Timeout(STEP_TIMEOUT, what))?
}

impl Conn {
    /// A TCP connection, no stream yet.
    pub async fn connect(addr: SocketAddr) -> Result<Conn, BenchError> {
        let tcp = step("connect", async { Ok(TcpStream::connect(addr).await?) }).await?;
        tcp.set_nodelay(true)?;
        Ok(Conn {
            io: Box::new(tcp),
            reader: FrameReader::new(),
        })
    }

    /// Write and flush.
    pub async fn send(&mut self, xml: &str) -> Result<(), BenchError> {
        self.io.write_all(xml.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next element, within [`STEP_TIMEOUT`].
    pub async fn element(&mut self, what: &'static str) -> Result<Element, BenchError> {
        step(what, self.reader.element(&mut self.io)).await
    }

    /// The next frame, within [`STEP_TIMEOUT`].
    async fn frame(&mut self, what: &'static str) -> Result<Option<Frame>, BenchError> {
        step(what, self.reader.frame(&mut self.io)).await
    }

    /// Open a stream (or restart it) in `namespace` and return the server's header.
    pub async fn open_raw(
        &mut self,
        namespace: &str,
        domain: &str,
        version: bool,
    ) -> Result<herald_stream::StreamHeader, BenchError> {
        self.reader.parser.reset();
        self.reader.frames.clear();
        let version = if version { " version='1.0'" } else { "" };
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{namespace}' xmlns:stream='{STREAMS_NS}' to='{domain}'{version}>"
        ))
        .await?;
        match self.frame("stream header").await? {
            Some(Frame::StreamOpen(header)) => Ok(header),
            Some(Frame::Element(e)) if e.is("error", STREAMS_NS) => Err(stream_error(&e)),
            other => Err(BenchError::Negotiation(format!(
                "expected a stream header, got {other:?}"
            ))),
        }
    }

    /// Open a client stream and return its features.
    async fn open(&mut self, domain: &str) -> Result<Element, BenchError> {
        self.open_raw("jabber:client", domain, true).await?;
        let features = self.element("stream features").await?;
        if !features.is("features", STREAMS_NS) {
            return Err(BenchError::Negotiation(format!(
                "expected features, got <{}/>",
                features.name()
            )));
        }
        Ok(features)
    }

    /// RFC 6120 section 5.4: STARTTLS, then the restarted stream's features.
    async fn starttls(mut self, domain: &str) -> Result<(Conn, Element), BenchError> {
        self.send(&format!("<starttls xmlns='{TLS_NS}'/>")).await?;
        let proceed = self.element("STARTTLS proceed").await?;
        if !proceed.is("proceed", TLS_NS) {
            return Err(BenchError::Tls(format!(
                "the server answered <{}/>",
                proceed.name()
            )));
        }
        let name =
            ServerName::try_from(domain.to_owned()).map_err(|e| BenchError::Tls(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let tls = step("TLS handshake", async {
            connector
                .connect(name, self.io)
                .await
                .map_err(|e| BenchError::Tls(e.to_string()))
        })
        .await?;
        let mut conn = Conn {
            io: Box::new(tls),
            reader: FrameReader::new(),
        };
        let features = conn.open(domain).await?;
        Ok((conn, features))
    }

    /// Connect, open the stream and upgrade it as `target` says; returns the features.
    async fn negotiate_transport(target: &Target) -> Result<(Conn, Element), BenchError> {
        let mut conn = Conn::connect(target.addr).await?;
        let features = conn.open(&target.domain).await?;
        match target.tls {
            TlsMode::None => Ok((conn, features)),
            TlsMode::Starttls => {
                if features.get_child("starttls", TLS_NS).is_none() {
                    return Err(BenchError::Tls("the server does not offer STARTTLS".into()));
                }
                conn.starttls(&target.domain).await
            }
        }
    }

    /// RFC 6120 section 6: authenticate as `user` with the strongest shared mechanism.
    async fn authenticate(
        &mut self,
        features: &Element,
        target: &Target,
        user: &str,
    ) -> Result<(), BenchError> {
        let offered: Vec<String> = features
            .get_child("mechanisms", SASL_NS)
            .map(|m| m.children().map(Element::text).collect())
            .unwrap_or_default();
        let mechanism = match target.mechanism {
            Some(wanted) if offered.iter().any(|m| m == wanted) => wanted,
            Some(wanted) => {
                return Err(BenchError::Sasl(format!(
                    "{wanted} is not offered (offered: {offered:?})"
                )));
            }
            None => scram::MECHANISMS
                .into_iter()
                .find(|m| offered.iter().any(|o| o == m))
                .ok_or_else(|| {
                    BenchError::Sasl(format!("no mechanism in common (offered: {offered:?})"))
                })?,
        };
        if mechanism == "PLAIN" {
            self.send(&format!(
                "<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{}</auth>",
                B64.encode(scram::plain(user, &target.password))
            ))
            .await?;
            let outcome = self.element("SASL outcome").await?;
            return sasl_success(&outcome).map(|_| ());
        }
        let scram = Scram::start(mechanism, user)?;
        self.send(&format!(
            "<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{}</auth>",
            B64.encode(scram.client_first())
        ))
        .await?;
        let challenge = self.element("SASL challenge").await?;
        if !challenge.is("challenge", SASL_NS) {
            return Err(sasl_failure(&challenge));
        }
        let server_first = decode(&challenge.text())?;
        let reply = scram.client_final(&server_first, &target.password)?;
        self.send(&format!(
            "<response xmlns='{SASL_NS}'>{}</response>",
            B64.encode(&reply.message)
        ))
        .await?;
        let outcome = self.element("SASL outcome").await?;
        let additional = sasl_success(&outcome)?;
        if additional != format!("v={}", reply.server_signature) {
            return Err(BenchError::Sasl("wrong server signature".into()));
        }
        Ok(())
    }

    /// RFC 6120 section 7: bind `resource`; the RFC 3921 session if the server requires it.
    async fn bind(&mut self, features: &Element, resource: &str) -> Result<String, BenchError> {
        if features.get_child("bind", BIND_NS).is_none() {
            return Err(BenchError::Negotiation(
                "the server does not offer resource binding".into(),
            ));
        }
        self.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='{BIND_NS}'><resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        let reply = self.iq_reply("bind", "bind result").await?;
        let jid = reply
            .get_child("bind", BIND_NS)
            .and_then(|b| b.get_child("jid", BIND_NS))
            .map(Element::text)
            .ok_or_else(|| {
                BenchError::Negotiation(format!("bind failed: {}", String::from(&reply)))
            })?;
        if let Some(session) = features.get_child("session", SESSION_NS)
            && !session.has_child("optional", SESSION_NS)
        {
            self.send(&format!(
                "<iq type='set' id='sess'><session xmlns='{SESSION_NS}'/></iq>"
            ))
            .await?;
            self.iq_reply("sess", "session result").await?;
        }
        Ok(jid)
    }

    /// The IQ answering `id`, skipping anything else; an error reply is an error.
    async fn iq_reply(&mut self, id: &str, what: &'static str) -> Result<Element, BenchError> {
        loop {
            let element = self.element(what).await?;
            if element.name() == "iq" && element.attr("id") == Some(id) {
                if element.attr("type") == Some("result") {
                    return Ok(element);
                }
                return Err(BenchError::Negotiation(format!(
                    "{what}: {}",
                    String::from(&element)
                )));
            }
        }
    }

    /// Log in as `user` (the local part), bind `resource`; the stream is then split.
    pub async fn login(target: &Target, user: &str, resource: &str) -> Result<Session, BenchError> {
        let (mut conn, features) = Conn::negotiate_transport(target).await?;
        conn.authenticate(&features, target, user).await?;
        let features = conn.open(&target.domain).await?;
        let jid = conn.bind(&features, resource).await?;
        let (read, write) = tokio::io::split(conn.io);
        Ok(Session {
            jid,
            reader: Reader {
                io: read,
                frames: conn.reader,
            },
            writer: Writer { io: write },
        })
    }

    /// XEP-0077 section 3.1: create the account `user`; an account that exists already
    /// (`conflict`) counts as created. Returns whether it was new.
    pub async fn register(target: &Target, user: &str) -> Result<bool, BenchError> {
        let (mut conn, _features) = Conn::negotiate_transport(target).await?;
        conn.send(&format!(
            "<iq type='set' id='reg'><query xmlns='{REGISTER_NS}'><username>{user}</username><password>{}</password></query></iq>",
            escape(&target.password)
        ))
        .await?;
        let created = loop {
            let reply = conn.element("registration result").await?;
            if reply.name() != "iq" || reply.attr("id") != Some("reg") {
                continue;
            }
            match reply.attr("type") {
                Some("result") => break true,
                _ if reply
                    .get_child("error", "jabber:client")
                    .is_some_and(|e| e.children().any(|c| c.name() == "conflict")) =>
                {
                    break false;
                }
                _ => {
                    return Err(BenchError::Negotiation(format!(
                        "registration of {user} refused: {}",
                        String::from(&reply)
                    )));
                }
            }
        };
        let _ = conn.send("</stream:stream>").await;
        Ok(created)
    }
}

fn decode(text: &str) -> Result<String, BenchError> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| BenchError::Sasl("the server's SASL data is not base64".into()))?;
    String::from_utf8(bytes)
        .map_err(|_| BenchError::Sasl("the server's SASL data is not UTF-8".into()))
}

/// The additional data of `<success/>`, or the failure.
fn sasl_success(outcome: &Element) -> Result<String, BenchError> {
    if outcome.is("success", SASL_NS) {
        decode(&outcome.text())
    } else {
        Err(sasl_failure(outcome))
    }
}

fn sasl_failure(element: &Element) -> BenchError {
    let condition = element
        .children()
        .next()
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| element.name().to_owned());
    BenchError::Sasl(condition)
}

/// Escape text for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A bound session, split in two so that one task can read while another writes.
pub struct Session {
    /// The full JID the server bound.
    pub jid: String,
    /// Stanzas from the server.
    pub reader: Reader,
    /// Stanzas to the server.
    pub writer: Writer,
}

/// The reading half of a bound session.
pub struct Reader {
    io: ReadHalf<Box<dyn Io>>,
    frames: FrameReader,
}

impl Reader {
    /// The next stanza, or `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Element>, BenchError> {
        match self.frames.element(&mut self.io).await {
            Ok(element) => Ok(Some(element)),
            Err(BenchError::Closed(None)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The IQ answering `id`, skipping everything else, within [`STEP_TIMEOUT`].
    pub async fn iq_reply(&mut self, id: &str) -> Result<Element, BenchError> {
        step("IQ reply", async {
            loop {
                match self.next().await? {
                    Some(e) if e.name() == "iq" && e.attr("id") == Some(id) => return Ok(e),
                    Some(_) => continue,
                    None => return Err(BenchError::Closed(None)),
                }
            }
        })
        .await
    }

    /// Read until the server closes the stream (after we closed ours), at most `wait`.
    pub async fn until_closed(&mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, async { while let Ok(Some(_)) = self.next().await {} })
            .await;
    }
}

/// The writing half of a bound session.
pub struct Writer {
    io: WriteHalf<Box<dyn Io>>,
}

impl Writer {
    /// Write and flush.
    pub async fn send(&mut self, xml: &str) -> Result<(), BenchError> {
        self.io.write_all(xml.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Close our side of the stream (RFC 6120 section 4.4).
    pub async fn close(&mut self) {
        let _ = self.send("</stream:stream>").await;
    }
}

/// The tool only talks to servers on this machine, which present self-signed certificates
/// for the benchmark domain: the certificate is not checked against any root, but the
/// handshake signatures still are, with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }))
}
