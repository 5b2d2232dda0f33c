//! The shape of the configuration file, as serde reads it.
//!
//! Every table rejects unknown keys. Values stay close to their TOML type (strings, integers)
//! and every key is optional, so that the checks in `validate` can say which key is missing or
//! out of range and what is accepted.

use std::path::PathBuf;

pub(super) use herald_core::config::Integer;
use herald_core::config::Section;

use super::{
    BlockingConfig, CarbonsConfig, CsiConfig, DiscoConfig, EventPusherConfig, Fail2banConfig,
    MamConfig, OfflineConfig, PepConfig, PingConfig, RegisterConfig, RosterConfig,
    StreamManagementConfig, VcardConfig, VersionConfig,
};
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
    pub(super) s2s: Option<Raw<herald_core::s2s::S2sConfig>>,
    pub(super) instrumentation: Option<super::operations::RawInstrumentation>,
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
    pub(super) log_format: Option<String>,
    pub(super) max_user_sessions: Option<toml::Value>,
    pub(super) recipient_lanes: Option<Integer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawListen {
    #[serde(default)]
    pub(super) c2s: Vec<RawC2s>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
    #[serde(default)]
    pub(super) s2s: Vec<RawS2sListener>,
    #[serde(default)]
    pub(super) http: Vec<super::operations::RawHttpListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawS2sListener {
    pub(super) port: Option<Integer>,
    pub(super) ip_address: Option<String>,
    pub(super) max_stanza_size: Option<Integer>,
    pub(super) max_connections: Option<Integer>,
    pub(super) state_timeout: Option<Integer>,
    pub(super) tls: Option<RawTls>,
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

/// One optional field per module, in the module's own shape (`Section::Raw`): the table
/// `[modules.NAME]` enables module `NAME`. A name without a field here is rejected as an
/// unknown module.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawModules {
    pub(super) mod_disco: Option<Raw<DiscoConfig>>,
    pub(super) mod_ping: Option<Raw<PingConfig>>,
    pub(super) mod_event_pusher: Option<Raw<EventPusherConfig>>,
    pub(super) mod_stream_management: Option<Raw<StreamManagementConfig>>,
    pub(super) mod_roster: Option<Raw<RosterConfig>>,
    pub(super) mod_offline: Option<Raw<OfflineConfig>>,
    pub(super) mod_register: Option<Raw<RegisterConfig>>,
    pub(super) mod_fail2ban: Option<Raw<Fail2banConfig>>,
    pub(super) mod_carboncopy: Option<Raw<CarbonsConfig>>,
    pub(super) mod_csi: Option<Raw<CsiConfig>>,
    pub(super) mod_blocking: Option<Raw<BlockingConfig>>,
    pub(super) mod_pep: Option<Raw<PepConfig>>,
    pub(super) mod_vcard: Option<Raw<VcardConfig>>,
    pub(super) mod_version: Option<Raw<VersionConfig>>,
    pub(super) mod_mam: Option<Raw<MamConfig>>,
    pub(super) mod_push_service_mongoosepush: Option<super::http::RawMongoosePush>,
}

/// A module section as written.
pub(super) type Raw<S> = <S as Section>::Raw;
