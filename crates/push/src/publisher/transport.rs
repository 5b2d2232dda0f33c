//! How a publish IQ leaves the module: the [`IqTransport`] seam, and its implementation over
//! the core's outbound IQs ([`herald_core::Server::send_iq`]).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use herald_core::{Server, outbound};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

/// How an IQ sent through an [`IqTransport`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IqOutcome {
    /// A `result` arrived.
    Result(Element),
    /// An `error` arrived (or the router answered for an unreachable recipient).
    Error {
        /// The type of the first `<error/>`.
        type_: ErrorType,
        /// Its defined condition.
        condition: DefinedCondition,
        /// The whole reply.
        element: Element,
    },
    /// No reply in time.
    Timeout,
    /// The IQ could not be sent at all (too many in flight, server stopping); nothing is
    /// known about the registration.
    NotSent(String),
}

/// Sends an IQ set and waits for its reply. The transport gives the IQ a unique `id`.
#[async_trait::async_trait]
pub trait IqTransport: Send + Sync + 'static {
    /// Send `iq` and wait up to `timeout` for the reply.
    async fn send_iq(&self, iq: Element, timeout: Duration) -> IqOutcome;
}

/// The transport over the running server's router and outbound IQ table. Holds the server
/// weakly: the server owns the module that owns this transport.
pub struct ServerTransport {
    server: Weak<Server>,
}

impl ServerTransport {
    /// The transport of `server`.
    pub fn new(server: &Arc<Server>) -> ServerTransport {
        ServerTransport {
            server: Arc::downgrade(server),
        }
    }
}

#[async_trait::async_trait]
impl IqTransport for ServerTransport {
    async fn send_iq(&self, iq: Element, timeout: Duration) -> IqOutcome {
        let Some(server) = self.server.upgrade() else {
            return IqOutcome::NotSent("the server has stopped".into());
        };
        match server.send_iq(iq, timeout).await {
            Ok(outbound::IqOutcome::Result(reply)) => IqOutcome::Result(reply),
            Ok(outbound::IqOutcome::Error {
                type_,
                condition,
                element,
            }) => IqOutcome::Error {
                type_,
                condition,
                element,
            },
            Ok(outbound::IqOutcome::Timeout) => IqOutcome::Timeout,
            Err(error) => IqOutcome::NotSent(error.to_string()),
        }
    }
}
