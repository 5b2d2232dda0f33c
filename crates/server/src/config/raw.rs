//! The shape of the configuration file, as serde reads it.
//!
//! Every table rejects unknown keys. Values stay close to their TOML type (strings, integers)
//! and every key is optional, so that the checks in `validate` can say which key is missing or
//! out of range and what is accepted.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) general: Option<RawGeneral>,
    #[serde(default)]
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) modules: RawModules,
    pub(super) outgoing_pools: Option<super::storage::RawOutgoingPools>,
    pub(super) auth: Option<super::storage::RawAuth>,
    pub(super) internal_databases: Option<RawInternalDatabases>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawInternalDatabases {
    pub(super) sqlite: Option<RawSqlite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSqlite {
    pub(super) synchronous: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawGeneral {
    pub(super) hosts: Option<Vec<String>>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) loglevel: Option<String>,
    pub(super) max_user_sessions: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawListen {
    #[serde(default)]
    pub(super) c2s: Vec<RawC2s>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawService {
    pub(super) port: Option<Integer>,
    pub(super) ip_address: Option<String>,
    pub(super) password: Option<String>,
    pub(super) conflict_behaviour: Option<String>,
    pub(super) max_stanza_size: Option<Integer>,
    pub(super) max_connections: Option<Integer>,
    pub(super) state_timeout: Option<Integer>,
    pub(super) check_from: Option<bool>,
    pub(super) hidden_components: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawC2s {
    pub(super) port: Option<Integer>,
    pub(super) ip_address: Option<String>,
    pub(super) max_stanza_size: Option<Integer>,
    pub(super) max_connections: Option<Integer>,
    pub(super) state_timeout: Option<Integer>,
    pub(super) send_timeout: Option<Integer>,
    pub(super) handshake_timeout: Option<Integer>,
    pub(super) max_connections_per_ip: Option<Integer>,
    pub(super) backwards_compatible_session: Option<bool>,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTls {
    pub(super) mode: Option<String>,
    pub(super) certfile: Option<PathBuf>,
    pub(super) keyfile: Option<PathBuf>,
}

/// One optional field per module: the table `[modules.NAME]` enables module `NAME`. A name
/// without a field here is rejected as an unknown module.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawModules {
    pub(super) mod_disco: Option<RawDisco>,
    pub(super) mod_ping: Option<RawPing>,
    pub(super) mod_event_pusher: Option<super::push::RawEventPusher>,
    pub(super) mod_stream_management: Option<RawStreamManagement>,
    pub(super) mod_roster: Option<RawRoster>,
    pub(super) mod_offline: Option<RawOffline>,
    pub(super) mod_register: Option<RawRegister>,
    pub(super) mod_fail2ban: Option<RawFail2ban>,
    pub(super) mod_push_service_mongoosepush: Option<super::http::RawMongoosePush>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRoster {
    pub(super) versioning: Option<bool>,
    pub(super) store_current_id: Option<bool>,
    pub(super) backend: Option<String>,
    pub(super) max_roster_size: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawOffline {
    pub(super) max_user_offline_messages: Option<Integer>,
    pub(super) backend: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFail2ban {
    pub(super) c2s_auth_ban_lifetime: Option<Integer>,
    pub(super) c2s_max_auth_failures: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRegister {
    pub(super) password_strength: Option<Integer>,
    pub(super) registration_timeout: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawStreamManagement {
    /// An integer, or "infinity".
    pub(super) buffer_max: Option<toml::Value>,
    /// An integer, or "never".
    pub(super) ack_freq: Option<toml::Value>,
    pub(super) resume_timeout: Option<Integer>,
    pub(super) stale_h: Option<RawStaleH>,
    /// An integer, or "infinity".
    pub(super) ack_timeout: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawStaleH {
    pub(super) enabled: Option<bool>,
    pub(super) repeat_after: Option<Integer>,
    pub(super) geriatric: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDisco {
    #[serde(default)]
    pub(super) extra_domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPing {
    pub(super) send_pings: Option<bool>,
    pub(super) ping_interval: Option<Integer>,
    pub(super) ping_req_timeout: Option<Integer>,
    pub(super) timeout_action: Option<String>,
}

/// A TOML integer. Its own type only so that a value of the wrong type is reported as
/// "expected an integer" rather than in Rust's words ("expected i64").
#[derive(Debug, Clone, Copy)]
pub(super) struct Integer(pub(super) i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integer;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Integer, E> {
                Ok(Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Integer, E> {
                i64::try_from(value)
                    .map(Integer)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }
        }

        deserializer.deserialize_i64(Visitor)
    }
}
