//! `[modules.mod_push_service_mongoosepush]` and the `[outgoing_pools.http.NAME]` pool it names
//! (`docs/modules/push.md` section 8): the file's shape and its checks. The value types and their rules
//! are herald-push's (`herald_push::mongoosepush`).
//!
//! The checks that tie the sections together: `pool_name` names a defined HTTP pool;
//! `virtual_pubsub_hosts` needs the service (otherwise their notifications would vanish); the
//! service needs the push module and at least one virtual pubsub host (otherwise nothing would
//! ever be sent to it).

use std::{collections::BTreeMap, num::NonZeroUsize, path::Path, path::PathBuf, time::Duration};

use herald_push::{
    config::{PushConfig, Strategy},
    mongoosepush::{
        ApiVersion, BaseUrl, DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, HttpPool,
        HttpTls, MongoosePushConfig, VerifyMode, parse_path_prefix,
    },
};
use serde::Deserialize;

use super::error::{Invalid, KeyPath};
use herald_core::config::Integer;

/// `[modules.mod_push_service_mongoosepush]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawMongoosePush {
    pool_name: Option<String>,
    api_version: Option<String>,
    max_http_connections: Option<Integer>,
}

/// `[outgoing_pools.http.NAME]`. `scope`, `workers`, `strategy` and `call_timeout` are
/// MongooseIM's worker-pool keys: accepted, as herald's HTTP client needs no worker processes
/// (`max_http_connections` bounds it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawHttpPool {
    scope: Option<String>,
    workers: Option<Integer>,
    strategy: Option<String>,
    call_timeout: Option<Integer>,
    connection: Option<RawHttpConnection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHttpConnection {
    host: Option<String>,
    path_prefix: Option<String>,
    request_timeout: Option<Integer>,
    tls: Option<RawHttpTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHttpTls {
    verify_mode: Option<String>,
    cacertfile: Option<PathBuf>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
}

/// The HTTP pools of the file, by name, before any is used.
pub(super) type RawHttpPools = BTreeMap<String, RawHttpPool>;

/// Resolves `[modules.mod_push_service_mongoosepush]` (at `service_at`) against the HTTP pools
/// (at `pools_at`) and attaches it to the push module's configuration `push` (at `push_at`).
pub(super) fn mongoosepush(
    service: Option<RawMongoosePush>,
    pools: Option<RawHttpPools>,
    push: Option<&mut PushConfig>,
    ats: [&KeyPath; 3],
    base_dir: &Path,
) -> Result<(), Invalid> {
    let [service_at, pools_at, push_at] = ats;
    let mut pools = pools.unwrap_or_default();
    // Every pool is checked, used or not: a typo is found before the day it is used.
    let mut checked = BTreeMap::new();
    for (name, raw) in std::mem::take(&mut pools) {
        let pool = http_pool(&name, raw, &pools_at.key(&name), base_dir)?;
        checked.insert(name, pool);
    }
    let Some(service) = service else {
        if let Some(push) = push
            && !push.virtual_pubsub_hosts.is_empty()
        {
            return Err(Invalid::new(
                push_at.key("virtual_pubsub_hosts"),
                "needs the HTTP push service that serves these hosts: add \
                 [modules.mod_push_service_mongoosepush] with its pool_name",
            ));
        }
        return Ok(());
    };
    let Some(push) = push else {
        return Err(Invalid::new(
            service_at.clone(),
            "is only used by the push module: add [modules.mod_event_pusher.push] with \
             virtual_pubsub_hosts",
        ));
    };
    if push.virtual_pubsub_hosts.is_empty() {
        return Err(Invalid::new(
            service_at.clone(),
            "would never be used: list the hosts it serves in \
             modules.mod_event_pusher.push.virtual_pubsub_hosts",
        ));
    }
    let name_at = service_at.key("pool_name");
    let Some(pool_name) = service.pool_name else {
        return Err(Invalid::new(
            name_at,
            "missing; expected the NAME of an [outgoing_pools.http.NAME] pool",
        ));
    };
    let Some(pool) = checked.remove(&pool_name) else {
        let defined: Vec<String> = checked.keys().map(|name| format!("{name:?}")).collect();
        let defined = if defined.is_empty() {
            "none is defined".to_owned()
        } else {
            format!("defined: {}", defined.join(", "))
        };
        return Err(Invalid::new(
            name_at,
            format!("{pool_name:?} names no [outgoing_pools.http.{pool_name}] pool; {defined}"),
        ));
    };
    let api_version = match service.api_version {
        Some(name) => ApiVersion::from_name(&name)
            .map_err(|message| Invalid::new(service_at.key("api_version"), message))?,
        None => ApiVersion::default(),
    };
    let max_http_connections = match service.max_http_connections {
        Some(value) => positive(value, &service_at.key("max_http_connections"))?,
        None => NonZeroUsize::new(DEFAULT_MAX_HTTP_CONNECTIONS).unwrap_or(NonZeroUsize::MIN),
    };
    push.mongoosepush = Some(MongoosePushConfig {
        api_version,
        max_http_connections,
        pool,
    });
    Ok(())
}

fn http_pool(
    name: &str,
    raw: RawHttpPool,
    at: &KeyPath,
    base_dir: &Path,
) -> Result<HttpPool, Invalid> {
    if let Some(scope) = raw.scope
        && !["global", "host_type", "host", "single_host_type"].contains(&scope.as_str())
    {
        return Err(Invalid::new(
            at.key("scope"),
            format!("unknown variant {scope:?}, expected one of \"global\", \"host_type\""),
        ));
    }
    if let Some(workers) = raw.workers {
        positive(workers, &at.key("workers"))?;
    }
    if let Some(call_timeout) = raw.call_timeout {
        positive(call_timeout, &at.key("call_timeout"))?;
    }
    if let Some(strategy) = raw.strategy {
        // The same worker-pool strategies as the push module's `wpool.strategy`.
        Strategy::from_name(&strategy)
            .map_err(|message| Invalid::new(at.key("strategy"), message))?;
    }
    let at = at.key("connection");
    let Some(connection) = raw.connection else {
        return Err(Invalid::new(
            at.key("host"),
            "missing; expected the push service's URL, such as \"https://localhost:8443\"",
        ));
    };
    let Some(host) = connection.host else {
        return Err(Invalid::new(
            at.key("host"),
            "missing; expected the push service's URL, such as \"https://localhost:8443\"",
        ));
    };
    let base = BaseUrl::parse(&host).map_err(|message| Invalid::new(at.key("host"), message))?;
    let path_prefix = match connection.path_prefix {
        Some(prefix) => parse_path_prefix(&prefix)
            .map_err(|message| Invalid::new(at.key("path_prefix"), message))?,
        None => "/".to_owned(),
    };
    let request_timeout = match connection.request_timeout {
        Some(ms) => {
            let ms = positive(ms, &at.key("request_timeout"))?;
            Duration::from_millis(u64::try_from(ms.get()).unwrap_or(u64::MAX))
        }
        None => DEFAULT_REQUEST_TIMEOUT,
    };
    let tls = match connection.tls {
        Some(tls) => http_tls(tls, &at.key("tls"), base_dir)?,
        None => HttpTls::default(),
    };
    Ok(HttpPool {
        name: name.to_owned(),
        base,
        path_prefix,
        request_timeout,
        tls,
    })
}

fn http_tls(raw: RawHttpTls, at: &KeyPath, base_dir: &Path) -> Result<HttpTls, Invalid> {
    let path = |path: PathBuf, key: &str| {
        if path.as_os_str().is_empty() {
            return Err(Invalid::new(at.key(key), "is empty; expected a path"));
        }
        Ok(base_dir.join(path))
    };
    let verify_mode = match raw.verify_mode {
        Some(name) => VerifyMode::from_name(&name)
            .map_err(|message| Invalid::new(at.key("verify_mode"), message))?,
        None => VerifyMode::default(),
    };
    let cacertfile = raw
        .cacertfile
        .map(|file| path(file, "cacertfile"))
        .transpose()?;
    let client_cert = match (raw.certfile, raw.keyfile) {
        (Some(cert), Some(key)) => Some((path(cert, "certfile")?, path(key, "keyfile")?)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Invalid::new(
                at.key("certfile"),
                "is given without keyfile; expected both or neither",
            ));
        }
        (None, Some(_)) => {
            return Err(Invalid::new(
                at.key("keyfile"),
                "is given without certfile; expected both or neither",
            ));
        }
    };
    Ok(HttpTls {
        verify_mode,
        cacertfile,
        client_cert,
    })
}

/// A positive integer, checked as every other count of the file is.
fn positive(value: Integer, at: &KeyPath) -> Result<NonZeroUsize, Invalid> {
    let n: usize = herald_core::config::integer(value, 1, "at least 1", at)?;
    Ok(NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[general]\nhosts = [\"example.com\"]\n\
                        [modules.mod_event_pusher.push]\nvirtual_pubsub_hosts = [\"virtual.@HOST@\"]\n";

    const SERVICE: &str =
        "[modules.mod_push_service_mongoosepush]\npool_name = \"mongoose_push_http\"\n";

    const POOL: &str = "[outgoing_pools.http.mongoose_push_http]\n\
                        connection.host = \"https://localhost:8443\"\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "herald.toml", Path::new("/etc/herald")).map_err(|e| e.to_string())
    }

    fn service(text: &str) -> MongoosePushConfig {
        parse(text)
            .unwrap()
            .modules
            .mod_event_pusher
            .unwrap()
            .push
            .unwrap()
            .mongoosepush
            .unwrap()
    }

    #[test]
    fn the_spec_example_parses_with_every_key() {
        let config = service(
            "[general]\nhosts = [\"example.com\"]\n\
             [modules.mod_event_pusher.push]\nvirtual_pubsub_hosts = [\"virtual.@HOST@\"]\n\
             [modules.mod_push_service_mongoosepush]\npool_name = \"mongoose_push_http\"\n\
             api_version = \"v2\"\nmax_http_connections = 7\n\
             [outgoing_pools.http.mongoose_push_http]\nscope = \"global\"\nworkers = 50\n\
             connection.host = \"https://localhost:8443\"\nconnection.path_prefix = \"/push\"\n\
             connection.request_timeout = 1500\nconnection.tls.verify_mode = \"peer\"\n\
             connection.tls.cacertfile = \"ca.pem\"\nconnection.tls.certfile = \"c.pem\"\n\
             connection.tls.keyfile = \"k.pem\"\n",
        );
        assert_eq!(config.api_version, ApiVersion::V2);
        assert_eq!(config.max_http_connections.get(), 7);
        let pool = config.pool;
        assert_eq!(pool.name, "mongoose_push_http");
        assert_eq!(pool.base.to_string(), "https://localhost:8443");
        assert_eq!(pool.path_prefix, "/push/");
        assert_eq!(pool.request_timeout, Duration::from_millis(1500));
        assert_eq!(
            pool.tls.cacertfile,
            Some(PathBuf::from("/etc/herald/ca.pem"))
        );
        assert_eq!(
            pool.tls.client_cert,
            Some((
                PathBuf::from("/etc/herald/c.pem"),
                PathBuf::from("/etc/herald/k.pem")
            ))
        );
    }

    #[test]
    fn defaults_are_mongooseims() {
        let config = service(&format!("{BASE}{SERVICE}{POOL}"));
        assert_eq!(config.api_version, ApiVersion::V3);
        assert_eq!(config.max_http_connections.get(), 100);
        assert_eq!(config.pool.path_prefix, "/");
        assert_eq!(config.pool.request_timeout, Duration::from_millis(2000));
        assert_eq!(config.pool.tls, HttpTls::default());
        assert_eq!(config.pool.tls.verify_mode, VerifyMode::Peer);
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn virtual_hosts_without_the_service_name_the_hosts_key() {
        let message = error(BASE);
        assert!(
            message.contains("modules.mod_event_pusher.push.virtual_pubsub_hosts")
                && message.contains("mod_push_service_mongoosepush"),
            "{message}"
        );
    }

    #[test]
    fn the_service_without_virtual_hosts_or_push_is_refused() {
        let message = error(&format!(
            "[general]\nhosts = [\"example.com\"]\n[modules.mod_event_pusher.push]\n{SERVICE}{POOL}"
        ));
        assert!(
            message.contains("modules.mod_push_service_mongoosepush"),
            "{message}"
        );
        let message = error(&format!(
            "[general]\nhosts = [\"example.com\"]\n{SERVICE}{POOL}"
        ));
        assert!(message.contains("mod_event_pusher.push"), "{message}");
    }

    #[test]
    fn a_missing_or_unknown_pool_name_is_refused() {
        let message = error(&format!(
            "{BASE}[modules.mod_push_service_mongoosepush]\napi_version = \"v3\"\n{POOL}"
        ));
        assert!(
            message.contains("mod_push_service_mongoosepush.pool_name: missing"),
            "{message}"
        );
        let message = error(&format!(
            "{BASE}[modules.mod_push_service_mongoosepush]\npool_name = \"other\"\n{POOL}"
        ));
        assert!(
            message.contains("pool_name") && message.contains("\"mongoose_push_http\""),
            "{message}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            (
                "api_version = \"v1\"\n",
                "mod_push_service_mongoosepush.api_version",
            ),
            (
                "max_http_connections = 0\n",
                "mod_push_service_mongoosepush.max_http_connections",
            ),
            ("unknown = 1\n", "unknown"),
        ] {
            let message = error(&format!("{BASE}{SERVICE}{extra}{POOL}"));
            assert!(message.contains(key), "{extra}: {message}");
        }
        for (pool, key) in [
            ("connection.host = \"localhost:8443\"\n", "connection.host"),
            (
                "connection.host = \"https://h\"\nconnection.path_prefix = \"x\"\n",
                "connection.path_prefix",
            ),
            (
                "connection.host = \"https://h\"\nconnection.request_timeout = 0\n",
                "connection.request_timeout",
            ),
            (
                "connection.host = \"https://h\"\nconnection.tls.verify_mode = \"maybe\"\n",
                "connection.tls.verify_mode",
            ),
            (
                "connection.host = \"https://h\"\nconnection.tls.certfile = \"c.pem\"\n",
                "connection.tls.certfile",
            ),
            (
                "connection.host = \"https://h\"\nconnection.tls.required = true\n",
                "required",
            ),
            (
                "strategy = \"fastest\"\nconnection.host = \"https://h\"\n",
                "outgoing_pools.http.mongoose_push_http.strategy",
            ),
            (
                "workers = 0\nconnection.host = \"https://h\"\n",
                "outgoing_pools.http.mongoose_push_http.workers",
            ),
            (
                "connection.path_prefix = \"/\"\n",
                "connection.host: missing",
            ),
        ] {
            let message = error(&format!(
                "{BASE}{SERVICE}[outgoing_pools.http.mongoose_push_http]\n{pool}"
            ));
            assert!(message.contains(key), "{pool}: {message}");
        }
    }

    #[test]
    fn an_unused_pool_is_still_checked() {
        let message = error(
            "[general]\nhosts = [\"example.com\"]\n[outgoing_pools.http.spare]\nconnection.host = \"nope\"\n",
        );
        assert!(
            message.contains("outgoing_pools.http.spare.connection.host"),
            "{message}"
        );
    }
}
