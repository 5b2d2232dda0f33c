//! Wiring: from a validated configuration to a running server, and back down.
//!
//! [`start`] opens the store, registers the modules, loads TLS and binds every listener
//! before anything is accepted, so a bad certificate or a busy port stops start-up with a
//! message instead of failing later. [`Running::shutdown`] is the graceful stop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use herald_core::{
    Server, ServerOptions,
    c2s::{C2sListener, C2sSettings, C2sTls, TlsMode as CoreTlsMode},
    component::{ServiceListener, ServiceSettings},
    components::ConflictBehaviour as CoreConflictBehaviour,
    disco::Disco,
    module::Module,
    offline::Offline,
    ping::Ping,
    register::Register,
    s2s::{S2sListener, S2sListenerSettings, S2sSettings, UseStartTls},
};
use herald_sasl::Credentials;
use herald_storage::{MigrationSet, Storage, StorageError};
use herald_stream::tls::{self, TlsError};
use hyper::{Method, StatusCode};
use jid::{BareJid, DomainPart};

use crate::admin_client::{AdminClient, Answer, segment};
use crate::config::{
    C2sListener as C2sConfig, Config, ConflictBehaviour, DatabaseConfig,
    S2sListener as S2sListenerConfig, ServiceListener as ServiceConfig, TlsMode,
};

/// How long shutdown waits for sessions to flush before giving up on them.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// What can stop a command; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store could not be opened or used.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A module's settings are unusable (a certificate file of the push service...).
    #[error("{0}")]
    Module(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source} (is another server running there?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The async runtime or signal handling could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// Logging could not be set up.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// `user add` for an existing account.
    #[error("{0} already exists")]
    UserExists(BareJid),
    /// `user remove` for a missing account.
    #[error("{0} does not exist")]
    NoSuchUser(BareJid),
    /// The running server's admin API could not be reached.
    #[error("{0} (is the server running?)")]
    Unreachable(String),
    /// The admin API refused or failed the request.
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// What the API said.
        message: String,
    },
    /// The command ran, and what it found is a failure (a test push not delivered).
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    /// The process exit code for this error: 64 for usage errors (sysexits' EX_USAGE),
    /// 78 for configuration problems found at start-up (EX_CONFIG), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) => 64,
            AppError::Tls(_) | AppError::Logging(_) | AppError::Module(_) => 78,
            // sysexits' EX_UNAVAILABLE and EX_NOPERM.
            AppError::Unreachable(_) => 69,
            AppError::Api { status: 401, .. } => 77,
            _ => 1,
        }
    }
}

/// Set up structured logs on stderr at the configured level; `RUST_LOG` overrides it.
pub fn init_logging(config: &Config) -> Result<(), AppError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => tracing_subscriber::EnvFilter::new(value),
        _ => tracing_subscriber::EnvFilter::new(config.general.loglevel.as_filter()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.general.log_format {
        crate::config::LogFormat::Text => builder.try_init(),
        // One object per line: timestamp, level, target, fields (message and the event's
        // fields, `request_id` among them), and the spans.
        crate::config::LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .flatten_event(false)
            .try_init(),
    }
    .map_err(|e| AppError::Logging(e.to_string()))
}

fn database_path(config: &Config) -> PathBuf {
    config.general.data_dir.join("herald.sqlite3")
}

/// The tables that feature crates own, created with the server's own by the one migrator.
const FEATURE_TABLES: &[&MigrationSet] = &[&herald_push::registrations::MIGRATIONS];

/// Open the one store of every feature: the embedded SQLite file, or PostgreSQL when the
/// configuration has the `rdbms` pool; either way its schema (the server's tables and the
/// features') is brought up to date.
async fn open_storage(config: &Config) -> Result<Storage, AppError> {
    Ok(match &config.database {
        DatabaseConfig::Embedded => {
            Storage::open_sqlite_with(
                &database_path(config),
                config.sqlite.synchronous,
                FEATURE_TABLES,
            )
            .await?
        }
        DatabaseConfig::Postgres(options) => {
            Storage::open_postgres(options, FEATURE_TABLES).await?
        }
    })
}

/// The modules the configuration turns on, each built from its own options.
fn modules(config: &Config, storage: &Storage) -> Result<Vec<Arc<dyn Module>>, AppError> {
    modules_and_push(config, storage).map(|(modules, _)| modules)
}

/// The modules of a server, in registration order.
type Modules = Vec<Arc<dyn Module>>;

/// [`modules`], and the push module when on (the admin API's).
fn modules_and_push(
    config: &Config,
    storage: &Storage,
) -> Result<(Modules, Option<Arc<herald_push::Push>>), AppError> {
    let mut push_module = None;
    let modules_config = &config.modules;
    let mut modules: Vec<Arc<dyn Module>> = Vec::new();
    if let Some(disco) = &modules_config.mod_disco {
        modules.push(Arc::new(Disco::with_config(disco)));
    }
    if modules_config.mod_ping.is_some() {
        modules.push(Arc::new(Ping));
    }
    if let Some(offline) = modules_config.mod_offline {
        modules.push(Offline::new(offline));
    }
    // The core modules that keep per-user data share one store; block lists are cached in
    // front of the embedded engine only (one server owns the file).
    let user_data = storage.user_data();
    let embedded = matches!(storage.engine(), herald_storage::Engine::Sqlite(_));
    if modules_config.mod_carboncopy.is_some() {
        modules.push(Arc::new(herald_core::carbons::Carbons));
    }
    if modules_config.mod_blocking.is_some() {
        modules.push(herald_core::blocking::Blocking::new(
            user_data.clone(),
            embedded,
        ));
    }
    if let Some(pep) = modules_config.mod_pep {
        modules.push(herald_core::pep::Pep::new(pep, user_data.clone()));
    }
    if let Some(vcard) = modules_config.mod_vcard {
        modules.push(herald_core::vcard::Vcard::new(vcard, user_data.clone()));
    }
    if let Some(mam) = &modules_config.mod_mam {
        modules.push(herald_core::mam::Mam::new(
            mam.clone(),
            storage.archive(),
            user_data,
            embedded,
        ));
    }
    if let Some(version) = modules_config.mod_version {
        modules.push(Arc::new(herald_core::version::Version(version)));
    }
    // In-band cancellation (XEP-0077 section 3.2) is always served; `mod_register` adds
    // registration and password changes.
    modules.push(Register::new(modules_config.mod_register));
    if let Some(push) = modules_config
        .mod_event_pusher
        .as_ref()
        .and_then(|pusher| pusher.push.as_ref())
    {
        let push = Arc::new(
            herald_push::Push::from_config(push.clone(), storage)
                .map_err(|error| AppError::Module(error.to_string()))?,
        );
        push_module = Some(Arc::clone(&push));
        modules.push(push);
    }
    Ok((modules, push_module))
}

/// What the server itself takes from modules' options (sessions, logins, pings).
fn options(config: &Config) -> ServerOptions {
    let modules = &config.modules;
    ServerOptions {
        stream_management: modules.mod_stream_management.clone(),
        max_user_sessions: config.general.max_user_sessions,
        auth_throttle: modules.mod_fail2ban.unwrap_or_default(),
        pings: modules.mod_ping.as_ref().and_then(|ping| ping.settings()),
        roster: modules.mod_roster,
        s2s: None,
        csi: modules.mod_csi.clone(),
        recipient_lanes: Some(config.general.recipient_lanes),
    }
}

/// Federation's settings: `[s2s]` (or its defaults when only a listener is configured) and
/// TLS for server links: `[s2s] certfile`, else the first s2s listener's certificate, else
/// the self-signed certificate of the data directory; the system's roots and `cafile`.
fn s2s_settings(config: &Config) -> Result<Option<S2sSettings>, AppError> {
    if !config.federates() {
        return Ok(None);
    }
    let s2s = config.s2s.clone().unwrap_or_default();
    let direct_tls = config.listen.s2s.iter().any(|l| l.direct_tls);
    if s2s.use_starttls == UseStartTls::Off && !direct_tls {
        return Ok(Some(S2sSettings {
            config: s2s,
            tls: None,
        }));
    }
    let (certfile, keyfile) = match (&s2s.certfile, &s2s.keyfile) {
        (Some(cert), key) => (cert.clone(), key.clone().unwrap_or_else(|| cert.clone())),
        (None, _) => match config.listen.s2s.iter().find_map(|l| l.cert.clone()) {
            Some(files) => (files.certfile, files.keyfile),
            None => {
                let names: Vec<String> = hosts(config).iter().map(|h| h.to_string()).collect();
                tls::ensure_self_signed(&config.general.data_dir, &names)?
            }
        },
    };
    let (certs, key) = tls::load_identity(&certfile, &keyfile)?;
    let roots = tls::s2s::roots(s2s.cafile.as_deref(), true)?;
    let tls = tls::s2s::S2sTls::new(certs, key, roots, &certfile)?;
    Ok(Some(S2sSettings {
        config: s2s,
        tls: Some(tls),
    }))
}

fn s2s_listener_settings(listener: &S2sListenerConfig) -> S2sListenerSettings {
    S2sListenerSettings {
        addr: listener.addr,
        max_stanza_size: listener.max_stanza_size,
        max_connections: listener.max_connections,
        state_timeout: listener.state_timeout,
        direct_tls: listener.direct_tls,
    }
}

fn hosts(config: &Config) -> Vec<DomainPart> {
    config
        .general
        .hosts
        .iter()
        .filter_map(|h| {
            DomainPart::new(h.domain().as_str())
                .ok()
                .map(|d| d.into_owned())
        })
        .collect()
}

fn listener_settings(config: &Config, listener: &C2sConfig) -> Result<C2sSettings, AppError> {
    let tls = match &listener.tls {
        None => None,
        Some(tls_config) => {
            let (certfile, keyfile) = match &tls_config.cert {
                Some(files) => (files.certfile.clone(), files.keyfile.clone()),
                None => {
                    let names: Vec<String> = hosts(config).iter().map(|h| h.to_string()).collect();
                    tls::ensure_self_signed(&config.general.data_dir, &names)?
                }
            };
            let mode = match tls_config.mode {
                TlsMode::StartTls => CoreTlsMode::StartTls,
                TlsMode::StartTlsRequired => CoreTlsMode::StartTlsRequired,
                TlsMode::DirectTls => CoreTlsMode::DirectTls,
            };
            Some(C2sTls {
                mode,
                acceptor: tls::acceptor(&certfile, &keyfile)?,
            })
        }
    };
    Ok(C2sSettings {
        addr: listener.addr,
        max_stanza_size: listener.max_stanza_size,
        max_connections: listener.max_connections,
        state_timeout: listener.state_timeout,
        send_timeout: listener.send_timeout,
        handshake_timeout: listener.handshake_timeout,
        max_connections_per_ip: listener.max_connections_per_ip,
        backwards_compatible_session: listener.backwards_compatible_session,
        tls,
    })
}

fn service_settings(listener: &ServiceConfig) -> ServiceSettings {
    ServiceSettings {
        addr: listener.addr,
        password: listener.password.clone(),
        conflict_behaviour: match listener.conflict_behaviour {
            ConflictBehaviour::Disconnect => CoreConflictBehaviour::Disconnect,
            ConflictBehaviour::KickOld => CoreConflictBehaviour::KickOld,
        },
        max_stanza_size: listener.max_stanza_size,
        max_connections: listener.max_connections,
        state_timeout: listener.state_timeout,
        check_from: listener.check_from,
        hidden_components: listener.hidden_components,
    }
}

/// A started server.
pub struct Running {
    /// The shared server state.
    pub server: Arc<Server>,
    /// The bound c2s addresses, in configuration order.
    pub c2s_addrs: Vec<SocketAddr>,
    /// The bound component (`listen.service`) addresses, in configuration order.
    pub service_addrs: Vec<SocketAddr>,
    /// The bound server-to-server (`listen.s2s`) addresses, in configuration order.
    pub s2s_addrs: Vec<SocketAddr>,
    /// The bound HTTP (`listen.http`) addresses, in configuration order.
    pub http_addrs: Vec<SocketAddr>,
    listeners: tokio::task::JoinSet<()>,
}

/// Open the store, register modules, bind every listener and start accepting.
pub async fn start(config: &Config) -> Result<Running, AppError> {
    let mut settings = Vec::new();
    for listener in &config.listen.c2s {
        settings.push(listener_settings(config, listener)?);
    }
    let s2s = s2s_settings(config)?;
    let mut http_tls = Vec::new();
    for listener in &config.listen.http {
        http_tls.push(match &listener.tls {
            Some(files) => Some(tls::acceptor(&files.certfile, &files.keyfile)?),
            None => None,
        });
    }
    let metrics = if config.instrumentation.prometheus
        || config.listen.http.iter().any(|l| l.prometheus.is_some())
    {
        Some(crate::metrics::install().map_err(AppError::Module)?)
    } else {
        None
    };
    let storage = open_storage(config).await?;
    let (modules, push) = modules_and_push(config, &storage)?;
    let server = Server::with_options(
        hosts(config),
        storage.clone(),
        &modules,
        ServerOptions {
            s2s,
            ..options(config)
        },
    );
    let mut bound = Vec::new();
    for settings in settings {
        let addr = settings.addr;
        let listener = C2sListener::bind(settings)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        bound.push(listener);
    }
    let mut services = Vec::new();
    for listener in &config.listen.service {
        let settings = service_settings(listener);
        let addr = settings.addr;
        let service = ServiceListener::bind(settings)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        services.push(service);
    }
    let mut s2s_listeners = Vec::new();
    for listener in &config.listen.s2s {
        let settings = s2s_listener_settings(listener);
        let addr = settings.addr;
        let bound = S2sListener::bind(settings)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        s2s_listeners.push(bound);
    }
    // Memory that idle connections give back is returned to the system.
    server
        .tasks
        .spawn(herald_core::memory::trim_released(server.shutdown.clone()));
    if let Some(handle) = metrics.clone() {
        // Histograms are folded into what is rendered periodically (without it they only
        // grow until the next scrape).
        let shutdown = server.shutdown.clone();
        server.tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        });
    }
    let http_state = Arc::new(crate::http::HttpState {
        server: Arc::clone(&server),
        push,
        metrics,
    });
    let mut http_listeners = Vec::new();
    for (listener, tls) in config.listen.http.iter().zip(http_tls) {
        let addr = listener.addr;
        let bound = crate::http::BoundHttp::bind(listener, tls, Arc::clone(&http_state))
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        http_listeners.push(bound);
    }
    let mut c2s_addrs = Vec::new();
    let mut service_addrs = Vec::new();
    let mut listeners = tokio::task::JoinSet::new();
    for listener in bound {
        c2s_addrs.push(listener.local_addr().map_err(AppError::Runtime)?);
        listeners.spawn(listener.run(Arc::clone(&server)));
    }
    for listener in services {
        service_addrs.push(listener.local_addr().map_err(AppError::Runtime)?);
        listeners.spawn(listener.run(Arc::clone(&server)));
    }
    let mut s2s_addrs = Vec::new();
    for listener in s2s_listeners {
        s2s_addrs.push(listener.local_addr().map_err(AppError::Runtime)?);
        listeners.spawn(listener.run(Arc::clone(&server)));
    }
    let mut http_addrs = Vec::new();
    for listener in http_listeners {
        http_addrs.push(listener.local_addr().map_err(AppError::Runtime)?);
        listeners.spawn(listener.run());
    }
    Ok(Running {
        server,
        c2s_addrs,
        service_addrs,
        s2s_addrs,
        http_addrs,
        listeners,
    })
}

impl Running {
    /// Graceful stop (RFC 6120 section 4.9.3.19): stop accepting, end every stream with
    /// system-shutdown after flushing what is queued, wait up to `deadline`, close the store.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.server.shutdown.cancel();
        while self.listeners.join_next().await.is_some() {}
        self.server.tasks.close();
        if tokio::time::timeout(deadline, self.server.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.server.tasks.len(),
                "shutdown deadline passed with connections still open"
            );
        }
        // What the recipient lanes hold (from components, other servers, the closing
        // sessions' unacknowledged messages routed again) is stored before the store closes.
        self.server.lanes.drain().await;
        self.server.storage.close().await;
    }
}

/// `herald serve`: run until SIGTERM or SIGINT, then shut down gracefully.
pub async fn serve(config: Config) -> Result<ExitCode, AppError> {
    let running = start(&config).await?;
    for addr in &running.c2s_addrs {
        // One line on stdout per listener: the operator's (and the tests') sign of life.
        println!("herald: c2s listening on {addr}");
    }
    for addr in &running.service_addrs {
        println!("herald: service listening on {addr}");
    }
    for addr in &running.s2s_addrs {
        println!("herald: s2s listening on {addr}");
    }
    for addr in &running.http_addrs {
        println!("herald: http listening on {addr}");
    }
    tracing::info!(hosts = ?config.general.hosts, data_dir = %config.general.data_dir.display(), "herald started");
    wait_for_signal().await?;
    tracing::info!("shutting down");
    running.shutdown(SHUTDOWN_DEADLINE).await;
    println!("herald: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> Result<(), AppError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(AppError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(AppError::Runtime)?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(AppError::Runtime)
    }
}

/// Parse an account JID on a served domain.
fn account(config: &Config, jid: &str) -> Result<BareJid, AppError> {
    let bare = BareJid::new(jid)
        .map_err(|e| AppError::Usage(format!("{jid:?} is not a valid JID: {e}")))?;
    if bare.node().is_none() {
        return Err(AppError::Usage(format!(
            "{jid:?} has no localpart; write it as user@domain"
        )));
    }
    let domain = bare.domain().as_str();
    if !config
        .general
        .hosts
        .iter()
        .any(|h| h.domain().as_str() == domain)
    {
        let served: Vec<_> = config.general.hosts.iter().map(|h| h.to_string()).collect();
        return Err(AppError::Usage(format!(
            "{domain} is not served here (general.hosts = {served:?})"
        )));
    }
    Ok(bare)
}

/// `herald user add JID PASSWORD`.
pub async fn user_add(config: &Config, jid: &str, password: &str) -> Result<ExitCode, AppError> {
    let user = account(config, jid)?;
    let credentials = Credentials::from_password(password, Credentials::DEFAULT_ITERATIONS)
        .map_err(|e| AppError::Usage(format!("unusable password: {e}")))?;
    let storage = open_storage(config).await?;
    let result = storage.accounts().create(&user, &credentials).await;
    storage.close().await;
    match result {
        Ok(()) => {
            println!("created {user}");
            Ok(ExitCode::SUCCESS)
        }
        Err(StorageError::AlreadyExists) => Err(AppError::UserExists(user)),
        Err(error) => Err(error.into()),
    }
}

/// `herald user remove JID`: through the running server's admin API when it has one (the
/// server closes the account's live sessions), else on the store directly.
pub async fn user_remove(config: &Config, jid: &str) -> Result<ExitCode, AppError> {
    let user = account(config, jid)?;
    if let Some(client) = AdminClient::of(config) {
        match client
            .request(
                Method::DELETE,
                &format!("/users/{}", segment(user.as_str())),
            )
            .await
        {
            Ok(answer) if answer.status.is_success() => {
                println!("removed {user} (its live sessions closed)");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
                return Err(AppError::NoSuchUser(user));
            }
            Ok(answer) => return Err(api_error(&answer)),
            // No server answers: nobody is logged in; remove it from the store.
            Err(crate::admin_client::ClientError::Unreachable(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    // The server with its modules but no listener: removing an account runs the
    // `user_removed` hook, where each module deletes its data (no federation: nothing
    // leaves this process).
    let storage = open_storage(config).await?;
    let server = Server::with_options(
        hosts(config),
        storage.clone(),
        &modules(config, &storage)?,
        options(config),
    );
    let removed = server.remove_account(&user).await;
    server.shutdown.cancel();
    server.tasks.close();
    server.tasks.wait().await;
    server.storage.close().await;
    if removed? {
        println!("removed {user}");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(AppError::NoSuchUser(user))
    }
}

/// `herald user list [DOMAIN]`.
pub async fn user_list(config: &Config, domain: Option<&str>) -> Result<ExitCode, AppError> {
    let storage = open_storage(config).await?;
    let users = storage.accounts().list(domain).await;
    storage.close().await;
    for user in users? {
        println!("{user}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald db migrate`: bring the configured database's schema up to date and print, one line
/// each, the migrations applied.
pub async fn db_migrate(config: &Config) -> Result<ExitCode, AppError> {
    let storage = open_storage(config).await?;
    let applied = storage.applied_migrations().to_vec();
    storage.close().await;
    if applied.is_empty() {
        println!("the schema is up to date; nothing to apply");
    }
    for migration in applied {
        println!(
            "applied migration {}: {}",
            migration.version, migration.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald check-config`, beyond the file itself: every module can be built from it (the push
/// service's certificate files are read).
pub fn check_modules(config: &Config) -> Result<(), AppError> {
    if let Some(push) = config
        .modules
        .mod_event_pusher
        .as_ref()
        .and_then(|pusher| pusher.push.as_ref())
    {
        herald_push::Push::check(push).map_err(|error| AppError::Module(error.to_string()))?;
    }
    Ok(())
}

/// `herald check-config`: a summary of what the configuration means.
pub fn describe(config: &Config, path: Option<&Path>) -> String {
    let mut out = match path {
        Some(path) => format!("{}: ok\n", path.display()),
        None => "embedded default configuration: ok\n".to_owned(),
    };
    let hosts: Vec<_> = config.general.hosts.iter().map(|h| h.to_string()).collect();
    out.push_str(&format!("hosts: {}\n", hosts.join(", ")));
    out.push_str(&format!(
        "data_dir: {}\n",
        config.general.data_dir.display()
    ));
    out.push_str(&match &config.database {
        DatabaseConfig::Embedded => {
            format!("database: SQLite {}\n", database_path(config).display())
        }
        DatabaseConfig::Postgres(options) => format!(
            "database: PostgreSQL {}@{}:{}/{}, {} connections\n",
            options.username, options.host, options.port, options.database, options.pool_size
        ),
    });
    for listener in &config.listen.c2s {
        let tls = match &listener.tls {
            None => "plaintext".to_owned(),
            Some(tls) => format!(
                "{:?}, {}",
                tls.mode,
                match &tls.cert {
                    Some(files) => files.certfile.display().to_string(),
                    None => "self-signed certificate".to_owned(),
                }
            ),
        };
        out.push_str(&format!("c2s {}: {tls}\n", listener.addr));
    }
    for listener in &config.listen.service {
        out.push_str(&format!(
            "service {}: {:?}\n",
            listener.addr, listener.conflict_behaviour
        ));
    }
    for listener in &config.listen.s2s {
        let tls = if listener.direct_tls {
            "direct TLS"
        } else {
            "STARTTLS"
        };
        out.push_str(&format!("s2s {}: {tls}\n", listener.addr));
    }
    if config.federates() {
        let s2s = config.s2s.clone().unwrap_or_default();
        out.push_str(&format!(
            "federation: on, use_starttls {:?}, default_policy {:?}, {} static addresses\n",
            s2s.use_starttls,
            s2s.default_policy,
            s2s.address.len()
        ));
    } else {
        out.push_str("federation: off (no [s2s] or [[listen.s2s]])\n");
    }
    let mut modules = Vec::new();
    if config.modules.mod_disco.is_some() {
        modules.push("mod_disco");
    }
    if config.modules.mod_ping.is_some() {
        modules.push("mod_ping");
    }
    if config.modules.mod_stream_management.is_some() {
        modules.push("mod_stream_management");
    }
    if config.modules.mod_roster.is_some() {
        modules.push("mod_roster");
    }
    if config.modules.mod_offline.is_some() {
        modules.push("mod_offline");
    }
    if config.modules.mod_register.is_some() {
        modules.push("mod_register");
    }
    if let Some(pusher) = &config.modules.mod_event_pusher {
        modules.push(match pusher.push {
            Some(_) => "mod_event_pusher (push)",
            None => "mod_event_pusher",
        });
    }
    let service = config
        .modules
        .mod_event_pusher
        .as_ref()
        .and_then(|pusher| pusher.push.as_ref())
        .and_then(|push| push.mongoosepush.as_ref());
    if service.is_some() {
        modules.push("mod_push_service_mongoosepush");
    }
    out.push_str(&format!("modules: {}", modules.join(", ")));
    if let Some(service) = service {
        out.push_str(&format!(
            "\npush service: {}{}{}, {} connections (pool {})",
            service.pool.base,
            service.pool.path_prefix,
            service.api_version.as_str(),
            service.max_http_connections,
            service.pool.name
        ));
    }
    out
}

impl From<crate::admin_client::ClientError> for AppError {
    fn from(error: crate::admin_client::ClientError) -> AppError {
        match error {
            crate::admin_client::ClientError::Unreachable(message) => {
                AppError::Unreachable(message)
            }
            crate::admin_client::ClientError::Setup(message) => AppError::Usage(message),
        }
    }
}

/// The error of a refused or failed admin API request.
fn api_error(answer: &Answer) -> AppError {
    AppError::Api {
        status: answer.status.as_u16(),
        message: answer.problem(),
    }
}

/// Run `method` on `/users/JID{tail}` of the running server's admin API; the JSON answer
/// when it succeeded.
async fn user_request(
    config: &Config,
    jid: &str,
    method: Method,
    tail: &str,
) -> Result<(BareJid, serde_json::Value), AppError> {
    let user = account(config, jid)?;
    let client = AdminClient::required(config)?;
    let answer = client
        .request(method, &format!("/users/{}{tail}", segment(user.as_str())))
        .await?;
    if answer.status.is_success() {
        Ok((user, answer.body))
    } else {
        Err(api_error(&answer))
    }
}

/// `?name=value` for an optional parameter.
fn optional_query(name: &str, value: Option<&str>) -> String {
    value.map_or_else(String::new, |value| format!("?{name}={}", segment(value)))
}

/// `herald push list JID`.
pub async fn push_list(config: &Config, jid: &str) -> Result<ExitCode, AppError> {
    let (user, body) = user_request(config, jid, Method::GET, "/push").await?;
    let registrations = body["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if registrations.is_empty() {
        println!("{user} has no push registrations");
    }
    for registration in registrations {
        println!(
            "{}",
            serde_json::to_string(&registration).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald push disable JID [--node N]`.
pub async fn push_disable(
    config: &Config,
    jid: &str,
    node: Option<&str>,
) -> Result<ExitCode, AppError> {
    let tail = format!("/push{}", optional_query("node", node));
    let (user, body) = user_request(config, jid, Method::DELETE, &tail).await?;
    println!(
        "disabled {} push registration(s) of {user}",
        body["disabled"]
    );
    Ok(ExitCode::SUCCESS)
}

/// `herald push test JID [--node N]`: exits 0 only when the app server accepted it.
pub async fn push_test(
    config: &Config,
    jid: &str,
    node: Option<&str>,
) -> Result<ExitCode, AppError> {
    let tail = format!("/push/test{}", optional_query("node", node));
    let (user, body) = user_request(config, jid, Method::POST, &tail).await?;
    let outcome = body["outcome"].as_str().unwrap_or("unknown");
    let line = format!(
        "test push to {user}: {outcome} (app server answered: {}; request id {})",
        body["answer"].as_str().unwrap_or("?"),
        body["request_id"].as_str().unwrap_or("?"),
    );
    if outcome == "delivered" {
        println!("{line}");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(AppError::Failed(line))
    }
}

/// `herald session list JID`.
pub async fn session_list(config: &Config, jid: &str) -> Result<ExitCode, AppError> {
    let (user, body) = user_request(config, jid, Method::GET, "/sessions").await?;
    let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        println!("{user} has no sessions");
    }
    for session in sessions {
        println!(
            "{}\t{}",
            session["jid"].as_str().unwrap_or("?"),
            match session["priority"].as_i64() {
                Some(priority) => format!("available, priority {priority}"),
                None => "unavailable".to_owned(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald session kick JID [--resource R]`.
pub async fn session_kick(
    config: &Config,
    jid: &str,
    resource: Option<&str>,
) -> Result<ExitCode, AppError> {
    let tail = format!("/sessions{}", optional_query("resource", resource));
    let (_, body) = user_request(config, jid, Method::DELETE, &tail).await?;
    for kicked in body["kicked"].as_array().cloned().unwrap_or_default() {
        println!("closed {}", kicked.as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}
