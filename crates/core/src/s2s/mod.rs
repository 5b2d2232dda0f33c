//! Federation: server-to-server streams (RFC 6120 sections 4-9 for server streams).
//!
//! A remote domain is reached like a component that may be far away: the router hands a
//! stanza for it to `S2s::send`, which queues it (bounded) on the outgoing link of that
//! domain pair and returns at once; the link's task (`outgoing`) resolves the domain
//! ([`resolve`]), connects, negotiates TLS, authenticates with SASL EXTERNAL when the peer
//! accepts our certificate or with Server Dialback ([`dialback`], XEP-0220) otherwise, and
//! writes. A link that cannot be made bounces what waits with `remote-server-not-found`
//! (or `remote-server-timeout`), and later stanzas to that domain are bounced at once until
//! a retry is due (capped exponential backoff, `max_retry_delay`). An idle link closes.
//!
//! Incoming streams ([`incoming`]) are authenticated per domain pair, independently of the
//! outgoing direction; each stanza's `from` must be at a domain authenticated on that
//! stream and its `to` at a domain served here, or the stream ends with `invalid-from`,
//! `host-unknown` or `improper-addressing` (RFC 6120 section 4.9.3).
//!
//! Behaviour for operators: `docs/federation.md`.

pub mod config;
pub mod dialback;
mod inbound;
pub mod incoming;
mod outgoing;
pub mod resolve;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use herald_stream::{Stanza, tls::s2s::S2sTls};
use minidom::Element;
use tokio::sync::mpsc;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

pub use config::{Policy, S2sConfig, UseStartTls};
pub use incoming::{S2sListener, S2sListenerSettings};

use crate::Server;

/// What federation needs beyond its options: TLS (our certificate and the trusted roots),
/// `None` when the server has no certificate for server links.
#[derive(Clone, Debug)]
pub struct S2sSettings {
    /// `[s2s]`.
    pub config: S2sConfig,
    /// Both TLS sides; `None` disables TLS on server links.
    pub tls: Option<S2sTls>,
}

/// A direction of federation between one of our domains and a remote one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Pair {
    /// Ours (a served domain or a component's).
    pub local: String,
    /// Theirs.
    pub remote: String,
}

struct Link {
    id: u64,
    queue: mpsc::Sender<Element>,
}

struct Failure {
    until: Instant,
    delay: Duration,
    condition: DefinedCondition,
}

/// Federation's shared state: the outgoing links, the dialback secret, the resolver.
pub struct S2s {
    pub(crate) config: S2sConfig,
    pub(crate) tls: Option<S2sTls>,
    pub(crate) secret: dialback::Secret,
    pub(crate) resolver: resolve::Resolver,
    links: Mutex<HashMap<Pair, Link>>,
    failures: Mutex<HashMap<Pair, Failure>>,
    server: OnceLock<Weak<Server>>,
    next_link: AtomicU64,
}

/// The first wait after a failed connection; doubled on each failure up to
/// `max_retry_delay`.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

impl S2s {
    /// Federation with these settings.
    pub fn new(settings: S2sSettings) -> S2s {
        S2s {
            secret: dialback::Secret::new(settings.config.shared.as_deref()),
            resolver: resolve::Resolver::new(&settings.config),
            config: settings.config,
            tls: settings.tls,
            links: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            server: OnceLock::new(),
            next_link: AtomicU64::new(1),
        }
    }

    pub(crate) fn bind(&self, server: &Arc<Server>) {
        let _ = self.server.set(Arc::downgrade(server));
    }

    /// Whether `domain` may be talked to (`default_policy`, `host_policy`).
    pub fn allowed(&self, domain: &str) -> bool {
        self.config.policy(domain) == Policy::Allow
    }

    /// How many outgoing links exist (connecting or up).
    pub fn outgoing_links(&self) -> usize {
        self.lock_links().len()
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, HashMap<Pair, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a stanza for a remote domain without waiting: on the domain pair's link,
    /// started if there is none. A stanza that cannot be queued is bounced: a denied or
    /// recently unreachable domain with the recorded condition, a full queue with
    /// `resource-constraint` (RFC 6120 section 8.3.3).
    pub(crate) fn send(&self, server: &Server, stanza: Stanza) {
        let (Some(from), Some(to)) = (&stanza.from, &stanza.to) else {
            server.bounce(&stanza, ErrorType::Modify, DefinedCondition::BadRequest);
            return;
        };
        let pair = Pair {
            local: from.domain().to_string(),
            remote: to.domain().to_string(),
        };
        if !self.allowed(&pair.remote) {
            server.bounce(
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::RemoteServerNotFound,
            );
            return;
        }
        if let Some(condition) = self.backing_off(&pair) {
            server.bounce(&stanza, ErrorType::Cancel, condition);
            return;
        }
        let mut links = self.lock_links();
        let reserved = links
            .get(&pair)
            .map(|link| link.queue.clone().try_reserve_owned());
        match reserved {
            Some(Ok(slot)) => {
                slot.send(stanza.element);
                return;
            }
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                drop(links);
                server.bounce(
                    &stanza,
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                );
                return;
            }
            // No link, or its task is ending: a new link takes over.
            None | Some(Err(mpsc::error::TrySendError::Closed(_))) => {}
        }
        let Some(server_arc) = self.server.get().and_then(Weak::upgrade) else {
            return;
        };
        if server.shutdown.is_cancelled() {
            return;
        }
        let (queue, rx) = mpsc::channel(self.config.max_queue);
        let _ = queue.try_send(stanza.element);
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        links.insert(pair.clone(), Link { id, queue });
        drop(links);
        tracing::debug!(local = %pair.local, remote = %pair.remote, "opening a server link");
        server.tasks.spawn(outgoing::run(server_arc, pair, id, rx));
    }

    /// The condition to bounce with while a failed domain's retry is not due.
    fn backing_off(&self, pair: &Pair) -> Option<DefinedCondition> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(pair)
            .filter(|f| f.until > Instant::now())
            .map(|f| f.condition.clone())
    }

    /// A link ended. With a failure, the next attempt waits (doubling up to
    /// `max_retry_delay`); a success forgets earlier failures.
    fn link_ended(&self, pair: &Pair, id: u64, failure: Option<DefinedCondition>) {
        {
            let mut links = self.lock_links();
            if links.get(pair).is_some_and(|link| link.id == id) {
                links.remove(pair);
            }
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            None => {
                failures.remove(pair);
            }
            Some(condition) => {
                let delay = failures
                    .get(pair)
                    .map(|f| (f.delay * 2).min(self.config.max_retry_delay))
                    .unwrap_or(FIRST_RETRY_DELAY.min(self.config.max_retry_delay));
                failures.insert(
                    pair.clone(),
                    Failure {
                        until: Instant::now() + delay,
                        delay,
                        condition,
                    },
                );
            }
        }
    }
}

/// Whether `domain` is ours to speak for on a server link: a served domain or a connected
/// component's.
pub(crate) fn is_ours(server: &Server, domain: &str) -> bool {
    server.is_local_domain(domain) || server.components.get(domain).is_some()
}
