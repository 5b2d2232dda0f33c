//! XMPP Ping (XEP-0199), `[modules.mod_ping]`: the server answers pings addressed to it
//! (section 4.2) and, on the account's behalf, pings with no `to`.

use std::{sync::Arc, time::Duration};

use herald_stream::stanza::IqType;
use xmpp_parsers::ns;

use crate::{
    Server,
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

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
