//! Secrets in logs: push nodes and device tokens identify a device to its push service, so
//! logs at info level and above show only enough of them to tell two apart.

use std::fmt;

/// A secret shown as its first four characters and its length: `"f3a9…(152)"`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(4).collect();
        write!(f, "{shown}…({})", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_four_characters_and_its_length() {
        let token = "f3a9c0ffee-device-token-0123456789";
        let shown = Redacted(token).to_string();
        assert_eq!(shown, "f3a9…(34)");
        assert!(!shown.contains("device-token"));
        assert_eq!(Redacted("ab").to_string(), "ab…(2)");
    }
}
