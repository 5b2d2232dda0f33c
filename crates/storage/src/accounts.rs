//! Accounts: who may log in, and the SCRAM secrets that prove it (RFC 6120 section 6, RFC 5802,
//! RFC 7677).
//!
//! An account is keyed by a bare JID with a localpart, `user@domain`, already normalised by the
//! `jid` crate (nodeprep for the localpart, nameprep for the domain, RFC 6122), so
//! `User@Example.org` and `user@example.org` are the same account. What is stored is
//! [`Credentials`]: salts, iteration counts and the derived `StoredKey`/`ServerKey`, never a
//! password.

#[doc(hidden)]
pub mod conformance;

use herald_sasl::Credentials;
use jid::{BareJid, DomainPart, NodePart};

use crate::StorageError;

/// The accounts of the server. Engines implement it; the server uses it through
/// `Arc<dyn AccountStore>` from [`Storage::accounts`](crate::Storage::accounts).
///
/// Every method taking a `user` fails with [`StorageError::InvalidUser`] when the JID has no
/// localpart.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Create an account; [`StorageError::AlreadyExists`] if it exists.
    async fn create(&self, user: &BareJid, credentials: &Credentials) -> Result<(), StorageError>;

    /// Replace the credentials of an existing account (a password change);
    /// [`StorageError::NotFound`] if there is no such account.
    async fn set_credentials(
        &self,
        user: &BareJid,
        credentials: &Credentials,
    ) -> Result<(), StorageError>;

    /// The stored credentials, or `None` if there is no such account.
    async fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StorageError>;

    /// Whether the account exists.
    async fn exists(&self, user: &BareJid) -> Result<bool, StorageError>;

    /// Remove an account; returns whether it existed.
    async fn remove(&self, user: &BareJid) -> Result<bool, StorageError>;

    /// All accounts, or those of one domain, sorted by domain then localpart, each compared
    /// code point by code point. The domain is nameprepped first, so `Example.ORG` lists the
    /// accounts of `example.org`; a string that is not a valid domain has no accounts.
    async fn list(&self, domain: Option<&str>) -> Result<Vec<BareJid>, StorageError>;
}

/// The storage key of an account: the normalised parts of its bare JID, as stored in the
/// `users(server, username)` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountKey<'a> {
    /// The domainpart, stored as `server`.
    pub(crate) domain: &'a str,
    /// The localpart, stored as `username`.
    pub(crate) localpart: &'a str,
}

impl<'a> AccountKey<'a> {
    /// The key of `user`, which must have a localpart.
    pub(crate) fn of(user: &'a BareJid) -> Result<Self, StorageError> {
        let localpart = user
            .node()
            .ok_or_else(|| StorageError::InvalidUser(user.to_string()))?;
        Ok(AccountKey {
            domain: user.domain().as_str(),
            localpart: localpart.as_str(),
        })
    }

    /// The bare JID of a stored key, which must already be in normalised form: anything else
    /// was not written by herald.
    pub(crate) fn to_jid(self) -> Result<BareJid, StorageError> {
        let corrupt =
            || StorageError::Corrupt(format!("users row ({}, {})", self.domain, self.localpart));
        let localpart = NodePart::new(self.localpart).map_err(|_| corrupt())?;
        let domain = DomainPart::new(self.domain).map_err(|_| corrupt())?;
        if localpart.as_str() != self.localpart || domain.as_str() != self.domain {
            return Err(corrupt());
        }
        Ok(BareJid::from_parts(Some(&localpart), &domain))
    }
}

/// The stored form of a domain given to [`AccountStore::list`], or `None` if no account can
/// have it.
pub(crate) fn normalise_domain(domain: &str) -> Option<String> {
    DomainPart::new(domain)
        .ok()
        .map(|domain| domain.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_normalised_parts_of_the_jid() {
        let user = BareJid::new("Juliet@Capulet.example").unwrap();
        let key = AccountKey::of(&user).unwrap();
        assert_eq!(
            key,
            AccountKey {
                domain: "capulet.example",
                localpart: "juliet"
            }
        );
        assert_eq!(key.to_jid().unwrap(), user);
    }

    #[test]
    fn a_domain_only_jid_has_no_key() {
        let domain = BareJid::new("capulet.example").unwrap();
        assert!(matches!(
            AccountKey::of(&domain),
            Err(StorageError::InvalidUser(jid)) if jid == "capulet.example"
        ));
    }

    #[test]
    fn a_stored_key_that_is_not_normalised_is_corrupt() {
        let key = AccountKey {
            domain: "capulet.example",
            localpart: "Juliet",
        };
        assert!(matches!(key.to_jid(), Err(StorageError::Corrupt(_))));
        let key = AccountKey {
            domain: "capulet.example",
            localpart: "jul@iet",
        };
        assert!(matches!(key.to_jid(), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn listing_normalises_the_domain() {
        assert_eq!(
            normalise_domain("Capulet.EXAMPLE").as_deref(),
            Some("capulet.example")
        );
        assert_eq!(normalise_domain("not a domain"), None);
    }
}
