//! Plugins (spec section 6): the three decisions of the pipeline as a trait whose default
//! methods are the `defaults` plugin (spec section 4). A custom plugin overrides one method and
//! keeps the defaults for the others.
//!
//! Every decision not to push carries a [`Skip`] reason, for logs and metrics.

mod defaults;
mod enhanced;
mod hints;

use std::sync::Arc;

pub use defaults::Defaults;
pub use enhanced::Enhanced;
pub use hints::Hints;

use crate::{
    config::PluginName,
    events::Event,
    publisher::{Publisher, Submitted},
    registrations::{Registration, RegistrationKey},
};

/// What a notification says: the fields of its summary form, in order (XEP-0357 section 6,
/// `urn:xmpp:push:summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    fields: Vec<(String, String)>,
}

impl Payload {
    /// A payload with these fields, in this order.
    pub fn new(fields: Vec<(String, String)>) -> Payload {
        Payload { fields }
    }

    /// The summary of a message (spec section 4): `message-count`, `last-message-sender`,
    /// `last-message-body`.
    pub fn summary(message_count: u32, sender: &str, body: &str) -> Payload {
        Payload::new(vec![
            ("message-count".into(), message_count.to_string()),
            ("last-message-sender".into(), sender.to_owned()),
            ("last-message-body".into(), body.to_owned()),
        ])
    }

    /// A Jingle Message Initiation call (spec section 6, hints plugin): `message-sender`,
    /// `jingle-message`, `jingle-session-id`.
    pub fn call(sender: &str, jingle_message: &str, session_id: &str) -> Payload {
        Payload::new(vec![
            ("message-sender".into(), sender.to_owned()),
            ("jingle-message".into(), jingle_message.to_owned()),
            ("jingle-session-id".into(), session_id.to_owned()),
        ])
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The value of field `var`.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == var)
            .map(|(_, value)| value.as_str())
    }
}

/// Why no notification goes out for an event (or to a registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Not a `chat` or `groupchat` message.
    NotChat,
    /// No `<body/>`.
    NoBody,
    /// The first body's text is empty.
    EmptyBody,
    /// The recipient has an available resource with non-negative priority.
    RecipientOnline,
    /// The recipient has no registration.
    NoRegistrations,
    /// Every chosen registration was already notified for this message.
    AlreadyNotified,
    /// The message carries `<no-store xmlns='urn:xmpp:hints'/>` (hints plugin).
    NoStoreHint,
    /// An unacknowledged message, but its session enabled no registration that still exists
    /// (enhanced and hints plugins).
    NoSessionRegistration,
    /// The registration's pubsub host is a virtual pubsub host, but no HTTP push service
    /// (spec section 8) is configured to send to.
    VirtualPubsubHost,
    /// A registration on a virtual pubsub host whose options lack `service` (spec section 8).
    MissingService,
    /// A registration on a virtual pubsub host whose options lack `device_id`.
    MissingDeviceId,
    /// The registrations could not be loaded (logged as an error).
    StoreFailed,
}

impl Skip {
    /// The reason as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotChat => "not_chat",
            Skip::NoBody => "no_body",
            Skip::EmptyBody => "empty_body",
            Skip::RecipientOnline => "recipient_online",
            Skip::NoRegistrations => "no_registrations",
            Skip::AlreadyNotified => "already_notified",
            Skip::NoStoreHint => "no_store_hint",
            Skip::NoSessionRegistration => "no_session_registration",
            Skip::VirtualPubsubHost => "virtual_pubsub_host",
            Skip::MissingService => "missing_service",
            Skip::MissingDeviceId => "missing_device_id",
            Skip::StoreFailed => "store_failed",
        }
    }
}

/// What the pipeline knows about the recipient when the plugin decides.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Whether the recipient has an available resource with priority >= 0 (RFC 6121 section
    /// 8.5.2.1.1: one that would receive a message to the bare JID).
    pub recipient_available: bool,
    /// For an [`Event::Unacknowledged`]: the registration enabled in that session, if any.
    pub session_registration: Option<RegistrationKey>,
}

/// The plugin behaviour (MongooseIM's `mod_event_pusher_push_plugin`). Every method has the
/// `defaults` behaviour; override the ones to change.
#[async_trait::async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, for logs.
    fn name(&self) -> &'static str;

    /// The notification for this event, or why there is none.
    fn prepare_notification(&self, event: &Event) -> Result<Payload, Skip> {
        defaults::prepare_notification(event)
    }

    /// Which of the recipient's registrations (never empty) to notify, or why none.
    fn should_publish(
        &self,
        context: &Context,
        event: &Event,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Registration>, Skip> {
        defaults::should_publish(context, event, registrations)
    }

    /// Send the notification to each registration; returns the keys of the registrations a
    /// notification was sent (queued) to.
    async fn publish_notification(
        &self,
        publisher: &Publisher,
        event: &Event,
        payload: &Payload,
        registrations: &[Registration],
    ) -> Vec<RegistrationKey> {
        let mut sent = Vec::with_capacity(registrations.len());
        for registration in registrations {
            if publisher.submit(event.recipient(), registration, payload) == Submitted::Queued {
                sent.push(registration.key.clone());
            }
        }
        sent
    }
}

/// The built-in plugin called `name`.
pub fn builtin(name: PluginName) -> Arc<dyn Plugin> {
    match name {
        PluginName::Defaults => Arc::new(Defaults),
        PluginName::Enhanced => Arc::new(Enhanced),
        PluginName::Hints => Arc::new(Hints),
    }
}
