//! XMPP Ping (XEP-0199), `[modules.mod_ping]`: the server answers pings addressed to it
//! (section 4.2) and, on the account's behalf, pings with no `to`.

use std::sync::Arc;

use herald_stream::stanza::IqType;
use xmpp_parsers::ns;

use crate::{
    Server,
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

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
