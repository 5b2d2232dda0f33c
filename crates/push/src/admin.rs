//! What an operator can do with the module while the server runs (the admin API and
//! `herald push ...`, docs/operations.md): list a user's registrations with their last
//! outcomes, disable them, and send a test push to one and read the app server's answer.

use std::time::SystemTime;

use herald_core::Server;
use jid::BareJid;
use minidom::Element;

use crate::{
    Push,
    events::{Event, Message},
    metrics::{LastOutcomes, RequestId},
    publisher::{Report, Submitted},
    registrations::{EnabledInSession, Registration, RegistrationKey},
};
use herald_stream::{
    ns::CLIENT,
    stanza::{MessageType, set_attr},
};

/// Publish-options fields whose values are secrets (device tokens, app server secrets):
/// shown masked. Matched on the field name, case-insensitively.
const SECRET_WORDS: [&str; 5] = ["secret", "token", "password", "key", "device_id"];

/// A registration as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationView {
    /// The app server's pubsub service.
    pub pubsub: BareJid,
    /// The node.
    pub node: String,
    /// The publish-options fields, secrets masked (see [`mask`]).
    pub form: Vec<(String, String)>,
    /// When it was enabled.
    pub created: SystemTime,
    /// Its publishes' last success and last error since the server started.
    pub last: LastOutcomes,
}

/// A value masked as its first four characters and its length, or as is when the field is not
/// a secret.
pub fn mask(field: &str, value: &str) -> String {
    let lower = field.to_lowercase();
    if SECRET_WORDS.iter().any(|word| lower.contains(word)) {
        crate::redact::Redacted(value).to_string()
    } else {
        value.to_owned()
    }
}

/// Why a test push was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TestPushError {
    /// The user has no registration (with that node).
    #[error("no such push registration")]
    NoRegistration,
    /// The registration store failed.
    #[error("cannot read the registrations: {0}")]
    Store(#[from] herald_storage::StorageError),
    /// The route or the plugin refused it (e.g. a virtual pubsub host without the service).
    #[error("not sendable: {0}")]
    Skipped(&'static str),
    /// The publisher did not take it.
    #[error("not queued: {0:?}")]
    NotQueued(Submitted),
}

impl Push {
    /// The registrations of `owner`, oldest first, as an operator sees them.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn registrations_of(
        &self,
        owner: &BareJid,
    ) -> Result<Vec<RegistrationView>, herald_storage::StorageError> {
        let registrations = self.store().list(owner).await?;
        Ok(registrations
            .into_iter()
            .map(|registration| RegistrationView {
                last: self.stats.last(&registration.key),
                form: registration
                    .form
                    .iter()
                    .map(|(field, value)| (field.clone(), mask(field, value)))
                    .collect(),
                pubsub: registration.key.pubsub,
                node: registration.key.node,
                created: registration.created_at,
            })
            .collect())
    }

    /// Disable `owner`'s registration with `node` (any app server), or all of them; they
    /// are cleared from the user's sessions too. Returns the keys disabled.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn disable_for(
        &self,
        server: &Server,
        owner: &BareJid,
        node: Option<&str>,
    ) -> Result<Vec<RegistrationKey>, herald_storage::StorageError> {
        let store = self.store();
        let mut disabled = Vec::new();
        for registration in store.list(owner).await? {
            if node.is_some_and(|node| node != registration.key.node) {
                continue;
            }
            if store.disable(&registration.key).await? {
                EnabledInSession::forget_key(&server.sessions, &registration.key);
                self.stats.forget(&registration.key);
                disabled.push(registration.key);
            }
        }
        self.stats.disabled(disabled.len() as u64);
        Ok(disabled)
    }

    /// Send a test notification to `owner`'s registration with `node` (the oldest one when
    /// `None`) as if a message from the server had arrived, and wait for the app server's
    /// answer (which acts on the registration as any answer does: a `cancel` error disables
    /// it).
    ///
    /// # Errors
    ///
    /// [`TestPushError`].
    pub async fn test_push(
        &self,
        owner: &BareJid,
        node: Option<&str>,
    ) -> Result<Report, TestPushError> {
        let registration: Registration = self
            .store()
            .list(owner)
            .await?
            .into_iter()
            .find(|registration| node.is_none_or(|node| node == registration.key.node))
            .ok_or(TestPushError::NoRegistration)?;
        let request = RequestId::next();
        let from = jid::Jid::from(BareJid::from_parts(None, owner.domain()));
        let mut stanza = Element::builder("message", CLIENT)
            .append(
                Element::builder("body", CLIENT)
                    .append("herald test push")
                    .build(),
            )
            .build();
        set_attr(&mut stanza, "from", from.to_string());
        set_attr(&mut stanza, "to", owner.to_string());
        set_attr(&mut stanza, "type", "chat");
        let event = Event::Chat(Message {
            from,
            to: owner.clone(),
            type_: MessageType::Chat,
            stanza,
        });
        let payload = self
            .pipeline
            .plugin
            .prepare_notification(&event)
            .map_err(|skip| TestPushError::Skipped(skip.as_str()))?;
        let route = self
            .pipeline
            .routes
            .choose(owner, &registration, &payload)
            .map_err(|skip| TestPushError::Skipped(skip.as_str()))?;
        tracing::info!(request_id = %request, %owner, pubsub = %registration.key.pubsub, "push: test push requested");
        let report = self
            .pipeline
            .publisher
            .publish_and_wait(registration.key, route, request)
            .await
            .map_err(TestPushError::NotQueued)?;
        tracing::info!(request_id = %request, %owner, outcome = report.outcome.as_str(), answer = %report.answer, "push: test push answered");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_masked_and_others_shown() {
        assert_eq!(mask("secret", "s3cr3t-value"), "s3cr…(12)");
        assert_eq!(mask("device_id", "abcdef"), "abcd…(6)");
        assert_eq!(
            mask("endpoint", "https://push.example"),
            "https://push.example"
        );
    }
}
