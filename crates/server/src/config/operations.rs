//! What operators run beside the XMPP listeners (docs/operations.md): `[[listen.http]]` with
//! its handlers (MongooseIM's `mongoose_prometheus_handler` and `mongoose_admin_api`), and
//! `[instrumentation.prometheus]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herald_core::config::Integer;
use serde::Deserialize;

use super::CertFiles;
use super::error::{Invalid, KeyPath};

/// One `[[listen.http]]` table: an HTTP/1.1 listener serving `/health`, `/ready` and the
/// handlers configured on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListener {
    /// `ip_address` and `port`.
    pub addr: SocketAddr,
    /// `tls.certfile` and `tls.keyfile`: HTTPS; `None` for plain HTTP.
    pub tls: Option<CertFiles>,
    /// `handlers.mongoose_prometheus_handler`: the path serving the metrics.
    pub prometheus: Option<String>,
    /// `handlers.mongoose_admin_api`: the admin API.
    pub admin: Option<AdminApi>,
}

/// The admin API on an HTTP listener.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminApi {
    /// `path`: where it is served (default `/api`).
    pub path: String,
    /// `token` or the first line of `token_file`: the bearer token every request carries.
    pub token: String,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("path", &self.path)
            .field("token", &"<hidden>")
            .finish()
    }
}

/// `[instrumentation]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Instrumentation {
    /// `[instrumentation.prometheus]`: metrics are recorded for Prometheus (implied by a
    /// `mongoose_prometheus_handler`).
    pub prometheus: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawHttpListener {
    port: Option<Integer>,
    ip_address: Option<String>,
    tls: Option<RawHttpTls>,
    #[serde(default)]
    handlers: RawHandlers,
}

/// `tls` of an HTTP listener: the certificate files (`mode` is read to be refused by name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawHttpTls {
    pub(super) mode: Option<String>,
    pub(super) certfile: Option<PathBuf>,
    pub(super) keyfile: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHandlers {
    #[serde(default)]
    mongoose_prometheus_handler: Vec<RawPrometheusHandler>,
    #[serde(default)]
    mongoose_admin_api: Vec<RawAdminApi>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPrometheusHandler {
    /// MongooseIM's host match: only `"_"` (any) is served.
    host: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAdminApi {
    host: Option<String>,
    path: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawInstrumentation {
    prometheus: Option<RawPrometheus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPrometheus {}

/// Check `[instrumentation]`.
pub(super) fn instrumentation(raw: Option<RawInstrumentation>) -> Instrumentation {
    Instrumentation {
        prometheus: raw.is_some_and(|raw| raw.prometheus.is_some()),
    }
}

/// Check one `[[listen.http]]` table.
pub(super) fn http_listener(
    raw: RawHttpListener,
    at: &KeyPath,
    base_dir: &Path,
    listener_addr: impl Fn(Option<Integer>, Option<String>, &KeyPath) -> Result<SocketAddr, Invalid>,
    tls_files: impl Fn(RawHttpTls, &KeyPath) -> Result<Option<CertFiles>, Invalid>,
) -> Result<HttpListener, Invalid> {
    let addr = listener_addr(raw.port, raw.ip_address, at)?;
    let ip = addr.ip();
    let tls = match raw.tls {
        Some(tls) => {
            let tls_at = at.key("tls");
            if tls.mode.is_some() {
                return Err(Invalid::new(
                    tls_at.key("mode"),
                    "is not an option of an HTTP listener; expected certfile and keyfile only",
                ));
            }
            let files = tls_files(tls, &tls_at)?;
            if files.is_none() {
                return Err(Invalid::new(
                    tls_at,
                    "has no certfile; expected certfile and keyfile (PEM files) for HTTPS",
                ));
            }
            files
        }
        None => None,
    };
    let handlers_at = at.key("handlers");
    let prometheus_at = handlers_at.key("mongoose_prometheus_handler");
    let mut prometheus = None;
    for (index, handler) in raw
        .handlers
        .mongoose_prometheus_handler
        .into_iter()
        .enumerate()
    {
        let at = prometheus_at.index(index);
        any_host(handler.host.as_deref(), &at.key("host"))?;
        if prometheus.is_some() {
            return Err(Invalid::new(
                at,
                "a second metrics handler; expected one per listener",
            ));
        }
        prometheus = Some(path(handler.path, "/metrics", &at.key("path"))?);
    }
    let admin_at = handlers_at.key("mongoose_admin_api");
    let mut admin = None;
    for (index, handler) in raw.handlers.mongoose_admin_api.into_iter().enumerate() {
        let at = admin_at.index(index);
        any_host(handler.host.as_deref(), &at.key("host"))?;
        if admin.is_some() {
            return Err(Invalid::new(
                at,
                "a second admin API; expected one per listener",
            ));
        }
        let token = match (handler.token, handler.token_file) {
            (Some(token), None) => token,
            (None, Some(file)) => {
                let file_at = at.key("token_file");
                let file = if file.is_relative() {
                    base_dir.join(file)
                } else {
                    file
                };
                let text = std::fs::read_to_string(&file).map_err(|error| {
                    Invalid::new(
                        file_at.clone(),
                        format!("cannot read {}: {error}", file.display()),
                    )
                })?;
                text.lines().next().unwrap_or("").trim().to_owned()
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    at.key("token_file"),
                    "is given with token; expected one of token and token_file",
                ));
            }
            (None, None) => {
                return Err(Invalid::new(
                    at.key("token"),
                    "is missing; expected token (or token_file): the secret every request carries as \"Authorization: Bearer TOKEN\"",
                ));
            }
        };
        if token.len() < 16 {
            return Err(Invalid::new(
                at.key("token"),
                "is shorter than 16 characters; expected a long random secret",
            ));
        }
        if tls.is_none() && !ip.is_loopback() {
            return Err(Invalid::new(
                at,
                format!(
                    "is on {ip} without TLS: its token would cross the network in clear; expected tls.certfile and tls.keyfile on this listener, or ip_address on loopback"
                ),
            ));
        }
        admin = Some(AdminApi {
            path: path(handler.path, "/api", &at.key("path"))?,
            token,
        });
    }
    if let (Some(metrics), Some(admin)) = (&prometheus, &admin)
        && (metrics.starts_with(&admin.path) || admin.path.starts_with(metrics.as_str()))
    {
        return Err(Invalid::new(
            admin_at.index(0).key("path"),
            format!("overlaps the metrics path {metrics}; expected distinct paths"),
        ));
    }
    Ok(HttpListener {
        addr,
        tls,
        prometheus,
        admin,
    })
}

/// MongooseIM's `host` of a handler: herald serves every host name alike.
fn any_host(host: Option<&str>, at: &KeyPath) -> Result<(), Invalid> {
    match host {
        None | Some("_") => Ok(()),
        Some(other) => Err(Invalid::new(
            at.clone(),
            format!("\"{other}\": herald serves handlers on any host; expected \"_\" or no host"),
        )),
    }
}

fn path(raw: Option<String>, default: &str, at: &KeyPath) -> Result<String, Invalid> {
    let path = raw.unwrap_or_else(|| default.to_owned());
    let path = if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path
    };
    if !path.starts_with('/') || path == "/" || path == "/health" || path == "/ready" {
        return Err(Invalid::new(
            at.clone(),
            format!("\"{path}\"; expected a path such as \"{default}\" (not /, /health or /ready)"),
        ));
    }
    Ok(path)
}
