//! The publisher with a scripted app server and paused time.

use std::{collections::VecDeque, sync::Mutex};

use herald_core::sessions::SessionRegistry;
use jid::BareJid;
use xmpp_parsers::stanza_error::DefinedCondition;

use minidom::Element;
use xmpp_parsers::stanza_error::ErrorType;

use super::*;
use crate::{
    config::{Retry, VirtualPubsubHost},
    registrations::{EnabledInSession, MemoryRegistrations, Registration},
    route::Routes,
    vocabulary::{Payload, Skip},
};

/// How the fake app server answers each publish, in order.
#[derive(Debug, Clone)]
enum Answer {
    Result,
    Error(ErrorType, DefinedCondition),
    /// Never answers: the transport waits out the timeout, as the real one does.
    Silence,
}

#[derive(Default)]
struct FakeAppServer {
    answers: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Element>>,
}

impl FakeAppServer {
    fn answering(answers: impl IntoIterator<Item = Answer>) -> Arc<FakeAppServer> {
        Arc::new(FakeAppServer {
            answers: Mutex::new(answers.into_iter().collect()),
            received: Mutex::default(),
        })
    }

    fn received(&self) -> Vec<Element> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl IqTransport for FakeAppServer {
    async fn send_iq(&self, iq: Element, timeout: Duration) -> Result<IqOutcome, SendIqError> {
        self.received.lock().unwrap().push(iq.clone());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Result);
        Ok(match answer {
            Answer::Result => IqOutcome::Result(iq),
            Answer::Error(type_, condition) => IqOutcome::Error {
                type_,
                condition,
                element: iq,
            },
            Answer::Silence => {
                tokio::time::sleep(timeout).await;
                IqOutcome::Timeout
            }
        })
    }
}

struct Harness {
    routes: Routes,
    publisher: Publisher,
    app: Arc<FakeAppServer>,
    store: Arc<MemoryRegistrations>,
    /// Bob's sessions, where the registration each enabled is kept.
    sessions: Arc<SessionRegistry>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Settings without the sharing bounds in the way (tests of them set their own).
fn settings(workers: usize, queue_capacity: usize) -> PublisherSettings {
    PublisherSettings {
        workers: NonZeroUsize::new(workers).unwrap(),
        queue_capacity,
        reply_timeout: REPLY_TIMEOUT,
        drain_deadline: DRAIN_DEADLINE,
        per_user: usize::MAX,
        per_target: workers,
        // Retries have tests of their own.
        retry: Retry {
            max_retries: 0,
            ..Retry::default()
        },
        outbox_gather: outbox::GATHER,
        pacing: crate::config::Pacing::OFF,
    }
}

/// [`settings`] retrying up to `max_retries` times, from 1 s.
fn retrying(max_retries: u32) -> PublisherSettings {
    settings(2, 10).with_retry(
        Retry {
            max_retries,
            max_age: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            disable_after: None,
        },
        outbox::GATHER,
    )
}

fn harness(settings: PublisherSettings, app: Arc<FakeAppServer>) -> Harness {
    harness_with_hosts(settings, app, Vec::new(), None)
}

/// How the fake HTTP push service answers each POST, in order (then 200).
#[derive(Default)]
struct FakePushService {
    answers: Mutex<VecDeque<HttpOutcome>>,
    received: Mutex<Vec<Notification>>,
}

impl FakePushService {
    fn answering(answers: impl IntoIterator<Item = HttpOutcome>) -> Arc<FakePushService> {
        Arc::new(FakePushService {
            answers: Mutex::new(answers.into_iter().collect()),
            received: Mutex::default(),
        })
    }

    fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl HttpPush for FakePushService {
    fn api_version(&self) -> crate::mongoosepush::ApiVersion {
        crate::mongoosepush::ApiVersion::V3
    }

    async fn post(&self, notification: &Notification) -> HttpOutcome {
        self.received.lock().unwrap().push(notification.clone());
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(HttpOutcome::Status(200))
    }
}

fn harness_with_hosts(
    settings: PublisherSettings,
    app: Arc<FakeAppServer>,
    virtual_hosts: Vec<VirtualPubsubHost>,
    http: Option<Arc<dyn HttpPush>>,
) -> Harness {
    let transport: Arc<dyn IqTransport> = app.clone();
    build_harness(settings, app, transport, virtual_hosts, http)
}

/// A harness whose publishes go to `transport` (its `app` receives nothing).
fn harness_with_transport(settings: PublisherSettings, transport: Arc<dyn IqTransport>) -> Harness {
    build_harness(
        settings,
        FakeAppServer::answering([]),
        transport,
        Vec::new(),
        None,
    )
}

fn build_harness(
    settings: PublisherSettings,
    app: Arc<FakeAppServer>,
    transport: Arc<dyn IqTransport>,
    virtual_hosts: Vec<VirtualPubsubHost>,
    http: Option<Arc<dyn HttpPush>>,
) -> Harness {
    let store = Arc::new(MemoryRegistrations::default());
    let sessions = Arc::new(SessionRegistry::default());
    let on_disabled: OnDisabled = {
        let sessions = Arc::clone(&sessions);
        Arc::new(move |key| EnabledInSession::forget_key(&sessions, key))
    };
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let publisher = Publisher::start(
        settings,
        PublisherParts {
            transport,
            store: store.clone(),
            on_disabled,
            stats: stats.clone(),
            http: http.clone(),
        },
        shutdown.clone(),
        &tasks,
    );
    Harness {
        routes: Routes::new(virtual_hosts, http.is_some()),
        publisher,
        app,
        store,
        sessions,
        stats,
        shutdown,
        tasks,
    }
}

fn bob() -> BareJid {
    BareJid::new("bob@example.com").unwrap()
}

fn registration(node: &str) -> Registration {
    Registration::new(
        RegistrationKey {
            owner: bob(),
            pubsub: BareJid::new("push.example.com").unwrap(),
            node: node.into(),
        },
        Default::default(),
    )
}

fn payload() -> Payload {
    Payload::summary(1, "alice@example.com", "hi")
}

impl Harness {
    async fn enabled(&self, node: &str) -> Registration {
        let registration = registration(node);
        self.store.enable(&registration).await.unwrap();
        registration
    }

    fn submit(&self, registration: &Registration) -> Result<Submitted, Skip> {
        self.send(&bob(), registration, &payload())
    }

    /// Submit the payload for `message` through the outbox, as the pipeline does.
    async fn submit_pending(&self, registration: &Registration, message: &str) -> Submitted {
        let route = self
            .routes
            .choose(&bob(), registration, &payload())
            .unwrap();
        self.publisher
            .submit_pending(
                registration.key.clone(),
                route,
                RequestId::next(),
                Some(message.into()),
            )
            .await
    }

    /// What the pipeline does with one delivery: route it, count a skip, queue it.
    fn send(
        &self,
        recipient: &BareJid,
        registration: &Registration,
        payload: &Payload,
    ) -> Result<Submitted, Skip> {
        match self.routes.choose(recipient, registration, payload) {
            Ok(route) => Ok(self.publisher.submit(registration.key.clone(), route)),
            Err(skip) => {
                self.stats.skipped(skip);
                Err(skip)
            }
        }
    }

    async fn registered(&self) -> Vec<String> {
        self.store
            .list(&bob())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key.node)
            .collect()
    }

    /// Bob's phone session is bound and enabled `registration`.
    fn enabled_on_phone(&self, registration: &Registration) {
        let phone = jid::FullJid::new("bob@example.com/phone").unwrap();
        let (handle, _inbox) = herald_core::sessions::SessionHandle::new(phone.clone());
        self.sessions.bind(handle);
        let session = self.sessions.get(&phone).unwrap();
        EnabledInSession::remember(&session, registration.key.clone());
        assert_eq!(
            EnabledInSession::of_session(&self.sessions, &phone),
            Some(registration.key.clone())
        );
    }

    /// Let the dispatcher and workers run until they wait on something.
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_result_is_delivered_and_sent_from_the_recipients_domain() {
    let h = harness(settings(2, 10), FakeAppServer::answering([Answer::Result]));
    let r = h.enabled("n1").await;
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
    let sent = h.app.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attr("from"), Some("example.com"));
    assert_eq!(sent[0].attr("to"), Some("push.example.com"));
    assert_eq!(h.registered().await, ["n1"]);
}

#[tokio::test(start_paused = true)]
async fn cancel_error_disables_registration() {
    let h = harness(
        settings(1, 10),
        FakeAppServer::answering([Answer::Error(
            ErrorType::Cancel,
            DefinedCondition::ItemNotFound,
        )]),
    );
    let r = h.enabled("n1").await;
    let keep = h.enabled("n2").await;
    h.enabled_on_phone(&r);
    let _ = h.submit(&r);
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::RejectedAndDisabled), 1);
    assert_eq!(h.registered().await, [keep.key.node]);
    assert_eq!(
        EnabledInSession::of_session(
            &h.sessions,
            &jid::FullJid::new("bob@example.com/phone").unwrap()
        ),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_remote_server_keeps_the_registration_and_counts_as_unreachable() {
    // The bounce federation gives when the app server's server cannot be reached is of type
    // cancel, but it is not the app server's answer.
    let h = harness(
        settings(1, 10),
        FakeAppServer::answering([
            Answer::Error(ErrorType::Cancel, DefinedCondition::RemoteServerNotFound),
            Answer::Error(ErrorType::Wait, DefinedCondition::RemoteServerTimeout),
        ]),
    );
    let r = h.enabled("n1").await;
    for _ in 0..2 {
        let _ = h.submit(&r);
    }
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Unreachable), 2);
    assert_eq!(h.stats.notifications(Outcome::RejectedAndDisabled), 0);
    assert_eq!(h.registered().await, ["n1"]);
}

#[tokio::test(start_paused = true)]
async fn wait_modify_and_auth_errors_keep_the_registration() {
    let h = harness(
        settings(1, 10),
        FakeAppServer::answering([
            Answer::Error(ErrorType::Wait, DefinedCondition::ResourceConstraint),
            Answer::Error(ErrorType::Modify, DefinedCondition::BadRequest),
            Answer::Error(ErrorType::Auth, DefinedCondition::Forbidden),
        ]),
    );
    let r = h.enabled("n1").await;
    for _ in 0..3 {
        let _ = h.submit(&r);
    }
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::TransientError), 3);
    assert_eq!(h.registered().await, ["n1"]);
}

#[tokio::test(start_paused = true)]
async fn timeout_after_32_seconds_keeps_the_registration() {
    let h = harness(settings(1, 10), FakeAppServer::answering([Answer::Silence]));
    let r = h.enabled("n1").await;
    let _ = h.submit(&r);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(h.stats.notifications(Outcome::Timeout), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Timeout), 1);
    assert_eq!(h.registered().await, ["n1"]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_app_server_does_not_block_later_notifications() {
    // Two workers: one waits on the silent app server, the other keeps publishing.
    let h = harness(
        settings(2, 10),
        FakeAppServer::answering([Answer::Silence, Answer::Result, Answer::Result]),
    );
    let r = h.enabled("n1").await;
    for _ in 0..3 {
        assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 2);
    assert_eq!(h.stats.notifications(Outcome::Timeout), 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_workers_publishes_are_in_flight() {
    let h = harness(
        settings(2, 10),
        FakeAppServer::answering(std::iter::repeat_n(Answer::Silence, 5)),
    );
    let r = h.enabled("n1").await;
    for _ in 0..5 {
        let _ = h.submit(&r);
    }
    h.settle().await;
    assert_eq!(h.app.received().len(), 2);
    tokio::time::sleep(REPLY_TIMEOUT + Duration::from_millis(1)).await;
    h.settle().await;
    assert_eq!(h.app.received().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn queue_full_drops_and_counts() {
    // One worker held by a silent app server, one queue slot.
    let h = harness(
        settings(1, 1),
        FakeAppServer::answering(std::iter::repeat_n(Answer::Silence, 3)),
    );
    let r = h.enabled("n1").await;
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    h.settle().await; // the worker takes the first
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    assert_eq!(h.submit(&r), Ok(Submitted::QueueFull));
    assert_eq!(h.submit(&r), Ok(Submitted::QueueFull));
    assert_eq!(h.stats.notifications(Outcome::DroppedQueueFull), 2);
}

fn registration_of(owner: &str, pubsub: &str, node: &str) -> Registration {
    Registration::new(
        RegistrationKey {
            owner: BareJid::new(owner).unwrap(),
            pubsub: BareJid::new(pubsub).unwrap(),
            node: node.into(),
        },
        Default::default(),
    )
}

#[tokio::test(start_paused = true)]
async fn one_recipient_cannot_take_more_than_their_share_of_the_queue() {
    let mut settings = settings(1, 100);
    settings.per_user = 3;
    let h = harness(
        settings,
        FakeAppServer::answering(std::iter::repeat_n(Answer::Silence, 10)),
    );
    let flooded = registration_of("bob@example.com", "push.example.com", "n");
    let other = registration_of("carol@example.com", "push.example.com", "n");
    let payload = payload();
    let submit = |r: &Registration| h.send(&r.key.owner, r, &payload);
    for _ in 0..3 {
        assert_eq!(submit(&flooded), Ok(Submitted::Queued));
    }
    assert_eq!(submit(&flooded), Ok(Submitted::UserLimit));
    assert_eq!(h.stats.notifications(Outcome::DroppedUserLimit), 1);
    // Another recipient still gets in while the flooded one waits.
    assert_eq!(submit(&other), Ok(Submitted::Queued));
    // Once a publish of the flooded recipient ends, they may queue one more.
    tokio::time::sleep(REPLY_TIMEOUT + Duration::from_millis(1)).await;
    h.settle().await;
    assert_eq!(submit(&flooded), Ok(Submitted::Queued));
}

#[tokio::test(start_paused = true)]
async fn an_app_server_that_never_answers_does_not_hold_the_workers_of_another() {
    // Three workers, two at most per app server: the silent one gets two, and the jobs for
    // the other app server go ahead of the third job queued for the silent one.
    let mut settings = settings(3, 100);
    settings.per_target = 2;
    let app = Arc::new(RoutedAppServer::default());
    let h = harness_with_transport(settings, app.clone());
    let silent = registration_of("bob@example.com", "silent.example.net", "n");
    let alive = registration_of("carol@example.com", "push.example.com", "n");
    let payload = payload();
    let submit = |r: &Registration| h.send(&r.key.owner, r, &payload);
    for _ in 0..3 {
        assert_eq!(submit(&silent), Ok(Submitted::Queued));
    }
    for _ in 0..5 {
        assert_eq!(submit(&alive), Ok(Submitted::Queued));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.settle().await;
    assert_eq!(
        h.stats.notifications(Outcome::Delivered),
        5,
        "the live app server's"
    );
    assert_eq!(
        app.sent_to("silent.example.net"),
        2,
        "two in flight, one waiting aside"
    );
    tokio::time::sleep(REPLY_TIMEOUT).await;
    h.settle().await;
    assert_eq!(
        app.sent_to("silent.example.net"),
        3,
        "the one set aside went later"
    );
}

/// An app server per domain: `silent.*` never answers, the others answer at once.
#[derive(Default)]
struct RoutedAppServer {
    received: Mutex<Vec<String>>,
}

impl RoutedAppServer {
    fn sent_to(&self, domain: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|to| *to == domain)
            .count()
    }
}

#[async_trait::async_trait]
impl IqTransport for RoutedAppServer {
    async fn send_iq(&self, iq: Element, timeout: Duration) -> Result<IqOutcome, SendIqError> {
        let to = iq.attr("to").unwrap_or_default().to_owned();
        self.received.lock().unwrap().push(to.clone());
        if to.starts_with("silent.") {
            tokio::time::sleep(timeout).await;
            return Ok(IqOutcome::Timeout);
        }
        Ok(IqOutcome::Result(iq))
    }
}

#[test]
fn the_queue_full_warning_is_rate_limited() {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let limit = RateLimited::new(FULL_WARNING_EVERY);
            assert!(limit.allow());
            assert!(!limit.allow());
            tokio::time::sleep(FULL_WARNING_EVERY).await;
            assert!(limit.allow());
            assert!(!limit.allow());
        });
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_in_flight_publishes_up_to_the_deadline() {
    let h = harness(settings(1, 10), FakeAppServer::answering([Answer::Silence]));
    let r = h.enabled("n1").await;
    let _ = h.submit(&r);
    h.settle().await;
    let started = Instant::now();
    h.shutdown.cancel();
    h.tasks.close();
    h.tasks.wait().await;
    assert_eq!(started.elapsed(), DRAIN_DEADLINE);
    assert_eq!(h.submit(&r), Ok(Submitted::Stopped));
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_publish_in_flight_finish() {
    let h = harness(
        PublisherSettings {
            reply_timeout: Duration::from_secs(2),
            ..settings(1, 10)
        },
        FakeAppServer::answering([Answer::Silence]),
    );
    let r = h.enabled("n1").await;
    let _ = h.submit(&r);
    h.settle().await;
    let started = Instant::now();
    h.shutdown.cancel();
    h.tasks.close();
    h.tasks.wait().await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(h.stats.notifications(Outcome::Timeout), 1);
}

#[tokio::test(start_paused = true)]
async fn registrations_on_a_virtual_pubsub_host_are_not_published_over_xmpp() {
    let h = harness_with_hosts(
        settings(1, 10),
        FakeAppServer::answering([]),
        vec![VirtualPubsubHost::parse("push.@HOST@").unwrap()],
        None,
    );
    let r = h.enabled("n1").await;
    assert_eq!(h.submit(&r), Err(Skip::VirtualPubsubHost));
    h.settle().await;
    assert!(h.app.received().is_empty());
    assert_eq!(h.stats.skips(), 1);
}

fn http_harness(service: &Arc<FakePushService>) -> Harness {
    harness_with_hosts(
        settings(2, 10),
        FakeAppServer::answering([]),
        vec![VirtualPubsubHost::parse("push.example.com").unwrap()],
        Some(service.clone()),
    )
}

impl Harness {
    async fn enabled_with(&self, node: &str, form: &[(&str, &str)]) -> Registration {
        let mut registration = registration(node);
        registration.form = form
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        self.store.enable(&registration).await.unwrap();
        registration
    }
}

const DEVICE: &[(&str, &str)] = &[("service", "fcm"), ("device_id", "D1")];

#[tokio::test(start_paused = true)]
async fn registrations_on_a_virtual_pubsub_host_are_posted_to_the_http_service() {
    let service = FakePushService::answering([]);
    let h = http_harness(&service);
    let r = h.enabled_with("n1", DEVICE).await;
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    h.settle().await;
    assert!(h.app.received().is_empty(), "nothing over XMPP");
    let posted = service.received();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].device_id, "D1");
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
}

#[tokio::test(start_paused = true)]
async fn a_410_disables_the_registration_and_forgets_it_in_sessions() {
    let service = FakePushService::answering([HttpOutcome::Status(410)]);
    let h = http_harness(&service);
    let r = h.enabled_with("n1", DEVICE).await;
    let keep = h.enabled_with("n2", DEVICE).await;
    h.enabled_on_phone(&r);
    let _ = h.submit(&r);
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::RejectedAndDisabled), 1);
    assert_eq!(h.registered().await, [keep.key.node]);
    assert_eq!(
        EnabledInSession::of_session(
            &h.sessions,
            &jid::FullJid::new("bob@example.com/phone").unwrap()
        ),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn other_statuses_timeouts_and_failures_keep_the_registration() {
    let service = FakePushService::answering([
        HttpOutcome::Status(500),
        HttpOutcome::Status(503),
        HttpOutcome::Status(400),
        HttpOutcome::Timeout,
        HttpOutcome::Failed("connection refused".into()),
    ]);
    let h = http_harness(&service);
    let r = h.enabled_with("n1", DEVICE).await;
    for _ in 0..5 {
        let _ = h.submit(&r);
        h.settle().await;
    }
    assert_eq!(service.received().len(), 5);
    assert_eq!(h.stats.notifications(Outcome::TransientError), 4);
    assert_eq!(h.stats.notifications(Outcome::Timeout), 1);
    assert_eq!(h.registered().await, ["n1"]);
}

#[tokio::test(start_paused = true)]
async fn options_without_service_or_device_id_are_skipped_with_their_reason() {
    let service = FakePushService::answering([]);
    let h = http_harness(&service);
    let no_service = h.enabled_with("n1", &[("device_id", "D1")]).await;
    let no_device = h.enabled_with("n2", &[("service", "apns")]).await;
    assert_eq!(h.submit(&no_service), Err(Skip::MissingService));
    assert_eq!(h.submit(&no_device), Err(Skip::MissingDeviceId));
    h.settle().await;
    assert!(service.received().is_empty());
    assert_eq!(h.stats.skips(), 2);
    assert_eq!(h.registered().await, ["n1", "n2"]);
}

#[tokio::test(start_paused = true)]
async fn other_pubsub_hosts_still_go_over_xmpp_beside_the_http_service() {
    let service = FakePushService::answering([]);
    let h = harness_with_hosts(
        settings(2, 10),
        FakeAppServer::answering([Answer::Result]),
        vec![VirtualPubsubHost::parse("virtual.example.com").unwrap()],
        Some(service.clone()),
    );
    let r = h.enabled_with("n1", DEVICE).await;
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    h.settle().await;
    assert_eq!(h.app.received().len(), 1);
    assert!(service.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wait_error_twice_then_a_result_is_one_delivered_notification_after_two_retries() {
    let wait = Answer::Error(ErrorType::Wait, DefinedCondition::ResourceConstraint);
    let h = harness(
        retrying(5),
        FakeAppServer::answering([wait.clone(), wait, Answer::Result]),
    );
    let r = h.enabled("n1").await;
    let started = Instant::now();
    assert_eq!(h.submit(&r), Ok(Submitted::Queued));
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.settle().await;
    assert_eq!(h.app.received().len(), 3);
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
    assert_eq!(h.stats.notifications(Outcome::TransientError), 2);
    assert_eq!(h.stats.retries(RetryEvent::Retried), 2);
    assert_eq!(h.stats.retries(RetryEvent::GaveUp), 0);
    assert_eq!(
        h.registered().await,
        ["n1"],
        "a sick app server keeps its registration"
    );
    // Backoff with jitter: the first wait is 0.5-1 s, the second 1-2 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_unreachable_app_servers_are_retried_and_modify_errors_are_not() {
    let h = harness(
        retrying(5),
        FakeAppServer::answering([
            Answer::Silence,
            Answer::Error(ErrorType::Cancel, DefinedCondition::RemoteServerNotFound),
            Answer::Result,
            Answer::Error(ErrorType::Modify, DefinedCondition::BadRequest),
        ]),
    );
    let r = h.enabled("n1").await;
    h.submit(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    assert_eq!(h.app.received().len(), 3, "timeout, unreachable, result");
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
    h.submit(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    assert_eq!(
        h.app.received().len(),
        4,
        "a modify error is an answer: not retried"
    );
    assert_eq!(h.stats.retries(RetryEvent::Retried), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries_and_are_counted_as_given_up() {
    let wait = Answer::Error(ErrorType::Wait, DefinedCondition::ServiceUnavailable);
    let h = harness(retrying(2), FakeAppServer::answering(vec![wait; 5]));
    let r = h.enabled("n1").await;
    h.submit(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    assert_eq!(h.app.received().len(), 3, "the first try and two retries");
    assert_eq!(h.stats.retries(RetryEvent::Retried), 2);
    assert_eq!(h.stats.retries(RetryEvent::GaveUp), 1);
}

#[tokio::test(start_paused = true)]
async fn a_registration_that_only_fails_for_disable_after_is_disabled() {
    let wait = Answer::Error(ErrorType::Wait, DefinedCondition::ServiceUnavailable);
    let settings = settings(2, 10).with_retry(
        Retry {
            max_retries: 10,
            max_age: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            disable_after: Some(Duration::from_secs(5)),
        },
        outbox::GATHER,
    );
    let h = harness(settings, FakeAppServer::answering(vec![wait; 20]));
    let r = h.enabled("n1").await;
    h.enabled("n2").await;
    h.submit(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    h.settle().await;
    assert_eq!(h.stats.retries(RetryEvent::DisabledFailing), 1);
    assert_eq!(h.registered().await, ["n2"]);
}

#[tokio::test(start_paused = true)]
async fn an_http_429_is_retried_no_sooner_than_its_retry_after() {
    let service = FakePushService::answering([
        HttpOutcome::RetryAfter(429, Duration::from_secs(30)),
        HttpOutcome::Status(503),
        HttpOutcome::Status(200),
    ]);
    let h = harness_with_hosts(
        retrying(5),
        FakeAppServer::answering([]),
        vec![VirtualPubsubHost::parse("push.example.com").unwrap()],
        Some(service.clone()),
    );
    let mut r = registration("n1");
    r.form.insert("service".into(), "apns".into());
    r.form.insert("device_id".into(), "d1".into());
    h.store.enable(&r).await.unwrap();
    h.submit(&r).unwrap();
    tokio::time::sleep(Duration::from_secs(29)).await;
    h.settle().await;
    assert_eq!(service.received().len(), 1, "Retry-After is honoured");
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    assert_eq!(service.received().len(), 3, "then a 5xx is retried too");
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_notification_is_in_the_outbox_until_delivered_and_sent_again_from_it() {
    let wait = Answer::Error(ErrorType::Wait, DefinedCondition::ServiceUnavailable);
    let h = harness(retrying(5), FakeAppServer::answering([wait]));
    let r = h.enabled("n1").await;
    h.settle().await;
    assert_eq!(h.submit_pending(&r, "m1").await, Submitted::Queued);
    // Not answered within the outbox's gathering time: written; waiting for its retry (at
    // least half a second), still pending, and the same message is not queued twice.
    tokio::time::sleep(outbox::GATHER * 5).await;
    h.settle().await;
    assert_eq!(h.store.pending().await.unwrap().len(), 1);
    assert_eq!(h.submit_pending(&r, "m1").await, Submitted::AlreadyPending);
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
    assert!(
        h.store.pending().await.unwrap().is_empty(),
        "delivered: out of the outbox"
    );
    // Delivered at once: never written.
    assert_eq!(h.submit_pending(&r, "m3").await, Submitted::Queued);
    tokio::time::sleep(outbox::GATHER * 5).await;
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 2);
    assert!(h.store.pending().await.unwrap().is_empty());

    // What a crash left in the outbox is sent by a new start.
    let route = h.routes.choose(&bob(), &r, &payload()).unwrap();
    let kept = PendingPush {
        key: r.key.clone(),
        message: Some("m2".into()),
        route: route.stored(),
        created_at: SystemTime::now(),
    };
    let id = 42;
    h.store.add_pending(&[(id, kept.clone())]).await.unwrap();
    assert_eq!(h.publisher.resubmit(id, kept), Submitted::Queued);
    h.settle().await;
    tokio::time::sleep(outbox::GATHER * 5).await;
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 3);
    assert!(h.store.pending().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_is_notified_once_per_registration_and_to_each_of_them() {
    let h = harness(retrying(5), FakeAppServer::answering([]));
    let (phone, tablet) = (h.enabled("n1").await, h.enabled("n2").await);
    h.settle().await;
    assert_eq!(
        h.submit_pending(&phone, "archive:1").await,
        Submitted::Queued
    );
    assert_eq!(
        h.submit_pending(&phone, "archive:1").await,
        Submitted::AlreadyPending
    );
    assert_eq!(
        h.submit_pending(&tablet, "archive:1").await,
        Submitted::Queued,
        "the same message, another registration"
    );
    assert_eq!(
        h.submit_pending(&phone, "archive:2").await,
        Submitted::Queued,
        "another message, the same registration"
    );
    h.settle().await;
    assert_eq!(h.stats.notifications(Outcome::Delivered), 3);
    assert_eq!(
        h.submit_pending(&tablet, "archive:1").await,
        Submitted::AlreadyPending,
        "delivered messages are remembered too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_of_a_kept_publish_sends_the_same_iq_again() {
    let wait = Answer::Error(ErrorType::Wait, DefinedCondition::ServiceUnavailable);
    let h = harness(
        retrying(5),
        FakeAppServer::answering([wait.clone(), wait, Answer::Result]),
    );
    let r = h.enabled("n1").await;
    h.settle().await;
    let Route::Xmpp(built) = h.routes.choose(&bob(), &r, &payload()).unwrap() else {
        panic!("an XMPP route")
    };
    assert_eq!(h.submit_pending(&r, "m1").await, Submitted::Queued);
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.settle().await;
    // The first try sends the IQ as built; the retries send it as the outbox kept it,
    // parsed again.
    let received = h.app.received();
    assert_eq!(received.len(), 3);
    for (attempt, iq) in received.iter().enumerate() {
        assert_eq!(iq, &built, "attempt {attempt}");
    }
    assert_eq!(h.stats.notifications(Outcome::Delivered), 1);
    assert_eq!(h.stats.retries(RetryEvent::Retried), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_gathering_time_a_notification_is_in_the_outbox_before_it_is_queued() {
    let mut strict = retrying(5);
    strict.outbox_gather = Duration::ZERO;
    let h = harness(strict, FakeAppServer::answering([Answer::Silence]));
    let r = h.enabled("n1").await;
    h.settle().await;
    assert_eq!(h.submit_pending(&r, "m1").await, Submitted::Queued);
    // Committed when the submission returned, before any time passed.
    assert_eq!(h.store.pending().await.unwrap().len(), 1);
}

/// A payload saying `body`.
fn saying(body: &str) -> Payload {
    Payload::summary(1, "alice@example.com", body)
}

fn body_of(iq: &Element) -> String {
    let text = String::from(iq);
    let at = text.find("last-message-body").unwrap();
    text[at..]
        .split("<value>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_burst_beyond_the_rate_is_held_and_coalesced_into_its_last_notification_which_is_kept_meanwhile()
 {
    let pacing = crate::config::Pacing {
        rate_limit: 1,
        burst: 2,
        coalesce_window: Duration::ZERO,
    };
    let h = harness(
        settings(2, 100).with_pacing(pacing),
        FakeAppServer::answering([]),
    );
    let r = h.enabled("n1").await;
    h.settle().await;
    let mut submitted = Vec::new();
    for n in 1..=10 {
        let route = h
            .routes
            .choose(&bob(), &r, &saying(&format!("m{n}")))
            .unwrap();
        submitted.push(
            h.publisher
                .submit_paced(
                    r.key.clone(),
                    route,
                    RequestId::next(),
                    Some(format!("m{n}")),
                    false,
                )
                .await,
        );
    }
    assert_eq!(&submitted[..2], [Submitted::Queued, Submitted::Queued]);
    assert!(submitted[2..].iter().all(|s| *s == Submitted::Held));
    assert_eq!(h.stats.paced(PaceEvent::Held), 1);
    assert_eq!(h.stats.paced(PaceEvent::Coalesced), 7);
    // Held past the outbox's gathering time: the held one is kept, the coalesced are not.
    tokio::time::sleep(outbox::GATHER * 5).await;
    h.settle().await;
    let pending = h.store.pending().await.unwrap();
    assert_eq!(pending.len(), 1, "only the last held notification is kept");
    assert_eq!(pending[0].1.message.as_deref(), Some("m10"));
    // A token comes a second later: the last message goes, and leaves the outbox.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.settle().await;
    let bodies: Vec<String> = h.app.received().iter().map(body_of).collect();
    assert_eq!(bodies, ["m1", "m2", "m10"]);
    assert!(h.store.pending().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_call_goes_at_once_whatever_the_pacing() {
    let pacing = crate::config::Pacing {
        rate_limit: 1,
        burst: 1,
        coalesce_window: Duration::from_secs(60),
    };
    let h = harness(
        settings(1, 100).with_pacing(pacing),
        FakeAppServer::answering([]),
    );
    let r = h.enabled("n1").await;
    h.settle().await;
    for n in 1..=3 {
        let route = h
            .routes
            .choose(&bob(), &r, &saying(&format!("m{n}")))
            .unwrap();
        h.publisher
            .submit_paced(r.key.clone(), route, RequestId::next(), None, false)
            .await;
    }
    let call = Payload::call("alice@example.com", "propose", "c1");
    let route = h.routes.choose(&bob(), &r, &call).unwrap();
    let urgent = h
        .publisher
        .submit_paced(r.key.clone(), route, RequestId::next(), None, true)
        .await;
    assert_eq!(urgent, Submitted::Queued);
    h.settle().await;
    let received = h.app.received();
    assert_eq!(
        received.len(),
        2,
        "the first message and the call; the rest are held"
    );
    assert_eq!(
        received
            .iter()
            .filter(|iq| String::from(*iq).contains("propose"))
            .count(),
        1
    );
    assert_eq!(h.stats.paced(PaceEvent::Urgent), 1);
}

#[tokio::test]
async fn jobs_set_aside_go_in_order_for_each_app_server_and_a_full_one_holds_no_other() {
    let h = harness(settings(1, 100), FakeAppServer::answering([]));
    let job = |pubsub: &str, attempt: u32| {
        let r = registration_of("bob@example.com", pubsub, &attempt.to_string());
        let what = h.routes.choose(&bob(), &r, &payload()).unwrap();
        Job {
            key: r.key,
            what,
            request: RequestId::next(),
            reply: None,
            outbox: None,
            kept: None,
            attempt,
            decided: SystemTime::now(),
        }
    };
    let mut aside = Aside::default();
    for attempt in 0..3 {
        let waiting = job("full.example.net", attempt);
        aside.push_back(waiting.target(), waiting);
    }
    let other = job("push.example.com", 10);
    aside.push_back(other.target(), other);
    let urgent = job("full.example.net", 99);
    aside.push_front(urgent.target(), urgent);
    assert_eq!(aside.len(), 5);

    // The app server at its share keeps its jobs; the other's goes ahead.
    let full = Target::Pubsub("full.example.net".into());
    let room = |target: &Target| *target != full;
    assert_eq!(aside.take(room).map(|j| j.attempt), Some(10));
    assert!(aside.take(room).is_none());
    assert_eq!(aside.len(), 4);

    // With room again: the urgent one first, then the others in the order they came.
    let order: Vec<u32> = std::iter::from_fn(|| aside.take(|_| true))
        .map(|j| j.attempt)
        .collect();
    assert_eq!(order, [99, 0, 1, 2]);
    assert!(aside.is_empty());
}
