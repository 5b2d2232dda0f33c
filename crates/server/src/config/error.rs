//! The configuration error and the key paths it names.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
///
/// Every message names the file; an invalid configuration also names the line (1-based, when the
/// key or its enclosing table is in the file) and the key path in TOML form, then says what was
/// wrong and what is accepted:
///
/// ```text
/// herald.toml:9: listen.c2s[0].tls.mode: unknown variant "startls", expected one of "starttls", "starttls_required", "tls"
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{}: cannot read the configuration file: {source}", .path.display())]
    Read {
        /// The file, as it was given.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or does not describe a valid configuration.
    #[error("{}", render(.origin, *.line, .key, .message))]
    Invalid {
        /// The file name used in messages.
        origin: String,
        /// The 1-based line of the offending key, or of its enclosing table when the key is
        /// missing; `None` when neither is in the file.
        line: Option<usize>,
        /// The key path in TOML form, such as `listen.c2s[1].tls.mode`; empty for a TOML syntax
        /// error.
        key: String,
        /// What was wrong and what is accepted.
        message: String,
    },
}

fn render(origin: &str, line: Option<usize>, key: &str, message: &str) -> String {
    let mut out = origin.to_owned();
    if let Some(line) = line {
        out.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        out.push_str(&format!(": {key}"));
    }
    out.push_str(&format!(": {message}"));
    out
}

/// A validation failure before it is located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub(super) key: KeyPath,
    pub(super) message: String,
}

impl Invalid {
    pub(super) fn new(key: KeyPath, message: impl Into<String>) -> Self {
        Invalid {
            key,
            message: message.into(),
        }
    }
}

/// The path of a key from the document root: `listen.c2s[1].tls.mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// A key in a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

impl KeyPath {
    /// The document root.
    pub(super) fn root() -> Self {
        KeyPath::default()
    }

    /// The path of `key` inside the table at this path.
    pub(super) fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_owned()))
    }

    /// The path of element `index` of the array at this path.
    pub(super) fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    pub(super) fn segments(&self) -> &[Segment] {
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
