//! Declarative push rules (`rules`, MongooseIM 6.9's alternative to `plugin_module`): the
//! typed rules as the configuration gives them, and their parsing, each error naming
//! `rules[N].key`. The `rules` plugin (`plugin::rules`) applies them; docs:
//! `docs/modules/push.md`, "Rules".

use herald_core::config::{Invalid, KeyPath, variant};
use herald_stream::stanza::MessageType;
use serde::Deserialize;

/// What a rule looks at: the kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `"message"`: a message to the user (on its way to offline storage).
    Message,
    /// `"unacknowledged"`: a message buffered by a session waiting for resumption.
    Unacknowledged,
    /// `"hibernating"`: a message for a session hibernating past `resume_timeout`.
    Hibernating,
    /// `"ack_delayed"`: a message not acknowledged within `max_ack_delay`.
    AckDelayed,
    /// `"inactive"`: a message written to an inactive client (XEP-0352).
    Inactive,
}

impl EventKind {
    /// Accepted names.
    pub const NAMES: &'static [(&'static str, EventKind)] = &[
        ("message", EventKind::Message),
        ("unacknowledged", EventKind::Unacknowledged),
        ("hibernating", EventKind::Hibernating),
        ("ack_delayed", EventKind::AckDelayed),
        ("inactive", EventKind::Inactive),
    ];
}

pub(crate) const TYPES: &[(&str, MessageType)] = &[
    ("chat", MessageType::Chat),
    ("groupchat", MessageType::Groupchat),
    ("normal", MessageType::Normal),
    ("headline", MessageType::Headline),
];

/// The Message Processing Hints (XEP-0334) a rule can look for.
const HINTS: &[(&str, &str)] = &[
    ("no-store", "no-store"),
    ("store", "store"),
    ("no-permanent-store", "no-permanent-store"),
    ("no-copy", "no-copy"),
];

/// Whether the recipient has an available resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// `"online"`.
    Online,
    /// `"offline"`.
    Offline,
}

/// Whether one of the recipient's connected sessions is active (XEP-0352).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStateCondition {
    /// `"active"`.
    Active,
    /// `"inactive"`: no connected session is active.
    Inactive,
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `"push"`.
    Push,
    /// `"skip"`.
    Skip,
}

/// One rule: every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `event`: one of these kinds.
    pub events: Option<Vec<EventKind>>,
    /// `type`: one of these message types.
    pub types: Option<Vec<MessageType>>,
    /// `body`: the message has (`true`) or lacks (`false`) a non-empty first body.
    pub body: Option<bool>,
    /// `hint`: the message carries one of these XEP-0334 hints (element names).
    pub hints: Option<Vec<&'static str>>,
    /// `user_status`.
    pub user_status: Option<UserStatus>,
    /// `client_state`.
    pub client_state: Option<ClientStateCondition>,
    /// `action`.
    pub action: Action,
}

/// One name or a list of names, as written.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum Names {
    /// `"chat"`.
    One(String),
    /// `["chat", "groupchat"]`.
    Many(Vec<String>),
}

/// A rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRule {
    event: Option<Names>,
    #[serde(rename = "type")]
    type_: Option<Names>,
    body: Option<bool>,
    hint: Option<Names>,
    user_status: Option<String>,
    client_state: Option<String>,
    action: Option<String>,
}

fn names<T: Copy>(
    raw: Option<Names>,
    known: &[(&str, T)],
    at: &KeyPath,
) -> Result<Option<Vec<T>>, Invalid> {
    let Some(raw) = raw else { return Ok(None) };
    let list = match raw {
        Names::One(name) => vec![name],
        Names::Many(names) => names,
    };
    if list.is_empty() {
        return Err(Invalid::new(
            at.clone(),
            "empty; expected at least one name".to_owned(),
        ));
    }
    list.iter()
        .map(|name| variant(name, known).map_err(|message| Invalid::new(at.clone(), message)))
        .collect::<Result<Vec<T>, Invalid>>()
        .map(Some)
}

impl Rule {
    /// The rule of `raw`, at `at` (`...rules[N]`).
    pub fn from_raw(raw: RawRule, at: &KeyPath) -> Result<Rule, Invalid> {
        let action = raw.action.ok_or_else(|| {
            Invalid::new(
                at.key("action"),
                "missing; expected \"push\" or \"skip\"".to_owned(),
            )
        })?;
        let action = variant(&action, &[("push", Action::Push), ("skip", Action::Skip)])
            .map_err(|message| Invalid::new(at.key("action"), message))?;
        fn one<T: Copy>(
            value: Option<String>,
            at: &KeyPath,
            known: &[(&str, T)],
        ) -> Result<Option<T>, Invalid> {
            value
                .map(|name| variant(&name, known).map_err(|m| Invalid::new(at.clone(), m)))
                .transpose()
        }
        Ok(Rule {
            events: names(raw.event, EventKind::NAMES, &at.key("event"))?,
            types: names(raw.type_, TYPES, &at.key("type"))?,
            body: raw.body,
            hints: names(raw.hint, HINTS, &at.key("hint"))?,
            user_status: one(
                raw.user_status,
                &at.key("user_status"),
                &[
                    ("online", UserStatus::Online),
                    ("offline", UserStatus::Offline),
                ],
            )?,
            client_state: one(
                raw.client_state,
                &at.key("client_state"),
                &[
                    ("active", ClientStateCondition::Active),
                    ("inactive", ClientStateCondition::Inactive),
                ],
            )?,
            action,
        })
    }
}
