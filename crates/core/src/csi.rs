//! Client State Indication (XEP-0352), `[modules.mod_csi]`: a client tells the server it is
//! `<inactive/>` (the phone's screen is off) or `<active/>`. While a session is inactive,
//! what is not urgent (presence updates, chat states, receipts, PEP events) is held in a
//! buffer of at most `buffer_max` stanzas instead of waking the phone's radio; the buffer is
//! written, in order, when the client becomes active again, when something urgent arrives (a
//! message with a body, an IQ, a subscription request, a call) or when it is full. A newer
//! presence from the same resource replaces the held one. Docs: `docs/modules/csi.md`.
//!
//! The session's state ([`ClientState`], in its `SessionHandle::state`) is what the push
//! module reads to know whether a session is inactive.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use minidom::Element;

use crate::{
    config::{self, Integer, Invalid, KeyPath, Section},
    module::{Module, Registrar},
};

/// XEP-0352's namespace.
pub const NS: &str = "urn:xmpp:csi:0";
/// XEP-0085's namespace.
const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";

/// `[modules.mod_csi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiConfig {
    /// `buffer_max` (MongooseIM's name and default, 20): most stanzas held for an inactive
    /// session; one more writes them all.
    pub buffer_max: usize,
    /// `urgent_chat_states`: chat states (XEP-0085) that are written at once, such as
    /// `["composing"]`; none by default.
    pub urgent_chat_states: Vec<String>,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            buffer_max: 20,
            urgent_chat_states: Vec::new(),
        }
    }
}

/// `[modules.mod_csi]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCsi {
    /// See [`CsiConfig::buffer_max`].
    pub buffer_max: Option<Integer>,
    /// See [`CsiConfig::urgent_chat_states`].
    pub urgent_chat_states: Option<Vec<String>>,
}

const CHAT_STATE_NAMES: &[(&str, ())] = &[
    ("active", ()),
    ("composing", ()),
    ("paused", ()),
    ("inactive", ()),
    ("gone", ()),
];

impl Section for CsiConfig {
    type Raw = RawCsi;

    fn from_raw(raw: RawCsi, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = CsiConfig::default();
        let buffer_max = match raw.buffer_max {
            Some(n) => config::integer(n, 1usize, "at least 1", &at.key("buffer_max"))?,
            None => defaults.buffer_max,
        };
        let mut urgent_chat_states = Vec::new();
        for (index, name) in raw
            .urgent_chat_states
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            config::one_of(
                &name,
                CHAT_STATE_NAMES,
                &at.key("urgent_chat_states").index(index),
            )?;
            urgent_chat_states.push(name);
        }
        Ok(CsiConfig {
            buffer_max,
            urgent_chat_states,
        })
    }
}

impl CsiConfig {
    /// Whether a stanza for an inactive client must be written at once (and with it
    /// everything held before it).
    pub fn is_urgent(&self, stanza: &Element) -> bool {
        match stanza.name() {
            "message" => self.message_is_urgent(stanza),
            // Subscription requests and answers are shown to the user; availability is not.
            "presence" => matches!(
                stanza.attr("type"),
                Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")
            ),
            // An IQ waits for an answer.
            _ => true,
        }
    }

    fn message_is_urgent(&self, message: &Element) -> bool {
        if message.attr("type") == Some("error") {
            return true;
        }
        message.children().any(|child| {
            let ns = child.ns();
            match (child.name(), ns.as_str()) {
                ("body", herald_stream::ns::CLIENT) => true,
                // An encrypted body (OMEMO and others), a call (XEP-0353).
                ("encrypted", _) => true,
                (_, "urn:xmpp:jingle-message:0") => true,
                (state, CHAT_STATES) => self.urgent_chat_states.iter().any(|s| s == state),
                // A carbon copy is as urgent as the message it carries.
                ("sent" | "received", crate::carbons::NS) => child
                    .get_child("forwarded", "urn:xmpp:forward:0")
                    .and_then(|forwarded| forwarded.get_child("message", herald_stream::ns::CLIENT))
                    .is_some_and(|inner| self.message_is_urgent(inner)),
                _ => false,
            }
        })
    }
}

/// A session's client state (XEP-0352), in its `SessionHandle::state`: active until the
/// client says otherwise.
#[derive(Debug, Default)]
pub struct ClientState {
    inactive: AtomicBool,
}

impl ClientState {
    /// Whether the client said it is inactive.
    pub fn is_inactive(&self) -> bool {
        self.inactive.load(Ordering::Relaxed)
    }

    pub(crate) fn set_inactive(&self, inactive: bool) {
        self.inactive.store(inactive, Ordering::Relaxed);
    }
}

/// Whether a held presence is made obsolete by a newer one: both are availability (no type,
/// or unavailable) from the same entity.
pub(crate) fn replaces(newer: &Element, held: &Element) -> bool {
    let availability = |p: &Element| {
        p.name() == "presence" && matches!(p.attr("type"), None | Some("unavailable"))
    };
    availability(newer) && availability(held) && newer.attr("from") == held.attr("from")
}

/// The module: advertises the stream feature (XEP-0352 section 3); the sessions do the rest.
pub struct Csi;

impl Module for Csi {
    fn name(&self) -> &'static str {
        "mod_csi"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.stream_feature(Element::bare("csi", NS));
    }
}
