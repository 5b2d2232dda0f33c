//! The push crate's errors, turned into stanza errors at one place: the IQ handler in
//! [`crate::iq`], which logs storage failures once.

use herald_core::module::IqError;
use herald_storage::StorageError;

/// Why a push operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The registration store failed (or holds data herald did not write).
    #[error("registration store: {0}")]
    Storage(#[from] StorageError),
    /// The configured backend has no engine in this build or this storage.
    #[error("backend {0:?} is not available: {1}")]
    BackendUnavailable(&'static str, &'static str),
    /// The HTTP push service's client cannot be built (pool name, reason).
    #[error("outgoing_pools.http.{0}: {1}")]
    HttpService(String, crate::mongoosepush::ClientError),
}

/// Why an enable or disable request is refused (push.md section 3), with the rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `cancel/not-allowed`: a `get`, or a sender that is not a local account.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// `modify/bad-request`: the request breaks a rule of push.md section 3.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `cancel/service-unavailable`: addressed to another user's account.
    #[error("service unavailable: {0}")]
    ServiceUnavailable(&'static str),
    /// `cancel/feature-not-implemented`: an extension asked with an option herald does not
    /// offer (an encryption algorithm other than aes-128-gcm).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

impl From<RequestError> for IqError {
    fn from(error: RequestError) -> IqError {
        use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};
        match error {
            RequestError::NotAllowed(_) => {
                IqError::new(ErrorType::Cancel, DefinedCondition::NotAllowed)
            }
            RequestError::BadRequest(_) => IqError::bad_request(),
            RequestError::ServiceUnavailable(_) => IqError::service_unavailable(),
            RequestError::NotImplemented(_) => {
                IqError::new(ErrorType::Cancel, DefinedCondition::FeatureNotImplemented)
            }
        }
    }
}

impl From<PushError> for IqError {
    /// A store failure is `wait/internal-server-error` (push.md section 10); the IQ handler
    /// logs it, once.
    fn from(_: PushError) -> IqError {
        IqError::internal()
    }
}
