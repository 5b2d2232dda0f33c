//! The routed envelope: a stanza and what modules record about it while herald holds it.
//!
//! A message can pass through many hands before it reaches a client: the router, a session's
//! queue, the stream-management buffer of a session that then drops (XEP-0198), the
//! `unacked_message` and `offline_message` hooks, offline storage, a later delivery. Modules
//! that must remember something about that one message (the push module records which
//! registrations it already notified, so that a message is pushed at most once per
//! registration: docs/modules/push.md, "At most one push per message and registration")
//! put a typed [`Mark`] in the envelope's [`Meta`]. The metadata never enters the XML: a
//! peer cannot forge it and nothing has to strip it. It is serialised in one place only,
//! offline storage ([`Meta::to_stored`] and [`Meta::from_stored`]).

use std::{any::Any, borrow::Cow, fmt, sync::Arc};

use minidom::Element;
use serde::{Serialize, de::DeserializeOwned};

/// A piece of per-message data a module records, under a key of its own.
///
/// Implement it for a small `Clone` type with serde support; [`Mark::KEY`] names it in the
/// stored form, so it must never change once messages were stored with it.
pub trait Mark: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// The key of this mark in stored metadata (unique across modules).
    const KEY: &'static str;
}

/// The version of the stored form written by [`Meta::to_stored`].
const VERSION: u64 = 1;
/// The key holding [`VERSION`] in the stored form.
const VERSION_KEY: &str = "v";

/// One mark: typed while herald holds the message, or still in its stored form after it came
/// back from storage (decoded on first use by the module that knows its type).
#[derive(Clone)]
enum Value {
    Typed {
        value: Arc<dyn Any + Send + Sync>,
        store: fn(&(dyn Any + Send + Sync)) -> serde_json::Value,
    },
    Stored(serde_json::Value),
}

/// What modules record about one message: typed marks by key. Empty (and free to clone)
/// unless a module recorded something.
///
/// It may also carry the stanza's text ([`Meta::set_text`]), made by a hook that had to
/// serialise the stanza anyway (the archive's), so that offline storage, later on the same
/// way, does not serialise it again. The text is valid only while the stanza is not changed:
/// it is never cloned (a copy of the envelope handed to a session has none) nor stored, and
/// whoever changes the stanza after it was made takes it out ([`Meta::take_text`]).
#[derive(Default)]
pub struct Meta {
    marks: Vec<(Cow<'static, str>, Value)>,
    text: Option<Arc<str>>,
}

/// A clone has the marks, not the stanza's text: the copy may be changed apart from the
/// original (a session's copy gets a delay, a carbon copy is wrapped).
impl Clone for Meta {
    fn clone(&self) -> Meta {
        Meta {
            marks: self.marks.clone(),
            text: None,
        }
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.marks.iter().map(|(key, _)| key))
            .finish()
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.to_stored() == other.to_stored()
    }
}

impl Meta {
    /// No marks.
    pub fn new() -> Meta {
        Meta::default()
    }

    /// Whether no module recorded anything (the stanza's text is not a record).
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Record the stanza's text as it is now (see [`Meta`]).
    pub fn set_text(&mut self, text: Arc<str>) {
        self.text = Some(text);
    }

    /// Take the stanza's text out, if a hook recorded it and nothing changed the stanza since.
    pub fn take_text(&mut self) -> Option<Arc<str>> {
        self.text.take()
    }

    /// The mark of type `M`, if one was recorded. A stored mark that does not decode as `M`
    /// (written by another version) is logged and treated as absent.
    pub fn get<M: Mark>(&self) -> Option<M> {
        let (_, value) = self.marks.iter().find(|(key, _)| key == M::KEY)?;
        match value {
            Value::Typed { value, .. } => value.downcast_ref::<M>().cloned(),
            Value::Stored(stored) => match M::deserialize(stored) {
                Ok(mark) => Some(mark),
                Err(error) => {
                    tracing::warn!(key = M::KEY, %error, "ignoring unreadable message metadata");
                    None
                }
            },
        }
    }

    /// Remove the mark of type `M` and return it, if one was recorded (a mark meant for one
    /// step of the message's way, not to be stored with it).
    pub fn take<M: Mark>(&mut self) -> Option<M> {
        let at = self.marks.iter().position(|(key, _)| key == M::KEY)?;
        let mark = self.get::<M>();
        self.marks.swap_remove(at);
        mark
    }

    /// Record `mark`, replacing any mark of the same type.
    pub fn set<M: Mark>(&mut self, mark: M) {
        fn store<M: Mark>(value: &(dyn Any + Send + Sync)) -> serde_json::Value {
            value
                .downcast_ref::<M>()
                .and_then(|mark| serde_json::to_value(mark).ok())
                .unwrap_or(serde_json::Value::Null)
        }
        let value = Value::Typed {
            value: Arc::new(mark),
            store: store::<M>,
        };
        match self.marks.iter_mut().find(|(key, _)| key == M::KEY) {
            Some((_, slot)) => *slot = value,
            None => self.marks.push((Cow::Borrowed(M::KEY), value)),
        }
    }

    /// The stored form: empty text when there is nothing, else a JSON object with a version
    /// and one member per mark (`{"v":1,"push_notified":[...]}`).
    pub fn to_stored(&self) -> String {
        if self.marks.is_empty() {
            return String::new();
        }
        let mut object = serde_json::Map::new();
        object.insert(VERSION_KEY.to_owned(), VERSION.into());
        for (key, value) in &self.marks {
            let stored = match value {
                Value::Typed { value, store } => store(value.as_ref()),
                Value::Stored(stored) => stored.clone(),
            };
            object.insert(key.to_string(), stored);
        }
        serde_json::Value::Object(object).to_string()
    }

    /// Read back what [`Meta::to_stored`] wrote. Text that is not that form (or of a later
    /// version) is logged and read as no marks: metadata never makes a message undeliverable.
    pub fn from_stored(text: &str) -> Meta {
        if text.is_empty() {
            return Meta::default();
        }
        let object = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) | Err(_) => {
                tracing::warn!("ignoring unreadable message metadata");
                return Meta::default();
            }
        };
        if object.get(VERSION_KEY).and_then(serde_json::Value::as_u64) != Some(VERSION) {
            tracing::warn!("ignoring message metadata of an unknown version");
            return Meta::default();
        }
        Meta {
            marks: object
                .into_iter()
                .filter(|(key, _)| key != VERSION_KEY)
                .map(|(key, value)| (Cow::Owned(key), Value::Stored(value)))
                .collect(),
            text: None,
        }
    }
}

/// A stanza with its metadata, as it travels through herald: `S` is a parsed
/// [`herald_stream::Stanza`] through the router and hooks, a plain [`Element`] in queues and
/// the stream-management buffer.
#[derive(Clone, Debug)]
pub struct Envelope<S = Element> {
    /// The stanza, exactly as a peer will see it.
    pub stanza: S,
    /// What modules recorded about it.
    pub meta: Meta,
}

impl<S> Envelope<S> {
    /// A stanza with no metadata.
    pub fn new(stanza: S) -> Envelope<S> {
        Envelope {
            stanza,
            meta: Meta::default(),
        }
    }

    /// A stanza with the given metadata.
    pub fn with_meta(stanza: S, meta: Meta) -> Envelope<S> {
        Envelope { stanza, meta }
    }
}

impl From<herald_stream::Stanza> for Envelope<herald_stream::Stanza> {
    fn from(stanza: herald_stream::Stanza) -> Self {
        Envelope::new(stanza)
    }
}

impl From<Element> for Envelope {
    fn from(element: Element) -> Self {
        Envelope::new(element)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Seen(Vec<String>);

    impl Mark for Seen {
        const KEY: &'static str = "seen";
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Count(u32);

    impl Mark for Count {
        const KEY: &'static str = "count";
    }

    #[test]
    fn marks_are_typed_and_replaced_by_type() {
        let mut meta = Meta::new();
        assert!(meta.is_empty());
        assert_eq!(meta.get::<Seen>(), None);
        meta.set(Seen(vec!["a".into()]));
        meta.set(Count(2));
        meta.set(Seen(vec!["b".into()]));
        assert_eq!(meta.get::<Seen>(), Some(Seen(vec!["b".into()])));
        assert_eq!(meta.get::<Count>(), Some(Count(2)));
    }

    #[test]
    fn the_stanzas_text_is_taken_once_and_never_cloned_nor_stored() {
        let mut meta = Meta::new();
        meta.set(Count(1));
        meta.set_text(Arc::from("<message/>"));
        assert!(meta.clone().take_text().is_none(), "a copy has no text");
        let mut mark_only = Meta::new();
        mark_only.set(Count(1));
        assert_eq!(meta.to_stored(), mark_only.to_stored(), "nor stored");
        assert_eq!(meta.take_text().as_deref(), Some("<message/>"));
        assert!(meta.take_text().is_none());

        let mut text_only = Meta::new();
        text_only.set_text(Arc::from("<message/>"));
        assert!(text_only.is_empty(), "the text is not a record");
        assert_eq!(text_only.to_stored(), "");
    }

    #[test]
    fn marks_survive_storage_and_come_back_typed() {
        let mut meta = Meta::new();
        meta.set(Seen(vec!["phone".into()]));
        meta.set(Count(7));
        let text = meta.to_stored();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({"v": 1, "seen": ["phone"], "count": 7})
        );
        let back = Meta::from_stored(&text);
        assert_eq!(back.get::<Seen>(), Some(Seen(vec!["phone".into()])));
        assert_eq!(back.get::<Count>(), Some(Count(7)));
        assert_eq!(
            back.to_stored(),
            text,
            "an unread mark is stored again unchanged"
        );
    }

    #[test]
    fn a_taken_mark_is_gone_and_not_stored() {
        let mut meta = Meta::new();
        meta.set(Seen(vec!["a".into()]));
        assert_eq!(meta.take::<Seen>(), Some(Seen(vec!["a".into()])));
        assert_eq!(meta.take::<Seen>(), None);
        assert!(meta.is_empty());
        assert_eq!(meta.to_stored(), "");
        let mut stored = Meta::new();
        stored.set(Seen(vec!["b".into()]));
        let mut back = Meta::from_stored(&stored.to_stored());
        assert_eq!(
            back.take::<Seen>(),
            Some(Seen(vec!["b".into()])),
            "a stored mark too"
        );
        assert!(back.is_empty());
    }

    #[test]
    fn no_marks_store_as_empty_text() {
        assert_eq!(Meta::new().to_stored(), "");
        assert!(Meta::from_stored("").is_empty());
    }

    #[test]
    fn unreadable_metadata_reads_as_none_rather_than_failing() {
        assert!(Meta::from_stored("not json").is_empty());
        assert!(Meta::from_stored("[1]").is_empty());
        assert!(Meta::from_stored(r#"{"v":2,"seen":[]}"#).is_empty());
        let meta = Meta::from_stored(r#"{"v":1,"count":"many"}"#);
        assert_eq!(
            meta.get::<Count>(),
            None,
            "a mark of the wrong shape is absent"
        );
    }
}
