//! How a publish IQ leaves the module: the [`IqTransport`] seam, and its implementation over
//! the core's outbound IQs ([`herald_core::Server::send_iq`]).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use herald_core::Server;
use minidom::Element;

pub use herald_core::outbound::{IqOutcome, SendIqError};

/// Sends an IQ set and waits for its reply. The transport gives the IQ a unique `id`.
#[async_trait::async_trait]
pub trait IqTransport: Send + Sync + 'static {
    /// Send `iq` and wait up to `timeout` for the reply; an error when it could not be sent
    /// at all (nothing is then known about the registration).
    async fn send_iq(&self, iq: Element, timeout: Duration) -> Result<IqOutcome, SendIqError>;
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
    async fn send_iq(&self, iq: Element, timeout: Duration) -> Result<IqOutcome, SendIqError> {
        let Some(server) = self.server.upgrade() else {
            return Err(SendIqError::Stopped);
        };
        server.send_iq(iq, timeout).await
    }
}
