//! The configuration toolkit every module uses to read its own section of the file: the key
//! path of a value ([`KeyPath`]), a failed check ([`Invalid`], located in the file by the
//! server), TOML integers, the common checks, and the [`Section`] trait.
//!
//! A module's options live in one file, the module's own: its config type (with its
//! defaults), the serde shape of its table (`Section::Raw`, every key optional and unknown
//! keys refused) and the checks from one to the other (`Section::from_raw`). The server holds
//! the checked types and hands each module its own; adding an option touches that file only.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Display;

use jid::DomainPart;
use serde::{Deserialize, de::DeserializeOwned};

/// A module's section of the configuration file (`[modules.NAME]`).
pub trait Section: Sized {
    /// The table as serde reads it: every key optional, unknown keys refused
    /// (`#[serde(deny_unknown_fields)]`), values close to their TOML types.
    type Raw: DeserializeOwned;

    /// Check the table found at `at`: defaults for missing keys, ranges, names. A failure
    /// names the key path of the offending value.
    fn from_raw(raw: Self::Raw, at: &KeyPath) -> Result<Self, Invalid>;
}

/// A failed check, before the server locates it in the file (line and file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key whose value failed (or the table that lacks it).
    pub key: KeyPath,
    /// What was wrong and what is accepted.
    pub message: String,
}

impl Invalid {
    /// A failure of the value at `key`.
    pub fn new(key: KeyPath, message: impl Into<String>) -> Self {
        Invalid {
            key,
            message: message.into(),
        }
    }
}

/// The path of a key from the document root: `listen.c2s[1].tls.mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key in a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        KeyPath::default()
    }

    /// The path of `key` inside the table at this path.
    pub fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_owned()))
    }

    /// The path of element `index` of the array at this path.
    pub fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    /// The steps from the root.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        KeyPath(segments)
    }
}

impl FromIterator<Segment> for KeyPath {
    fn from_iter<I: IntoIterator<Item = Segment>>(iter: I) -> Self {
        KeyPath(iter.into_iter().collect())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether TOML accepts `key` unquoted.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A TOML integer. Its own type only so that a value of the wrong type is reported as
/// "expected an integer" rather than in Rust's words ("expected i64").
#[derive(Debug, Clone, Copy)]
pub struct Integer(pub i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Integer;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Integer, E> {
                Ok(Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Integer, E> {
                i64::try_from(value)
                    .map(Integer)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }
        }

        deserializer.deserialize_i64(Visitor)
    }
}

/// An integer of at least `min`, or the word that means "no limit".
pub fn integer_or(
    value: toml::Value,
    word: &str,
    min: i64,
    at: &KeyPath,
) -> Result<Option<u64>, Invalid> {
    let expected = format!("an integer of at least {min}, or \"{word}\"");
    match value {
        toml::Value::Integer(n) if n >= min => Ok(Some(n as u64)),
        toml::Value::String(text) if text == word => Ok(None),
        toml::Value::Integer(n) => Err(Invalid::new(
            at.clone(),
            format!("{n} is too small; expected {expected}"),
        )),
        other => Err(Invalid::new(
            at.clone(),
            format!("{other} is not accepted; expected {expected}"),
        )),
    }
}

/// Each element of the array at `at` as a normalised domain, with no domain listed twice.
pub fn domains(texts: &[String], at: &KeyPath) -> Result<Vec<DomainPart>, Invalid> {
    let mut parsed: Vec<DomainPart> = Vec::with_capacity(texts.len());
    for (index, text) in texts.iter().enumerate() {
        let domain = domain(text, &at.index(index))?;
        if let Some(first) = parsed.iter().position(|other| *other == domain) {
            return Err(Invalid::new(
                at.index(index),
                format!(
                    "{:?} is listed twice (first at {}); expected distinct domains",
                    domain.as_str(),
                    at.index(first),
                ),
            ));
        }
        parsed.push(domain);
    }
    Ok(parsed)
}

/// `text` as a domain in its normalised (nameprep, lowercase) form.
pub fn domain(text: &str, at: &KeyPath) -> Result<DomainPart, Invalid> {
    let expected = "expected a domain name such as \"example.org\"";
    if text.contains(['@', '/']) {
        let message = format!("{text:?} is not a domain but a JID; {expected}");
        return Err(Invalid::new(at.clone(), message));
    }
    DomainPart::new(text).map(Cow::into_owned).map_err(|error| {
        Invalid::new(
            at.clone(),
            format!("{text:?} is not a valid domain ({error}); {expected}"),
        )
    })
}

/// `value` as a `T` no smaller than `min`; `accepted` says what is accepted.
pub fn integer<T>(value: Integer, min: T, accepted: &str, at: &KeyPath) -> Result<T, Invalid>
where
    T: TryFrom<i64> + PartialOrd,
{
    match T::try_from(value.0) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(Invalid::new(
            at.clone(),
            format!("{} is out of range; expected {accepted}", value.0),
        )),
    }
}

/// The variant named `name`, or a message listing the accepted names.
pub fn variant<T: Copy>(name: &str, variants: &[(&str, T)]) -> Result<T, String> {
    match variants.iter().find(|(known, _)| *known == name) {
        Some((_, variant)) => Ok(*variant),
        None => {
            let names: Vec<String> = variants
                .iter()
                .map(|(known, _)| format!("{known:?}"))
                .collect();
            Err(format!(
                "unknown variant {name:?}, expected one of {}",
                names.join(", ")
            ))
        }
    }
}

/// The variant named `name`; a failure names the key `at`.
pub fn one_of<T: Copy>(name: &str, variants: &[(&str, T)], at: &KeyPath) -> Result<T, Invalid> {
    variant(name, variants).map_err(|message| Invalid::new(at.clone(), message))
}

/// `value`, or a "missing" failure saying what is expected.
pub fn required<T>(value: Option<T>, at: &KeyPath, expected: impl Display) -> Result<T, Invalid> {
    value.ok_or_else(|| Invalid::new(at.clone(), format!("missing; expected {expected}")))
}
