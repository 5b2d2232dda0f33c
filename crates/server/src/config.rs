//! The configuration file: TOML with MongooseIM 6's section and option names, read once at
//! start-up into a typed [`Config`].
//!
//! Reading goes in three steps: the text is parsed as TOML, read into the file's shape (every
//! table rejects unknown keys), then checked and given defaults. Every failure is a
//! [`ConfigError`] naming the file, the line and the key path. `docs/configuration.md` lists
//! every key; `config/example.toml` shows them with their defaults.
//!
//! Relative paths written in the file (`general.data_dir`, `tls.certfile`, `tls.keyfile`) are
//! resolved against the directory of the file, so a configuration means the same whatever the
//! working directory of the server. `$HERALD_DATA` and the built-in `./herald-data` are not in the
//! file and stay relative to the working directory.
//!
//! Loading does no other I/O: the certificate files are read when the listeners start.

mod document;
mod error;
mod http;
mod operations;
mod push;
mod raw;
mod storage;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use operations::{AdminApi, HttpListener, Instrumentation};
pub use storage::DatabaseConfig;

const DEFAULT_IP_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const DEFAULT_MAX_STANZA_SIZE: usize = 65536;
const DEFAULT_MAX_CONNECTIONS: usize = 10000;
const DEFAULT_STATE_TIMEOUT_MS: u64 = 5000;
const DEFAULT_SEND_TIMEOUT_S: u64 = 30;
const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 30;
const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;
const DEFAULT_MAX_USER_SESSIONS: usize = 10;
const DEFAULT_BACKWARDS_COMPATIBLE_SESSION: bool = true;
const DEFAULT_LOGLEVEL: LogLevel = LogLevel::Warning;
const DEFAULT_DATA_DIR: &str = "./herald-data";
const DATA_DIR_VARIABLE: &str = "HERALD_DATA";

/// A checked configuration, with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[general]`: served domains, data directory, log level.
    pub general: General,
    /// `[listen]`: the listening sockets.
    pub listen: Listen,
    /// `[modules]`: the enabled modules and their options.
    pub modules: Modules,
    /// `[outgoing_pools.rdbms.default]`, `[auth] methods` and the modules' `backend`: the one
    /// storage engine of every store.
    pub database: DatabaseConfig,
    /// `[internal_databases.sqlite]`: how the embedded database keeps what it commits.
    pub sqlite: SqliteConfig,
    /// `[s2s]`: federation's options (paths resolved against the file's directory);
    /// `None` when the file has no such table.
    pub s2s: Option<S2sConfig>,
    /// `[instrumentation]`: what metrics are recorded for.
    pub instrumentation: Instrumentation,
}

impl Config {
    /// Whether the server federates: an `[s2s]` table or an s2s listener.
    pub fn federates(&self) -> bool {
        self.s2s.is_some() || !self.listen.s2s.is_empty()
    }
}

/// `[internal_databases.sqlite]` (a section named after MongooseIM's `[internal_databases]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqliteConfig {
    /// `synchronous`: `"normal"` (default: a commit survives the process being killed; a
    /// power loss may lose the last ones) or `"full"` (a commit survives a power loss too,
    /// one disk sync per transaction).
    pub synchronous: herald_storage::Durability,
}

/// The `[general]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct General {
    /// `hosts`: the XMPP domains served, as domain-only bare JIDs in normalised (lowercase)
    /// form; never empty, no duplicates.
    pub hosts: Vec<jid::BareJid>,
    /// `data_dir`: where the database and the generated certificate live.
    pub data_dir: PathBuf,
    /// `loglevel`: how much is logged.
    pub loglevel: LogLevel,
    /// `log_format`: `"text"` (the default, for people) or `"json"` (one object per line).
    pub log_format: LogFormat,
    /// `max_user_sessions` (MongooseIM's access rule of that name, as a number): resources
    /// bound at once per account (default 10); `None` for `"infinity"`.
    pub max_user_sessions: Option<usize>,
    /// `recipient_lanes`: how many recipient lanes (which push and store messages from
    /// components and other servers for offline accounts, in order per account) handle a
    /// message at once (default 32); 0 handles them on the sender's connection.
    pub recipient_lanes: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and `span`/`spans` when inside spans.
    Json,
}

/// MongooseIM's log levels, from silent to everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// `"none"`: nothing is logged.
    None,
    /// `"emergency"`: the system is unusable.
    Emergency,
    /// `"alert"`: action must be taken immediately.
    Alert,
    /// `"critical"`: critical conditions.
    Critical,
    /// `"error"`: errors.
    Error,
    /// `"warning"`: warnings; the default.
    Warning,
    /// `"notice"`: normal but significant events.
    Notice,
    /// `"info"`: informational messages.
    Info,
    /// `"debug"`: debugging messages.
    Debug,
    /// `"all"`: everything.
    All,
}

impl LogLevel {
    /// The level as a directive for tracing-subscriber's `EnvFilter`: `"off"`, `"error"`,
    /// `"warn"`, `"info"`, `"debug"` or `"trace"`.
    ///
    /// tracing has fewer levels than MongooseIM: emergency, alert and critical become `error`,
    /// and notice becomes `info` so that asking for notices never hides them.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::None => "off",
            LogLevel::Emergency | LogLevel::Alert | LogLevel::Critical | LogLevel::Error => "error",
            LogLevel::Warning => "warn",
            LogLevel::Notice | LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::All => "trace",
        }
    }
}

/// The `[listen]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `[[listen.c2s]]`: client-to-server listeners, in file order; no two overlap.
    pub c2s: Vec<C2sListener>,
    /// `[[listen.service]]`: external component listeners (XEP-0114), in file order.
    pub service: Vec<ServiceListener>,
    /// `[[listen.s2s]]`: listeners for other servers (federation), in file order.
    pub s2s: Vec<S2sListener>,
    /// `[[listen.http]]`: metrics, health and the admin API, in file order.
    pub http: Vec<HttpListener>,
}

/// One `[[listen.s2s]]` table: a socket accepting other servers' streams (RFC 6120).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sListener {
    /// `ip_address` and `port` (5269 by convention).
    pub addr: SocketAddr,
    /// `max_stanza_size`, as for c2s.
    pub max_stanza_size: usize,
    /// `max_connections`, as for c2s.
    pub max_connections: usize,
    /// `state_timeout`: how long a stream may take to authenticate its first domain.
    pub state_timeout: Duration,
    /// `tls.mode`: `"starttls"` (default; whether it is required is `[s2s] use_starttls`)
    /// or `"tls"` (XEP-0368 direct TLS).
    pub direct_tls: bool,
    /// `tls.certfile` and `tls.keyfile`: the certificate for server links when `[s2s]`
    /// names none.
    pub cert: Option<CertFiles>,
}

/// One `[[listen.service]]` table: a socket accepting external components (XEP-0114).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceListener {
    /// `ip_address` and `port`.
    pub addr: SocketAddr,
    /// `password`: the secret shared with the components (required, non-empty).
    pub password: String,
    /// `conflict_behaviour`: what a second component for a connected domain gets.
    pub conflict_behaviour: ConflictBehaviour,
    /// `max_stanza_size`, as for c2s.
    pub max_stanza_size: usize,
    /// `max_connections`, as for c2s.
    pub max_connections: usize,
    /// `state_timeout`: how long the handshake may take.
    pub state_timeout: Duration,
    /// `check_from`: refuse stanzas whose `from` is not at the component's domain.
    pub check_from: bool,
    /// `hidden_components`: keep the components out of the server's disco#items.
    pub hidden_components: bool,
}

/// MongooseIM's `conflict_behaviour` for component listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictBehaviour {
    /// `"disconnect"` (default): the new component is refused with `conflict`.
    Disconnect,
    /// `"kick_old"`: the connected component is closed with `conflict`.
    KickOld,
}

/// One `[[listen.c2s]]` table: a socket accepting client connections (RFC 6120).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sListener {
    /// `ip_address` and `port`; port 0 asks the system for a free port.
    pub addr: SocketAddr,
    /// `max_stanza_size`: the largest stanza accepted, in bytes.
    pub max_stanza_size: usize,
    /// `max_connections`: how many connections the listener holds at once.
    pub max_connections: usize,
    /// `state_timeout`: how long a stream that has not authenticated may stay idle before it is
    /// closed with a `<connection-timeout/>` stream error.
    pub state_timeout: Duration,
    /// `send_timeout` (seconds, ejabberd's name): how long a write may wait for the client
    /// to read; a client that takes nothing for this long is dropped (default 30 s).
    pub send_timeout: Duration,
    /// `handshake_timeout` (seconds): how long the whole negotiation may take (default 30 s).
    pub handshake_timeout: Duration,
    /// `max_connections_per_ip`: connections held at once from one address (default 1000,
    /// room for carrier-grade NAT).
    pub max_connections_per_ip: usize,
    /// `backwards_compatible_session`: whether the RFC 3921 `<session/>` stream feature is
    /// offered (RFC 6121 §1.4 allows it for older clients).
    pub backwards_compatible_session: bool,
    /// `tls`: how TLS is negotiated; `None` for a plaintext listener.
    pub tls: Option<TlsConfig>,
}

/// The `tls` table of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `tls.mode`: when TLS starts.
    pub mode: TlsMode,
    /// `tls.certfile` and `tls.keyfile`; `None` to use a self-signed certificate generated in
    /// the data directory.
    pub cert: Option<CertFiles>,
}

/// When TLS starts on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// `"starttls"`: STARTTLS is offered (RFC 6120 §5); the default.
    StartTls,
    /// `"starttls_required"`: STARTTLS is offered as mandatory-to-negotiate; nothing else is
    /// accepted before it.
    StartTlsRequired,
    /// `"tls"`: TLS from the first byte (XEP-0368).
    DirectTls,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// `tls.certfile`: the certificate chain, leaf first.
    pub certfile: PathBuf,
    /// `tls.keyfile`: the private key of the leaf certificate.
    pub keyfile: PathBuf,
}

/// The `[modules]` section: one field per known module, `Some` when the file has a
/// `[modules.NAME]` table.
///
/// Each field is the module's own config type (with its `Section` impl). Adding a module is
/// adding a field here and in the file's shape (`config/raw.rs`), and a line in
/// `validate::modules`; adding an option touches the module's file only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    /// `[modules.mod_disco]`: service discovery (XEP-0030).
    pub mod_disco: Option<DiscoConfig>,
    /// `[modules.mod_ping]`: XMPP ping (XEP-0199).
    pub mod_ping: Option<PingConfig>,
    /// `[modules.mod_event_pusher]`: MongooseIM's event pusher; its `push` backend is push
    /// notifications (XEP-0357).
    pub mod_event_pusher: Option<EventPusherConfig>,
    /// `[modules.mod_stream_management]`: stream management with resumption (XEP-0198).
    pub mod_stream_management: Option<StreamManagementConfig>,
    /// `[modules.mod_roster]`: rosters and presence subscriptions (RFC 6121).
    pub mod_roster: Option<RosterConfig>,
    /// `[modules.mod_offline]`: offline messages (XEP-0160).
    pub mod_offline: Option<OfflineConfig>,
    /// `[modules.mod_register]`: in-band registration and password changes (XEP-0077).
    pub mod_register: Option<RegisterConfig>,
    /// `[modules.mod_fail2ban]`: tunes login throttling (on with defaults when absent).
    pub mod_fail2ban: Option<Fail2banConfig>,
    /// `[modules.mod_carboncopy]`: message carbons (XEP-0280).
    pub mod_carboncopy: Option<CarbonsConfig>,
    /// `[modules.mod_csi]`: client state indication (XEP-0352).
    pub mod_csi: Option<CsiConfig>,
    /// `[modules.mod_blocking]`: the blocking command (XEP-0191).
    pub mod_blocking: Option<BlockingConfig>,
    /// `[modules.mod_pep]`: personal eventing (XEP-0163).
    pub mod_pep: Option<PepConfig>,
    /// `[modules.mod_vcard]`: vCard-temp (XEP-0054).
    pub mod_vcard: Option<VcardConfig>,
    /// `[modules.mod_version]`: software version (XEP-0092).
    pub mod_version: Option<VersionConfig>,
    /// `[modules.mod_mam]`: the message archive (XEP-0313).
    pub mod_mam: Option<MamConfig>,
}

// Each module's options are the module's own type, with its defaults and checks.
pub use herald_core::{
    blocking::BlockingConfig,
    c2s::throttle::Fail2banConfig,
    carbons::CarbonsConfig,
    csi::CsiConfig,
    disco::DiscoConfig,
    mam::MamConfig,
    offline::OfflineConfig,
    pep::PepConfig,
    ping::{PingConfig, PingTimeoutAction},
    register::RegisterConfig,
    roster::RosterConfig,
    s2s::S2sConfig,
    sm::{SmSettings as StreamManagementConfig, StaleH as StaleHConfig},
    vcard::VcardConfig,
    version::VersionConfig,
};
pub use herald_push::config::EventPusherConfig;

impl Config {
    /// The configuration used when no `--config` is given: hosts `["localhost"]`, data_dir from
    /// `$HERALD_DATA` or `./herald-data`, loglevel warning, one c2s listener on
    /// 127.0.0.1:5222 with STARTTLS and a self-signed certificate, the modules of
    /// `config/example.toml` (mod_disco, mod_ping, mod_roster, mod_offline, ...) enabled.
    pub fn embedded_default() -> Config {
        Config::embedded_default_in(default_data_dir())
    }

    /// Reads, parses and checks the file at `path`; relative paths in it are resolved against
    /// its directory, and messages name it as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Config::parse(&text, &path.display().to_string(), base_dir)
    }

    /// Parses and checks `text`; `base_dir` resolves relative paths; `origin` is the file name
    /// used in messages.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        parse_with(text, origin, base_dir, default_data_dir())
    }

    fn embedded_default_in(data_dir: PathBuf) -> Config {
        Config {
            general: General {
                hosts: vec![jid::BareJid::new("localhost").expect("localhost is a domain")],
                data_dir,
                loglevel: DEFAULT_LOGLEVEL,
                log_format: LogFormat::Text,
                max_user_sessions: Some(DEFAULT_MAX_USER_SESSIONS),
                recipient_lanes: herald_core::lanes::LANES,
            },
            listen: Listen {
                c2s: vec![C2sListener {
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5222),
                    max_stanza_size: DEFAULT_MAX_STANZA_SIZE,
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    state_timeout: Duration::from_millis(DEFAULT_STATE_TIMEOUT_MS),
                    send_timeout: Duration::from_secs(DEFAULT_SEND_TIMEOUT_S),
                    handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_S),
                    max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
                    backwards_compatible_session: DEFAULT_BACKWARDS_COMPATIBLE_SESSION,
                    // No SASL mechanism (not even SCRAM) before STARTTLS.
                    tls: Some(TlsConfig {
                        mode: TlsMode::StartTlsRequired,
                        cert: None,
                    }),
                }],
                service: Vec::new(),
                s2s: Vec::new(),
                http: Vec::new(),
            },
            modules: Modules {
                mod_disco: Some(DiscoConfig::default()),
                mod_ping: Some(PingConfig::detecting_dead_clients()),
                // Push is what herald is for: on, with the embedded store and the default
                // plugin, so that a newcomer's phones get notifications.
                mod_event_pusher: Some(EventPusherConfig {
                    push: Some(herald_push::config::PushConfig::default()),
                }),
                mod_stream_management: Some(StreamManagementConfig::default()),
                mod_roster: Some(RosterConfig::default()),
                mod_offline: Some(OfflineConfig::default()),
                mod_register: None,
                mod_fail2ban: None,
                mod_carboncopy: Some(CarbonsConfig),
                mod_csi: Some(CsiConfig::default()),
                mod_blocking: Some(BlockingConfig),
                mod_pep: Some(PepConfig::default()),
                mod_vcard: Some(VcardConfig::default()),
                mod_version: Some(VersionConfig::default()),
                mod_mam: Some(MamConfig::default()),
            },
            database: DatabaseConfig::Embedded,
            sqlite: SqliteConfig::default(),
            s2s: None,
            instrumentation: Instrumentation::default(),
        }
    }
}

fn parse_with(
    text: &str,
    origin: &str,
    base_dir: &Path,
    default_data_dir: PathBuf,
) -> Result<Config, ConfigError> {
    let document = document::Document::parse(text, origin)?;
    let raw = document.deserialize()?;
    let context = validate::Context {
        base_dir,
        default_data_dir,
    };
    validate::config(raw, &context).map_err(|invalid| document.locate(invalid))
}

/// `$HERALD_DATA` when set and not empty, else `./herald-data`.
fn default_data_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_VARIABLE)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "/default-data";
    const BASE: &str = "/etc/herald";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with(text, "herald.toml", Path::new(BASE), PathBuf::from(DATA))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(error) => error.to_string(),
        }
    }

    fn hosts(config: &Config) -> Vec<String> {
        config
            .general
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const MINIMAL: &str = "[general]\nhosts = [\"localhost\"]\n";

    #[test]
    fn s2s_listener_and_section_parse_and_paths_resolve_against_the_file() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.s2s]]\nport = 5269\ntls.mode = \"tls\"\n\
             [s2s]\ncertfile = \"certs/s2s.pem\"\nuse_starttls = \"required\"\n"
        ))
        .unwrap();
        assert!(config.federates());
        let listener = &config.listen.s2s[0];
        assert_eq!(listener.addr.port(), 5269);
        assert!(listener.direct_tls);
        let s2s = config.s2s.unwrap();
        assert_eq!(
            s2s.certfile.unwrap(),
            Path::new("/etc/herald/certs/s2s.pem")
        );
        assert_eq!(s2s.use_starttls, herald_core::s2s::UseStartTls::Required);
        assert!(!parse(MINIMAL).unwrap().federates());
    }

    #[test]
    fn bad_s2s_keys_name_their_path_and_line() {
        assert_eq!(
            error(&format!("{MINIMAL}[s2s]\ndefault_policy = \"maybe\"\n")),
            "herald.toml:4: s2s.default_policy: unknown variant \"maybe\", expected one of \"allow\", \"deny\""
        );
        assert!(
            error(&format!(
                "{MINIMAL}[[listen.s2s]]\nport = 5269\ntls.mode = \"starttls_required\"\n"
            ))
            .contains("listen.s2s[0].tls.mode")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5269\n[[listen.s2s]]\nport = 5269\n"
            ))
            .contains("overlaps")
        );
    }

    #[test]
    fn an_http_listener_parses_with_mongooseim_handler_names() {
        let config = parse(&format!(
            "{MINIMAL}\n[[listen.http]]\nport = 9090\nip_address = \"127.0.0.1\"\n\
             [[listen.http.handlers.mongoose_prometheus_handler]]\nhost = \"_\"\npath = \"/metrics\"\n\
             [[listen.http.handlers.mongoose_admin_api]]\ntoken = \"0123456789abcdef\"\n\
             [instrumentation.prometheus]\n"
        ))
        .unwrap();
        let http = &config.listen.http[0];
        assert_eq!(http.addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(http.prometheus.as_deref(), Some("/metrics"));
        let admin = http.admin.as_ref().unwrap();
        assert_eq!(
            (admin.path.as_str(), admin.token.as_str()),
            ("/api", "0123456789abcdef")
        );
        assert!(
            !format!("{admin:?}").contains("0123456789abcdef"),
            "the token is not printed"
        );
        assert!(config.instrumentation.prometheus);
    }

    #[test]
    fn bad_http_keys_name_their_path() {
        let admin = |listener: &str, api: &str| {
            error(&format!(
                "{MINIMAL}\n[[listen.http]]\nport = 9090\n{listener}\n[[listen.http.handlers.mongoose_admin_api]]\n{api}\n"
            ))
        };
        let clear = admin("ip_address = \"0.0.0.0\"", "token = \"0123456789abcdef\"");
        assert!(
            clear.contains(
                "listen.http[0].handlers.mongoose_admin_api[0]: is on 0.0.0.0 without TLS"
            ),
            "{clear}"
        );
        let short = admin("ip_address = \"127.0.0.1\"", "token = \"short\"");
        assert!(
            short.contains("mongoose_admin_api[0].token: is shorter than 16 characters"),
            "{short}"
        );
        let missing = admin("ip_address = \"127.0.0.1\"", "path = \"/api\"");
        assert!(
            missing.contains("mongoose_admin_api[0].token: is missing"),
            "{missing}"
        );
        let both = admin(
            "ip_address = \"127.0.0.1\"",
            "token = \"0123456789abcdef\"\ntoken_file = \"t\"",
        );
        assert!(both.contains("token_file: is given with token"), "{both}");
        let host = admin(
            "ip_address = \"127.0.0.1\"",
            "host = \"localhost\"\ntoken = \"0123456789abcdef\"",
        );
        assert!(host.contains("mongoose_admin_api[0].host"), "{host}");
        let format = error(&format!("{MINIMAL}log_format = \"xml\"\n"));
        assert!(format.contains("general.log_format"), "{format}");
        let mode = error(&format!(
            "{MINIMAL}\n[[listen.http]]\nport = 1\ntls.mode = \"tls\"\n"
        ));
        assert!(mode.contains("listen.http[0].tls.mode"), "{mode}");
    }

    #[test]
    fn a_service_listener_parses_with_mongooseim_names_and_defaults() {
        let config = parse(&format!(
            "{MINIMAL}\n[[listen.service]]\nport = 8888\nip_address = \"127.0.0.1\"\npassword = \"secret\"\nconflict_behaviour = \"kick_old\"\n"
        ))
        .unwrap();
        let service = &config.listen.service[0];
        assert_eq!(service.addr, "127.0.0.1:8888".parse().unwrap());
        assert_eq!(service.password, "secret");
        assert_eq!(service.conflict_behaviour, ConflictBehaviour::KickOld);
        assert!(service.check_from);
        assert!(!service.hidden_components);
        assert_eq!(service.max_stanza_size, DEFAULT_MAX_STANZA_SIZE);
    }

    #[test]
    fn a_service_listener_without_password_or_with_a_bad_behaviour_is_refused() {
        let missing = error(&format!("{MINIMAL}\n[[listen.service]]\nport = 8888\n"));
        assert!(
            missing.contains("herald.toml:4: listen.service[0].password: missing"),
            "{missing}"
        );
        let bad = error(&format!(
            "{MINIMAL}\n[[listen.service]]\nport = 8888\npassword = \"s\"\nconflict_behaviour = \"kill\"\n"
        ));
        assert!(
            bad.contains("herald.toml:7: listen.service[0].conflict_behaviour"),
            "{bad}"
        );
        let overlap = error(&format!(
            "{MINIMAL}\n[[listen.c2s]]\nport = 8888\n\n[[listen.service]]\nport = 8888\npassword = \"s\"\n"
        ));
        assert!(
            overlap.contains(
                "listen.service[0]: address 0.0.0.0:8888 overlaps 0.0.0.0:8888 of listen.c2s[0]"
            ),
            "{overlap}"
        );
    }

    #[test]
    fn the_issue_example_parses_to_the_expected_values() {
        let config = parse(
            r#"
[general]
hosts = ["localhost", "example.org"]
data_dir = "/var/lib/herald"
loglevel = "warning"

[[listen.c2s]]
port = 5222
ip_address = "127.0.0.1"
max_stanza_size = 65536
max_connections = 10000
state_timeout = 5000
backwards_compatible_session = true
tls.mode = "starttls"
tls.certfile = "cert.pem"
tls.keyfile = "key.pem"

[modules.mod_disco]
extra_domains = ["pubsub.example.org"]
[modules.mod_ping]
"#,
        )
        .unwrap();

        let expected = Config {
            general: General {
                hosts: vec![
                    jid::BareJid::new("localhost").unwrap(),
                    jid::BareJid::new("example.org").unwrap(),
                ],
                data_dir: PathBuf::from("/var/lib/herald"),
                loglevel: LogLevel::Warning,
                log_format: LogFormat::Text,
                max_user_sessions: Some(10),
                recipient_lanes: 32,
            },
            listen: Listen {
                c2s: vec![C2sListener {
                    addr: "127.0.0.1:5222".parse().unwrap(),
                    max_stanza_size: 65536,
                    max_connections: 10000,
                    state_timeout: Duration::from_millis(5000),
                    send_timeout: Duration::from_secs(30),
                    handshake_timeout: Duration::from_secs(30),
                    max_connections_per_ip: 1000,
                    backwards_compatible_session: true,
                    tls: Some(TlsConfig {
                        mode: TlsMode::StartTls,
                        cert: Some(CertFiles {
                            certfile: PathBuf::from("/etc/herald/cert.pem"),
                            keyfile: PathBuf::from("/etc/herald/key.pem"),
                        }),
                    }),
                }],
                service: Vec::new(),
                s2s: Vec::new(),
                http: Vec::new(),
            },
            modules: Modules {
                mod_disco: Some(DiscoConfig {
                    extra_domains: vec!["pubsub.example.org".into()],
                    server_info: Vec::new(),
                }),
                mod_ping: Some(PingConfig::default()),
                mod_event_pusher: None,
                mod_stream_management: None,
                mod_roster: None,
                mod_offline: None,
                mod_register: None,
                mod_fail2ban: None,
                ..Modules::default()
            },
            database: DatabaseConfig::Embedded,
            sqlite: SqliteConfig::default(),
            s2s: None,
            instrumentation: Instrumentation::default(),
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn omitted_options_take_their_defaults() {
        let config = parse(&format!("{MINIMAL}[[listen.c2s]]\nport = 5222\n")).unwrap();

        assert_eq!(config.general.data_dir, PathBuf::from(DATA));
        assert_eq!(config.general.loglevel, LogLevel::Warning);
        let listener = &config.listen.c2s[0];
        assert_eq!(listener.addr, "0.0.0.0:5222".parse().unwrap());
        assert_eq!(listener.max_stanza_size, 65536);
        assert_eq!(listener.max_connections, 10000);
        assert_eq!(listener.state_timeout, Duration::from_millis(5000));
        assert!(listener.backwards_compatible_session);
        assert_eq!(listener.tls, None);
        assert_eq!(config.modules, Modules::default());
    }

    #[test]
    fn a_file_without_listeners_or_modules_has_none() {
        let config = parse(MINIMAL).unwrap();

        assert!(config.listen.c2s.is_empty());
        assert_eq!(config.modules.mod_disco, None);
        assert_eq!(config.modules.mod_ping, None);
    }

    #[test]
    fn a_tls_table_without_mode_means_starttls_with_a_self_signed_certificate() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.c2s]]\nport = 5222\n[listen.c2s.tls]\n"
        ))
        .unwrap();

        let tls = config.listen.c2s[0].tls.clone();
        assert_eq!(
            tls,
            Some(TlsConfig {
                mode: TlsMode::StartTls,
                cert: None
            })
        );
    }

    #[test]
    fn two_c2s_listeners_coexist() {
        let config = parse(&format!(
            "{MINIMAL}
[[listen.c2s]]
port = 5222
tls.mode = \"starttls\"

[[listen.c2s]]
port = 5223
tls.mode = \"tls\"
"
        ))
        .unwrap();

        let listeners: Vec<_> = config
            .listen
            .c2s
            .iter()
            .map(|l| (l.addr.port(), l.tls.as_ref().map(|tls| tls.mode)))
            .collect();
        assert_eq!(
            listeners,
            [
                (5222, Some(TlsMode::StartTls)),
                (5223, Some(TlsMode::DirectTls))
            ]
        );
    }

    #[test]
    fn starttls_required_mode_is_read() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.c2s]]\nport = 5222\ntls.mode = \"starttls_required\"\n"
        ))
        .unwrap();

        assert_eq!(
            config.listen.c2s[0].tls.as_ref().unwrap().mode,
            TlsMode::StartTlsRequired
        );
    }

    #[test]
    fn port_zero_is_allowed_and_several_listeners_may_use_it() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.c2s]]\nport = 0\nip_address = \"127.0.0.1\"\n\
             [[listen.c2s]]\nport = 0\nip_address = \"127.0.0.1\"\n"
        ))
        .unwrap();

        assert_eq!(config.listen.c2s.len(), 2);
        assert_eq!(config.listen.c2s[0].addr.port(), 0);
    }

    #[test]
    fn hosts_are_normalised_to_lowercase() {
        let config = parse("[general]\nhosts = [\"Example.ORG\"]\n").unwrap();

        assert_eq!(hosts(&config), ["example.org"]);
    }

    #[test]
    fn every_mongooseim_loglevel_is_accepted() {
        let levels = [
            ("none", LogLevel::None, "off"),
            ("emergency", LogLevel::Emergency, "error"),
            ("alert", LogLevel::Alert, "error"),
            ("critical", LogLevel::Critical, "error"),
            ("error", LogLevel::Error, "error"),
            ("warning", LogLevel::Warning, "warn"),
            ("notice", LogLevel::Notice, "info"),
            ("info", LogLevel::Info, "info"),
            ("debug", LogLevel::Debug, "debug"),
            ("all", LogLevel::All, "trace"),
        ];
        for (name, level, filter) in levels {
            let config = parse(&format!("{MINIMAL}loglevel = \"{name}\"\n")).unwrap();
            assert_eq!(config.general.loglevel, level, "{name}");
            assert_eq!(level.as_filter(), filter, "{name}");
        }
    }

    #[test]
    fn relative_paths_are_resolved_against_the_base_dir() {
        let config = parse(&format!(
            "{MINIMAL}data_dir = \"data\"\n[[listen.c2s]]\nport = 5222\n\
             tls.certfile = \"certs/cert.pem\"\ntls.keyfile = \"/abs/key.pem\"\n"
        ))
        .unwrap();

        assert_eq!(config.general.data_dir, PathBuf::from("/etc/herald/data"));
        let cert = config.listen.c2s[0]
            .tls
            .as_ref()
            .unwrap()
            .cert
            .clone()
            .unwrap();
        assert_eq!(cert.certfile, PathBuf::from("/etc/herald/certs/cert.pem"));
        assert_eq!(cert.keyfile, PathBuf::from("/abs/key.pem"));
    }

    #[test]
    fn unknown_top_level_key_names_its_path_and_line() {
        assert_eq!(
            error(&format!("# herald\nlisten_c2s = 1\n{MINIMAL}")),
            "herald.toml:2: listen_c2s: unknown field `listen_c2s`, expected one of `general`, \
             `listen`, `modules`, `outgoing_pools`, `auth`, `internal_databases`, `s2s`, `instrumentation`"
        );
    }

    #[test]
    fn unknown_key_in_a_listener_names_its_path_and_line() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\n[[listen.c2s]]\nport = 5223\nprot = 1\n"
            )),
            "herald.toml:7: listen.c2s[1].prot: unknown field `prot`, expected one of `port`, \
             `ip_address`, `max_stanza_size`, `max_connections`, `state_timeout`, \
             `send_timeout`, `handshake_timeout`, `max_connections_per_ip`, \
             `backwards_compatible_session`, `tls`"
        );
    }

    #[test]
    fn unknown_key_in_a_tls_table_names_its_path_and_line() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\n\n[listen.c2s.tls]\nmode = \"tls\"\ncert = \"x\"\n"
            )),
            "herald.toml:8: listen.c2s[0].tls.cert: unknown field `cert`, expected one of \
             `mode`, `certfile`, `keyfile`"
        );
    }

    #[test]
    fn unknown_general_key_names_its_path_and_line() {
        assert_eq!(
            error("[general]\nhosts = [\"localhost\"]\nhost = \"x\"\n"),
            "herald.toml:3: general.host: unknown field `host`, expected one of `hosts`, \
             `data_dir`, `loglevel`, `log_format`, `max_user_sessions`, `recipient_lanes`"
        );
    }

    #[test]
    fn recipient_lanes_take_0_to_4096() {
        assert_eq!(
            error("[general]\nhosts = [\"localhost\"]\nrecipient_lanes = 5000\n"),
            "herald.toml:3: general.recipient_lanes: 5000 is out of range; expected 0 to 4096 (lanes)"
        );
        assert_eq!(
            error("[general]\nhosts = [\"localhost\"]\nrecipient_lanes = -1\n"),
            "herald.toml:3: general.recipient_lanes: -1 is out of range; expected 0 to 4096 (lanes)"
        );
        let config = parse("[general]\nhosts = [\"localhost\"]\nrecipient_lanes = 0\n");
        assert_eq!(config.unwrap().general.recipient_lanes, 0);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_path_and_line() {
        assert_eq!(
            error(&format!("{MINIMAL}[[listen.c2s]]\nport = \"x\"\n")),
            "herald.toml:4: listen.c2s[0].port: invalid type: string \"x\", expected an integer"
        );
        assert_eq!(
            error("[general]\nhosts = \"localhost\"\n"),
            "herald.toml:2: general.hosts: invalid type: string \"localhost\", expected a sequence"
        );
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 1\nbackwards_compatible_session = 1\n"
            )),
            "herald.toml:5: listen.c2s[0].backwards_compatible_session: invalid type: integer \
             `1`, expected a boolean"
        );
        assert_eq!(
            error(&format!("{MINIMAL}[listen]\nc2s = 5222\n")),
            "herald.toml:4: listen.c2s: invalid type: integer `5222`, expected a sequence"
        );
    }

    #[test]
    fn invalid_toml_names_its_line() {
        assert_eq!(
            error("[general]\nhosts = [\"localhost\"\n[[listen.c2s]]\n"),
            "herald.toml:3: invalid TOML: missing comma between array elements, expected `,`"
        );
    }

    #[test]
    fn a_port_out_of_range_is_rejected() {
        assert_eq!(
            error(&format!("{MINIMAL}[[listen.c2s]]\nport = 70000\n")),
            "herald.toml:4: listen.c2s[0].port: 70000 is out of range; expected a port number \
             from 0 to 65535 (0 picks a free port)"
        );
        assert_eq!(
            error(&format!("{MINIMAL}[[listen.c2s]]\nport = -1\n")),
            "herald.toml:4: listen.c2s[0].port: -1 is out of range; expected a port number \
             from 0 to 65535 (0 picks a free port)"
        );
    }

    #[test]
    fn a_listener_without_port_is_rejected_at_its_header() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}\n[[listen.c2s]]\nip_address = \"::1\"\n"
            )),
            "herald.toml:4: listen.c2s[0].port: missing; expected a port number from 0 to \
             65535 (0 picks a free port)"
        );
    }

    #[test]
    fn a_tiny_max_stanza_size_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\nmax_stanza_size = 10\n"
            )),
            "herald.toml:5: listen.c2s[0].max_stanza_size: 10 is out of range; expected at \
             least 1024 (bytes)"
        );
    }

    #[test]
    fn zero_max_connections_and_a_tiny_state_timeout_are_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\nmax_connections = 0\n"
            )),
            "herald.toml:5: listen.c2s[0].max_connections: 0 is out of range; expected at least 1"
        );
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\nstate_timeout = 99\n"
            )),
            "herald.toml:5: listen.c2s[0].state_timeout: 99 is out of range; expected at least \
             100 (milliseconds)"
        );
    }

    #[test]
    fn an_invalid_ip_address_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\nip_address = \"localhost\"\n"
            )),
            "herald.toml:5: listen.c2s[0].ip_address: \"localhost\" is not an IP address; \
             expected an IPv4 or IPv6 address such as \"0.0.0.0\" or \"::1\""
        );
    }

    #[test]
    fn an_unknown_tls_mode_lists_the_accepted_modes() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}\n[[listen.c2s]]\nport = 5222\nip_address = \"127.0.0.1\"\n\
                 state_timeout = 5000\ntls.mode = \"startls\"\n"
            )),
            "herald.toml:8: listen.c2s[0].tls.mode: unknown variant \"startls\", expected one of \
             \"starttls\", \"starttls_required\", \"tls\""
        );
    }

    #[test]
    fn certfile_without_keyfile_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\ntls.certfile = \"cert.pem\"\n"
            )),
            "herald.toml:5: listen.c2s[0].tls.certfile: certfile is given without keyfile; \
             expected both certfile and keyfile (PEM files), or neither (a self-signed certificate)"
        );
    }

    #[test]
    fn keyfile_without_certfile_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\ntls.keyfile = \"key.pem\"\n"
            )),
            "herald.toml:5: listen.c2s[0].tls.keyfile: keyfile is given without certfile; \
             expected both certfile and keyfile (PEM files), or neither (a self-signed certificate)"
        );
    }

    #[test]
    fn missing_general_section_names_general_hosts() {
        assert_eq!(
            error("[[listen.c2s]]\nport = 5222\n"),
            "herald.toml: general.hosts: missing; expected a non-empty array of domain names, \
             such as [\"example.org\"]"
        );
    }

    #[test]
    fn missing_hosts_names_general_hosts_at_the_section_header() {
        assert_eq!(
            error("\n[general]\nloglevel = \"info\"\n"),
            "herald.toml:2: general.hosts: missing; expected a non-empty array of domain names, \
             such as [\"example.org\"]"
        );
    }

    #[test]
    fn empty_hosts_are_rejected() {
        assert_eq!(
            error("[general]\nhosts = []\n"),
            "herald.toml:2: general.hosts: is empty; expected a non-empty array of domain names, \
             such as [\"example.org\"]"
        );
    }

    #[test]
    fn an_invalid_domain_is_rejected() {
        assert_eq!(
            error("[general]\nhosts = [\n  \"localhost\",\n  \"exa mple.org\",\n]\n"),
            "herald.toml:4: general.hosts[1]: \"exa mple.org\" is not a valid domain (domain \
             doesn’t pass idna validation); expected a domain name such as \"example.org\""
        );
        assert_eq!(
            error("[general]\nhosts = [\"\"]\n"),
            "herald.toml:2: general.hosts[0]: \"\" is not a valid domain (domain doesn’t pass \
             idna validation); expected a domain name such as \"example.org\""
        );
    }

    #[test]
    fn a_jid_is_not_a_host() {
        assert_eq!(
            error("[general]\nhosts = [\"admin@example.org\"]\n"),
            "herald.toml:2: general.hosts[0]: \"admin@example.org\" is not a domain but a JID; \
             expected a domain name such as \"example.org\""
        );
    }

    #[test]
    fn duplicate_hosts_are_rejected_after_normalisation() {
        assert_eq!(
            error("[general]\nhosts = [\"example.org\", \"EXAMPLE.org\"]\n"),
            "herald.toml:2: general.hosts[1]: \"example.org\" is listed twice (first at \
             general.hosts[0]); expected distinct domains"
        );
    }

    #[test]
    fn an_unknown_loglevel_is_rejected() {
        assert_eq!(
            error(&format!("{MINIMAL}loglevel = \"verbose\"\n")),
            "herald.toml:3: general.loglevel: unknown variant \"verbose\", expected one of \
             \"none\", \"emergency\", \"alert\", \"critical\", \"error\", \"warning\", \"notice\", \
             \"info\", \"debug\", \"all\""
        );
    }

    #[test]
    fn two_listeners_on_the_same_address_are_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\n\n[[listen.c2s]]\nport = 5223\n\n\
                 [[listen.c2s]]\nport = 5222\n"
            )),
            "herald.toml:9: listen.c2s[2]: address 0.0.0.0:5222 overlaps 0.0.0.0:5222 of \
             listen.c2s[0]; expected each listener on its own port or address"
        );
    }

    #[test]
    fn a_wildcard_listener_overlaps_a_specific_one_on_the_same_port() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 5222\nip_address = \"127.0.0.1\"\n\
                 [[listen.c2s]]\nport = 5222\nip_address = \"::\"\n"
            )),
            "herald.toml:6: listen.c2s[1]: address [::]:5222 overlaps 127.0.0.1:5222 of \
             listen.c2s[0]; expected each listener on its own port or address"
        );
    }

    #[test]
    fn listeners_on_different_addresses_share_a_port() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.c2s]]\nport = 5222\nip_address = \"127.0.0.1\"\n\
             [[listen.c2s]]\nport = 5222\nip_address = \"::1\"\n"
        ))
        .unwrap();

        assert_eq!(config.listen.c2s.len(), 2);
    }

    #[test]
    fn roster_offline_and_register_options_are_read() {
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_roster]\nversioning = true\nstore_current_id = true\n\
             [modules.mod_offline]\nmax_user_offline_messages = 5\n\
             [modules.mod_register]\npassword_strength = 32\n"
        ))
        .unwrap();

        assert_eq!(
            config.modules.mod_roster,
            Some(RosterConfig {
                versioning: true,
                store_current_id: true,
                ..RosterConfig::default()
            })
        );
        assert_eq!(
            config.modules.mod_offline,
            Some(OfflineConfig {
                max_user_offline_messages: 5
            })
        );
        assert_eq!(
            config.modules.mod_register,
            Some(RegisterConfig {
                registration_timeout: Some(Duration::from_secs(600)),
                password_strength: 32
            })
        );
    }

    #[test]
    fn empty_roster_offline_and_register_tables_take_the_defaults() {
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_roster]\n[modules.mod_offline]\n[modules.mod_register]\n"
        ))
        .unwrap();

        assert_eq!(config.modules.mod_roster, Some(RosterConfig::default()));
        assert_eq!(
            config
                .modules
                .mod_offline
                .unwrap()
                .max_user_offline_messages,
            100
        );
        assert_eq!(config.modules.mod_register.unwrap().password_strength, 0);
    }

    #[test]
    fn an_offline_limit_of_zero_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[modules.mod_offline]\nmax_user_offline_messages = 0\n"
            )),
            "herald.toml:4: modules.mod_offline.max_user_offline_messages: 0 is out of range; \
             expected at least 1 (messages)"
        );
        assert_eq!(
            error(&format!(
                "{MINIMAL}[modules.mod_register]\npassword_strength = -1\n"
            )),
            "herald.toml:4: modules.mod_register.password_strength: -1 is out of range; \
             expected an integer from 0 (bits of entropy)"
        );
    }

    #[test]
    fn an_unknown_module_is_rejected_by_name() {
        let message = error(&format!("{MINIMAL}[modules.mod_ping]\n[modules.mod_foo]\n"));
        // The list of known modules grows; the message names each of them.
        assert!(
            message.starts_with(
                "herald.toml:4: modules.mod_foo: unknown module `modules.mod_foo`, expected \
                 one of `mod_disco`, `mod_ping`, "
            ),
            "{message}"
        );
        for module in ["mod_roster", "mod_offline", "mod_register"] {
            assert!(message.contains(&format!("`{module}`")), "{message}");
        }
    }

    #[test]
    fn an_unknown_module_option_is_rejected() {
        assert_eq!(
            error(&format!("{MINIMAL}[modules.mod_ping]\ninterval = 60\n")),
            "herald.toml:4: modules.mod_ping.interval: unknown field `interval`, expected one of \
             `send_pings`, `ping_interval`, `ping_req_timeout`, `timeout_action`"
        );
    }

    #[test]
    fn an_invalid_extra_domain_is_rejected() {
        assert_eq!(
            error(&format!(
                "{MINIMAL}[modules.mod_disco]\nextra_domains = [\"pubsub.example.org\", \"a/b\"]\n"
            )),
            "herald.toml:4: modules.mod_disco.extra_domains[1]: \"a/b\" is not a domain but a \
             JID; expected a domain name such as \"example.org\""
        );
    }

    #[test]
    fn sqlite_durability_is_normal_unless_full_is_chosen() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            config.sqlite.synchronous,
            herald_storage::Durability::Normal
        );
        let full = parse(&format!(
            "{MINIMAL}[internal_databases.sqlite]\nsynchronous = \"full\"\n"
        ))
        .unwrap();
        assert_eq!(full.sqlite.synchronous, herald_storage::Durability::Full);
        assert!(
            error(&format!(
                "{MINIMAL}[internal_databases.sqlite]\nsynchronous = \"off\"\n"
            ))
            .starts_with("herald.toml:4: internal_databases.sqlite.synchronous: ")
        );
    }

    #[test]
    fn sleeping_session_options_parse_and_bad_values_name_their_keys() {
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_stream_management]\nack_timeout = 20\nmax_ack_delay = 5\n\
             [modules.mod_event_pusher.push]\npush_when_inactive = false\n\
             keepalive.resume_timeout = 3600\nkeepalive.wake_on_start = false\n\
             keepalive.wake_before = 60\n"
        ))
        .unwrap();
        let sm = config.modules.mod_stream_management.unwrap();
        assert_eq!(sm.max_ack_delay, Some(Duration::from_secs(5)));
        let push = config.modules.mod_event_pusher.unwrap().push.unwrap();
        assert!(!push.push_when_inactive);
        assert_eq!(
            push.keepalive,
            Some(herald_push::config::Keepalive {
                resume_timeout: Duration::from_secs(3600),
                wake_on_start: false,
                wake_on_timeout: true,
                wake_before: Duration::from_secs(60),
            })
        );
        // Unset, the delay stays under a short ack_timeout; 0 turns hibernation off.
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_stream_management]\nack_timeout = 4\n\
             [modules.mod_event_pusher.push]\nkeepalive.resume_timeout = 0\n"
        ))
        .unwrap();
        assert_eq!(
            config.modules.mod_stream_management.unwrap().max_ack_delay,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            config
                .modules
                .mod_event_pusher
                .unwrap()
                .push
                .unwrap()
                .keepalive,
            None
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_stream_management]\nack_timeout = 5\nmax_ack_delay = 5\n"
            ))
            .starts_with("herald.toml:5: modules.mod_stream_management.max_ack_delay: 5 is not shorter than ack_timeout")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\nkeepalive.wake_before = 0\n"
            ))
            .starts_with("herald.toml:4: modules.mod_event_pusher.push.keepalive.wake_before: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\nkeepalive.wake_at = 1\n"
            ))
            .contains("wake_at")
        );
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_event_pusher.push]\nretry.max_retries = 0\n\
             retry.max_age = 60\nretry.backoff_base = 250\nretry.backoff_max = 10\n\
             retry.disable_after = 0\n"
        ))
        .unwrap();
        assert_eq!(
            config.modules.mod_event_pusher.unwrap().push.unwrap().retry,
            herald_push::config::Retry {
                max_retries: 0,
                max_age: Duration::from_secs(60),
                backoff_base: Duration::from_millis(250),
                backoff_max: Duration::from_secs(10),
                disable_after: None,
            }
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\nretry.backoff_base = 0\n"
            ))
            .starts_with("herald.toml:4: modules.mod_event_pusher.push.retry.backoff_base: ")
        );
        let config = parse(&format!(
            "{MINIMAL}[modules.mod_event_pusher.push]\noutbox_gather = 0\n"
        ))
        .unwrap();
        assert_eq!(
            config
                .modules
                .mod_event_pusher
                .unwrap()
                .push
                .unwrap()
                .outbox_gather,
            Duration::ZERO
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\noutbox_gather = 5000\n"
            ))
            .starts_with("herald.toml:4: modules.mod_event_pusher.push.outbox_gather: ")
        );
    }

    #[test]
    fn pacing_calls_and_unread_options_parse_and_bad_values_name_their_keys() {
        let push = |extra: &str| {
            parse(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\n{extra}"
            ))
            .unwrap()
            .modules
            .mod_event_pusher
            .unwrap()
            .push
            .unwrap()
        };
        let defaults = push("");
        assert_eq!(defaults.pacing, herald_push::config::Pacing::default());
        assert_eq!((defaults.pacing.rate_limit, defaults.pacing.burst), (5, 5));
        assert!(defaults.unread_count && defaults.calls.push_retract);
        assert_eq!(defaults.calls.voip_topic_suffix, ".voip");
        let set = push(
            "unread_count = false\npacing.rate_limit = 0\npacing.burst = 2\n\
             pacing.coalesce_window = 1500\ncalls.voip_topic_suffix = \".call\"\n\
             calls.push_retract = false\n",
        );
        assert!(!set.unread_count && !set.calls.push_retract);
        assert_eq!(
            set.pacing,
            herald_push::config::Pacing {
                rate_limit: 0,
                burst: 2,
                coalesce_window: Duration::from_millis(1500),
            }
        );
        assert_eq!(set.calls.voip_topic_suffix, ".call");
        for (bad, key) in [
            ("pacing.rate_limit = -1", "pacing.rate_limit"),
            ("pacing.rate_limit = 5000", "pacing.rate_limit"),
            ("pacing.burst = 0", "pacing.burst"),
            ("pacing.coalesce_window = 3600001", "pacing.coalesce_window"),
            ("pacing.window = 1", "window"),
            ("calls.push_retract = 1", "push_retract"),
            ("unread_count = \"yes\"", "unread_count"),
        ] {
            let message = error(&format!(
                "{MINIMAL}[modules.mod_event_pusher.push]\n{bad}\n"
            ));
            assert!(message.contains(key), "{bad}: {message}");
            assert!(message.starts_with("herald.toml:4: "), "{bad}: {message}");
        }
    }

    #[test]
    fn push_rules_are_accepted_alone_and_refused_with_plugin_module() {
        let config = parse(&format!(
            "{MINIMAL}[[modules.mod_event_pusher.push.rules]]\nevent = \"message\"\n\
             body = true\naction = \"push\"\n"
        ))
        .unwrap();
        let push = config.modules.mod_event_pusher.unwrap().push.unwrap();
        assert_eq!(push.rules.map(|rules| rules.len()), Some(1));
        let refused = error(&format!(
            "{MINIMAL}[modules.mod_event_pusher.push]\nplugin_module = \"hints\"\n\
             rules = [{{ action = \"push\" }}]\n"
        ));
        assert!(
            refused.starts_with("herald.toml:5: modules.mod_event_pusher.push.rules: ")
                && refused.contains("plugin_module"),
            "{refused}"
        );
        let bad = error(&format!(
            "{MINIMAL}[modules.mod_event_pusher.push]\n\
             rules = [{{ action = \"push\" }}, {{ client_state = \"asleep\", action = \"push\" }}]\n"
        ));
        assert!(
            bad.contains("modules.mod_event_pusher.push.rules[1].client_state"),
            "{bad}"
        );
    }

    #[test]
    fn new_liveness_options_parse_with_their_names_and_bad_values_name_their_keys() {
        let config = parse(&format!(
            "{MINIMAL}[[listen.c2s]]\nport = 5222\nsend_timeout = 7\n\
             [modules.mod_ping]\nsend_pings = true\nping_interval = 20\nping_req_timeout = 5\n\
             timeout_action = \"kill\"\n\
             [modules.mod_stream_management]\nack_timeout = \"infinity\"\n"
        ))
        .unwrap();
        assert_eq!(config.listen.c2s[0].send_timeout, Duration::from_secs(7));
        assert_eq!(
            config.modules.mod_ping,
            Some(PingConfig {
                send_pings: true,
                ping_interval: Duration::from_secs(20),
                ping_req_timeout: Duration::from_secs(5),
                timeout_action: PingTimeoutAction::Kill,
            })
        );
        assert_eq!(
            config.modules.mod_stream_management.unwrap().ack_timeout,
            None
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_stream_management]\nack_timeout = 0\n"
            ))
            .starts_with("herald.toml:4: modules.mod_stream_management.ack_timeout: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_ping]\ntimeout_action = \"reboot\"\n"
            ))
            .starts_with("herald.toml:4: modules.mod_ping.timeout_action: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[[listen.c2s]]\nport = 1\nsend_timeout = 0\n"
            ))
            .starts_with("herald.toml:5: listen.c2s[0].send_timeout: ")
        );
    }

    #[test]
    fn keys_that_need_quotes_are_quoted_in_the_path() {
        assert_eq!(
            error(&format!("{MINIMAL}\"mod.x\" = 1\n")),
            "herald.toml:3: general.\"mod.x\": unknown field `mod.x`, expected one of `hosts`, \
             `data_dir`, `loglevel`, `log_format`, `max_user_sessions`, `recipient_lanes`"
        );
    }

    #[test]
    fn the_embedded_default_pushes_and_runs_every_module_mobile_clients_check_for() {
        // FIELD-NOTES defect 5: a newcomer's server without a file must push.
        let modules = Config::embedded_default_in(PathBuf::from(DATA)).modules;
        assert!(
            modules
                .mod_event_pusher
                .and_then(|pusher| pusher.push)
                .is_some()
        );
        assert!(modules.mod_stream_management.is_some());
        assert!(modules.mod_carboncopy.is_some());
        assert!(modules.mod_csi.is_some());
        assert!(modules.mod_blocking.is_some());
        assert!(modules.mod_pep.is_some());
        assert!(modules.mod_vcard.is_some());
        assert!(modules.mod_version.is_some());
        assert!(modules.mod_mam.is_some());
        assert!(modules.mod_roster.is_some() && modules.mod_offline.is_some());
    }

    #[test]
    fn the_new_modules_name_their_bad_keys() {
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_csi]
buffer_max = 0
"
            ))
            .starts_with("herald.toml:4: modules.mod_csi.buffer_max: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_csi]
urgent_chat_states = [\"composing\", \"typing\"]
"
            ))
            .starts_with("herald.toml:4: modules.mod_csi.urgent_chat_states[1]: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_pep]
max_items_node = -1
"
            ))
            .starts_with("herald.toml:4: modules.mod_pep.max_items_node: ")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_carboncopy]
iqdisc = 1
"
            ))
            .starts_with("herald.toml:4: modules.mod_carboncopy.iqdisc: unknown field")
        );
        assert!(
            error(&format!(
                "{MINIMAL}[modules.mod_disco]\n[[modules.mod_disco.server_info]]\nurls = []\n"
            ))
            .contains("modules.mod_disco.server_info[0].name: missing")
        );
    }

    #[test]
    fn the_embedded_default_serves_localhost_over_starttls_on_loopback() {
        let config = Config::embedded_default_in(PathBuf::from(DATA));

        assert_eq!(hosts(&config), ["localhost"]);
        assert_eq!(config.general.data_dir, PathBuf::from(DATA));
        assert_eq!(config.general.loglevel, LogLevel::Warning);
        assert_eq!(config.listen.c2s.len(), 1);
        let listener = &config.listen.c2s[0];
        assert_eq!(listener.addr, "127.0.0.1:5222".parse().unwrap());
        assert_eq!(
            listener.tls,
            Some(TlsConfig {
                mode: TlsMode::StartTlsRequired,
                cert: None
            })
        );
        assert_eq!(listener.max_stanza_size, 65536);
        assert_eq!(listener.max_connections, 10000);
        assert_eq!(listener.state_timeout, Duration::from_millis(5000));
        assert!(listener.backwards_compatible_session);
        assert_eq!(config.modules.mod_disco, Some(DiscoConfig::default()));
        assert_eq!(
            config.modules.mod_ping,
            Some(PingConfig::detecting_dead_clients())
        );
        assert_eq!(config.modules.mod_roster, Some(RosterConfig::default()));
        assert_eq!(
            config.modules.mod_offline,
            Some(OfflineConfig {
                max_user_offline_messages: 100
            })
        );
        assert_eq!(config.modules.mod_register, None);
    }

    #[test]
    fn the_example_file_parses_to_the_embedded_default() {
        let example = include_str!("../../../config/example.toml");

        let config = parse(example).unwrap();

        assert_eq!(config, Config::embedded_default_in(PathBuf::from(DATA)));
    }

    #[test]
    fn the_example_file_with_every_option_uncommented_parses() {
        // Uncommenting `# key = value` lines (not prose) must give a valid file: the comments
        // show real defaults. Example certificate paths come in pairs, so they stay valid too.
        let example = include_str!("../../../config/example.toml");
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_toml_line(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");

        parse(&uncommented).unwrap_or_else(|error| panic!("{error}\n{uncommented}"));
    }

    #[test]
    fn the_packaged_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin.token");
        std::fs::write(&token, "a-token-of-sixteen-or-more\n").unwrap();
        let text = include_str!("../../../packaging/herald.toml")
            .replace("/etc/herald/admin.token", &token.display().to_string());
        let config = parse(&text).unwrap_or_else(|error| panic!("{error}"));
        let admin = config.listen.http[0].admin.as_ref().unwrap();
        assert_eq!(admin.token, "a-token-of-sixteen-or-more");
        assert_eq!(config.general.log_format, LogFormat::Json);
    }

    fn is_toml_line(line: &str) -> bool {
        line.starts_with('[')
            || line
                .split_once(" = ")
                .is_some_and(|(key, _)| is_bare_key(key))
    }

    fn is_bare_key(key: &str) -> bool {
        !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    }

    #[test]
    fn load_resolves_paths_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            format!("{MINIMAL}data_dir = \"data\"\n[[listen.c2s]]\nport = 0\ntls.certfile = \"c.pem\"\ntls.keyfile = \"k.pem\"\n"),
        )
        .unwrap();

        let config = Config::load(&path).unwrap();

        assert_eq!(config.general.data_dir, dir.path().join("data"));
        let cert = config.listen.c2s[0]
            .tls
            .as_ref()
            .unwrap()
            .cert
            .clone()
            .unwrap();
        assert_eq!(cert.certfile, dir.path().join("c.pem"));
        assert_eq!(cert.keyfile, dir.path().join("k.pem"));
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "[general]\nhosts = []\n").unwrap();

        let message = Config::load(&path).unwrap_err().to_string();

        assert_eq!(
            message,
            format!(
                "{}:2: general.hosts: is empty; expected a non-empty array of domain names, such as [\"example.org\"]",
                path.display()
            )
        );
    }

    #[test]
    fn load_of_a_missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");

        let error = Config::load(&path).unwrap_err();

        assert!(matches!(error, ConfigError::Read { .. }));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: cannot read the configuration file: ",
                path.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn an_error_carries_its_parts() {
        let Err(ConfigError::Invalid {
            origin,
            line,
            key,
            message,
        }) = parse(&format!("{MINIMAL}[[listen.c2s]]\nport = 70000\n"))
        else {
            panic!("expected an invalid configuration");
        };

        assert_eq!(origin, "herald.toml");
        assert_eq!(line, Some(4));
        assert_eq!(key, "listen.c2s[0].port");
        assert!(message.contains("0 to 65535"), "{message}");
    }
}
