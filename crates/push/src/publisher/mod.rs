//! The publisher (push.md section 5): notifications leave through a bounded queue served by at
//! most `wpool.workers` concurrent publishes, so message routing never waits on an app server.
//!
//! [`Publisher::submit`] never blocks: a full queue drops the notification, counts it and warns
//! (at most once per [`FULL_WARNING_EVERY`]). Each publish waits up to 32 s for the app
//! server's reply, and its outcome decides the registration's fate:
//!
//! | reply | action | [`Outcome`] |
//! |---|---|---|
//! | `result` | none | delivered |
//! | no reply in time | none | timeout |
//! | error of type `cancel` | disable the registration, clear it from sessions | rejected_and_disabled |
//! | error of another type, or not sent | none | transient_error |
//!
//! Registrations on a virtual pubsub host (push.md section 8) go through the same queue and
//! workers to the HTTP push service ([`crate::mongoosepush`]), whose reply decides alike:
//!
//! | HTTP reply | action | [`Outcome`] |
//! |---|---|---|
//! | 2xx | none | delivered |
//! | no reply within `request_timeout` | none | timeout |
//! | 410 (device not registered) | disable the registration, clear it from sessions | rejected_and_disabled |
//! | another status, or no connection | none | transient_error |
//!
//! Sharing: one recipient has at most [`PublisherSettings::per_user`] notifications queued or
//! in flight (more are dropped and counted as `dropped_user_limit`: a flood to one user, or a
//! user with many registrations, cannot fill the queue for everybody), and one app server
//! at most [`PublisherSettings::per_target`] publishes in flight (a job for an app server
//! at its limit waits aside while other app servers' jobs go ahead: one that never answers
//! cannot hold every worker).
//!
//! At shutdown the queue closes and the publishes in flight get [`PublisherSettings::drain_deadline`]
//! to finish.

mod outbox;
mod pace;
mod transport;

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use jid::BareJid;
use tokio::{
    sync::{Notify, Semaphore, mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

pub use crate::stanza::{PUBLISH_OPTIONS, PUBSUB, PUSH, SUMMARY, publish_iq};
pub use transport::{IqOutcome, IqTransport, SendIqError, ServerTransport};

use crate::{
    config::{Pacing, Retry},
    metrics::{PaceEvent, RequestId, RetryEvent, Stats},
    mongoosepush::{HttpOutcome, HttpPush, Notification},
    redact::Redacted,
    registrations::{PendingPush, RegistrationKey, RegistrationStore, StoredRoute},
    route::Route,
    vocabulary::Outcome,
};

use outbox::Outbox;
use pace::{Held, Pacer, Turn};

/// How long a publish waits for the app server's reply (push.md section 5).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(32);

/// Queue slots per worker: enough to absorb a burst while every worker waits on replies.
pub const QUEUE_PER_WORKER: usize = 100;

/// The shortest interval between two "queue full" warnings.
pub const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long shutdown waits for publishes in flight, by default.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// The publisher's sizes and times.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// At most this many publishes in flight (`wpool.workers`).
    pub workers: NonZeroUsize,
    /// At most this many notifications waiting for a worker.
    pub queue_capacity: usize,
    /// How long a publish waits for its reply.
    pub reply_timeout: Duration,
    /// How long shutdown waits for publishes in flight.
    pub drain_deadline: Duration,
    /// Notifications queued or in flight for one recipient, at most.
    pub per_user: usize,
    /// Publishes in flight to one app server (a pubsub domain, or the HTTP push service),
    /// at most.
    pub per_target: usize,
    /// What is retried, and for how long (`retry.*`).
    pub retry: Retry,
    /// `outbox_gather`: how long the outbox gathers before writing; zero writes (and waits
    /// for) every notification before it is sent.
    pub outbox_gather: Duration,
    /// How often one registration may be notified (`pacing.*`); off by default here, on
    /// by default in the module's configuration.
    pub pacing: Pacing,
}

impl PublisherSettings {
    /// These settings pacing notifications as `pacing` says.
    pub fn with_pacing(mut self, pacing: Pacing) -> PublisherSettings {
        self.pacing = pacing;
        self
    }

    /// A recipient's share never stops one message from reaching every registration they may
    /// have: at least two messages' worth of publishes.
    pub fn with_registrations_per_user(mut self, registrations: usize) -> PublisherSettings {
        self.per_user = self.per_user.max(registrations.saturating_mul(2));
        self
    }

    /// The settings for `workers` workers, with the defaults for the rest.
    pub fn for_workers(workers: NonZeroUsize) -> PublisherSettings {
        let queue_capacity = workers.get().saturating_mul(QUEUE_PER_WORKER);
        PublisherSettings {
            workers,
            queue_capacity,
            reply_timeout: REPLY_TIMEOUT,
            drain_deadline: DRAIN_DEADLINE,
            // A burst to one user fills a sixteenth of the queue at most.
            per_user: (queue_capacity / 16).max(8),
            // One worker is always left for the other app servers.
            per_target: workers.get().saturating_sub(1).max(1),
            retry: Retry::default(),
            outbox_gather: outbox::GATHER,
            pacing: Pacing::OFF,
        }
    }

    /// These settings retrying as `retry` says, the outbox gathering for `outbox_gather`.
    pub fn with_retry(mut self, retry: Retry, outbox_gather: Duration) -> PublisherSettings {
        self.retry = retry;
        self.outbox_gather = outbox_gather;
        self
    }
}

/// What became of a notification handed to [`Publisher::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for a worker.
    Queued,
    /// Dropped: the queue was full.
    QueueFull,
    /// Dropped: the recipient has their share of the publisher already.
    UserLimit,
    /// Dropped: the publisher has stopped.
    Stopped,
    /// Not queued again: the same message is already pending for this registration (in the
    /// outbox, queued or waiting for a retry).
    AlreadyPending,
    /// Held for the registration's next turn (`pacing.*`): it goes then, or a later
    /// notification to the registration goes in its place.
    Held,
}

/// One publish to do.
struct Job {
    key: RegistrationKey,
    what: Route,
    /// The request id that follows the notification through the logs.
    request: RequestId,
    /// Told the outcome (a test push waits for it; such a push is never retried).
    reply: Option<oneshot::Sender<Report>>,
    /// Its row in the outbox, removed when its outcome is final.
    outbox: Option<i64>,
    /// The publish IQ as the outbox keeps it (serialised when it was kept), when a retry may
    /// follow: a retry parses it again instead of every publish copying its element tree
    /// for a retry that seldom comes (88 allocations, `publish_retry_copy_tree`).
    kept: Option<String>,
    /// Tries made before this one.
    attempt: u32,
    /// When it was decided: retries stop `retry.max_age` after.
    decided: SystemTime,
}

/// What a publish keeps for its retry.
enum Again {
    /// The route itself (an HTTP request, or a publish IQ the outbox did not keep).
    Route(Route),
    /// The publish IQ as the outbox kept it, parsed again only if a retry comes.
    Kept(String),
}

impl Again {
    /// The route to try again, and the kept text for the try after; `None` for a kept IQ
    /// that no longer parses (never: herald serialised it).
    fn into_route(self) -> Option<(Route, Option<String>)> {
        match self {
            Again::Route(route) => Some((route, None)),
            Again::Kept(text) => {
                let route = Route::from_stored(StoredRoute::Xmpp(text.clone()));
                if route.is_none() {
                    tracing::error!("push: a kept publish no longer parses; not retried");
                }
                route.map(|route| (route, Some(text)))
            }
        }
    }
}

/// What became of one publish: its outcome and what the app server or push service said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The request id of the notification.
    pub request: RequestId,
    /// The outcome, as counted.
    pub outcome: Outcome,
    /// The app server's or push service's answer, in words (`result`, `error cancel
    /// item-not-found`, `HTTP 410`, `timeout`...).
    pub answer: String,
}

impl Job {
    /// The app server the job goes to.
    fn target(&self) -> Target {
        match self.what {
            Route::Xmpp(_) => Target::Pubsub(self.key.pubsub.domain().to_string()),
            Route::Http(_) => Target::Http,
        }
    }
}

/// An app server, for [`Shares`].
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Target {
    /// An XMPP app server, by domain.
    Pubsub(String),
    /// The HTTP push service.
    Http,
}

/// What each recipient and each app server holds of the publisher.
struct Shares {
    per_user: usize,
    per_target: usize,
    users: Mutex<HashMap<BareJid, usize>>,
    targets: Mutex<HashMap<Target, usize>>,
    /// Raised when a publish ends, so that a job set aside may go.
    freed: Notify,
}

impl Shares {
    fn new(settings: &PublisherSettings) -> Shares {
        Shares {
            per_user: settings.per_user.max(1),
            per_target: settings.per_target.max(1),
            users: Mutex::default(),
            targets: Mutex::default(),
            freed: Notify::new(),
        }
    }

    /// Count one more notification for `user`, unless they have their share.
    fn admit(&self, user: &BareJid) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let held = users.entry(user.clone()).or_insert(0);
        if *held >= self.per_user {
            return false;
        }
        *held += 1;
        true
    }

    /// A notification for `user` is done (sent, or dropped after admission).
    fn release(&self, user: &BareJid) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = users.get_mut(user) {
            *held -= 1;
            if *held == 0 {
                users.remove(user);
            }
        }
    }

    fn has_room(&self, target: &Target) -> bool {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.get(target).copied().unwrap_or(0) < self.per_target
    }

    fn start(&self, target: &Target) {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        *targets.entry(target.clone()).or_insert(0) += 1;
    }

    fn finish(&self, target: &Target, user: &BareJid) {
        {
            let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = targets.get_mut(target) {
                *held -= 1;
                if *held == 0 {
                    targets.remove(target);
                }
            }
        }
        self.release(user);
        self.freed.notify_one();
    }
}

/// What a worker needs to publish and to act on the outcome.
struct Worker {
    transport: Arc<dyn IqTransport>,
    http: Option<Arc<dyn HttpPush>>,
    store: Arc<dyn RegistrationStore>,
    on_disabled: OnDisabled,
    stats: Arc<Stats>,
    reply_timeout: Duration,
    retry: Retry,
    outbox: Arc<OnceLock<Outbox>>,
    /// Where a retry queues again; weak, so that the queue closes at shutdown.
    requeue: mpsc::WeakSender<Job>,
    shares: Arc<Shares>,
}

/// The handle that queues notifications.
pub struct Publisher {
    submitter: Submitter,
    /// The outbox's writer, once the dispatcher runs.
    outbox: Arc<OnceLock<Outbox>>,
    retry: Retry,
    pacer: Arc<Pacer>,
}

/// What puts a job in the queue; the publisher's, and a copy in each pacing timer.
#[derive(Clone)]
struct Submitter {
    queue: mpsc::Sender<Job>,
    /// Calls: served before the queue.
    urgent: mpsc::Sender<Job>,
    shares: Arc<Shares>,
    capacity: usize,
    stats: Arc<Stats>,
    full_warning: Arc<RateLimited>,
    outbox: Arc<OnceLock<Outbox>>,
}

/// What is told of a registration disabled after its app server or push service rejected it.
pub type OnDisabled = Arc<dyn Fn(&RegistrationKey) + Send + Sync>;

/// The receiving end of a [`Publisher`]'s queue, until it runs.
pub struct Dispatcher {
    receiver: mpsc::Receiver<Job>,
    urgent: mpsc::Receiver<Job>,
    requeue: mpsc::WeakSender<Job>,
    settings: PublisherSettings,
    shares: Arc<Shares>,
    outbox: Arc<OnceLock<Outbox>>,
}

impl Dispatcher {
    /// Serve the queue on `tasks` with at most `workers` publishes in flight; it stops
    /// taking notifications when `shutdown` is cancelled and drains what is in flight within
    /// the deadline.
    pub fn run(self, parts: PublisherParts, shutdown: CancellationToken, tasks: &TaskTracker) {
        let _ = self.outbox.set(Outbox::start(
            Arc::clone(&parts.store),
            self.settings.outbox_gather,
            self.settings.retry.max_age,
        ));
        let worker = Arc::new(Worker {
            transport: parts.transport,
            http: parts.http,
            store: parts.store,
            on_disabled: parts.on_disabled,
            stats: parts.stats,
            reply_timeout: self.settings.reply_timeout,
            retry: self.settings.retry,
            outbox: self.outbox,
            requeue: self.requeue,
            shares: Arc::clone(&self.shares),
        });
        tasks.spawn(dispatch(
            Queues {
                normal: self.receiver,
                urgent: self.urgent,
            },
            worker,
            self.settings,
            self.shares,
            shutdown,
        ));
    }
}

/// What the dispatcher's workers are built from.
pub struct PublisherParts {
    /// Sends the IQs.
    pub transport: Arc<dyn IqTransport>,
    /// Where a rejected registration is disabled.
    pub store: Arc<dyn RegistrationStore>,
    /// Told of a registration disabled after a rejection (the module clears it from the
    /// sessions that enabled it).
    pub on_disabled: OnDisabled,
    /// Where outcomes are counted.
    pub stats: Arc<Stats>,
    /// The HTTP push service (push.md section 8), for [`Route::Http`] jobs.
    pub http: Option<Arc<dyn HttpPush>>,
}

impl Publisher {
    /// Start the dispatcher on `tasks` at once (see [`Publisher::new`] and
    /// [`Dispatcher::run`]).
    pub fn start(
        settings: PublisherSettings,
        parts: PublisherParts,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Publisher {
        let (publisher, dispatcher) = Publisher::new(settings, Arc::clone(&parts.stats));
        dispatcher.run(parts, shutdown, tasks);
        publisher
    }

    /// The queue and its dispatcher. Notifications may be submitted at once; they wait in the
    /// queue until the dispatcher runs (when the server starts).
    pub fn new(settings: PublisherSettings, stats: Arc<Stats>) -> (Publisher, Dispatcher) {
        let capacity = settings.queue_capacity.max(1);
        let (queue, receiver) = mpsc::channel(capacity);
        let (urgent, urgent_receiver) = mpsc::channel(URGENT_CAPACITY);
        let shares = Arc::new(Shares::new(&settings));
        let outbox = Arc::new(OnceLock::new());
        let requeue = queue.downgrade();
        let publisher = Publisher {
            submitter: Submitter {
                queue,
                urgent,
                shares: Arc::clone(&shares),
                capacity,
                stats,
                full_warning: Arc::new(RateLimited::new(FULL_WARNING_EVERY)),
                outbox: Arc::clone(&outbox),
            },
            outbox: Arc::clone(&outbox),
            retry: settings.retry,
            pacer: Arc::new(Pacer::new(settings.pacing)),
        };
        let dispatcher = Dispatcher {
            receiver,
            urgent: urgent_receiver,
            requeue,
            settings,
            shares,
            outbox,
        };
        (publisher, dispatcher)
    }

    /// Queue a notification, routed (see [`crate::route`]), to the registration `key`;
    /// never waits.
    pub fn submit(&self, key: RegistrationKey, route: Route) -> Submitted {
        self.submit_with(key, route, RequestId::next(), None)
    }

    /// Queue a notification that publishes at once and tells `reply` what the app server
    /// answered (a test push); the same queue and shares as any other.
    pub async fn publish_and_wait(
        &self,
        key: RegistrationKey,
        route: Route,
        request: RequestId,
    ) -> Result<Report, Submitted> {
        let (told, report) = oneshot::channel();
        match self.submit_with(key, route, request, Some(told)) {
            Submitted::Queued => report.await.map_err(|_| Submitted::Stopped),
            other => Err(other),
        }
    }

    /// [`Publisher::submit`] with the notification's request id, and a channel for its
    /// outcome.
    pub(crate) fn submit_with(
        &self,
        key: RegistrationKey,
        route: Route,
        request: RequestId,
        reply: Option<oneshot::Sender<Report>>,
    ) -> Submitted {
        let job = Job {
            key,
            what: route,
            request,
            reply,
            outbox: None,
            kept: None,
            attempt: 0,
            decided: SystemTime::now(),
        };
        self.submitter.submit_job(job, false)
    }

    /// Queue a notification for `message` (what identifies it, if anything) through the
    /// outbox (when the dispatcher runs): kept in the store unless delivered within
    /// `outbox_gather` (with none, committed before this returns), so that a restart or a
    /// crash sends it, and retried as `retry.*` says. Not queued when the same message is
    /// pending for this registration or was notified to it lately. Sent at once, whatever
    /// the pacing.
    pub async fn submit_pending(
        &self,
        key: RegistrationKey,
        route: Route,
        request: RequestId,
        message: Option<String>,
    ) -> Submitted {
        self.submit_kept(key, route, request, message, false).await
    }

    /// [`Publisher::submit_pending`] at the registration's pace (`pacing.*`): a
    /// notification that may not go yet is held (kept in the outbox meanwhile) and goes at
    /// the registration's next turn, unless a later one replaces it first. An `urgent`
    /// one (a call) goes at once, ahead of the queue.
    pub async fn submit_paced(
        &self,
        key: RegistrationKey,
        route: Route,
        request: RequestId,
        message: Option<String>,
        urgent: bool,
    ) -> Submitted {
        if urgent {
            self.submitter.stats.pace(PaceEvent::Urgent);
            return self.submit_kept(key, route, request, message, true).await;
        }
        if self.pacer.offer(&key, Instant::now()) == Turn::Now {
            return self.submit_kept(key, route, request, message, false).await;
        }
        let outbox = match self.keep(&key, &route, message).await {
            Ok(outbox) => outbox,
            Err(submitted) => return submitted,
        };
        let held = Held {
            route,
            request,
            outbox,
        };
        let (replaced, timer) = self.pacer.hold(&key, held, Instant::now());
        match replaced {
            Some(replaced) => {
                self.submitter.stats.pace(PaceEvent::Coalesced);
                tracing::debug!(request_id = %replaced.request, by = %request, owner = %key.owner, "push: a held notification is coalesced into a later one");
                finish(&self.submitter.outbox, replaced.outbox);
            }
            None => {
                self.submitter.stats.pace(PaceEvent::Held);
                tracing::debug!(request_id = %request, owner = %key.owner, "push: held for the registration's next turn");
            }
        }
        if let Some(at) = timer {
            self.send_when_due(key, at);
        }
        Submitted::Held
    }

    /// A timer that sends what `key` holds at its next turn, from `at`.
    fn send_when_due(&self, key: RegistrationKey, at: Instant) {
        let pacer = Arc::clone(&self.pacer);
        let submitter = self.submitter.clone();
        tokio::spawn(async move {
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                match pacer.due(&key, Instant::now()) {
                    Ok(Some(held)) => {
                        let job = Job {
                            key,
                            what: held.route,
                            request: held.request,
                            reply: None,
                            outbox: held.outbox,
                            kept: None,
                            attempt: 0,
                            decided: SystemTime::now(),
                        };
                        submitter.submit_job(job, false);
                        return;
                    }
                    Ok(None) => return,
                    Err(next) => at = next,
                }
            }
        });
    }

    /// Keep a notification to `key` in the outbox (once the dispatcher runs): its row, or
    /// [`Submitted::AlreadyPending`] when the same message is pending for it already.
    async fn keep(
        &self,
        key: &RegistrationKey,
        route: &Route,
        message: Option<String>,
    ) -> Result<Option<i64>, Submitted> {
        self.keep_for_retry(key, route, message, false)
            .await
            .map(|(id, _)| id)
    }

    /// [`Publisher::keep`], and with `for_retry` (when retries are on) a copy of the
    /// publish IQ as kept, serialised, for [`Job::kept`].
    async fn keep_for_retry(
        &self,
        key: &RegistrationKey,
        route: &Route,
        message: Option<String>,
        for_retry: bool,
    ) -> Result<(Option<i64>, Option<String>), Submitted> {
        let Some(outbox) = self.outbox.get() else {
            return Ok((None, None));
        };
        let stored = route.stored();
        let kept = match &stored {
            StoredRoute::Xmpp(iq) if for_retry => Some(iq.clone()),
            _ => None,
        };
        let push = PendingPush {
            key: key.clone(),
            message,
            route: stored,
            created_at: SystemTime::now(),
        };
        match outbox.add(push).await {
            Some(id) => Ok((Some(id), kept)),
            None => Err(Submitted::AlreadyPending),
        }
    }

    async fn submit_kept(
        &self,
        key: RegistrationKey,
        route: Route,
        request: RequestId,
        message: Option<String>,
        urgent: bool,
    ) -> Submitted {
        let retries = self.retry.max_retries > 0;
        let (outbox, kept) = match self.keep_for_retry(&key, &route, message, retries).await {
            Ok(kept) => kept,
            Err(submitted) => return submitted,
        };
        let job = Job {
            key,
            what: route,
            request,
            reply: None,
            outbox,
            kept,
            attempt: 0,
            decided: SystemTime::now(),
        };
        self.submitter.submit_job(job, urgent)
    }

    /// Queue again a notification the outbox kept from before the last stop (`id`), unless
    /// it is older than `retry.max_age`. Whether it was queued.
    pub fn resubmit(&self, id: i64, pending: PendingPush) -> Submitted {
        let age = pending.created_at.elapsed().unwrap_or_default();
        let route = Route::from_stored(pending.route);
        match route {
            Some(route) if age < self.retry.max_age => self.submitter.submit_job(
                Job {
                    key: pending.key,
                    what: route,
                    request: RequestId::next(),
                    reply: None,
                    outbox: Some(id),
                    kept: None,
                    attempt: 0,
                    decided: pending.created_at,
                },
                false,
            ),
            _ => {
                finish(&self.submitter.outbox, Some(id));
                self.submitter.stats.retry(RetryEvent::GaveUp);
                Submitted::Stopped
            }
        }
    }
}

/// A notification's outcome is final (or it was replaced): its outbox row, if any, goes.
fn finish(outbox: &OnceLock<Outbox>, row: Option<i64>) {
    if let (Some(id), Some(writer)) = (row, outbox.get()) {
        writer.remove(id);
    }
}

/// Calls waiting for a worker, at most (beyond, they wait in the queue with the others).
const URGENT_CAPACITY: usize = 256;

impl Submitter {
    /// Queue `job` (ahead of the others when `urgent`) if its recipient has room and the
    /// queue too; a dropped job leaves the outbox (its outcome is final).
    fn submit_job(&self, job: Job, urgent: bool) -> Submitted {
        let outbox = job.outbox;
        let submitted = self.queue_job(job, urgent);
        // A publisher that stopped leaves the row for the next start.
        if matches!(submitted, Submitted::QueueFull | Submitted::UserLimit) {
            finish(&self.outbox, outbox);
        }
        submitted
    }

    fn queue_job(&self, job: Job, urgent: bool) -> Submitted {
        if !self.shares.admit(&job.key.owner) {
            self.stats.notification(Outcome::DroppedUserLimit);
            tracing::debug!(owner = %job.key.owner, "push: the recipient has their share of the publisher; dropping");
            return Submitted::UserLimit;
        }
        let job = if urgent {
            match self.urgent.try_send(job) {
                Ok(()) => return Submitted::Queued,
                // Full: the call waits with the others.
                Err(mpsc::error::TrySendError::Full(job))
                | Err(mpsc::error::TrySendError::Closed(job)) => job,
            }
        } else {
            job
        };
        let submitted = match self.queue.try_send(job) {
            Ok(()) => Submitted::Queued,
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.shares.release(&job.key.owner);
                self.stats.notification(Outcome::DroppedQueueFull);
                if self.full_warning.allow() {
                    tracing::warn!(
                        capacity = self.capacity,
                        dropped = self.stats.notifications(Outcome::DroppedQueueFull),
                        owner = %job.key.owner,
                        "push queue full: dropping notifications (is the app server slow?)"
                    );
                }
                Submitted::QueueFull
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                self.shares.release(&job.key.owner);
                Submitted::Stopped
            }
        };
        self.stats
            .queue_depth(self.capacity - self.queue.capacity().min(self.capacity));
        submitted
    }
}

/// Jobs set aside while their app server is at its share: a queue per app server, in the
/// order the app servers first had a job waiting. Finding the next job that may go looks at
/// each app server once, not at each job: with one app server at its share and thousands of
/// jobs waiting for it (several registrations per recipient, all at the same app server), a
/// scan of every job for every job queued made the dispatcher's work grow with the square of
/// the backlog.
#[derive(Default)]
struct Aside {
    queues: Vec<(Target, VecDeque<Job>)>,
    len: usize,
}

impl Aside {
    fn queue(&mut self, target: Target) -> &mut VecDeque<Job> {
        let index = match self.queues.iter().position(|(t, _)| *t == target) {
            Some(index) => index,
            None => {
                self.queues.push((target, VecDeque::new()));
                self.queues.len() - 1
            }
        };
        &mut self.queues[index].1
    }

    /// Last in line for its app server.
    fn push_back(&mut self, target: Target, job: Job) {
        self.queue(target).push_back(job);
        self.len += 1;
    }

    /// First in line for its app server.
    fn push_front(&mut self, target: Target, job: Job) {
        self.queue(target).push_front(job);
        self.len += 1;
    }

    /// The first job of the first app server that `has_room`.
    fn take(&mut self, has_room: impl Fn(&Target) -> bool) -> Option<Job> {
        let index = self
            .queues
            .iter()
            .position(|(target, _)| has_room(target))?;
        let job = self.queues[index].1.pop_front();
        if self.queues[index].1.is_empty() {
            self.queues.remove(index);
        }
        self.len -= usize::from(job.is_some());
        job
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The queues the dispatcher serves: calls first.
struct Queues {
    normal: mpsc::Receiver<Job>,
    urgent: mpsc::Receiver<Job>,
}

/// Hand queued jobs to at most `workers` concurrent publishes until shutdown, then drain.
/// A job for an app server at its share waits aside (bounded by the queue's capacity) while
/// later jobs for other app servers go ahead; it goes first once its app server has room.
async fn dispatch(
    queues: Queues,
    worker: Arc<Worker>,
    settings: PublisherSettings,
    shares: Arc<Shares>,
    shutdown: CancellationToken,
) {
    let Queues {
        normal: mut queue,
        mut urgent,
    } = queues;
    let slots = Arc::new(Semaphore::new(settings.workers.get()));
    let mut in_flight = JoinSet::new();
    let mut aside = Aside::default();
    let aside_capacity = settings.queue_capacity.max(1);
    'serve: loop {
        // A slot first, then a job: a job is never taken out of the queue to wait.
        let slot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let job = loop {
            if let Some(job) = aside.take(|target| shares.has_room(target)) {
                break job;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'serve,
                () = shares.freed.notified(), if !aside.is_empty() => {}
                Some(job) = urgent.recv() => {
                    if shares.has_room(&job.target()) {
                        break job;
                    }
                    // Its app server is at its share: first in line for it.
                    aside.push_front(job.target(), job);
                }
                job = queue.recv() => match job {
                    Some(job) if shares.has_room(&job.target()) => break job,
                    Some(job) if aside.len() < aside_capacity => aside.push_back(job.target(), job),
                    Some(job) => {
                        shares.release(&job.key.owner);
                        worker.stats.notification(Outcome::DroppedQueueFull);
                    }
                    None => break 'serve,
                },
            }
        };
        worker.stats.queue_depth(queue.len() + aside.len());
        while in_flight.try_join_next().is_some() {}
        let worker = Arc::clone(&worker);
        let shares = Arc::clone(&shares);
        let target = job.target();
        shares.start(&target);
        in_flight.spawn(async move {
            let owner = job.key.owner.clone();
            worker.publish(job).await;
            shares.finish(&target, &owner);
            drop(slot);
        });
    }
    queue.close();
    urgent.close();
    if !queue.is_empty() {
        tracing::warn!(
            queued = queue.len(),
            "push publisher stopping: queued notifications are not sent"
        );
    }
    let drained = tokio::time::timeout(settings.drain_deadline, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = in_flight.len(),
            "push publisher stopping: publishes still waiting for replies are abandoned"
        );
        in_flight.abort_all();
    }
}

impl Worker {
    /// Send one publish and act on the reply; a notification that failed for a passing
    /// reason is queued again after a backoff (`retry.*`), and its outbox row goes once its
    /// outcome is final.
    async fn publish(&self, job: Job) {
        let started = Instant::now();
        let Job {
            key,
            what,
            request,
            reply,
            outbox,
            kept,
            attempt,
            decided,
        } = job;
        // A test push (with a reply channel) is never retried: its caller wants the answer.
        // The publish is kept for a retry only when one may follow (the transport takes the
        // IQ; the HTTP request is only lent).
        let test_push = reply.is_some();
        let retryable = !test_push && self.retry.max_retries > 0;
        let (outcome, answer, retry, again) = match what {
            Route::Xmpp(iq) => {
                let again = retryable.then(|| match kept {
                    Some(text) => Again::Kept(text),
                    None => Again::Route(Route::Xmpp(iq.clone())),
                });
                let answer = self.transport.send_iq(iq, self.reply_timeout).await;
                self.stats.publish_latency(started.elapsed());
                let (outcome, answer, retry) = self.xmpp_outcome(&key, answer).await;
                (outcome, answer, retry, again)
            }
            Route::Http(notification) => {
                let Some(http) = &self.http else {
                    return;
                };
                let answer = http.post(&notification).await;
                self.stats.publish_latency(started.elapsed());
                let (outcome, answer, retry) = self.http_outcome(&key, &notification, answer).await;
                (
                    outcome,
                    answer,
                    retry,
                    retryable.then_some(Again::Route(Route::Http(notification))),
                )
            }
        };
        self.stats.notification(outcome);
        self.stats.record_last(&key, outcome, &answer);
        tracing::debug!(request_id = %request, owner = %key.owner, pubsub = %key.pubsub, outcome = outcome.as_str(), %answer, attempt, elapsed_us = started.elapsed().as_micros() as u64, "push published");
        if let Some(reply) = reply {
            let _ = reply.send(Report {
                request,
                outcome,
                answer,
            });
        }
        let Some(hint) = retry.filter(|_| !test_push) else {
            finish(&self.outbox, outbox);
            return;
        };
        if self.failing_too_long(&key) {
            tracing::info!(owner = %key.owner, pubsub = %key.pubsub, node = %Redacted(&key.node), "push: every notification to this registration failed for retry.disable_after: disabling it");
            self.stats.retry(RetryEvent::DisabledFailing);
            self.disable(&key).await;
            finish(&self.outbox, outbox);
            return;
        }
        let age = decided.elapsed().unwrap_or_default();
        // `again` is kept whenever a retry may follow (`max_retries` above 0).
        let (Some(delay), Some((what, kept))) = (
            self.retry.delay(attempt + 1, age, hint),
            again.and_then(Again::into_route),
        ) else {
            tracing::info!(request_id = %request, owner = %key.owner, pubsub = %key.pubsub, attempts = attempt + 1, "push: giving up after the last try");
            self.stats.retry(RetryEvent::GaveUp);
            finish(&self.outbox, outbox);
            return;
        };
        self.stats.retry(RetryEvent::Retried);
        tracing::debug!(request_id = %request, owner = %key.owner, delay_ms = delay.as_millis() as u64, "push: retrying later");
        let job = Job {
            key,
            what,
            request,
            reply: None,
            outbox,
            kept,
            attempt: attempt + 1,
            decided,
        };
        self.queue_later(job, delay);
    }

    /// Whether `key` has only failed for `retry.disable_after`.
    fn failing_too_long(&self, key: &RegistrationKey) -> bool {
        let Some(limit) = self.retry.disable_after else {
            return false;
        };
        self.stats
            .failing_since(key)
            .is_some_and(|since| since.elapsed() >= limit)
    }

    /// Queue `job` again after `delay`. While the recipient's share or the queue is full
    /// it waits again, until `retry.max_age`; a publisher that stops leaves it in the outbox
    /// for the next start.
    fn queue_later(&self, job: Job, delay: Duration) {
        let queue = self.requeue.clone();
        let shares = Arc::clone(&self.shares);
        let retry = self.retry;
        let stats = Arc::clone(&self.stats);
        let outbox = self.outbox.get().cloned();
        tokio::spawn(async move {
            let mut job = job;
            let mut delay = delay;
            loop {
                tokio::time::sleep(delay).await;
                let Some(queue) = queue.upgrade() else {
                    return;
                };
                if shares.admit(&job.key.owner) {
                    match queue.try_send(job) {
                        Ok(()) => return,
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                        Err(mpsc::error::TrySendError::Full(back)) => {
                            shares.release(&back.key.owner);
                            job = back;
                        }
                    }
                }
                let age = job.decided.elapsed().unwrap_or_default();
                match retry.delay(job.attempt, age, None) {
                    Some(next) => delay = next,
                    None => {
                        stats.retry(RetryEvent::GaveUp);
                        if let (Some(id), Some(writer)) = (job.outbox, &outbox) {
                            writer.remove(id);
                        }
                        return;
                    }
                }
            }
        });
    }

    /// What a reply to a PubSub publish means (push.md section 5), and whether to try again
    /// (`Some`, with the app server's wish of a delay if any): a `wait` error, no reply, an
    /// unreachable app server or a publish that could not be sent.
    async fn xmpp_outcome(
        &self,
        key: &RegistrationKey,
        reply: Result<IqOutcome, SendIqError>,
    ) -> (Outcome, String, Option<Option<Duration>>) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(reason) => {
                tracing::warn!(pubsub = %key.pubsub, %reason, "push: publish not sent");
                return (
                    Outcome::TransientError,
                    format!("not sent: {reason}"),
                    Some(None),
                );
            }
        };
        let answer = describe(&reply);
        let (outcome, retry) = match reply {
            IqOutcome::Result(_) => (Outcome::Delivered, None),
            IqOutcome::Timeout => {
                tracing::info!(pubsub = %key.pubsub, node = %Redacted(&key.node), "push: no reply from the app server");
                (Outcome::Timeout, Some(None))
            }
            // The app server's server is out of reach (federation): the app server said
            // nothing, so the registration stays (push.md section 5).
            IqOutcome::Error {
                condition:
                    DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout,
                ..
            } => {
                tracing::info!(pubsub = %key.pubsub, "push: the app server's server is unreachable; registration kept");
                (Outcome::Unreachable, Some(None))
            }
            // Spec section 5: an error whose type is cancel means the app server will never
            // accept this registration (unknown node, device not registered...).
            IqOutcome::Error {
                type_: ErrorType::Cancel,
                condition,
                ..
            } => {
                tracing::info!(owner = %key.owner, pubsub = %key.pubsub, node = %Redacted(&key.node), ?condition, "push rejected by the app server: disabling the registration");
                self.disable(key).await;
                (Outcome::RejectedAndDisabled, None)
            }
            IqOutcome::Error {
                type_, condition, ..
            } => {
                tracing::info!(pubsub = %key.pubsub, ?type_, ?condition, "push: transient error from the app server");
                // RFC 6120 section 8.3.2: only `wait` says "retry after waiting".
                let retry = (type_ == ErrorType::Wait).then_some(None);
                (Outcome::TransientError, retry)
            }
        };
        (outcome, answer, retry)
    }

    /// What the HTTP push service's reply means (push.md section 8), and whether to try
    /// again: 5xx, 429 (after its `Retry-After`), no reply, no connection.
    async fn http_outcome(
        &self,
        key: &RegistrationKey,
        notification: &Notification,
        reply: HttpOutcome,
    ) -> (Outcome, String, Option<Option<Duration>>) {
        self.stats.http_reply(&reply);
        let answer = match &reply {
            HttpOutcome::Status(status) => format!("HTTP {status}"),
            HttpOutcome::RetryAfter(status, after) => {
                format!("HTTP {status} (retry after {} s)", after.as_secs())
            }
            HttpOutcome::Timeout => "timeout".to_owned(),
            HttpOutcome::Failed(reason) => format!("failed: {reason}"),
        };
        let (outcome, retry) = match reply {
            HttpOutcome::Status(200..=299) => (Outcome::Delivered, None),
            // MongoosePush v3: the device is not registered (any more) with APNs or FCM.
            HttpOutcome::Status(410) => {
                tracing::info!(owner = %key.owner, pubsub = %key.pubsub, node = %Redacted(&key.node), device_id = %Redacted(&notification.device_id), "push service: device not registered (410): disabling the registration");
                self.disable(key).await;
                (Outcome::RejectedAndDisabled, None)
            }
            HttpOutcome::RetryAfter(status, after) => {
                tracing::warn!(status, owner = %key.owner, after_s = after.as_secs(), "push service asks to retry later");
                (Outcome::TransientError, Some(Some(after)))
            }
            HttpOutcome::Status(status) => {
                tracing::warn!(status, owner = %key.owner, device_id = %Redacted(&notification.device_id), "push service answered an error status: registration kept");
                let retry = (status == 429 || status >= 500).then_some(None);
                (Outcome::TransientError, retry)
            }
            HttpOutcome::Timeout => {
                tracing::warn!(owner = %key.owner, device_id = %Redacted(&notification.device_id), "push service: no reply in time");
                (Outcome::Timeout, Some(None))
            }
            HttpOutcome::Failed(reason) => {
                tracing::warn!(owner = %key.owner, %reason, "push service unreachable: notification not sent");
                (Outcome::TransientError, Some(None))
            }
        };
        (outcome, answer, retry)
    }

    /// Disable a registration the app server or push service rejected for good.
    async fn disable(&self, key: &RegistrationKey) {
        if let Err(error) = self.store.disable(key).await {
            tracing::error!(%error, owner = %key.owner, "cannot disable a rejected push registration");
        }
        (self.on_disabled)(key);
    }
}

/// An IQ reply in words, for the admin API and the logs.
fn describe(reply: &IqOutcome) -> String {
    match reply {
        IqOutcome::Result(_) => "result".to_owned(),
        IqOutcome::Timeout => "timeout".to_owned(),
        IqOutcome::Error {
            type_, condition, ..
        } => {
            let type_ = format!("{type_:?}").to_lowercase();
            let condition = format!("{condition:?}");
            // DefinedCondition's debug name in XMPP's kebab case: ItemNotFound -> item-not-found.
            let mut kebab = String::new();
            for (i, c) in condition.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.extend(c.to_lowercase());
            }
            format!("error {type_} {kebab}")
        }
    }
}

/// Allows an action at most once per interval.
#[derive(Debug)]
struct RateLimited {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimited {
    fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: Mutex::new(None),
        }
    }

    fn allow(&self) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
