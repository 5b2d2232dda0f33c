//! Push notifications for mobile clients (XEP-0357), with the configuration and behaviour of
//! MongooseIM's `mod_event_pusher` push backend (`docs/modules/push.md`).
//!
//! A client enables push with an IQ naming an app server's pubsub node ([`iq`]); the
//! registration is stored ([`registrations`]). When a message arrives that the user would miss
//! ([`events`]), the [`pipeline`] asks the [`plugin`] whether and to whom to push, and the
//! [`publisher`] sends a PubSub publish to the app server and acts on its answer. Everything
//! the module counts goes through the `metrics` facade ([`metrics`]).
//!
//! [`Push`] is the module: [`Module::register`] lists its whole surface.
//!
//! The behaviour is specified in `docs/modules/push.md`; comments cite its numbered sections
//! as "push.md section N".

pub mod admin;
pub mod config;
pub mod error;
pub mod events;
pub mod extensions;
pub mod iq;
pub mod metrics;
pub mod mongoosepush;
pub mod pipeline;
pub mod plugin;
pub mod publisher;
pub mod redact;
pub mod registrations;
pub mod route;
pub mod rules;
pub mod settings;
pub mod stanza;
pub mod unread;
pub mod vocabulary;

use std::sync::{Arc, Mutex};

use herald_core::{
    Server,
    csi::ClientState,
    hooks::{
        ClientActive, Flow, Handler, Hibernate, Hibernation, HibernationPhase, MessageSent,
        OfflineMessage, PepChanged, Priority, SessionWaiting, UnackedCause, UnackedMessage,
        UserAvailable, UserRemoved,
    },
    module::{IqScope, Module, Registrar},
};
use herald_storage::{Engine, Storage};
use herald_stream::Bare;
use herald_stream::{StanzaKind, stanza::set_attr};
use minidom::Element;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Backend, PushConfig},
    error::PushError,
    events::{Event, Message, Notified},
    metrics::{SessionEvent, Stats},
    mongoosepush::{HttpPush, MongoosePush},
    pipeline::{Pipeline, Presence},
    plugin::Plugin,
    publisher::{
        Dispatcher, IqTransport, OnDisabled, Publisher, PublisherParts, PublisherSettings,
        ServerTransport,
    },
    registrations::{
        CachedRegistrations, EnabledInSession, PostgresRegistrations, RegistrationStore,
        SqliteRegistrations,
    },
    route::Routes,
};

/// Runs before offline storage (which stops the hook), so that the registrations notified are
/// stored with the message.
pub const BEFORE_STORAGE: Priority = Priority(Priority::NORMAL.0 - 5);

/// How long after start the sessions hibernating at the last stop are woken: components
/// (local app servers) reconnect meanwhile.
pub const WAKE_AT_START_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The push module, `[modules.mod_event_pusher.push]`. Built in one step with its store and
/// its publisher's queue, so that enabling, disabling and deciding work from the start; the
/// publisher's workers start with the server ([`Module::start`]), which they publish through.
pub struct Push {
    config: PushConfig,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    /// The HTTP push service for virtual pubsub hosts (push.md section 8), when configured.
    http: Option<Arc<dyn HttpPush>>,
    /// The publisher's dispatcher, until the server starts it.
    dispatcher: Mutex<Option<Dispatcher>>,
    /// The users' notification settings (XEP-0492), when the server has PEP.
    settings: settings::NotificationSettings,
    /// Whether the server has PEP (known at start).
    pep: std::sync::atomic::AtomicBool,
    /// On PostgreSQL, the pool and the registrations' cache to keep true by listening to the
    /// database, until the server starts the listener.
    listener: Mutex<Option<(sqlx::PgPool, Arc<CachedRegistrations>)>>,
}

impl Push {
    /// The module as `config` describes it, over the registration store of `storage`'s
    /// engine (cached on the embedded database, which one process owns), with the
    /// MongoosePush client of `config.mongoosepush` built (its certificate files read) now,
    /// so that a bad file stops start-up.
    pub fn from_config(config: PushConfig, storage: &Storage) -> Result<Push, PushError> {
        let mut listener = None;
        let store: Arc<dyn RegistrationStore> = match (config.backend, storage.engine()) {
            // The outbox's writes go in the main file's group commit (see `with_writer`).
            (Backend::Embedded, Engine::Sqlite(pool)) => {
                Arc::new(CachedRegistrations::new(Arc::new(
                    SqliteRegistrations::new(pool.clone()).with_writer(storage.sqlite_writer()),
                )))
            }
            (Backend::Rdbms, Engine::Postgres(pool)) => {
                // Cached while listening to the database's notifications of changes (the
                // listener starts with the module).
                let cache = Arc::new(CachedRegistrations::untrusted(Arc::new(
                    PostgresRegistrations::new(pool.clone()),
                )));
                listener = Some((pool.clone(), Arc::clone(&cache)));
                cache
            }
            // The configuration refuses these: the server has one storage engine, chosen by
            // whether anything asks for "rdbms".
            (Backend::Embedded, Engine::Postgres(_)) => {
                return Err(PushError::BackendUnavailable(
                    "mnesia",
                    "the server stores its data in PostgreSQL",
                ));
            }
            (Backend::Rdbms, Engine::Sqlite(_)) => {
                return Err(PushError::BackendUnavailable(
                    "rdbms",
                    "the server stores its data in the embedded database",
                ));
            }
        };
        let http = http_service(&config)?;
        let plugin: Arc<dyn Plugin> = match &config.rules {
            Some(rules) => Arc::new(plugin::rules::Rules(rules.clone())),
            None => plugin::builtin(config.plugin),
        };
        let push = Push::with_parts(config, store, plugin, http);
        *push
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = listener;
        Ok(push)
    }

    /// Whether [`Push::from_config`] can build what `config` names beyond its store (the
    /// MongoosePush client and its certificate files), without opening any database: what
    /// `herald check-config` runs.
    pub fn check(config: &PushConfig) -> Result<(), PushError> {
        http_service(config).map(drop)
    }

    /// The module over `store`, deciding with `plugin`, sending to virtual pubsub hosts
    /// through `http` when given.
    pub fn with_parts(
        config: PushConfig,
        store: Arc<dyn RegistrationStore>,
        plugin: Arc<dyn Plugin>,
        http: Option<Arc<dyn HttpPush>>,
    ) -> Push {
        let stats = Arc::new(Stats::default());
        let settings = PublisherSettings::for_workers(config.wpool.workers)
            .with_registrations_per_user(config.max_registrations.get())
            .with_retry(config.retry, config.outbox_gather)
            .with_pacing(config.pacing);
        let (publisher, dispatcher) = Publisher::new(settings, Arc::clone(&stats));
        let pipeline = Pipeline {
            plugin,
            store,
            routes: Routes::new(config.virtual_pubsub_hosts.clone(), http.is_some())
                .with_voip_topic_suffix(&config.calls.voip_topic_suffix),
            publisher,
            stats: Arc::clone(&stats),
            unread: config.unread_count.then(unread::Unread::default),
            calls: unread::Calls::default(),
            push_retract: config.calls.push_retract,
        };
        Push {
            config,
            pipeline,
            stats,
            http,
            dispatcher: Mutex::new(Some(dispatcher)),
            settings: settings::NotificationSettings::default(),
            pep: std::sync::atomic::AtomicBool::new(false),
            listener: Mutex::new(None),
        }
    }

    /// What the module has counted since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Start publishing through `transport`; a registration disabled after a rejection is
    /// reported to `on_disabled`; the workers stop when `shutdown` is cancelled and are
    /// tracked by `tasks`. Done by [`Module::start`] with the server's outbound IQs and
    /// sessions; tests call it with their own. A second call does nothing.
    pub fn run_publisher(
        &self,
        transport: Arc<dyn IqTransport>,
        on_disabled: OnDisabled,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let Some(dispatcher) = self
            .dispatcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            tracing::warn!("the push module was started twice; keeping the first start");
            return;
        };
        let parts = PublisherParts {
            transport,
            store: Arc::clone(&self.pipeline.store),
            on_disabled,
            stats: Arc::clone(&self.stats),
            http: self.http.clone(),
        };
        dispatcher.run(parts, shutdown, tasks);
    }

    /// The registration store.
    pub(crate) fn store(&self) -> &Arc<dyn RegistrationStore> {
        &self.pipeline.store
    }

    /// Run the pipeline for `event` (push.md section 4). `notified` is what travels with the
    /// message: the registrations already notified for it; the returned value adds those
    /// notified now, to travel on with the message.
    pub async fn on_message(&self, server: &Server, event: &Event, notified: Notified) -> Notified {
        let mut notified = notified;
        let mut presence = presence_of(server, event);
        if self.pep.load(std::sync::atomic::Ordering::Relaxed) {
            let conversation = event.message().from.bare();
            presence.setting = self
                .settings
                .of(
                    server.storage.user_data().as_ref(),
                    event.recipient(),
                    &conversation,
                )
                .await;
        }
        // The pipeline logs what it decided, with the request id.
        let _ = self
            .pipeline
            .notify_in(event, presence, &mut notified)
            .await;
        notified
    }

    /// Send again, after `grace` (components reconnect meanwhile), the notifications the
    /// outbox kept from before `started` (the last stop or crash left them pending).
    pub async fn resend_pending(&self, started: std::time::SystemTime, grace: std::time::Duration) {
        let pending = match self.store().pending().await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "cannot read the push outbox");
                return;
            }
        };
        let pending: Vec<_> = pending
            .into_iter()
            .filter(|(_, push)| push.created_at <= started)
            .collect();
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(grace).await;
        tracing::info!(
            count = pending.len(),
            "sending the push notifications pending at the last stop"
        );
        for (id, push) in pending {
            let _ = self.pipeline.publisher.resubmit(id, push);
        }
    }

    /// Wake the devices of the sessions that were hibernating when the server stopped
    /// (`keepalive.wake_on_start`), after `grace` (components reconnect meanwhile); the
    /// records are cleared either way. Done at start; tests call it.
    pub async fn wake_at_start(&self, grace: std::time::Duration) {
        let sleepers = match self.store().take_hibernating().await {
            Ok(sleepers) => sleepers,
            Err(error) => {
                tracing::error!(%error, "cannot read the sessions hibernating at the last stop");
                return;
            }
        };
        if sleepers.is_empty() || !self.config.keepalive.is_some_and(|k| k.wake_on_start) {
            return;
        }
        tokio::time::sleep(grace).await;
        for (session, key) in sleepers {
            if self.pipeline.wake(&key, 0).await {
                self.stats.session(SessionEvent::WokenAtStart);
                tracing::info!(%session, "woke a session that was hibernating at the last stop");
            }
        }
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
        // Tigase's extensions to enable (encryption, priority, filters, calls).
        for feature in extensions::FEATURES {
            r.feature(feature);
            r.account_feature(feature);
        }
        let hooks = r.hooks();
        hooks
            .offline_message
            .add(BEFORE_STORAGE, Arc::new(OnOffline(Arc::clone(&self))));
        hooks
            .unacked_message
            .add(Priority::NORMAL, Arc::new(OnUnacked(Arc::clone(&self))));
        if self.config.keepalive.is_some() {
            hooks
                .session_waiting
                .add(Priority::NORMAL, Arc::new(OnWaiting(Arc::clone(&self))));
        }
        hooks
            .hibernation
            .add(Priority::NORMAL, Arc::new(OnHibernation(Arc::clone(&self))));
        if self.pipeline.unread.is_some() {
            hooks
                .client_active
                .add(Priority::NORMAL, Arc::new(OnActive(Arc::clone(&self))));
            hooks
                .user_available
                .add(Priority::NORMAL, Arc::new(OnActive(Arc::clone(&self))));
            hooks
                .message_sent
                .add(Priority::NORMAL, Arc::new(OnActive(Arc::clone(&self))));
        }
        hooks
            .pep_changed
            .add(Priority::NORMAL, Arc::new(OnPepChanged(Arc::clone(&self))));
        hooks
            .user_removed
            .add(Priority::NORMAL, Arc::new(OnUserRemoved(self)));
    }

    fn start(self: Arc<Self>, server: &Arc<Server>) {
        let pep = server
            .extensions
            .iq_handler(IqScope::Account, herald_stream::ns::PUBSUB)
            .is_some();
        self.pep.store(pep, std::sync::atomic::Ordering::Relaxed);
        // A rejected registration is cleared from the sessions that enabled it; the server
        // owns the module, so the callback holds it weakly.
        let weak = Arc::downgrade(server);
        let on_disabled: OnDisabled = Arc::new(move |key| {
            if let Some(server) = weak.upgrade() {
                EnabledInSession::forget_key(&server.sessions, key);
            }
        });
        self.run_publisher(
            Arc::new(ServerTransport::new(server)),
            on_disabled,
            server.shutdown.clone(),
            &server.tasks,
        );
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((pool, cache)) = listener {
            server
                .tasks
                .spawn(registrations::listen(pool, cache, server.shutdown.clone()));
        }
        let shutdown = server.shutdown.clone();
        let started = std::time::SystemTime::now();
        server.tasks.spawn(async move {
            tokio::select! {
                _ = async {
                    // Both read the store at once, then wait for components to reconnect.
                    tokio::join!(
                        self.resend_pending(started, WAKE_AT_START_GRACE),
                        self.wake_at_start(WAKE_AT_START_GRACE),
                    )
                } => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The HTTP push service client of `config.mongoosepush`, if any.
fn http_service(config: &PushConfig) -> Result<Option<Arc<dyn HttpPush>>, PushError> {
    match &config.mongoosepush {
        Some(service) => {
            let client = MongoosePush::new(service)
                .map_err(|error| PushError::HttpService(service.pool.name.clone(), error))?;
            Ok(Some(Arc::new(client)))
        }
        None => Ok(None),
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
        // The stanza is lent to the pipeline, not copied: the hooks after this one (offline
        // storage) get it back as it was.
        let lent = std::mem::replace(
            &mut event.stanza.element,
            Element::bare("message", herald_stream::ns::CLIENT),
        );
        let chat = Event::Chat(Message {
            from,
            to: event.recipient.clone(),
            type_,
            stanza: lent,
        });
        let notified = self.0.on_message(server, &chat, notified).await;
        let (Event::Chat(Message { stanza, .. })
        | Event::Unacknowledged {
            message: Message { stanza, .. },
            ..
        }) = chat;
        event.stanza.element = stanza;
        if !notified.is_empty() {
            event.meta.set(notified);
        }
        Flow::Continue
    }
}

/// Where the recipient of `event` is: available (a hibernating session's user counts only
/// connected sessions), and whether a connected session's client is active (XEP-0352).
fn presence_of(server: &Server, event: &Event) -> Presence {
    let targets = server.sessions.message_targets(event.recipient());
    let connected = |target: &&herald_core::sessions::SessionHandle| !target.control.is_waiting();
    let available = match event {
        Event::Unacknowledged {
            cause: UnackedCause::Hibernating,
            ..
        } => targets.iter().any(|target| connected(&target)),
        _ => !targets.is_empty(),
    };
    let active = targets.iter().filter(connected).any(|target| {
        !target
            .state
            .get::<ClientState>()
            .is_some_and(|state| state.is_inactive())
    });
    Presence {
        available,
        active,
        setting: None,
    }
}

/// A message written to one session that its client may not see soon (push.md section 7 and
/// "Sessions that sleep"): unacknowledged while it waits or hibernates, left unacknowledged
/// for `max_ack_delay`, or written to an inactive client. What was notified is recorded on
/// the buffered message, which carries it if it is routed again.
struct OnUnacked(Arc<Push>);

#[async_trait::async_trait]
impl Handler<UnackedMessage> for OnUnacked {
    async fn call(&self, server: &Server, event: &mut UnackedMessage) -> Flow {
        let cause = event.cause;
        if cause == UnackedCause::Inactive && !self.0.config.push_when_inactive {
            return Flow::Continue;
        }
        let registration = EnabledInSession::of_session(&server.sessions, &event.session);
        // Only a session that enabled push is woken for these: nothing to decide otherwise.
        if matches!(cause, UnackedCause::AckDelayed | UnackedCause::Inactive)
            && registration.is_none()
        {
            return Flow::Continue;
        }
        let mut stanza = event.stanza.clone();
        let before = event.meta.get::<Notified>().unwrap_or_default();
        if stanza.attr("to").is_none() {
            set_attr(&mut stanza, "to", event.session.to_string());
        }
        let Some(message) = Message::parse(stanza) else {
            return Flow::Continue;
        };
        let unacked = Event::Unacknowledged {
            session: event.session.clone(),
            cause,
            registration,
            message,
        };
        let notified = self.0.on_message(server, &unacked, before.clone()).await;
        if notified != before {
            event.pushed = true;
            match cause {
                UnackedCause::AckDelayed => self.0.stats.session(SessionEvent::AckDelayed),
                UnackedCause::Inactive => self.0.stats.session(SessionEvent::Inactive),
                UnackedCause::Waiting | UnackedCause::Hibernating => {}
            }
            event.meta.set(notified);
        }
        Flow::Continue
    }
}

/// A resumable session lost its connection: one whose client enabled push in it may
/// hibernate (`keepalive`).
struct OnWaiting(Arc<Push>);

#[async_trait::async_trait]
impl Handler<SessionWaiting> for OnWaiting {
    async fn call(&self, server: &Server, event: &mut SessionWaiting) -> Flow {
        if let Some(keepalive) = self.0.config.keepalive
            && EnabledInSession::of_session(&server.sessions, &event.session).is_some()
        {
            event.hibernate = Some(Hibernate {
                longest: keepalive.resume_timeout,
                wake_before: keepalive.wake_on_timeout.then_some(keepalive.wake_before),
            });
        }
        Flow::Continue
    }
}

/// A hibernating session's steps: recorded (so that a restart wakes it), woken before its
/// end, forgotten when it ends.
struct OnHibernation(Arc<Push>);

#[async_trait::async_trait]
impl Handler<Hibernation> for OnHibernation {
    async fn call(&self, server: &Server, event: &mut Hibernation) -> Flow {
        let store = self.0.store();
        let result = match event.phase {
            HibernationPhase::Started => {
                self.0.stats.session(SessionEvent::Hibernating);
                match EnabledInSession::of_session(&server.sessions, &event.session) {
                    Some(key) => store.hibernating(&event.session, &key).await,
                    None => Ok(()),
                }
            }
            HibernationPhase::Expiring { pending } => {
                if let Some(key) = EnabledInSession::of_session(&server.sessions, &event.session)
                    && self.0.pipeline.wake(&key, pending).await
                {
                    self.0.stats.session(SessionEvent::Woken);
                    tracing::debug!(session = %event.session, pending, "woke a hibernating session before its end");
                }
                Ok(())
            }
            HibernationPhase::Ended => store.hibernation_ended(&event.session).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, session = %event.session, "cannot record a hibernating session");
        }
        Flow::Continue
    }
}

/// What resets a user's unread count: a client that says it is active (XEP-0352), an
/// available presence from a client that did not say it is inactive; and what clears one
/// conversation's: a displayed marker the user sends in it (XEP-0333).
struct OnActive(Arc<Push>);

impl OnActive {
    fn reset(&self, user: &jid::BareJid) {
        if let Some(unread) = &self.0.pipeline.unread {
            unread.reset(user);
        }
    }
}

#[async_trait::async_trait]
impl Handler<ClientActive> for OnActive {
    async fn call(&self, _server: &Server, event: &mut ClientActive) -> Flow {
        self.reset(&event.session.bare());
        Flow::Continue
    }
}

#[async_trait::async_trait]
impl Handler<UserAvailable> for OnActive {
    async fn call(&self, server: &Server, event: &mut UserAvailable) -> Flow {
        let inactive = server.sessions.get(&event.session).is_some_and(|session| {
            session
                .state
                .get::<ClientState>()
                .is_some_and(|state| state.is_inactive())
        });
        if !inactive {
            self.reset(&event.session.bare());
        }
        Flow::Continue
    }
}

#[async_trait::async_trait]
impl Handler<MessageSent> for OnActive {
    async fn call(&self, _server: &Server, event: &mut MessageSent) -> Flow {
        if let (Some(unread), Some(to)) = (&self.0.pipeline.unread, &event.stanza.to)
            && event
                .stanza
                .element
                .has_child("displayed", herald_stream::ns::CHAT_MARKERS)
        {
            unread.read(&event.sender.bare(), &to.bare());
        }
        Flow::Continue
    }
}

/// The notification settings node (XEP-0492) changed: read it again when next needed.
struct OnPepChanged(Arc<Push>);

#[async_trait::async_trait]
impl Handler<PepChanged> for OnPepChanged {
    async fn call(&self, _server: &Server, event: &mut PepChanged) -> Flow {
        if event.node == settings::NODE {
            self.0.settings.forget(&event.owner);
        }
        Flow::Continue
    }
}

/// Spec section 3: deleting an account deletes its registrations.
struct OnUserRemoved(Arc<Push>);

#[async_trait::async_trait]
impl Handler<UserRemoved> for OnUserRemoved {
    async fn call(&self, server: &Server, event: &mut UserRemoved) -> Flow {
        EnabledInSession::forget_user(&server.sessions, &event.user);
        if let Some(unread) = &self.0.pipeline.unread {
            unread.reset(&event.user);
        }
        self.0.settings.forget(&event.user);
        if let Err(error) = self.0.store().remove_user(&event.user).await {
            tracing::error!(%error, user = %event.user, "cannot delete the push registrations of a removed account");
        }
        Flow::Continue
    }
}
