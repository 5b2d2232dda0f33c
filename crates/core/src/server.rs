//! The running server: what every session and module shares.

use std::sync::Arc;

use herald_storage::Storage;
use jid::{BareJid, DomainPart, Jid};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    components::ComponentRegistry,
    module::{Extensions, Module, Registrar},
    outbound::PendingIqs,
    sessions::SessionRegistry,
};

/// Shared server state. Cheap to reach from every task through an `Arc`.
pub struct Server {
    hosts: Vec<DomainPart>,
    /// The account and data store.
    pub storage: Storage,
    /// Every bound client session.
    pub sessions: SessionRegistry,
    /// Every connected external component.
    pub components: ComponentRegistry,
    /// Outbound IQs waiting for replies.
    pub outbound: PendingIqs,
    /// What the modules added.
    pub extensions: Extensions,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Server {
    /// Build the server for `hosts`, registering `modules`.
    pub fn new(
        hosts: Vec<DomainPart>,
        storage: Storage,
        modules: &[Arc<dyn Module>],
    ) -> Arc<Server> {
        Arc::new(Server {
            hosts,
            storage,
            sessions: SessionRegistry::default(),
            components: ComponentRegistry::default(),
            outbound: PendingIqs::default(),
            extensions: Registrar::build(modules),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// The served domains.
    pub fn hosts(&self) -> &[DomainPart] {
        &self.hosts
    }

    /// Whether `domain` is served here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.hosts.iter().any(|h| h.as_str() == domain)
    }

    /// Whether the JID is an account on a served domain (it has a localpart).
    pub fn is_local_user(&self, jid: &Jid) -> bool {
        jid.node().is_some() && self.is_local_domain(jid.domain().as_str())
    }

    /// The bare JID of a local account, if `jid` is one.
    pub fn local_account(&self, jid: &Jid) -> Option<BareJid> {
        self.is_local_user(jid).then(|| jid.to_bare())
    }
}
