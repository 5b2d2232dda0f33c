//! The pipeline end to end inside the crate: real plugins, the memory store, a recording
//! transport.

use std::{num::NonZeroUsize, sync::Mutex, time::Duration};

use jid::{BareJid, FullJid};
use minidom::Element;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::*;
use crate::{
    events::Message,
    plugin::{Defaults, Enhanced},
    publisher::{IqOutcome, IqTransport, PublisherParts, PublisherSettings, SendIqError},
    registrations::{MemoryRegistrations, RegistrationKey},
};

#[derive(Default)]
struct Recorder(Mutex<Vec<Element>>);

#[async_trait::async_trait]
impl IqTransport for Recorder {
    async fn send_iq(&self, iq: Element, _timeout: Duration) -> Result<IqOutcome, SendIqError> {
        self.0.lock().unwrap().push(iq.clone());
        Ok(IqOutcome::Result(iq))
    }
}

struct Harness {
    pipeline: Pipeline,
    store: Arc<MemoryRegistrations>,
    sent: Arc<Recorder>,
    _tasks: TaskTracker,
}

fn harness(plugin: Arc<dyn Plugin>, queue_capacity: usize) -> Harness {
    let store = Arc::new(MemoryRegistrations::default());
    let stats = Arc::new(Stats::default());
    let sent = Arc::new(Recorder::default());
    let tasks = TaskTracker::new();
    let publisher = Publisher::start(
        PublisherSettings {
            queue_capacity,
            ..PublisherSettings::for_workers(NonZeroUsize::new(4).unwrap())
        },
        PublisherParts {
            transport: sent.clone(),
            store: store.clone(),
            on_disabled: Arc::new(|_| {}),
            stats: stats.clone(),
            http: None,
        },
        CancellationToken::new(),
        &tasks,
    );
    Harness {
        pipeline: Pipeline {
            plugin,
            store: store.clone(),
            routes: crate::route::Routes::default(),
            publisher,
            stats,
            unread: None,
            calls: crate::unread::Calls::default(),
            push_retract: true,
        },
        store,
        sent,
        _tasks: tasks,
    }
}

fn chat(body: &str) -> Message {
    Message::parse(
        format!(
            "<message xmlns='jabber:client' from='alice@example.com/laptop' \
             to='bob@example.com' type='chat' id='m-{body}'><body>{body}</body></message>"
        )
        .parse()
        .unwrap(),
    )
    .unwrap()
}

fn key(node: &str) -> RegistrationKey {
    RegistrationKey {
        owner: BareJid::new("bob@example.com").unwrap(),
        pubsub: BareJid::new("push.example.com").unwrap(),
        node: node.into(),
    }
}

impl Harness {
    async fn enable(&self, node: &str) {
        self.store
            .enable(&Registration::new(key(node), Default::default()))
            .await
            .unwrap();
    }

    async fn published_nodes(&self) -> Vec<String> {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let mut nodes: Vec<String> = self
            .sent
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|iq| {
                iq.get_child("pubsub", crate::publisher::PUBSUB)
                    .and_then(|p| p.get_child("publish", crate::publisher::PUBSUB))
                    .and_then(|p| p.attr("node"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        nodes.sort();
        nodes
    }
}

#[tokio::test]
async fn an_offline_recipient_with_a_registration_gets_exactly_one_push() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let mut notified = Notified::default();
    let queued = h
        .pipeline
        .notify(&Event::Chat(chat("hi")), false, &mut notified)
        .await;
    assert_eq!(queued, Ok(1));
    assert!(notified.contains(&key("n1")));
    assert_eq!(h.published_nodes().await, ["n1"]);
}

#[tokio::test]
async fn an_online_recipient_gets_no_push() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let result = h
        .pipeline
        .notify(&Event::Chat(chat("hi")), true, &mut Notified::default())
        .await;
    assert_eq!(result, Err(Skip::RecipientOnline));
    assert!(h.published_nodes().await.is_empty());
}

#[tokio::test]
async fn no_push_when_not_enabled() {
    let h = harness(Arc::new(Defaults), 100);
    let result = h
        .pipeline
        .notify(&Event::Chat(chat("hi")), false, &mut Notified::default())
        .await;
    assert_eq!(result, Err(Skip::NoRegistrations));
}

#[tokio::test]
async fn a_bodiless_message_is_skipped_before_loading_registrations() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let result = h
        .pipeline
        .notify(&Event::Chat(chat("")), false, &mut Notified::default())
        .await;
    assert_eq!(result, Err(Skip::EmptyBody));
}

#[tokio::test]
async fn two_registrations_get_one_push_each() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    h.enable("n2").await;
    let queued = h
        .pipeline
        .notify(&Event::Chat(chat("hi")), false, &mut Notified::default())
        .await;
    assert_eq!(queued, Ok(2));
    assert_eq!(h.published_nodes().await, ["n1", "n2"]);
}

#[tokio::test]
async fn a_rerouted_message_never_pushes_to_the_same_registration_twice() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let message = Event::Chat(chat("hi"));
    let mut notified = Notified::default();
    h.pipeline
        .notify(&message, false, &mut notified)
        .await
        .unwrap();
    // The message comes back (from offline storage, as metadata text), and a second device
    // registered meanwhile.
    let mut meta = herald_core::envelope::Meta::new();
    meta.set(notified);
    let mut notified = herald_core::envelope::Meta::from_stored(&meta.to_stored())
        .get::<Notified>()
        .unwrap();
    assert_eq!(
        h.pipeline.notify(&message, false, &mut notified).await,
        Err(Skip::AlreadyNotified)
    );
    h.enable("n2").await;
    assert_eq!(
        h.pipeline.notify(&message, false, &mut notified).await,
        Ok(1)
    );
    assert_eq!(h.published_nodes().await, ["n1", "n2"]);
}

#[tokio::test]
async fn a_notification_dropped_by_a_full_queue_is_not_recorded_as_notified() {
    let mut h = harness(Arc::new(Defaults), 1);
    // One queue slot and a dispatcher that never runs: the second is dropped.
    let (publisher, _dispatcher) = Publisher::new(
        PublisherSettings {
            queue_capacity: 1,
            ..PublisherSettings::for_workers(NonZeroUsize::new(4).unwrap())
        },
        Arc::new(Stats::default()),
    );
    h.pipeline.publisher = publisher;
    h.enable("n1").await;
    h.enable("n2").await;
    let mut notified = Notified::default();
    let queued = h
        .pipeline
        .notify(&Event::Chat(chat("hi")), false, &mut notified)
        .await;
    assert_eq!(queued, Ok(1));
    assert_eq!(notified.iter().count(), 1);
}

#[tokio::test]
async fn enhanced_pushes_an_unacknowledged_message_to_the_sessions_registration_only() {
    let h = harness(Arc::new(Enhanced), 100);
    h.enable("phone").await;
    h.enable("tablet").await;
    let session = FullJid::new("bob@example.com/phone").unwrap();
    let event = Event::Unacknowledged {
        cause: crate::events::UnackedCause::Waiting,
        session,
        registration: Some(key("phone")),
        message: chat("hi"),
    };
    // The user still counts as online: enhanced pushes anyway.
    assert_eq!(
        h.pipeline
            .notify(&event, true, &mut Notified::default())
            .await,
        Ok(1)
    );
    assert_eq!(h.published_nodes().await, ["phone"]);
}

#[tokio::test]
async fn defaults_ignores_unacknowledged_messages() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("phone").await;
    let event = Event::Unacknowledged {
        cause: crate::events::UnackedCause::Waiting,
        registration: None,
        session: FullJid::new("bob@example.com/phone").unwrap(),
        message: chat("hi"),
    };
    assert_eq!(
        h.pipeline
            .notify(&event, false, &mut Notified::default())
            .await,
        Err(Skip::RecipientOnline)
    );
}

#[tokio::test]
async fn a_custom_plugin_overrides_one_decision_and_keeps_the_others() {
    /// Pushes even to online users; everything else as defaults.
    struct Always;
    impl Plugin for Always {
        fn name(&self) -> &'static str {
            "always"
        }
        fn should_publish(
            &self,
            _context: &crate::plugin::Context,
            _event: &Event,
            registrations: Vec<Registration>,
        ) -> Result<Vec<Registration>, Skip> {
            Ok(registrations)
        }
    }
    let h = harness(Arc::new(Always), 100);
    h.enable("n1").await;
    let event = Event::Chat(chat("hi"));
    assert_eq!(
        h.pipeline
            .notify(&event, true, &mut Notified::default())
            .await,
        Ok(1)
    );
    // The default prepare still applies.
    assert_eq!(
        h.pipeline
            .notify(&Event::Chat(chat("")), true, &mut Notified::default())
            .await,
        Err(Skip::EmptyBody)
    );
}

fn offline() -> Presence {
    Presence::default()
}

fn message(xml_inner: &str) -> Message {
    Message::parse(
        format!(
            "<message xmlns='jabber:client' from='alice@example.com/laptop' \
             to='bob@example.com' type='chat'>{xml_inner}</message>"
        )
        .parse()
        .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_message_counts_once_as_unread_however_many_times_it_is_offered() {
    let mut h = harness(Arc::new(Enhanced), 100);
    h.pipeline.unread = Some(Unread::default());
    h.enable("n1").await;
    h.enable("n2").await;
    // First offered to the session's own registration (an ack delay), then to every one.
    let first = chat("one");
    let mut notified = Notified::default();
    let unacked = Event::Unacknowledged {
        session: FullJid::new("bob@example.com/phone").unwrap(),
        cause: crate::events::UnackedCause::AckDelayed,
        registration: Some(key("n1")),
        message: first.clone(),
    };
    h.pipeline
        .notify_in(&unacked, offline(), &mut notified)
        .await
        .unwrap();
    h.pipeline
        .notify_in(&Event::Chat(first), offline(), &mut notified)
        .await
        .unwrap();
    let unread = h.pipeline.unread.as_ref().unwrap();
    assert_eq!(unread.total(&BareJid::new("bob@example.com").unwrap()), 1);
    let mut second = Notified::default();
    h.pipeline
        .notify_in(&Event::Chat(chat("two")), offline(), &mut second)
        .await
        .unwrap();
    assert_eq!(unread.total(&BareJid::new("bob@example.com").unwrap()), 2);
    assert_eq!(h.published_nodes().await.len(), 4);
    let mut counts: Vec<String> = h
        .sent
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|iq| {
            let text = String::from(iq);
            let at = text.find("message-count").unwrap();
            text[at..]
                .split("<value>")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        ["1", "1", "2", "2"],
        "one count per message, on each registration"
    );
}

#[tokio::test]
async fn a_retraction_pushes_only_for_a_call_whose_proposal_was_pushed() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let retract = || {
        Event::Chat(message(
            "<retract xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
        ))
    };
    assert_eq!(
        h.pipeline
            .notify_in(&retract(), offline(), &mut Notified::default())
            .await,
        Err(Skip::NoCallToCancel)
    );
    let propose = Event::Chat(message(
        "<propose xmlns='urn:xmpp:jingle-message:0' id='c1'/>",
    ));
    assert_eq!(
        h.pipeline
            .notify_in(&propose, offline(), &mut Notified::default())
            .await,
        Ok(1)
    );
    assert_eq!(
        h.pipeline
            .notify_in(&retract(), offline(), &mut Notified::default())
            .await,
        Ok(1)
    );
    // Once.
    assert_eq!(
        h.pipeline
            .notify_in(&retract(), offline(), &mut Notified::default())
            .await,
        Err(Skip::NoCallToCancel)
    );
}

#[tokio::test]
async fn a_registration_that_muted_the_conversation_is_left_out_and_the_others_notified() {
    let h = harness(Arc::new(Defaults), 100);
    let muting: crate::extensions::Extensions = crate::extensions::Extensions::parse(
        &"<enable xmlns='urn:xmpp:push:0'><muted xmlns='tigase:push:filter:muted:0'>\
          <item jid='alice@example.com'/></muted></enable>"
            .parse()
            .unwrap(),
    )
    .unwrap();
    h.store
        .enable(
            &Registration::new(key("muting"), Default::default()).with_extensions(muting.clone()),
        )
        .await
        .unwrap();
    h.enable("plain").await;
    let mut notified = Notified::default();
    h.pipeline
        .notify_in(&Event::Chat(chat("hi")), offline(), &mut notified)
        .await
        .unwrap();
    assert_eq!(h.published_nodes().await, ["plain"]);
    h.pipeline.store.disable(&key("plain")).await.unwrap();
    assert_eq!(
        h.pipeline
            .notify_in(
                &Event::Chat(chat("again")),
                offline(),
                &mut Notified::default()
            )
            .await,
        Err(Skip::Muted)
    );
}

#[tokio::test]
async fn the_accounts_setting_for_the_conversation_decides_before_the_registrations_load() {
    let h = harness(Arc::new(Defaults), 100);
    h.enable("n1").await;
    let never = Presence {
        setting: Some(ChatSetting::Never),
        ..offline()
    };
    assert_eq!(
        h.pipeline
            .notify_in(&Event::Chat(chat("hi")), never, &mut Notified::default())
            .await,
        Err(Skip::Muted)
    );
    let propose = Event::Chat(message(
        "<propose xmlns='urn:xmpp:jingle-message:0' id='c9'/>",
    ));
    assert_eq!(
        h.pipeline
            .notify_in(&propose, never, &mut Notified::default())
            .await,
        Ok(1),
        "a call rings whatever the setting"
    );
}

#[test]
fn a_message_is_known_to_the_outbox_by_its_recipients_archive_id_only() {
    let with = |ids: &str| {
        Event::Chat(
            Message::parse(
                format!(
                    "<message xmlns='jabber:client' from='alice@example.com/laptop' \
                     to='bob@example.com' type='chat'><body>hi</body>{ids}</message>"
                )
                .parse()
                .unwrap(),
            )
            .unwrap(),
        )
    };
    let by = |owner: &str, id: &str| {
        format!("<stanza-id xmlns='urn:xmpp:sid:0' by='{owner}' id='{id}'/>")
    };
    assert_eq!(
        message_identity(&with(&by("bob@example.com", "1234567890"))).as_deref(),
        Some("archive:1234567890")
    );
    // The sender's archive's id, or none: nothing to know the message by.
    assert_eq!(message_identity(&with(&by("alice@example.com", "7"))), None);
    assert_eq!(message_identity(&with("")), None);
    assert_eq!(
        message_identity(&with(
            &(by("alice@example.com", "7") + &by("bob@example.com", "8"))
        ))
        .as_deref(),
        Some("archive:8")
    );
}
