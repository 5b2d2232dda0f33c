//! The words the push module's parts share, depending on nothing else in the crate: what a
//! notification says ([`Payload`]), why one is not sent ([`Skip`]) and how one ended
//! ([`Outcome`]). The plugins, the pipeline, the publisher and the counts all speak them;
//! none of them needs another to do so.

/// What a notification says: the fields of its summary form, in order (XEP-0357 section 6,
/// `urn:xmpp:push:summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    fields: Vec<(String, String)>,
    about: About,
}

/// What a notification is about, beyond its summary fields: what the parts of a notification
/// other than the summary form are built from (the priority, Tigase's encrypted payload,
/// MongoosePush's call mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// The kind of event notified.
    pub kind: Kind,
    /// A groupchat sender's nickname in the room.
    pub nickname: Option<String>,
    /// The media of a call (`audio`, `video`), from the proposal's descriptions.
    pub media: Vec<String>,
    /// The message is encrypted end to end (OMEMO, OpenPGP): its body is a fallback text
    /// for clients that cannot decrypt, not what the sender wrote.
    pub end_to_end: bool,
}

/// The kind of event a notification is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// A one-to-one message (or a summary with only a count).
    #[default]
    Chat,
    /// A message in a room.
    Groupchat,
    /// A call proposed (XEP-0353 `<propose/>`): high priority, never held back.
    Call,
    /// A proposed call withdrawn (`<retract/>`) or otherwise ended: the phone stops ringing.
    CallEnded,
}

impl Kind {
    /// The kind as Tigase's encrypted payload names it (`type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Groupchat => "groupchat",
            Kind::Call => "call",
            Kind::CallEnded => "call-ended",
        }
    }

    /// Whether the notification is about a call.
    pub fn is_call(self) -> bool {
        matches!(self, Kind::Call | Kind::CallEnded)
    }
}

impl Payload {
    /// A payload with these fields, in this order.
    pub fn new(fields: Vec<(String, String)>) -> Payload {
        Payload {
            fields,
            about: About::default(),
        }
    }

    /// The same payload about `about`.
    pub fn about(mut self, about: About) -> Payload {
        self.about = about;
        self
    }

    /// What the payload is about.
    pub fn subject(&self) -> &About {
        &self.about
    }

    /// Whether the notification must reach the phone at once (a call, or its end, which
    /// stops the ringing): never coalesced or rate limited, queued ahead of the others, sent
    /// with high priority.
    pub fn is_urgent(&self) -> bool {
        self.about.kind.is_call()
    }

    /// Replace the value of field `var`, when the payload has it.
    pub fn set(&mut self, var: &str, value: String) {
        if let Some((_, old)) = self.fields.iter_mut().find(|(name, _)| name == var) {
            *old = value;
        }
    }

    /// The summary of a message (push.md section 4): `message-count`, `last-message-sender`,
    /// `last-message-body`.
    ///
    /// With room for one field more: the archive's id ([`Payload::with`]) is added to most
    /// summaries when the archive is on, and a vector made at its exact length would be
    /// moved to a larger block for it.
    pub fn summary(message_count: u32, sender: &str, body: &str) -> Payload {
        let mut fields = Vec::with_capacity(4);
        fields.extend([
            ("message-count".into(), message_count.to_string()),
            ("last-message-sender".into(), sender.to_owned()),
            ("last-message-body".into(), body.to_owned()),
        ]);
        Payload::new(fields)
    }

    /// The same payload with one more field at the end.
    pub fn with(mut self, name: &str, value: &str) -> Payload {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A Jingle Message Initiation call (push.md section 6, hints plugin): `message-sender`,
    /// `jingle-message`, `jingle-session-id`.
    /// About a [`Kind::Call`] for `propose`, a [`Kind::CallEnded`] for any other element.
    pub fn call(sender: &str, jingle_message: &str, session_id: &str) -> Payload {
        let kind = if jingle_message == "propose" {
            Kind::Call
        } else {
            Kind::CallEnded
        };
        Payload::new(vec![
            ("message-sender".into(), sender.to_owned()),
            ("jingle-message".into(), jingle_message.to_owned()),
            ("jingle-session-id".into(), session_id.to_owned()),
        ])
        .about(About {
            kind,
            ..About::default()
        })
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
    /// A message for an inactive client (XEP-0352), but another session of the recipient
    /// is connected and active.
    RecipientActive,
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
    /// (push.md section 8) is configured to send to.
    VirtualPubsubHost,
    /// A registration on a virtual pubsub host whose options lack `service` (push.md section 8).
    MissingService,
    /// A registration on a virtual pubsub host whose options lack `device_id`.
    MissingDeviceId,
    /// The registrations could not be loaded (logged as an error).
    StoreFailed,
    /// No rule of `rules` matched the message, or the one that did says `skip`.
    Rule,
    /// The conversation is muted: by the client at enable (Tigase's muted filter), or in the
    /// account's notification settings (XEP-0492 `never`).
    Muted,
    /// A groupchat message that does not mention the user, in a room they want notified of
    /// mentions only (Tigase's groupchat filter, XEP-0492 `on-mention`), or of a room the
    /// filter does not list.
    NotMentioned,
    /// A call withdrawn whose proposal was not notified: nothing to cancel.
    NoCallToCancel,
}

impl Skip {
    /// The reason as a metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotChat => "not_chat",
            Skip::NoBody => "no_body",
            Skip::EmptyBody => "empty_body",
            Skip::RecipientOnline => "recipient_online",
            Skip::RecipientActive => "recipient_active",
            Skip::NoRegistrations => "no_registrations",
            Skip::AlreadyNotified => "already_notified",
            Skip::NoStoreHint => "no_store_hint",
            Skip::NoSessionRegistration => "no_session_registration",
            Skip::VirtualPubsubHost => "virtual_pubsub_host",
            Skip::MissingService => "missing_service",
            Skip::MissingDeviceId => "missing_device_id",
            Skip::StoreFailed => "store_failed",
            Skip::Rule => "rule",
            Skip::Muted => "muted",
            Skip::NotMentioned => "not_mentioned",
            Skip::NoCallToCancel => "no_call_to_cancel",
        }
    }
}

/// How one notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The app server answered `result`.
    Delivered,
    /// No answer within the reply timeout; the registration is kept.
    Timeout,
    /// A `cancel` error: the registration was disabled.
    RejectedAndDisabled,
    /// Another error, or the IQ could not be sent; the registration is kept.
    TransientError,
    /// The app server's own server could not be reached over federation
    /// (`remote-server-not-found` or `remote-server-timeout`): not an answer from the app
    /// server, so the registration is kept.
    Unreachable,
    /// The publisher's queue was full; the notification was never sent.
    DroppedQueueFull,
    /// The recipient already had their share of the publisher queued or in flight; the
    /// notification was never sent.
    DroppedUserLimit,
}

impl Outcome {
    /// Every outcome, in the order the counts keep them (`metrics::Stats`).
    pub const ALL: [Outcome; 7] = [
        Outcome::Delivered,
        Outcome::Timeout,
        Outcome::RejectedAndDisabled,
        Outcome::TransientError,
        Outcome::DroppedQueueFull,
        Outcome::DroppedUserLimit,
        Outcome::Unreachable,
    ];

    /// The outcome as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Timeout => "timeout",
            Outcome::RejectedAndDisabled => "rejected_and_disabled",
            Outcome::TransientError => "transient_error",
            Outcome::DroppedQueueFull => "dropped_queue_full",
            Outcome::DroppedUserLimit => "dropped_user_limit",
            Outcome::Unreachable => "unreachable",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Outcome::Delivered => 0,
            Outcome::Timeout => 1,
            Outcome::RejectedAndDisabled => 2,
            Outcome::TransientError => 3,
            Outcome::DroppedQueueFull => 4,
            Outcome::DroppedUserLimit => 5,
            Outcome::Unreachable => 6,
        }
    }
}
