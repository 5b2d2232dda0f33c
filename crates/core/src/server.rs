//! The running server: what every session and module shares.

use std::sync::Arc;

use herald_storage::Storage;
use herald_stream::Bare;
use jid::{BareJid, DomainPart, Jid};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    c2s::throttle::{AuthThrottle, Fail2banConfig},
    components::ComponentRegistry,
    module::{Extensions, Module, Registrar},
    offline::OfflineClaims,
    outbound::PendingIqs,
    ping::PingSettings,
    presence::Presence,
    resume::ResumeTable,
    roster::{Roster, RosterConfig},
    sessions::SessionRegistry,
    sm::SmSettings,
};

/// Server-wide settings that are not modules.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `[modules.mod_stream_management]`: XEP-0198 on client streams.
    pub stream_management: Option<SmSettings>,
    /// `[modules.mod_ping]` with `send_pings`: server-initiated pings to silent clients.
    pub pings: Option<PingSettings>,
    /// `max_user_sessions`: resources bound at once per account; `None` is no limit.
    pub max_user_sessions: Option<usize>,
    /// Login throttling (`[modules.mod_fail2ban]`).
    pub auth_throttle: Fail2banConfig,
    /// `[modules.mod_roster]`: rosters and presence subscriptions; `None` leaves presence to
    /// the user's own resources and directed presence.
    pub roster: Option<RosterConfig>,
    /// `[s2s]` and `[[listen.s2s]]`: federation; `None` keeps every other domain out of
    /// reach (`remote-server-not-found`).
    pub s2s: Option<crate::s2s::S2sSettings>,
    /// `[modules.mod_csi]`: client state indication (XEP-0352); `None` ignores it.
    pub csi: Option<crate::csi::CsiConfig>,
    /// `recipient_lanes`: how many recipient lanes ([`crate::lanes`]) handle a message at
    /// once; `None` is the default ([`crate::lanes::LANES`]), 0 handles every message for an
    /// offline account on its sender's connection.
    pub recipient_lanes: Option<usize>,
}

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
    /// Resumable sessions (XEP-0198).
    pub resumable: ResumeTable,
    /// Stream management settings; `None` when `mod_stream_management` is off.
    pub stream_management: Option<SmSettings>,
    /// Server-initiated pings to silent clients; `None` when off.
    pub pings: Option<PingSettings>,
    /// Client state indication (XEP-0352); `None` when `mod_csi` is off.
    pub csi: Option<crate::csi::CsiConfig>,
    /// Which session delivers each account's stored offline messages.
    pub(crate) offline_claims: OfflineClaims,
    /// Resources bound at once per account; `None` is no limit.
    pub max_user_sessions: Option<usize>,
    /// Failed logins per address and account.
    pub auth_throttle: AuthThrottle,
    /// The roster service (`mod_roster`), which presence uses for subscriptions and
    /// broadcasts (RFC 6121 sections 3 and 4).
    roster: Option<Arc<Roster>>,
    /// Federation, when configured.
    s2s: Option<Arc<crate::s2s::S2s>>,
    /// What the modules added.
    pub extensions: Extensions,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Messages from components and other servers for accounts with no session to take
    /// them, off those connections' read loops ([`crate::lanes`]).
    pub lanes: crate::lanes::Lanes,
}

impl Server {
    /// Build the server for `hosts`, registering `modules`, with default options.
    pub fn new(
        hosts: Vec<DomainPart>,
        storage: Storage,
        modules: &[Arc<dyn Module>],
    ) -> Arc<Server> {
        Server::with_options(hosts, storage, modules, ServerOptions::default())
    }

    /// Build the server with options.
    pub fn with_options(
        hosts: Vec<DomainPart>,
        storage: Storage,
        modules: &[Arc<dyn Module>],
        options: ServerOptions,
    ) -> Arc<Server> {
        // The roster and presence are core services; with `mod_roster` they register like
        // modules (the roster's IQs and hooks, presence's subscription handling).
        let roster = options.roster.map(Roster::new);
        let mut all: Vec<Arc<dyn Module>> = Vec::with_capacity(modules.len() + 3);
        if let Some(roster) = &roster {
            all.push(Arc::clone(roster) as Arc<dyn Module>);
            all.push(Arc::new(Presence));
        }
        if options.csi.is_some() {
            all.push(Arc::new(crate::csi::Csi));
        }
        all.extend(modules.iter().cloned());
        let server = Arc::new_cyclic(|weak| Server {
            hosts,
            storage,
            sessions: SessionRegistry::default(),
            components: ComponentRegistry::default(),
            outbound: PendingIqs::default(),
            resumable: ResumeTable::default(),
            stream_management: options.stream_management,
            pings: options.pings,
            csi: options.csi.clone(),
            offline_claims: OfflineClaims::default(),
            max_user_sessions: options.max_user_sessions,
            auth_throttle: AuthThrottle::new(options.auth_throttle),
            roster,
            s2s: options
                .s2s
                .map(|settings| Arc::new(crate::s2s::S2s::new(settings))),
            extensions: Registrar::build(&all),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            lanes: crate::lanes::Lanes::new(
                weak,
                options.recipient_lanes.unwrap_or(crate::lanes::LANES),
            ),
        });
        if let Some(s2s) = &server.s2s {
            s2s.bind(&server);
        }
        for module in &all {
            Arc::clone(module).start(&server);
        }
        server
    }

    /// The roster service, when `mod_roster` is enabled.
    pub fn roster(&self) -> Option<&Arc<Roster>> {
        self.roster.as_ref()
    }

    /// Federation, when configured.
    pub fn s2s(&self) -> Option<&Arc<crate::s2s::S2s>> {
        self.s2s.as_ref()
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
        self.is_local_user(jid).then(|| jid.bare())
    }
}
