//! From the file's shape to a typed [`Config`]: defaults, ranges, domains, paths, and the
//! checks that span several keys.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_storage::Durability;
use jid::BareJid;

use herald_core::config::integer;
use herald_core::config::{Section, domains, integer_or, one_of, required};

use super::error::{Invalid, KeyPath};
use super::raw::{
    RawC2s, RawConfig, RawGeneral, RawInternalDatabases, RawListen, RawModules, RawS2sListener,
    RawService, RawTls,
};
use super::storage::{self, DatabaseConfig};
use super::{
    C2sListener, CertFiles, Config, ConflictBehaviour, DEFAULT_BACKWARDS_COMPATIBLE_SESSION,
    DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_IP_ADDRESS, DEFAULT_LOGLEVEL, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_STANZA_SIZE, DEFAULT_MAX_USER_SESSIONS,
    DEFAULT_SEND_TIMEOUT_S, DEFAULT_STATE_TIMEOUT_MS, General, Listen, LogFormat, LogLevel,
    Modules, S2sConfig, S2sListener, ServiceListener, SqliteConfig, TlsConfig, TlsMode,
};

/// The most `general.recipient_lanes` (a task each).
const MAX_RECIPIENT_LANES: usize = 4096;

/// What a file leaves to its surroundings.
pub(super) struct Context<'a> {
    /// Relative paths in the file are resolved against this directory.
    pub(super) base_dir: &'a Path,
    /// `general.data_dir` when the file does not set it.
    pub(super) default_data_dir: PathBuf,
}

const LOG_LEVELS: &[(&str, LogLevel)] = &[
    ("none", LogLevel::None),
    ("emergency", LogLevel::Emergency),
    ("alert", LogLevel::Alert),
    ("critical", LogLevel::Critical),
    ("error", LogLevel::Error),
    ("warning", LogLevel::Warning),
    ("notice", LogLevel::Notice),
    ("info", LogLevel::Info),
    ("debug", LogLevel::Debug),
    ("all", LogLevel::All),
];

const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];

const TLS_MODES: &[(&str, TlsMode)] = &[
    ("starttls", TlsMode::StartTls),
    ("starttls_required", TlsMode::StartTlsRequired),
    ("tls", TlsMode::DirectTls),
];

/// Checks a whole file; the first failure is returned.
pub(super) fn config(mut raw: RawConfig, context: &Context<'_>) -> Result<Config, Invalid> {
    let root = KeyPath::root();
    let choices = backend_choices(&raw, &root)?;
    let http_pools = raw
        .outgoing_pools
        .as_mut()
        .and_then(|pools| pools.http.take());
    let mongoosepush = raw.modules.mod_push_service_mongoosepush.take();
    let database = storage::database(raw.outgoing_pools, choices, &root.key("outgoing_pools"))?;
    let mut modules = modules(raw.modules, &root.key("modules"))?;
    let modules_at = root.key("modules");
    super::http::mongoosepush(
        mongoosepush,
        http_pools,
        modules
            .mod_event_pusher
            .as_mut()
            .and_then(|pusher| pusher.push.as_mut()),
        [
            &modules_at.key("mod_push_service_mongoosepush"),
            &root.key("outgoing_pools").key("http"),
            &modules_at.key("mod_event_pusher").key("push"),
        ],
        context.base_dir,
    )?;
    if let DatabaseConfig::Postgres(_) = database {
        // A push backend left unset follows the server's engine (an explicit "mnesia" was
        // refused above).
        if let Some(push) = modules
            .mod_event_pusher
            .as_mut()
            .and_then(|pusher| pusher.push.as_mut())
        {
            push.backend = herald_push::config::Backend::Rdbms;
        }
    }
    Ok(Config {
        general: general(raw.general, &root.key("general"), context)?,
        listen: listen(raw.listen, &root.key("listen"), context)?,
        modules,
        database,
        sqlite: sqlite(raw.internal_databases, &root.key("internal_databases"))?,
        s2s: s2s(raw.s2s, &root.key("s2s"), context.base_dir)?,
        instrumentation: super::operations::instrumentation(raw.instrumentation),
    })
}

/// The names of `internal_databases.sqlite.synchronous`.
const DURABILITIES: &[(&str, Durability)] =
    &[("normal", Durability::Normal), ("full", Durability::Full)];

fn sqlite(raw: Option<RawInternalDatabases>, at: &KeyPath) -> Result<SqliteConfig, Invalid> {
    let synchronous = match raw.and_then(|raw| raw.sqlite).and_then(|s| s.synchronous) {
        Some(name) => one_of(&name, DURABILITIES, &at.key("sqlite").key("synchronous"))?,
        None => Durability::default(),
    };
    Ok(SqliteConfig { synchronous })
}

/// Every store's explicit choice of backend: `[auth] methods` and the modules' `backend`.
fn backend_choices(raw: &RawConfig, root: &KeyPath) -> Result<Vec<storage::Choice>, Invalid> {
    let modules = root.key("modules");
    let push = raw
        .modules
        .mod_event_pusher
        .as_ref()
        .and_then(|pusher| pusher.push.as_ref());
    let choices = [
        storage::auth_methods(raw.auth.as_ref(), &root.key("auth"))?,
        storage::module_backend(
            raw.modules
                .mod_roster
                .as_ref()
                .and_then(|roster| roster.backend.as_deref()),
            &modules.key("mod_roster").key("backend"),
        )?,
        storage::module_backend(
            raw.modules
                .mod_offline
                .as_ref()
                .and_then(|offline| offline.backend.as_deref()),
            &modules.key("mod_offline").key("backend"),
        )?,
        storage::module_backend(
            raw.modules
                .mod_mam
                .as_ref()
                .and_then(|mam| mam.backend.as_deref()),
            &modules.key("mod_mam").key("backend"),
        )?,
        storage::module_backend(
            push.and_then(|push| push.backend.as_deref()),
            &modules.key("mod_event_pusher").key("push").key("backend"),
        )?,
    ];
    Ok(choices.into_iter().flatten().collect())
}

fn general(
    raw: Option<RawGeneral>,
    at: &KeyPath,
    context: &Context<'_>,
) -> Result<General, Invalid> {
    let hosts_at = at.key("hosts");
    let expected_hosts = "a non-empty array of domain names, such as [\"example.org\"]";
    // A file without [general] lacks general.hosts like one with an empty [general].
    let raw = raw.unwrap_or_default();
    let hosts = required(raw.hosts, &hosts_at, expected_hosts)?;
    if hosts.is_empty() {
        return Err(Invalid::new(
            hosts_at,
            format!("is empty; expected {expected_hosts}"),
        ));
    }
    let hosts = domains(&hosts, &hosts_at)?
        .into_iter()
        .map(BareJid::from)
        .collect();
    let data_dir = match raw.data_dir {
        Some(dir) => file_path(dir, &at.key("data_dir"), context.base_dir)?,
        None => context.default_data_dir.clone(),
    };
    let loglevel = match raw.loglevel {
        Some(name) => one_of(&name, LOG_LEVELS, &at.key("loglevel"))?,
        None => DEFAULT_LOGLEVEL,
    };
    let max_user_sessions = match raw.max_user_sessions {
        Some(value) => integer_or(value, "infinity", 1, &at.key("max_user_sessions"))?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        None => Some(DEFAULT_MAX_USER_SESSIONS),
    };
    let log_format = match raw.log_format {
        Some(name) => one_of(&name, LOG_FORMATS, &at.key("log_format"))?,
        None => LogFormat::Text,
    };
    let recipient_lanes = match raw.recipient_lanes {
        Some(n) => {
            let at = at.key("recipient_lanes");
            let lanes: usize = integer(n, 0, "0 to 4096 (lanes)", &at)?;
            if lanes > MAX_RECIPIENT_LANES {
                return Err(Invalid::new(
                    at,
                    format!("{lanes} is out of range; expected 0 to 4096 (lanes)"),
                ));
            }
            lanes
        }
        None => herald_core::lanes::LANES,
    };
    Ok(General {
        max_user_sessions,
        recipient_lanes,
        hosts,
        data_dir,
        loglevel,
        log_format,
    })
}

/// `[s2s]`, checked by federation's own type; its files are found relative to the
/// configuration file.
fn s2s(
    raw: Option<<S2sConfig as Section>::Raw>,
    at: &KeyPath,
    base_dir: &Path,
) -> Result<Option<S2sConfig>, Invalid> {
    let Some(mut config) = section::<S2sConfig>(raw, at)? else {
        return Ok(None);
    };
    for (key, path) in [
        ("certfile", &mut config.certfile),
        ("keyfile", &mut config.keyfile),
        ("cafile", &mut config.cafile),
    ] {
        if let Some(given) = path.take() {
            *path = Some(file_path(given, &at.key(key), base_dir)?);
        }
    }
    if config.keyfile.is_some() && config.certfile.is_none() {
        return Err(Invalid::new(
            at.key("keyfile"),
            "keyfile is given without certfile; expected certfile (which may hold the key too)",
        ));
    }
    Ok(Some(config))
}

fn listen(raw: RawListen, at: &KeyPath, context: &Context<'_>) -> Result<Listen, Invalid> {
    let RawListen {
        c2s: raw_c2s,
        service: raw_service,
        s2s: raw_s2s,
        http: raw_http,
    } = raw;
    // Every listener accepted so far, of any kind, with its key path: none may overlap.
    let mut bound: Vec<(SocketAddr, KeyPath)> = Vec::new();
    let c2s_at = at.key("c2s");
    let mut c2s: Vec<C2sListener> = Vec::with_capacity(raw_c2s.len());
    for (index, raw) in raw_c2s.into_iter().enumerate() {
        let at = c2s_at.index(index);
        let listener = c2s_listener(raw, &at, context)?;
        claim(&mut bound, listener.addr, at)?;
        c2s.push(listener);
    }
    let service_at = at.key("service");
    let mut service: Vec<ServiceListener> = Vec::with_capacity(raw_service.len());
    for (index, raw) in raw_service.into_iter().enumerate() {
        let at = service_at.index(index);
        let listener = service_listener(raw, &at)?;
        claim(&mut bound, listener.addr, at)?;
        service.push(listener);
    }
    let s2s_at = at.key("s2s");
    let mut s2s: Vec<S2sListener> = Vec::with_capacity(raw_s2s.len());
    for (index, raw) in raw_s2s.into_iter().enumerate() {
        let at = s2s_at.index(index);
        let listener = s2s_listener(raw, &at, context.base_dir)?;
        claim(&mut bound, listener.addr, at)?;
        s2s.push(listener);
    }
    let http_at = at.key("http");
    let mut http = Vec::with_capacity(raw_http.len());
    for (index, raw) in raw_http.into_iter().enumerate() {
        let at = http_at.index(index);
        let listener = super::operations::http_listener(
            raw,
            &at,
            context.base_dir,
            listener_addr,
            |tls, at| {
                let tls = RawTls {
                    mode: None,
                    certfile: tls.certfile,
                    keyfile: tls.keyfile,
                };
                Ok(tls_config(tls, at, context.base_dir)?.cert)
            },
        )?;
        claim(&mut bound, listener.addr, at)?;
        http.push(listener);
    }
    Ok(Listen {
        c2s,
        service,
        s2s,
        http,
    })
}

/// Record the listener at `at` on `addr`, unless it overlaps one already recorded.
fn claim(
    bound: &mut Vec<(SocketAddr, KeyPath)>,
    addr: SocketAddr,
    at: KeyPath,
) -> Result<(), Invalid> {
    if let Some((other_addr, other)) = bound.iter().find(|(other, _)| overlaps(*other, addr)) {
        return Err(Invalid::new(
            at,
            format!(
                "address {addr} overlaps {other_addr} of {other}; expected each listener on its own port or address",
            ),
        ));
    }
    bound.push((addr, at));
    Ok(())
}

/// The `tls.mode` values of an s2s listener (whether TLS is required is `[s2s]
/// use_starttls`, for both directions).
const S2S_TLS_MODES: &[(&str, bool)] = &[("starttls", false), ("tls", true)];

fn s2s_listener(
    raw: RawS2sListener,
    at: &KeyPath,
    base_dir: &Path,
) -> Result<S2sListener, Invalid> {
    let addr = listener_addr(raw.port, raw.ip_address, at)?;
    let max_stanza_size = match raw.max_stanza_size {
        Some(n) => integer(n, 1024, "at least 1024 (bytes)", &at.key("max_stanza_size"))?,
        None => DEFAULT_S2S_MAX_STANZA_SIZE,
    };
    let max_connections = match raw.max_connections {
        Some(n) => integer(n, 1, "at least 1", &at.key("max_connections"))?,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let state_timeout_ms = match raw.state_timeout {
        Some(n) => integer(
            n,
            100,
            "at least 100 (milliseconds)",
            &at.key("state_timeout"),
        )?,
        None => DEFAULT_S2S_STATE_TIMEOUT_MS,
    };
    let (direct_tls, cert) = match raw.tls {
        None => (false, None),
        Some(tls) => {
            let tls_at = at.key("tls");
            let direct_tls = match &tls.mode {
                Some(name) => one_of(name, S2S_TLS_MODES, &tls_at.key("mode"))?,
                None => false,
            };
            let checked = tls_config(RawTls { mode: None, ..tls }, &tls_at, base_dir)?;
            (direct_tls, checked.cert)
        }
    };
    Ok(S2sListener {
        addr,
        max_stanza_size,
        max_connections,
        state_timeout: Duration::from_millis(state_timeout_ms),
        direct_tls,
        cert,
    })
}

/// Servers carry many users' traffic: a larger element limit than a client's.
const DEFAULT_S2S_MAX_STANZA_SIZE: usize = 1024 * 1024;

/// Dialback needs a round trip to the peer's authoritative server: more time than a login.
const DEFAULT_S2S_STATE_TIMEOUT_MS: u64 = 30_000;

const CONFLICT_BEHAVIOURS: &[(&str, ConflictBehaviour)] = &[
    ("disconnect", ConflictBehaviour::Disconnect),
    ("kick_old", ConflictBehaviour::KickOld),
];

fn service_listener(raw: RawService, at: &KeyPath) -> Result<ServiceListener, Invalid> {
    let addr = listener_addr(raw.port, raw.ip_address, at)?;
    let password_at = at.key("password");
    let password = required(
        raw.password,
        &password_at,
        "the secret shared with the components",
    )?;
    if password.is_empty() {
        return Err(Invalid::new(
            password_at,
            "empty; expected the secret shared with the components",
        ));
    }
    let conflict_behaviour = match raw.conflict_behaviour {
        Some(name) => one_of(&name, CONFLICT_BEHAVIOURS, &at.key("conflict_behaviour"))?,
        None => ConflictBehaviour::Disconnect,
    };
    let max_stanza_size = match raw.max_stanza_size {
        Some(n) => integer(n, 1024, "at least 1024 (bytes)", &at.key("max_stanza_size"))?,
        None => DEFAULT_MAX_STANZA_SIZE,
    };
    let max_connections = match raw.max_connections {
        Some(n) => integer(n, 1, "at least 1", &at.key("max_connections"))?,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let state_timeout_ms = match raw.state_timeout {
        Some(n) => integer(
            n,
            100,
            "at least 100 (milliseconds)",
            &at.key("state_timeout"),
        )?,
        None => DEFAULT_STATE_TIMEOUT_MS,
    };
    Ok(ServiceListener {
        addr,
        password,
        conflict_behaviour,
        max_stanza_size,
        max_connections,
        state_timeout: Duration::from_millis(state_timeout_ms),
        check_from: raw.check_from.unwrap_or(true),
        hidden_components: raw.hidden_components.unwrap_or(false),
    })
}

fn c2s_listener(raw: RawC2s, at: &KeyPath, context: &Context<'_>) -> Result<C2sListener, Invalid> {
    let addr = listener_addr(raw.port, raw.ip_address, at)?;
    let max_stanza_size = match raw.max_stanza_size {
        Some(n) => integer(n, 1024, "at least 1024 (bytes)", &at.key("max_stanza_size"))?,
        None => DEFAULT_MAX_STANZA_SIZE,
    };
    let max_connections = match raw.max_connections {
        Some(n) => integer(n, 1, "at least 1", &at.key("max_connections"))?,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let state_timeout_ms = match raw.state_timeout {
        Some(n) => integer(
            n,
            100,
            "at least 100 (milliseconds)",
            &at.key("state_timeout"),
        )?,
        None => DEFAULT_STATE_TIMEOUT_MS,
    };
    let send_timeout = match raw.send_timeout {
        Some(n) => integer(n, 1u64, "at least 1 (seconds)", &at.key("send_timeout"))?,
        None => DEFAULT_SEND_TIMEOUT_S,
    };
    let handshake_timeout = match raw.handshake_timeout {
        Some(n) => integer(
            n,
            1u64,
            "at least 1 (seconds)",
            &at.key("handshake_timeout"),
        )?,
        None => DEFAULT_HANDSHAKE_TIMEOUT_S,
    };
    let max_connections_per_ip = match raw.max_connections_per_ip {
        Some(n) => integer(n, 1, "at least 1", &at.key("max_connections_per_ip"))?,
        None => DEFAULT_MAX_CONNECTIONS_PER_IP,
    };
    let tls = match raw.tls {
        Some(tls) => Some(tls_config(tls, &at.key("tls"), context.base_dir)?),
        None => None,
    };
    Ok(C2sListener {
        handshake_timeout: Duration::from_secs(handshake_timeout),
        max_connections_per_ip,
        addr,
        max_stanza_size,
        max_connections,
        state_timeout: Duration::from_millis(state_timeout_ms),
        send_timeout: Duration::from_secs(send_timeout),
        backwards_compatible_session: raw
            .backwards_compatible_session
            .unwrap_or(DEFAULT_BACKWARDS_COMPATIBLE_SESSION),
        tls,
    })
}

fn tls_config(raw: RawTls, at: &KeyPath, base_dir: &Path) -> Result<TlsConfig, Invalid> {
    let mode = match raw.mode {
        Some(name) => one_of(&name, TLS_MODES, &at.key("mode"))?,
        None => TlsMode::StartTls,
    };
    let pair = "both certfile and keyfile (PEM files), or neither (a self-signed certificate)";
    let cert = match (raw.certfile, raw.keyfile) {
        (Some(certfile), Some(keyfile)) => Some(CertFiles {
            certfile: file_path(certfile, &at.key("certfile"), base_dir)?,
            keyfile: file_path(keyfile, &at.key("keyfile"), base_dir)?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            let message = format!("certfile is given without keyfile; expected {pair}");
            return Err(Invalid::new(at.key("certfile"), message));
        }
        (None, Some(_)) => {
            let message = format!("keyfile is given without certfile; expected {pair}");
            return Err(Invalid::new(at.key("keyfile"), message));
        }
    };
    Ok(TlsConfig { mode, cert })
}

/// Each module checks its own section (`Section::from_raw`).
fn modules(raw: RawModules, at: &KeyPath) -> Result<Modules, Invalid> {
    Ok(Modules {
        mod_disco: section(raw.mod_disco, &at.key("mod_disco"))?,
        mod_ping: section(raw.mod_ping, &at.key("mod_ping"))?,
        mod_event_pusher: section(raw.mod_event_pusher, &at.key("mod_event_pusher"))?,
        mod_stream_management: section(
            raw.mod_stream_management,
            &at.key("mod_stream_management"),
        )?,
        mod_roster: section(raw.mod_roster, &at.key("mod_roster"))?,
        mod_offline: section(raw.mod_offline, &at.key("mod_offline"))?,
        mod_fail2ban: section(raw.mod_fail2ban, &at.key("mod_fail2ban"))?,
        mod_register: section(raw.mod_register, &at.key("mod_register"))?,
        mod_carboncopy: section(raw.mod_carboncopy, &at.key("mod_carboncopy"))?,
        mod_csi: section(raw.mod_csi, &at.key("mod_csi"))?,
        mod_blocking: section(raw.mod_blocking, &at.key("mod_blocking"))?,
        mod_pep: section(raw.mod_pep, &at.key("mod_pep"))?,
        mod_vcard: section(raw.mod_vcard, &at.key("mod_vcard"))?,
        mod_version: section(raw.mod_version, &at.key("mod_version"))?,
        mod_mam: section(raw.mod_mam, &at.key("mod_mam"))?,
    })
}

/// A module's section, checked by the module, when the file has it.
fn section<S: Section>(raw: Option<S::Raw>, at: &KeyPath) -> Result<Option<S>, Invalid> {
    raw.map(|raw| S::from_raw(raw, at)).transpose()
}

/// A listener's `port` (required) and `ip_address` (default all IPv4 addresses).
fn listener_addr(
    port: Option<herald_core::config::Integer>,
    ip: Option<String>,
    at: &KeyPath,
) -> Result<SocketAddr, Invalid> {
    let port_at = at.key("port");
    let ports = "a port number from 0 to 65535 (0 picks a free port)";
    let port: u16 = integer(required(port, &port_at, ports)?, 0, ports, &port_at)?;
    let ip = match ip {
        Some(text) => ip_address(&text, &at.key("ip_address"))?,
        None => DEFAULT_IP_ADDRESS,
    };
    Ok(SocketAddr::new(ip, port))
}

fn ip_address(text: &str, at: &KeyPath) -> Result<IpAddr, Invalid> {
    text.parse().map_err(|_| {
        let expected = "an IPv4 or IPv6 address such as \"0.0.0.0\" or \"::1\"";
        Invalid::new(
            at.clone(),
            format!("{text:?} is not an IP address; expected {expected}"),
        )
    })
}

/// A path from the file; a relative one is taken relative to the file's directory.
fn file_path(path: PathBuf, at: &KeyPath, base_dir: &Path) -> Result<PathBuf, Invalid> {
    if path.as_os_str().is_empty() {
        return Err(Invalid::new(at.clone(), "is empty; expected a path"));
    }
    Ok(base_dir.join(path))
}

/// Whether two listening addresses cannot both be bound. Port 0 never conflicts (the system
/// picks a free port); an unspecified IPv4 address covers every IPv4 address, and an unspecified
/// IPv6 address covers every address, as a dual-stack socket does.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wide: IpAddr, narrow: IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || narrow.is_ipv4())
    };
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}
