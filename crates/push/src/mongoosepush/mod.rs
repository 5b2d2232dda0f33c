//! The MongoosePush HTTP push service (push.md section 8, MongooseIM's
//! `mod_push_service_mongoosepush`): registrations whose pubsub domain is a virtual pubsub host
//! are not published over XMPP; their notifications are POSTed as JSON to an HTTP service
//! (MongoosePush) that talks to APNs and FCM.
//!
//! - [`MongoosePushConfig`] and [`HttpPool`]: `[modules.mod_push_service_mongoosepush]` and
//!   `[outgoing_pools.http.NAME]`, typed, with MongooseIM's defaults.
//! - [`request`]: the exact path and JSON of one notification, for API `v2` and `v3`.
//! - [`HttpPush`]: the seam the publisher sends through; [`MongoosePush`] is its hyper client
//!   with keep-alive connections, TLS verification on by default and at most
//!   `max_http_connections` requests in flight.
//!
//! Unlike MongooseIM, the HTTP call never runs inside message routing: the publisher's bounded
//! queue and workers carry it (crate::publisher).

mod client;
pub mod request;

use std::{num::NonZeroUsize, path::PathBuf, time::Duration};

pub use client::{ClientError, MongoosePush};
pub use request::{Notification, RequestSkip, VOIP_TOPIC_SUFFIX};

/// `api_version`: the MongoosePush REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    /// `"v2"`: an expired device is answered 500 and cannot be told from a failure.
    V2,
    /// `"v3"`: the default; an expired device is answered 410.
    #[default]
    V3,
}

impl ApiVersion {
    /// Accepted names.
    pub const NAMES: &'static [(&'static str, ApiVersion)] =
        &[("v2", ApiVersion::V2), ("v3", ApiVersion::V3)];

    /// The version called `name`.
    pub fn from_name(name: &str) -> Result<ApiVersion, String> {
        herald_core::config::variant(name, Self::NAMES)
    }

    /// The version as written in the request path.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2 => "v2",
            ApiVersion::V3 => "v3",
        }
    }
}

/// `max_http_connections` when the file does not set it (MongooseIM's default).
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 100;

/// `connection.request_timeout` when the file does not set it (MongooseIM's default, ms).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(2000);

/// `[modules.mod_push_service_mongoosepush]`, with its pool resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoosePushConfig {
    /// `api_version`.
    pub api_version: ApiVersion,
    /// `max_http_connections`: requests in flight (and keep-alive connections kept) at most.
    pub max_http_connections: NonZeroUsize,
    /// The pool named by `pool_name`.
    pub pool: HttpPool,
}

/// `[outgoing_pools.http.NAME]`: where the HTTP service is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPool {
    /// The pool's name (`NAME`), for logs.
    pub name: String,
    /// `connection.host`: `http://` or `https://`, a host and an optional port.
    pub base: BaseUrl,
    /// `connection.path_prefix`: starts and ends with `/`; default `/`.
    pub path_prefix: String,
    /// `connection.request_timeout`: how long one request may take, connecting included.
    pub request_timeout: Duration,
    /// `connection.tls.*`: how an `https://` service is verified.
    pub tls: HttpTls,
}

/// `connection.host`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Whether the service is reached over TLS.
    pub https: bool,
    /// The host name or IP address (IPv6 in brackets), as written.
    pub host: String,
    /// The port (80 or 443 when not written).
    pub port: u16,
}

impl BaseUrl {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`, optionally ending in `/`; nothing else.
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let expected = "expected \"http://HOST[:PORT]\" or \"https://HOST[:PORT]\" (the path \
                        goes in connection.path_prefix)";
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{text:?} has no http:// or https:// scheme; {expected}"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "{text:?} is not a scheme, host and port; {expected}"
            ));
        }
        let default_port = if https { 443 } else { 80 };
        // An IPv6 literal is bracketed: its colons are not the port's.
        let (host, port) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains(']') => {
                let port = rest[colon + 1..]
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("{text:?} has an invalid port; {expected}"))?;
                (&rest[..colon], port)
            }
            _ => (rest, default_port),
        };
        if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
            return Err(format!("{text:?} has no valid host; {expected}"));
        }
        Ok(BaseUrl {
            https,
            host: host.to_owned(),
            port,
        })
    }

    /// The host without IPv6 brackets, as a TLS server name is checked.
    pub fn server_name(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// `connection.path_prefix`: must start with `/`; a missing final `/` is added, as the API
/// version follows it.
pub fn parse_path_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} does not start with /; expected a path such as \"/\""
        ));
    }
    if text.contains(['?', '#', ' ']) {
        return Err(format!(
            "{text:?} is not a plain path; expected a path such as \"/\""
        ));
    }
    Ok(if text.ends_with('/') {
        text.to_owned()
    } else {
        format!("{text}/")
    })
}

/// `connection.tls.*` of an HTTP pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpTls {
    /// `verify_mode`: `"peer"` (the default) checks the service's certificate chain and name;
    /// `"none"` checks nothing (test set-ups only: it is logged as a warning at start-up).
    pub verify_mode: VerifyMode,
    /// `cacertfile`: PEM certificates to trust instead of the system's roots.
    pub cacertfile: Option<PathBuf>,
    /// `certfile` and `keyfile`: a client certificate (PEM chain and key) to present.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `connection.tls.verify_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// `"peer"`: verify the certificate chain and the host name (the default).
    #[default]
    Peer,
    /// `"none"`: accept any certificate.
    None,
}

impl VerifyMode {
    /// Accepted names.
    pub const NAMES: &'static [(&'static str, VerifyMode)] =
        &[("peer", VerifyMode::Peer), ("none", VerifyMode::None)];

    /// The mode called `name`.
    pub fn from_name(name: &str) -> Result<VerifyMode, String> {
        herald_core::config::variant(name, Self::NAMES)
    }
}

/// How one HTTP notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The service answered with this status.
    Status(u16),
    /// The service answered 429 (too many requests) or 503 with a `Retry-After` header in
    /// seconds (RFC 9110 section 10.2.3): retry no sooner than that.
    RetryAfter(u16, std::time::Duration),
    /// No complete answer within `request_timeout`.
    Timeout,
    /// No answer: the connection or TLS handshake failed, or the request could not be sent.
    Failed(String),
}

/// Sends one notification to the HTTP push service and says how it ended. [`MongoosePush`] is
/// the real one; tests use their own.
#[async_trait::async_trait]
pub trait HttpPush: Send + Sync + 'static {
    /// The API version, which decides the request path and what a status means.
    fn api_version(&self) -> ApiVersion;

    /// POST `notification`.
    async fn post(&self, notification: &Notification) -> HttpOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_a_scheme_host_and_optional_port() {
        let url = BaseUrl::parse("https://localhost:8443").unwrap();
        assert_eq!(
            url,
            BaseUrl {
                https: true,
                host: "localhost".into(),
                port: 8443
            }
        );
        assert_eq!(BaseUrl::parse("http://push.example.com/").unwrap().port, 80);
        assert_eq!(
            BaseUrl::parse("https://push.example.com").unwrap().port,
            443
        );
        let v6 = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 8080));
        assert_eq!(v6.server_name(), "::1");
        assert_eq!(BaseUrl::parse("http://[::1]").unwrap().port, 80);
        assert_eq!(url.to_string(), "https://localhost:8443");
    }

    #[test]
    fn a_base_url_without_scheme_or_with_a_path_or_bad_port_is_refused() {
        for text in [
            "localhost:8443",
            "ftp://localhost",
            "https://",
            "https://localhost/api",
            "https://localhost:0",
            "https://localhost:99999",
            "https://localhost:port",
            "https://user@localhost",
            "http://[::1",
        ] {
            assert!(BaseUrl::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_path_prefix_starts_with_a_slash_and_gains_a_final_one() {
        assert_eq!(parse_path_prefix("/").unwrap(), "/");
        assert_eq!(parse_path_prefix("/push").unwrap(), "/push/");
        assert_eq!(parse_path_prefix("/push/").unwrap(), "/push/");
        assert!(parse_path_prefix("push").is_err());
        assert!(parse_path_prefix("/a?b").is_err());
    }

    #[test]
    fn api_versions_and_verify_modes_have_mongooseims_names() {
        assert_eq!(ApiVersion::from_name("v2"), Ok(ApiVersion::V2));
        assert_eq!(ApiVersion::default().as_str(), "v3");
        assert!(ApiVersion::from_name("v1").unwrap_err().contains("\"v3\""));
        assert_eq!(VerifyMode::from_name("none"), Ok(VerifyMode::None));
        assert!(VerifyMode::from_name("selfsigned_peer").is_err());
    }
}
