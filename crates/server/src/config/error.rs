//! The configuration error and the key paths it names.

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

pub(super) use herald_core::config::{Invalid, KeyPath, Segment};
