//! Push notifications for mobile clients (XEP-0357), with the configuration and behaviour of
//! MongooseIM's `mod_event_pusher` push backend (`../shared/spec/push.md`).
//!
//! A client enables push with an IQ naming an app server's pubsub node ([`iq`]); the
//! registration is stored ([`registrations`]). When a message arrives that the user would miss
//! ([`events`]), the [`pipeline`] asks the [`plugin`] whether and to whom to push, and the
//! [`publisher`] sends a PubSub publish to the app server and acts on its answer. Everything
//! the module counts goes through the `metrics` facade ([`metrics`]).
//!
//! [`Push`] is the module: [`Module::register`] lists its whole surface.

pub mod config;
pub mod error;
pub mod events;
pub mod iq;
pub mod metrics;
pub mod mongoosepush;
pub mod pipeline;
pub mod plugin;
pub mod publisher;
pub mod redact;
pub mod registrations;

use std::sync::{Arc, OnceLock};

use herald_core::{
    Server,
    hooks::{Flow, Handler, OfflineMessage, Priority, UnackedMessage, UserRemoved},
    module::{IqError, IqScope, Module, Registrar},
};
use herald_stream::{StanzaKind, stanza::set_attr};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Backend, PushConfig},
    error::PushError,
    events::{Event, Message, Notified},
    metrics::Stats,
    mongoosepush::{HttpPush, MongoosePush},
    pipeline::Pipeline,
    plugin::Plugin,
    publisher::{IqTransport, Publisher, PublisherParts, PublisherSettings, ServerTransport},
    registrations::{
        CachedRegistrations, PostgresRegistrations, RegistrationStore, SessionRegistrations,
        SqliteRegistrations,
    },
};

/// Runs before offline storage (which stops the hook), so that the registrations notified are
/// stored with the message.
pub const BEFORE_STORAGE: Priority = Priority(Priority::NORMAL.0 - 5);

/// The push module, `[modules.mod_event_pusher.push]`.
pub struct Push {
    config: PushConfig,
    plugin: Arc<dyn Plugin>,
    sessions: Arc<SessionRegistrations>,
    stats: Arc<Stats>,
    /// The HTTP push service for virtual pubsub hosts (spec section 8), when configured.
    http: Option<Arc<dyn HttpPush>>,
    /// Set once when the server starts: the store and the publisher need the running server.
    pipeline: OnceLock<Pipeline>,
}

impl Push {
    /// The module with the built-in plugin named in `config`, without an HTTP push service
    /// (see [`Push::from_config`]).
    pub fn new(config: PushConfig) -> Push {
        let plugin = plugin::builtin(config.plugin);
        Push::with_plugin(config, plugin)
    }

    /// The module as `config` describes it, with the MongoosePush client of
    /// `config.mongoosepush` built (its certificate files read) now, so that a bad file stops
    /// start-up.
    pub fn from_config(config: PushConfig) -> Result<Push, PushError> {
        let http = match &config.mongoosepush {
            Some(service) => {
                let client = MongoosePush::new(service)
                    .map_err(|error| PushError::HttpService(service.pool.name.clone(), error))?;
                Some(Arc::new(client) as Arc<dyn HttpPush>)
            }
            None => None,
        };
        let mut push = Push::new(config);
        push.http = http;
        Ok(push)
    }

    /// The module sending notifications to virtual pubsub hosts through `http`.
    pub fn with_http(mut self, http: Arc<dyn HttpPush>) -> Push {
        self.http = Some(http);
        self
    }

    /// The module with a custom plugin.
    pub fn with_plugin(config: PushConfig, plugin: Arc<dyn Plugin>) -> Push {
        Push {
            config,
            plugin,
            sessions: Arc::default(),
            stats: Arc::default(),
            http: None,
            pipeline: OnceLock::new(),
        }
    }

    /// What the module has counted since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Start the pipeline over `store`, publishing through `transport`; the publisher stops
    /// when `shutdown` is cancelled and is tracked by `tasks`. Done by [`Module::start`] with
    /// the server's store and outbound IQs; tests call it with their own.
    pub fn attach(
        &self,
        store: Arc<dyn RegistrationStore>,
        transport: Arc<dyn IqTransport>,
        settings: PublisherSettings,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let parts = PublisherParts {
            transport,
            store: Arc::clone(&store),
            sessions: Arc::clone(&self.sessions),
            stats: Arc::clone(&self.stats),
            virtual_hosts: self.config.virtual_pubsub_hosts.clone(),
            http: self.http.clone(),
        };
        let pipeline = Pipeline {
            plugin: Arc::clone(&self.plugin),
            store,
            sessions: Arc::clone(&self.sessions),
            publisher: Publisher::start(settings, parts, shutdown, tasks),
            stats: Arc::clone(&self.stats),
        };
        if self.pipeline.set(pipeline).is_err() {
            tracing::warn!("the push module was started twice; keeping the first start");
        }
    }

    /// The registration store, once started.
    pub(crate) fn store(&self) -> Result<&Arc<dyn RegistrationStore>, IqError> {
        self.pipeline
            .get()
            .map(|pipeline| &pipeline.store)
            .ok_or_else(|| {
                IqError::from(PushError::BackendUnavailable(
                    "mnesia",
                    "the push module has not started",
                ))
            })
    }

    /// Run the pipeline for `event` (spec section 4). `notified` is what travels with the
    /// message: the registrations already notified for it; the returned value adds those
    /// notified now, to travel on with the message.
    pub async fn on_message(&self, server: &Server, event: Event, notified: Notified) -> Notified {
        let Some(pipeline) = self.pipeline.get() else {
            return notified;
        };
        let mut notified = notified;
        let available = !server
            .sessions
            .message_targets(event.recipient())
            .is_empty();
        match pipeline.notify(&event, available, &mut notified).await {
            Ok(queued) => {
                tracing::debug!(recipient = %event.recipient(), kind = event.kind(), queued, "push notifications queued");
            }
            Err(skip) => {
                tracing::debug!(recipient = %event.recipient(), kind = event.kind(), reason = skip.as_str(), "no push");
                self.stats.skipped(skip);
            }
        }
        notified
    }
}

impl Module for Push {
    fn name(&self) -> &'static str {
        "mod_event_pusher_push"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        // Spec section 3: IQs with no `to`, to the own bare JID, or to the server domain.
        r.iq(
            IqScope::Account,
            iq::NS,
            Arc::new(iq::PushIq(Arc::clone(&self))),
        );
        r.iq(
            IqScope::Server,
            iq::NS,
            Arc::new(iq::PushIq(Arc::clone(&self))),
        );
        // Disco on the server domain (MongooseIM) and on the account (XEP-0357 section 5).
        r.feature(iq::NS);
        r.account_feature(iq::NS);
        let hooks = r.hooks();
        hooks
            .offline_message
            .add(BEFORE_STORAGE, Arc::new(OnOffline(Arc::clone(&self))));
        hooks
            .unacked_message
            .add(Priority::NORMAL, Arc::new(OnUnacked(Arc::clone(&self))));
        hooks
            .user_removed
            .add(Priority::NORMAL, Arc::new(OnUserRemoved(self)));
    }

    fn start(self: Arc<Self>, server: &Arc<Server>) {
        let store: Arc<dyn RegistrationStore> = match (
            self.config.backend,
            server.storage.sqlite_pool(),
            server.storage.postgres_pool(),
        ) {
            // One process owns the embedded file: its registrations can be cached.
            (Backend::Embedded, Some(pool), _) => Arc::new(CachedRegistrations::new(Arc::new(
                SqliteRegistrations::new(pool.clone()),
            ))),
            (Backend::Rdbms, _, Some(pool)) => Arc::new(PostgresRegistrations::new(pool.clone())),
            (backend, _, _) => {
                // The configuration refuses these: the server has one storage engine,
                // chosen by whether anything asks for "rdbms".
                tracing::error!(
                    ?backend,
                    "push: no registration store for this backend; push is disabled"
                );
                return;
            }
        };
        self.attach(
            store,
            Arc::new(ServerTransport::new(server)),
            PublisherSettings::for_workers(self.config.wpool.workers)
                .with_registrations_per_user(self.config.max_registrations.get()),
            server.shutdown.clone(),
            &server.tasks,
        );
    }
}

/// A message for a user with no available resource, before it is stored offline.
struct OnOffline(Arc<Push>);

#[async_trait::async_trait]
impl Handler<OfflineMessage> for OnOffline {
    async fn call(&self, server: &Server, event: &mut OfflineMessage) -> Flow {
        let StanzaKind::Message(type_) = event.stanza.kind else {
            return Flow::Continue;
        };
        let Some(from) = event.stanza.from.clone() else {
            return Flow::Continue;
        };
        let notified = event.meta.get::<Notified>().unwrap_or_default();
        let message = Message {
            from,
            to: event.recipient.clone(),
            type_,
            stanza: event.stanza.element.clone(),
        };
        let notified = self
            .0
            .on_message(server, Event::Chat(message), notified)
            .await;
        if !notified.is_empty() {
            event.meta.set(notified);
        }
        Flow::Continue
    }
}

/// A message a stream-management session has not acknowledged while it waits. What was
/// notified is recorded on the buffered message, which carries it if it is routed again.
struct OnUnacked(Arc<Push>);

#[async_trait::async_trait]
impl Handler<UnackedMessage> for OnUnacked {
    async fn call(&self, server: &Server, event: &mut UnackedMessage) -> Flow {
        let mut stanza = event.stanza.clone();
        let notified = event.meta.get::<Notified>().unwrap_or_default();
        if stanza.attr("to").is_none() {
            set_attr(&mut stanza, "to", event.session.to_string());
        }
        let Some(message) = Message::parse(stanza) else {
            return Flow::Continue;
        };
        let unacked = Event::Unacknowledged {
            session: event.session.clone(),
            message,
        };
        let notified = self.0.on_message(server, unacked, notified).await;
        if !notified.is_empty() {
            event.meta.set(notified);
        }
        Flow::Continue
    }
}

/// Spec section 3: deleting an account deletes its registrations.
struct OnUserRemoved(Arc<Push>);

#[async_trait::async_trait]
impl Handler<UserRemoved> for OnUserRemoved {
    async fn call(&self, _server: &Server, event: &mut UserRemoved) -> Flow {
        self.0.sessions.forget_user(&event.user);
        if let Ok(store) = self.0.store()
            && let Err(error) = store.remove_user(&event.user).await
        {
            tracing::error!(%error, user = %event.user, "cannot delete the push registrations of a removed account");
        }
        Flow::Continue
    }
}
