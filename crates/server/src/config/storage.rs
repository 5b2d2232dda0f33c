//! Where the server keeps its data: MongooseIM's `[outgoing_pools.rdbms.default]` (the
//! PostgreSQL pool), `[auth] methods` and the `backend` of `mod_roster`, `mod_offline` and
//! `mod_event_pusher.push`: the file's shape and its checks.
//!
//! herald runs every store on one engine. With a PostgreSQL pool configured, everything is kept
//! there, and every store that names a backend must name `"rdbms"`; without one, everything is
//! kept in the embedded SQLite file in `data_dir`, and `"rdbms"` is refused. Either way a
//! mismatch is a configuration error naming the key, never a silent split of the data.

use herald_storage::PostgresOptions;
use serde::Deserialize;

use super::error::{Invalid, KeyPath};
use herald_core::config::Integer;

/// The storage engine, for every store of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// The embedded SQLite file `herald.sqlite3` in `general.data_dir` (the default; MongooseIM's
    /// `"mnesia"` / `"internal"`).
    #[default]
    Embedded,
    /// PostgreSQL, from `[outgoing_pools.rdbms.default]` (`"rdbms"`).
    Postgres(PostgresOptions),
}

/// `[outgoing_pools]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawOutgoingPools {
    rdbms: Option<RawRdbmsPools>,
    /// `[outgoing_pools.http.NAME]`: checked in `config/http.rs`.
    pub(super) http: Option<super::http::RawHttpPools>,
}

/// `[outgoing_pools.rdbms]`: herald has one pool, the `default` one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRdbmsPools {
    default: Option<RawRdbmsPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRdbmsPool {
    workers: Option<Integer>,
    connection: Option<RawConnection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConnection {
    driver: Option<String>,
    host: Option<String>,
    port: Option<Integer>,
    database: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls: Option<RawConnectionTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawConnectionTls {
    required: Option<bool>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAuth {
    methods: Option<Vec<String>>,
}

/// `workers` when the file does not set it (MongooseIM's default).
const DEFAULT_WORKERS: u32 = 10;
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_PORT: u16 = 5432;

/// Where one store asks to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Rdbms,
}

/// A store's explicit choice, with the key that made it.
pub(super) struct Choice {
    key: KeyPath,
    backend: Backend,
}

/// The `backend` of a module at `at` (`"mnesia"` or `"rdbms"`), if the file sets one.
pub(super) fn module_backend(name: Option<&str>, at: &KeyPath) -> Result<Option<Choice>, Invalid> {
    let Some(name) = name else { return Ok(None) };
    let backend = match name {
        "mnesia" => Backend::Embedded,
        "rdbms" => Backend::Rdbms,
        other => {
            return Err(Invalid::new(
                at.clone(),
                format!("unknown variant {other:?}, expected one of \"mnesia\", \"rdbms\""),
            ));
        }
    };
    Ok(Some(Choice {
        key: at.clone(),
        backend,
    }))
}

/// `[auth] methods` at `at`: one method, `"internal"` or `"rdbms"`.
pub(super) fn auth_methods(raw: Option<&RawAuth>, at: &KeyPath) -> Result<Option<Choice>, Invalid> {
    let Some(methods) = raw.and_then(|auth| auth.methods.as_ref()) else {
        return Ok(None);
    };
    let at = at.key("methods");
    let [method] = methods.as_slice() else {
        return Err(Invalid::new(
            at,
            format!(
                "has {} methods; herald authenticates with exactly one: [\"internal\"] or \
                 [\"rdbms\"]",
                methods.len()
            ),
        ));
    };
    let backend = match method.as_str() {
        "internal" => Backend::Embedded,
        "rdbms" => Backend::Rdbms,
        other => {
            return Err(Invalid::new(
                at.index(0),
                format!("unknown variant {other:?}, expected one of \"internal\", \"rdbms\""),
            ));
        }
    };
    Ok(Some(Choice { key: at, backend }))
}

/// The engine for the whole server, from the pool (`[outgoing_pools]` at `at`) and every
/// store's explicit choice.
pub(super) fn database(
    raw: Option<RawOutgoingPools>,
    choices: Vec<Choice>,
    at: &KeyPath,
) -> Result<DatabaseConfig, Invalid> {
    let pool_at = at.key("rdbms").key("default");
    let pool = raw
        .and_then(|pools| pools.rdbms)
        .and_then(|rdbms| rdbms.default);
    let Some(pool) = pool else {
        if let Some(choice) = choices.iter().find(|c| c.backend == Backend::Rdbms) {
            return Err(Invalid::new(
                choice.key.clone(),
                "\"rdbms\" keeps this store in PostgreSQL, but there is no \
                 [outgoing_pools.rdbms.default] pool to connect to",
            ));
        }
        return Ok(DatabaseConfig::Embedded);
    };
    if let Some(choice) = choices.iter().find(|c| c.backend == Backend::Embedded) {
        return Err(Invalid::new(
            choice.key.clone(),
            "keeps this store in the embedded database while [outgoing_pools.rdbms.default] \
             keeps the others in PostgreSQL; herald runs every store on one engine: use \
             \"rdbms\" here, or remove the key",
        ));
    }
    Ok(DatabaseConfig::Postgres(postgres_options(pool, &pool_at)?))
}

fn postgres_options(raw: RawRdbmsPool, at: &KeyPath) -> Result<PostgresOptions, Invalid> {
    let pool_size = match raw.workers {
        Some(workers) => match u32::try_from(workers.0) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Invalid::new(
                    at.key("workers"),
                    format!(
                        "{} is out of range; expected at least 1 (connections)",
                        workers.0
                    ),
                ));
            }
        },
        None => DEFAULT_WORKERS,
    };
    let at = at.key("connection");
    let Some(connection) = raw.connection else {
        return Err(Invalid::new(
            at,
            "missing; expected a table with driver = \"pgsql\", database, username",
        ));
    };
    match connection.driver.as_deref() {
        Some("pgsql") => {}
        Some(other) => {
            return Err(Invalid::new(
                at.key("driver"),
                format!("unknown variant {other:?}, expected one of \"pgsql\""),
            ));
        }
        None => {
            return Err(Invalid::new(
                at.key("driver"),
                "missing; expected \"pgsql\"",
            ));
        }
    }
    if connection.tls.and_then(|tls| tls.required) == Some(true) {
        return Err(Invalid::new(
            at.key("tls").key("required"),
            "TLS to PostgreSQL is not supported by this herald yet; set tls.required = false \
             (and keep the database on a trusted network or a local tunnel)",
        ));
    }
    let port = match connection.port {
        Some(port) => match u16::try_from(port.0) {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Invalid::new(
                    at.key("port"),
                    format!("{} is out of range; expected 1 to 65535", port.0),
                ));
            }
        },
        None => DEFAULT_PORT,
    };
    let text = |value: Option<String>, key: &str| -> Result<String, Invalid> {
        match value {
            Some(value) if !value.is_empty() => Ok(value),
            Some(_) => Err(Invalid::new(at.key(key), "is empty")),
            None => Err(Invalid::new(at.key(key), "missing; expected a string")),
        }
    };
    Ok(PostgresOptions {
        host: match connection.host {
            Some(host) => text(Some(host), "host")?,
            None => DEFAULT_HOST.to_owned(),
        },
        port,
        database: text(connection.database, "database")?,
        username: text(connection.username, "username")?,
        password: connection.password,
        pool_size,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use herald_push::config::Backend as PushBackend;

    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "[general]\nhosts = [\"example.com\"]\n";

    const POOL: &str = "[outgoing_pools.rdbms.default]
workers = 4
[outgoing_pools.rdbms.default.connection]
driver = \"pgsql\"
host = \"db.example.com\"
port = 5433
database = \"herald\"
username = \"herald\"
password = \"secret\"
tls.required = false
";

    fn parse(rest: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{MINIMAL}{rest}"),
            "herald.toml",
            Path::new("/etc/herald"),
        )
        .map_err(|error| error.to_string())
    }

    #[test]
    fn without_a_pool_everything_is_embedded() {
        let config = parse("[modules.mod_roster]\nbackend = \"mnesia\"\n").unwrap();
        assert_eq!(config.database, DatabaseConfig::Embedded);
        let config = parse("[auth]\nmethods = [\"internal\"]\n").unwrap();
        assert_eq!(config.database, DatabaseConfig::Embedded);
    }

    #[test]
    fn mongooseims_pool_section_is_read() {
        let config = parse(POOL).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Postgres(PostgresOptions {
                host: "db.example.com".into(),
                port: 5433,
                database: "herald".into(),
                username: "herald".into(),
                password: Some("secret".into()),
                pool_size: 4,
            })
        );
    }

    #[test]
    fn host_port_and_workers_have_defaults() {
        let config = parse(
            "[outgoing_pools.rdbms.default.connection]\ndriver = \"pgsql\"\n\
             database = \"herald\"\nusername = \"herald\"\n",
        )
        .unwrap();
        let DatabaseConfig::Postgres(options) = config.database else {
            panic!("not PostgreSQL");
        };
        assert_eq!(
            (options.host.as_str(), options.port, options.pool_size),
            ("localhost", 5432, 10)
        );
        assert_eq!(options.password, None);
    }

    #[test]
    fn every_store_may_ask_for_rdbms_with_a_pool() {
        let config = parse(&format!(
            "{POOL}[auth]\nmethods = [\"rdbms\"]\n[modules.mod_roster]\nbackend = \"rdbms\"\n\
             [modules.mod_offline]\nbackend = \"rdbms\"\n\
             [modules.mod_event_pusher.push]\nbackend = \"rdbms\"\n"
        ))
        .unwrap();
        assert!(matches!(config.database, DatabaseConfig::Postgres(_)));
    }

    #[test]
    fn an_unset_push_backend_follows_the_pool() {
        let config = parse(&format!("{POOL}[modules.mod_event_pusher.push]\n")).unwrap();
        let push = config.modules.mod_event_pusher.unwrap().push.unwrap();
        assert_eq!(push.backend, PushBackend::Rdbms);
    }

    #[test]
    fn rdbms_without_a_pool_names_the_key() {
        let error = parse("[auth]\nmethods = [\"rdbms\"]\n").unwrap_err();
        assert!(
            error.starts_with("herald.toml:4: auth.methods: \"rdbms\""),
            "{error}"
        );
        assert!(error.contains("[outgoing_pools.rdbms.default]"), "{error}");
        let error = parse("[modules.mod_offline]\nbackend = \"rdbms\"\n").unwrap_err();
        assert!(
            error.starts_with("herald.toml:4: modules.mod_offline.backend:"),
            "{error}"
        );
    }

    #[test]
    fn mixing_engines_is_refused_naming_the_key() {
        let error = parse(&format!(
            "{POOL}[modules.mod_roster]\nbackend = \"mnesia\"\n"
        ))
        .unwrap_err();
        assert!(
            error.starts_with("herald.toml:14: modules.mod_roster.backend:"),
            "{error}"
        );
        assert!(error.contains("one engine"), "{error}");
        let error = parse(&format!("{POOL}[auth]\nmethods = [\"internal\"]\n")).unwrap_err();
        assert!(error.contains("auth.methods"), "{error}");
        let error = parse(&format!(
            "{POOL}[modules.mod_event_pusher.push]\nbackend = \"mnesia\"\n"
        ))
        .unwrap_err();
        assert!(
            error.contains("modules.mod_event_pusher.push.backend"),
            "{error}"
        );
    }

    #[test]
    fn connection_options_are_checked() {
        let driver = parse(&POOL.replace("\"pgsql\"", "\"mysql\"")).unwrap_err();
        assert!(
            driver.starts_with(
                "herald.toml:6: outgoing_pools.rdbms.default.connection.driver: unknown variant"
            ),
            "{driver}"
        );
        let tls = parse(&POOL.replace("tls.required = false", "tls.required = true")).unwrap_err();
        assert!(
            tls.contains("outgoing_pools.rdbms.default.connection.tls.required: TLS"),
            "{tls}"
        );
        let workers = parse(&POOL.replace("workers = 4", "workers = 0")).unwrap_err();
        assert!(
            workers.contains("outgoing_pools.rdbms.default.workers: 0 is out of range"),
            "{workers}"
        );
        let missing = parse(&POOL.replace("database = \"herald\"\n", "")).unwrap_err();
        assert!(
            missing.contains("connection.database: missing"),
            "{missing}"
        );
        let tag = parse("[outgoing_pools.rdbms.other]\nworkers = 1\n").unwrap_err();
        assert!(tag.contains("outgoing_pools.rdbms"), "{tag}");
        let methods = parse("[auth]\nmethods = [\"internal\", \"rdbms\"]\n").unwrap_err();
        assert!(methods.contains("auth.methods: has 2 methods"), "{methods}");
    }
}
