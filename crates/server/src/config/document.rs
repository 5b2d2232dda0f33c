//! The TOML document: its syntax, its shape, and the line on which a key path is written.

use serde_path_to_error::Segment as SerdeSegment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::error::{Invalid, KeyPath, Segment};
use super::raw::RawConfig;

/// A parsed TOML document, kept with its spans to locate errors.
pub(super) struct Document<'a> {
    text: &'a str,
    origin: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parses `text` as TOML; a syntax error names its line.
    pub(super) fn parse(text: &'a str, origin: &'a str) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Document { text, origin, root }),
            Err(error) => Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                line: error.span().map(|span| line_at(text, span.start)),
                key: String::new(),
                message: format!("invalid TOML: {}", error.message()),
            }),
        }
    }

    /// Reads the document into the file's shape; an unknown key or a value of the wrong type
    /// names its key path and line.
    pub(super) fn deserialize(&self) -> Result<RawConfig, ConfigError> {
        let deserializer = toml::Deserializer::from(self.root.clone());
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key: KeyPath = error
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    SerdeSegment::Seq { index } => Some(Segment::Index(*index)),
                    SerdeSegment::Map { key } => Some(Segment::Key(key.clone())),
                    SerdeSegment::Enum { variant } => Some(Segment::Key(variant.clone())),
                    SerdeSegment::Unknown => None,
                })
                .collect();
            let error = error.into_inner();
            let line = match error.span() {
                Some(span) => Some(line_at(self.text, span.start)),
                None => self.line_of(&key),
            };
            let message = shape_message(&key, error.message());
            self.error(line, &key, message)
        })
    }

    /// Names the file and line of a failed check.
    pub(super) fn locate(&self, invalid: Invalid) -> ConfigError {
        let line = self.line_of(&invalid.key);
        self.error(line, &invalid.key, invalid.message)
    }

    fn error(&self, line: Option<usize>, key: &KeyPath, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line,
            key: key.to_string(),
            message,
        }
    }

    /// The line of the value at `key`; for a key that is not in the file, the line of the
    /// nearest enclosing table that is.
    fn line_of(&self, key: &KeyPath) -> Option<usize> {
        let mut table = Some(self.root.get_ref());
        let mut array = None;
        let mut found: Option<&Spanned<DeValue<'_>>> = None;
        for segment in key.segments() {
            let next = match segment {
                Segment::Key(name) => table.and_then(|table| {
                    table
                        .iter()
                        .find(|(k, _)| k.get_ref() == name)
                        .map(|(_, value)| value)
                }),
                Segment::Index(index) => array.and_then(|array: &[_]| array.get(*index)),
            };
            let Some(value) = next else { break };
            found = Some(value);
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|array| &array[..]);
        }
        found.map(|value| line_at(self.text, value.span().start))
    }
}

/// Serde's message, except that an unknown key under `[modules]` is an unknown module.
fn shape_message(key: &KeyPath, message: &str) -> String {
    if let [Segment::Key(section), Segment::Key(name)] = key.segments() {
        let unknown = format!("unknown field `{name}`");
        if let (true, Some(rest)) = (section == "modules", message.strip_prefix(&unknown)) {
            return format!("unknown module `{key}`{rest}");
        }
    }
    message.to_owned()
}

/// The 1-based line that contains byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
