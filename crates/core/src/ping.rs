//! XMPP Ping (XEP-0199), `[modules.mod_ping]`: the server answers pings addressed to it
//! (section 4.2) and, on the account's behalf, pings with no `to`.

use std::{sync::Arc, time::Duration};

use herald_stream::stanza::IqType;
use xmpp_parsers::ns;

use crate::{
    Server,
    config::{self, Integer, Invalid, KeyPath, Section},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

/// Options of `mod_ping` (MongooseIM's names and defaults): the server always answers pings;
/// with `send_pings` it also pings clients that have been silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingConfig {
    /// `send_pings`: ping a client session silent for `ping_interval` (default false).
    pub send_pings: bool,
    /// `ping_interval` (seconds, default 60).
    pub ping_interval: Duration,
    /// `ping_req_timeout` (seconds, default 32): how long the answer may take.
    pub ping_req_timeout: Duration,
    /// `timeout_action`: what an unanswered ping does (default `none`).
    pub timeout_action: PingTimeoutAction,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            send_pings: false,
            ping_interval: Duration::from_secs(60),
            ping_req_timeout: Duration::from_secs(32),
            timeout_action: PingTimeoutAction::None,
        }
    }
}

impl PingConfig {
    /// What the embedded default and `config/example.toml` use: silent clients are pinged
    /// after 5 minutes (about what mobile clients' own keepalives cost) and dropped if they
    /// do not answer, so that a vanished phone's session starts waiting and pushing.
    pub fn detecting_dead_clients() -> PingConfig {
        PingConfig {
            send_pings: true,
            ping_interval: Duration::from_secs(300),
            timeout_action: PingTimeoutAction::Kill,
            ..PingConfig::default()
        }
    }
}

/// `mod_ping`'s `timeout_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingTimeoutAction {
    /// `"none"`: log it.
    None,
    /// `"kill"`: drop the connection (a resumable session then waits, and pushes).
    Kill,
}

/// `[modules.mod_ping]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPing {
    /// See [`PingConfig::send_pings`].
    pub send_pings: Option<bool>,
    /// See [`PingConfig::ping_interval`].
    pub ping_interval: Option<Integer>,
    /// See [`PingConfig::ping_req_timeout`].
    pub ping_req_timeout: Option<Integer>,
    /// See [`PingConfig::timeout_action`].
    pub timeout_action: Option<String>,
}

/// The names of `timeout_action`.
const TIMEOUT_ACTIONS: &[(&str, PingTimeoutAction)] = &[
    ("none", PingTimeoutAction::None),
    ("kill", PingTimeoutAction::Kill),
];

impl Section for PingConfig {
    type Raw = RawPing;

    fn from_raw(raw: RawPing, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = PingConfig::default();
        let seconds = "at least 1 (seconds)";
        let ping_interval = match raw.ping_interval {
            Some(n) => {
                Duration::from_secs(config::integer(n, 1u64, seconds, &at.key("ping_interval"))?)
            }
            None => defaults.ping_interval,
        };
        let ping_req_timeout = match raw.ping_req_timeout {
            Some(n) => Duration::from_secs(config::integer(
                n,
                1u64,
                seconds,
                &at.key("ping_req_timeout"),
            )?),
            None => defaults.ping_req_timeout,
        };
        let timeout_action = match raw.timeout_action {
            Some(name) => config::one_of(&name, TIMEOUT_ACTIONS, &at.key("timeout_action"))?,
            None => defaults.timeout_action,
        };
        Ok(PingConfig {
            send_pings: raw.send_pings.unwrap_or(defaults.send_pings),
            ping_interval,
            ping_req_timeout,
            timeout_action,
        })
    }
}

impl PingConfig {
    /// What the sessions do: `None` unless `send_pings`.
    pub fn settings(&self) -> Option<PingSettings> {
        self.send_pings.then_some(PingSettings {
            interval: self.ping_interval,
            timeout: self.ping_req_timeout,
            kill: self.timeout_action == PingTimeoutAction::Kill,
        })
    }
}

/// Server-initiated pings (XEP-0199 section 4.1, MongooseIM's `send_pings`): a client
/// session that has sent nothing for `ping_interval` is pinged (with an XEP-0198 `<r/>` when
/// it has stream management, an XEP-0199 IQ otherwise), and one that stays silent
/// `ping_req_timeout` longer is taken for gone when `timeout_action` is `kill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingSettings {
    /// `ping_interval`: silence before a ping.
    pub interval: Duration,
    /// `ping_req_timeout`: how long an answer may take.
    pub timeout: Duration,
    /// `timeout_action = "kill"`: drop the connection of a client that does not answer
    /// (`"none"` only logs it).
    pub kill: bool,
}

/// The ping module.
pub struct Ping;

impl Module for Ping {
    fn name(&self) -> &'static str {
        "mod_ping"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(ns::PING);
        r.iq(IqScope::Server, ns::PING, Arc::new(Pong));
        r.iq(IqScope::Account, ns::PING, Arc::new(Pong));
    }
}

struct Pong;

#[async_trait::async_trait]
impl IqHandler for Pong {
    async fn handle(&self, _server: &Server, request: IqRequest<'_>) -> IqResponse {
        match request.kind {
            // XEP-0199 section 4.2: an empty result.
            IqType::Get => Ok(None),
            _ => Err(IqError::bad_request()),
        }
    }
}
