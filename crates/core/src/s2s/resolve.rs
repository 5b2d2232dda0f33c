//! Where a remote domain's server listens (RFC 6120 section 3.2; XEP-0368 for direct TLS).
//!
//! A static address from the configuration wins. Otherwise SRV records are looked up
//! (`_xmpps-server._tcp` first when direct TLS is on, then `_xmpp-server._tcp`), ordered by
//! priority and then weight; a domain without SRV records is tried on its A/AAAA addresses
//! at `outgoing.port` (5269). A single `.` target means the service is decidedly not
//! available (RFC 2782). Lookups go through hickory-resolver (feature `dns`, on by
//! default); without it, the system resolver is asked for A/AAAA only.

use std::net::SocketAddr;

use super::config::S2sConfig;

/// One address to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// TLS from the first byte (XEP-0368) rather than STARTTLS.
    pub direct_tls: bool,
}

/// Resolves remote domains.
pub struct Resolver {
    #[cfg(feature = "dns")]
    dns: Option<hickory_resolver::TokioResolver>,
}

impl Resolver {
    /// A resolver with the system's DNS configuration and `[s2s.dns]`'s timeout and retries.
    pub fn new(config: &S2sConfig) -> Resolver {
        #[cfg(feature = "dns")]
        {
            let dns = match hickory_resolver::TokioResolver::builder_tokio() {
                Ok(mut builder) => {
                    builder.options_mut().timeout = config.dns_timeout;
                    builder.options_mut().attempts = config.dns_retries.max(1);
                    Some(builder.build())
                }
                Err(error) => {
                    tracing::warn!(%error, "no DNS configuration; remote domains resolve through the system only");
                    None
                }
            };
            Resolver { dns }
        }
        #[cfg(not(feature = "dns"))]
        {
            let _ = config;
            Resolver {}
        }
    }

    /// The addresses to try for `domain`, in order; empty when it cannot be found.
    pub async fn targets(&self, config: &S2sConfig, domain: &str) -> Vec<Target> {
        if let Some(fixed) = config.static_address(domain) {
            return vec![Target {
                addr: SocketAddr::new(fixed.ip, fixed.port),
                direct_tls: fixed.direct_tls,
            }];
        }
        let lookup = async {
            #[cfg(feature = "dns")]
            if let Some(dns) = &self.dns {
                return self::dns::targets(dns, config, domain).await;
            }
            system(domain, config.port).await
        };
        // The resolver has its own timeout per query; this bounds the whole chain.
        let bound = config.dns_timeout * (config.dns_retries as u32 + 2);
        tokio::time::timeout(bound, lookup)
            .await
            .unwrap_or_default()
    }
}

async fn system(domain: &str, port: u16) -> Vec<Target> {
    match tokio::net::lookup_host((domain, port)).await {
        Ok(addrs) => addrs
            .map(|addr| Target {
                addr,
                direct_tls: false,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(feature = "dns")]
mod dns {
    use std::net::SocketAddr;

    use hickory_resolver::TokioResolver;

    use super::{S2sConfig, Target};

    pub(super) async fn targets(
        dns: &TokioResolver,
        config: &S2sConfig,
        domain: &str,
    ) -> Vec<Target> {
        let mut out = Vec::new();
        let mut any_srv = false;
        let services: &[(&str, bool)] = if config.direct_tls {
            &[("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)]
        } else {
            &[("_xmpp-server._tcp", false)]
        };
        for (service, direct_tls) in services {
            let name = format!("{service}.{domain}.");
            let Ok(lookup) = dns.srv_lookup(name).await else {
                continue;
            };
            let mut records: Vec<_> = lookup.iter().cloned().collect();
            if records.is_empty() {
                continue;
            }
            any_srv = true;
            // RFC 2782: lowest priority first; among equals, heavier first (a stable
            // approximation of the weighted random choice).
            records.sort_by(|a, b| {
                a.priority()
                    .cmp(&b.priority())
                    .then(b.weight().cmp(&a.weight()))
            });
            for record in records {
                let target = record.target().to_utf8();
                if target == "." {
                    continue;
                }
                if let Ok(ips) = dns.lookup_ip(target.as_str()).await {
                    out.extend(ips.iter().map(|ip| Target {
                        addr: SocketAddr::new(ip, record.port()),
                        direct_tls: *direct_tls,
                    }));
                }
            }
        }
        if any_srv {
            return out;
        }
        match dns.lookup_ip(format!("{domain}.")).await {
            Ok(ips) => ips
                .iter()
                .map(|ip| Target {
                    addr: SocketAddr::new(ip, config.port),
                    direct_tls: false,
                })
                .collect(),
            Err(_) => super::system(domain, config.port).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s2s::config::StaticAddress;

    #[tokio::test]
    async fn a_static_address_is_used_without_dns() {
        let config = S2sConfig {
            address: vec![StaticAddress {
                host: "b.example".into(),
                ip: "127.0.0.3".parse().unwrap(),
                port: 5270,
                direct_tls: false,
            }],
            ..S2sConfig::default()
        };
        let targets = Resolver::new(&config).targets(&config, "b.example").await;
        assert_eq!(
            targets,
            [Target {
                addr: "127.0.0.3:5270".parse().unwrap(),
                direct_tls: false
            }]
        );
    }
}
