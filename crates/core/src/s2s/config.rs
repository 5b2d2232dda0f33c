//! The `[s2s]` section: federation's options, with MongooseIM's names where it has them
//! (`default_policy`, `host_policy`, `use_starttls`, `certfile`, `shared`, `address`,
//! `max_retry_delay`, `outgoing.port`, `outgoing.connection_timeout`, `dns.timeout`,
//! `dns.retries`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::config::{self, Integer, Invalid, KeyPath, Section};

/// Whether a remote domain may be talked to (`default_policy`, `host_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `"allow"`.
    Allow,
    /// `"deny"`: stanzas to it bounce with `remote-server-not-found`, its streams are refused.
    Deny,
}

/// `use_starttls`: how much TLS the links must have (MongooseIM's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UseStartTls {
    /// `"false"`: never offered or used.
    Off,
    /// `"optional"` (default): used whenever the peer offers it, offered to every peer.
    Optional,
    /// `"required"`: a link without TLS is refused, both ways.
    Required,
    /// `"required_trusted"`: as required, and outgoing links also need the peer's certificate
    /// valid for its domain.
    RequiredTrusted,
}

impl UseStartTls {
    /// Whether a link without TLS is refused (`required`, `required_trusted`).
    pub fn required(self) -> bool {
        matches!(self, UseStartTls::Required | UseStartTls::RequiredTrusted)
    }
}

/// A static address for a remote domain (`[[s2s.address]]`): no DNS lookup for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    /// `host`: the remote domain.
    pub host: String,
    /// `ip_address`.
    pub ip: IpAddr,
    /// `port` (default 5269).
    pub port: u16,
    /// `tls`: TLS from the first byte (XEP-0368) instead of STARTTLS; default false.
    pub direct_tls: bool,
}

/// The `[s2s]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2sConfig {
    /// `default_policy`: remote domains not in `host_policy`.
    pub default_policy: Policy,
    /// `host_policy`: per-domain exceptions.
    pub host_policy: Vec<(String, Policy)>,
    /// `use_starttls`.
    pub use_starttls: UseStartTls,
    /// `certfile`: our certificate chain (PEM; may also hold the key). Default: the first
    /// s2s listener's, or the self-signed certificate in the data directory.
    pub certfile: Option<PathBuf>,
    /// `keyfile` (herald): the key when it is not in `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `cafile` (herald, MongooseIM's `tls.cacertfile`): roots trusted besides the system's.
    pub cafile: Option<PathBuf>,
    /// `shared`: the Server Dialback secret (XEP-0185); random per start when absent, which
    /// only costs a peer a new dialback after a restart.
    pub shared: Option<String>,
    /// `address`: static addresses.
    pub address: Vec<StaticAddress>,
    /// `max_retry_delay` (seconds): the cap of the backoff after a failed connection.
    pub max_retry_delay: Duration,
    /// `outgoing.port`: the port tried when DNS has no SRV record.
    pub port: u16,
    /// `outgoing.connection_timeout` (milliseconds): connecting and authenticating.
    pub connection_timeout: Duration,
    /// `outgoing.idle_timeout` (milliseconds, herald): an outgoing link with no traffic
    /// this long is closed.
    pub idle_timeout: Duration,
    /// `outgoing.max_queue` (herald): stanzas waiting per remote domain while it connects.
    pub max_queue: usize,
    /// `outgoing.direct_tls` (herald): also look up `_xmpps-server._tcp` (XEP-0368).
    pub direct_tls: bool,
    /// `dns.timeout` (seconds).
    pub dns_timeout: Duration,
    /// `dns.retries`.
    pub dns_retries: usize,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            default_policy: Policy::Allow,
            host_policy: Vec::new(),
            use_starttls: UseStartTls::Optional,
            certfile: None,
            keyfile: None,
            cafile: None,
            shared: None,
            address: Vec::new(),
            max_retry_delay: Duration::from_secs(300),
            port: 5269,
            connection_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_queue: 10_000,
            direct_tls: false,
            dns_timeout: Duration::from_secs(10),
            dns_retries: 2,
        }
    }
}

impl S2sConfig {
    /// The policy for a remote domain.
    pub fn policy(&self, domain: &str) -> Policy {
        self.host_policy
            .iter()
            .find(|(host, _)| host == domain)
            .map(|(_, policy)| *policy)
            .unwrap_or(self.default_policy)
    }

    /// The static address of `domain`, if configured.
    pub fn static_address(&self, domain: &str) -> Option<&StaticAddress> {
        self.address.iter().find(|a| a.host == domain)
    }
}

/// The file's shape of `[s2s]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawS2s {
    default_policy: Option<String>,
    #[serde(default)]
    host_policy: Vec<RawHostPolicy>,
    use_starttls: Option<toml::Value>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    shared: Option<String>,
    #[serde(default)]
    address: Vec<RawAddress>,
    max_retry_delay: Option<Integer>,
    outgoing: Option<RawOutgoing>,
    dns: Option<RawDns>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHostPolicy {
    host: Option<String>,
    policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAddress {
    host: Option<String>,
    ip_address: Option<String>,
    port: Option<Integer>,
    tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawOutgoing {
    port: Option<Integer>,
    connection_timeout: Option<Integer>,
    idle_timeout: Option<Integer>,
    max_queue: Option<Integer>,
    direct_tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawDns {
    timeout: Option<Integer>,
    retries: Option<Integer>,
}

const POLICIES: &[(&str, Policy)] = &[("allow", Policy::Allow), ("deny", Policy::Deny)];

const STARTTLS: &[(&str, UseStartTls)] = &[
    ("false", UseStartTls::Off),
    ("optional", UseStartTls::Optional),
    ("required", UseStartTls::Required),
    ("required_trusted", UseStartTls::RequiredTrusted),
];

const PORTS: &str = "a port number from 1 to 65535";

impl Section for S2sConfig {
    type Raw = RawS2s;

    fn from_raw(raw: RawS2s, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = S2sConfig::default();
        let default_policy = match raw.default_policy {
            Some(name) => config::one_of(&name, POLICIES, &at.key("default_policy"))?,
            None => defaults.default_policy,
        };
        let mut host_policy = Vec::with_capacity(raw.host_policy.len());
        for (index, entry) in raw.host_policy.into_iter().enumerate() {
            let at = at.key("host_policy").index(index);
            let host = config::required(entry.host, &at.key("host"), "a domain")?;
            let host = config::domain(&host, &at.key("host"))?.to_string();
            let policy =
                config::required(entry.policy, &at.key("policy"), "\"allow\" or \"deny\"")?;
            host_policy.push((host, config::one_of(&policy, POLICIES, &at.key("policy"))?));
        }
        let use_starttls = match raw.use_starttls {
            None => defaults.use_starttls,
            Some(toml::Value::Boolean(false)) => UseStartTls::Off,
            Some(toml::Value::String(name)) => {
                config::one_of(&name, STARTTLS, &at.key("use_starttls"))?
            }
            Some(other) => {
                return Err(Invalid::new(
                    at.key("use_starttls"),
                    format!(
                        "{other} is not accepted; expected one of \"false\", \"optional\", \
                         \"required\", \"required_trusted\""
                    ),
                ));
            }
        };
        let mut address = Vec::with_capacity(raw.address.len());
        for (index, entry) in raw.address.into_iter().enumerate() {
            let at = at.key("address").index(index);
            let host = config::required(entry.host, &at.key("host"), "a domain")?;
            let host = config::domain(&host, &at.key("host"))?.to_string();
            let ip_at = at.key("ip_address");
            let ip = config::required(entry.ip_address, &ip_at, "an IP address")?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| Invalid::new(ip_at.clone(), format!("{ip:?} is not an IP address")))?;
            let port = match entry.port {
                Some(n) => config::integer(n, 1u16, PORTS, &at.key("port"))?,
                None => defaults.port,
            };
            address.push(StaticAddress {
                host,
                ip,
                port,
                direct_tls: entry.tls.unwrap_or(false),
            });
        }
        let seconds = "at least 1 (seconds)";
        let millis = "at least 1 (milliseconds)";
        let max_retry_delay = match raw.max_retry_delay {
            Some(n) => Duration::from_secs(config::integer(
                n,
                1u64,
                seconds,
                &at.key("max_retry_delay"),
            )?),
            None => defaults.max_retry_delay,
        };
        let outgoing = raw.outgoing.unwrap_or_default();
        let out_at = at.key("outgoing");
        let port = match outgoing.port {
            Some(n) => config::integer(n, 1u16, PORTS, &out_at.key("port"))?,
            None => defaults.port,
        };
        let ms = |value: Option<Integer>, key: &str, default: Duration| match value {
            Some(n) => {
                config::integer(n, 1u64, millis, &out_at.key(key)).map(Duration::from_millis)
            }
            None => Ok(default),
        };
        let connection_timeout = ms(
            outgoing.connection_timeout,
            "connection_timeout",
            defaults.connection_timeout,
        )?;
        let idle_timeout = ms(outgoing.idle_timeout, "idle_timeout", defaults.idle_timeout)?;
        let max_queue = match outgoing.max_queue {
            Some(n) => config::integer(n, 1usize, "at least 1", &out_at.key("max_queue"))?,
            None => defaults.max_queue,
        };
        let dns = raw.dns.unwrap_or_default();
        let dns_timeout = match dns.timeout {
            Some(n) => Duration::from_secs(config::integer(
                n,
                1u64,
                seconds,
                &at.key("dns").key("timeout"),
            )?),
            None => defaults.dns_timeout,
        };
        let dns_retries = match dns.retries {
            Some(n) => config::integer(n, 0usize, "at least 0", &at.key("dns").key("retries"))?,
            None => defaults.dns_retries,
        };
        if raw.shared.as_deref() == Some("") {
            return Err(Invalid::new(
                at.key("shared"),
                "is empty; expected a secret, or no key for a random one",
            ));
        }
        Ok(S2sConfig {
            default_policy,
            host_policy,
            use_starttls,
            certfile: raw.certfile,
            keyfile: raw.keyfile,
            cafile: raw.cafile,
            shared: raw.shared,
            address,
            max_retry_delay,
            port,
            connection_timeout,
            idle_timeout,
            max_queue,
            direct_tls: outgoing.direct_tls.unwrap_or(defaults.direct_tls),
            dns_timeout,
            dns_retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<S2sConfig, String> {
        let raw: RawS2s = toml::from_str(text).map_err(|e| e.to_string())?;
        S2sConfig::from_raw(raw, &KeyPath::root().key("s2s"))
            .map_err(|e| format!("{}: {}", e.key, e.message))
    }

    #[test]
    fn mongooseim_names_are_read() {
        let config = parse(
            "default_policy = \"deny\"\nuse_starttls = \"required\"\nshared = \"s3cret\"\n\
             max_retry_delay = 30\n\
             host_policy = [{host = \"Good.Example\", policy = \"allow\"}]\n\
             address = [{host = \"b.example\", ip_address = \"127.0.0.3\", port = 5270}]\n\
             [outgoing]\nport = 5299\nconnection_timeout = 2000\n[dns]\ntimeout = 3\nretries = 1\n",
        )
        .unwrap();
        assert_eq!(config.policy("good.example"), Policy::Allow);
        assert_eq!(config.policy("other.example"), Policy::Deny);
        assert_eq!(config.use_starttls, UseStartTls::Required);
        assert_eq!(config.static_address("b.example").unwrap().port, 5270);
        assert_eq!(config.port, 5299);
        assert_eq!(config.connection_timeout, Duration::from_secs(2));
        assert_eq!(config.max_retry_delay, Duration::from_secs(30));
        assert_eq!(
            (config.dns_timeout, config.dns_retries),
            (Duration::from_secs(3), 1)
        );
    }

    #[test]
    fn use_starttls_false_may_be_a_boolean_or_a_string() {
        assert_eq!(
            parse("use_starttls = false").unwrap().use_starttls,
            UseStartTls::Off
        );
        assert_eq!(
            parse("use_starttls = \"false\"").unwrap().use_starttls,
            UseStartTls::Off
        );
    }

    #[test]
    fn bad_values_name_their_keys() {
        assert!(
            parse("default_policy = \"maybe\"")
                .unwrap_err()
                .contains("s2s.default_policy")
        );
        assert!(
            parse("use_starttls = true")
                .unwrap_err()
                .contains("s2s.use_starttls")
        );
        assert!(
            parse("address = [{host = \"b.example\", ip_address = \"nope\"}]")
                .unwrap_err()
                .contains("s2s.address[0].ip_address")
        );
        assert!(
            parse("[outgoing]\nport = 0")
                .unwrap_err()
                .contains("s2s.outgoing.port")
        );
        assert!(parse("shared = \"\"").unwrap_err().contains("s2s.shared"));
        assert!(parse("tls = 1").unwrap_err().contains("unknown field"));
    }
}
