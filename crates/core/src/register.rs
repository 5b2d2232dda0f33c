//! In-band registration (XEP-0077) over `jabber:iq:register`.
//!
//! Cancellation (section 3.2: `<remove/>`) is always served to an authenticated user: the
//! account and its data are deleted through [`Server::remove_account`], the request gets its
//! result, then every session of the account ends with `<not-authorized/>`.
//!
//! With `[modules.mod_register]` (off by default), new accounts may also be created before
//! authentication (section 3.1, advertised with the `iq-register` stream feature, offered only
//! where passwords may cross the stream) and users may change their password (section 3.3).
//! `password_strength` (MongooseIM's option) refuses passwords with fewer bits of entropy.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use herald_sasl::Credentials;
use herald_storage::StorageError;
use herald_stream::Bare;
use herald_stream::stanza::IqType;
use jid::{BareJid, NodePart};
use minidom::Element;
use xmpp_parsers::{
    ibr::LegacyQuery,
    ns,
    stanza_error::{DefinedCondition, ErrorType},
};

use crate::{
    Server,
    module::{
        IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, PreAuthIqHandler,
        PreAuthRequest, Registrar,
    },
};

/// XEP-0077 section 8: the stream feature announcing registration before authentication.
const REGISTER_FEATURE: &str = herald_stream::ns::REGISTER_FEATURE;

/// `[modules.mod_register]` (MongooseIM's names, and ejabberd's `registration_timeout`):
/// in-band registration and password changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterConfig {
    /// `password_strength`: the least entropy, in bits, of a new password (default 0: any
    /// non-empty password).
    pub password_strength: u32,
    /// `registration_timeout` (seconds, default 600): one account registered per IP address
    /// in this long; `None` for `"infinity"` (no limit).
    pub registration_timeout: Option<std::time::Duration>,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        RegisterConfig {
            password_strength: 0,
            registration_timeout: Some(std::time::Duration::from_secs(600)),
        }
    }
}

/// `[modules.mod_register]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRegister {
    /// See [`RegisterConfig::password_strength`].
    pub password_strength: Option<crate::config::Integer>,
    /// Seconds, or "infinity".
    pub registration_timeout: Option<toml::Value>,
}

impl crate::config::Section for RegisterConfig {
    type Raw = RawRegister;

    fn from_raw(
        raw: RawRegister,
        at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        let password_strength = match raw.password_strength {
            Some(n) => crate::config::integer(
                n,
                0,
                "an integer from 0 (bits of entropy)",
                &at.key("password_strength"),
            )?,
            None => 0,
        };
        let registration_timeout = match raw.registration_timeout {
            Some(value) => {
                crate::config::integer_or(value, "infinity", 1, &at.key("registration_timeout"))?
                    .map(std::time::Duration::from_secs)
            }
            None => RegisterConfig::default().registration_timeout,
        };
        Ok(RegisterConfig {
            password_strength,
            registration_timeout,
        })
    }
}

/// The `jabber:iq:register` module.
#[derive(Debug)]
pub struct Register {
    in_band: Option<RegisterConfig>,
}

impl Register {
    /// Cancellation only (`None`), or with registration and password changes
    /// (`mod_register`).
    pub fn new(in_band: Option<RegisterConfig>) -> Arc<Register> {
        Arc::new(Register { in_band })
    }
}

impl Module for Register {
    fn name(&self) -> &'static str {
        "mod_register"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        let handler = Arc::new(AccountRequest(Arc::clone(&self)));
        // Without `to` or to the account itself, and to the server (section 3.3's example).
        r.iq(IqScope::Account, ns::REGISTER, handler.clone());
        r.iq(IqScope::Server, ns::REGISTER, handler);
        if let Some(in_band) = self.in_band {
            // Advertised only with registration and password changes: clients read the
            // feature as "in-band registration is supported".
            r.feature(ns::REGISTER);
            r.pre_auth_iq(
                ns::REGISTER,
                Element::bare("register", REGISTER_FEATURE),
                Arc::new(NewAccount {
                    in_band,
                    recent: Mutex::default(),
                }),
            );
        }
    }
}

/// A `jabber:iq:register` request, checked.
#[derive(Debug, PartialEq, Eq)]
enum RegisterRequest {
    /// The fields to fill (section 3.1).
    Fields,
    /// Section 3.2: cancel the registration.
    Remove,
    /// Section 3.1 (new account) or 3.3 (password change).
    Submit { username: String, password: String },
}

fn error(type_: ErrorType, condition: DefinedCondition) -> IqError {
    IqError::new(type_, condition)
}

fn not_acceptable() -> IqError {
    error(ErrorType::Modify, DefinedCondition::NotAcceptable)
}

impl RegisterRequest {
    fn parse(kind: IqType, payload: &Element) -> Result<RegisterRequest, IqError> {
        match kind {
            IqType::Get => Ok(RegisterRequest::Fields),
            IqType::Set if payload.has_child("remove", ns::REGISTER) => {
                // Section 3.2: "The <remove/> element was not the only child element".
                if payload.children().count() != 1 {
                    return Err(IqError::bad_request());
                }
                Ok(RegisterRequest::Remove)
            }
            IqType::Set => {
                // Data forms (section 4) are not offered, so not accepted.
                if payload.has_child("x", ns::DATA_FORMS) {
                    return Err(IqError::bad_request());
                }
                let query =
                    LegacyQuery::try_from(payload.clone()).map_err(|_| IqError::bad_request())?;
                // Section 3.1: every requested field must be given; an empty password is
                // never a password (sections 3.1 and 3.3).
                match (query.username, query.password) {
                    (Some(username), Some(password))
                        if !username.trim().is_empty() && !password.is_empty() =>
                    {
                        Ok(RegisterRequest::Submit {
                            username: username.trim().to_owned(),
                            password,
                        })
                    }
                    _ => Err(not_acceptable()),
                }
            }
            IqType::Result | IqType::Error => Err(IqError::bad_request()),
        }
    }
}

/// An estimate of a password's entropy in bits: its length times the bits of the alphabet
/// made of the character classes it uses (lowercase, uppercase, digits, other printable
/// ASCII, anything else).
fn entropy(password: &str) -> f64 {
    let (mut lower, mut upper, mut digit, mut symbol, mut other) = (0, 0, 0, 0, 0);
    for c in password.chars() {
        match c {
            'a'..='z' => lower = 26,
            'A'..='Z' => upper = 26,
            '0'..='9' => digit = 10,
            ' '..='~' => symbol = 33,
            _ => other = 128,
        }
    }
    let alphabet = f64::from(lower + upper + digit + symbol + other);
    if alphabet == 0.0 {
        return 0.0;
    }
    password.chars().count() as f64 * alphabet.log2()
}

impl RegisterConfig {
    /// The SCRAM secrets of an acceptable new password.
    async fn credentials(&self, password: String) -> Result<Credentials, IqError> {
        if entropy(&password) < f64::from(self.password_strength) {
            return Err(not_acceptable());
        }
        // Deriving the secrets takes thousands of hash rounds: off the async threads.
        tokio::task::spawn_blocking(move || {
            Credentials::from_password(&password, Credentials::DEFAULT_ITERATIONS)
        })
        .await
        .map_err(|_| IqError::internal())?
        .map_err(|_| not_acceptable())
    }
}

fn storage_error(error: StorageError) -> IqError {
    tracing::error!(%error, "in-band registration failed");
    IqError::internal()
}

/// `jabber:iq:register` from an authenticated user: fields, cancellation, password change.
struct AccountRequest(Arc<Register>);

#[async_trait::async_trait]
impl IqHandler for AccountRequest {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let user = match request.sender.try_as_full() {
            Ok(sender) if server.is_local_domain(sender.domain().as_str()) => sender.bare(),
            // Components manage no account here.
            _ => return Err(IqError::service_unavailable()),
        };
        // Only the account itself (or its server on its behalf) is asked.
        let target = request.target.bare();
        if target != user && target.as_str() != user.domain().as_str() {
            return Err(error(ErrorType::Auth, DefinedCondition::Forbidden));
        }
        match RegisterRequest::parse(request.kind, request.payload)? {
            RegisterRequest::Fields => {
                // Section 3.1: a registered entity gets <registered/> and what is on file.
                let query = LegacyQuery {
                    registered: true,
                    username: user.node().map(|node| node.to_string()),
                    ..LegacyQuery::default()
                };
                Ok(Some(query.into()))
            }
            RegisterRequest::Remove => match server.remove_account(&user).await {
                Ok(true) => Ok(None),
                // Removed meanwhile (by another session or the command line).
                Ok(false) => Err(error(
                    ErrorType::Auth,
                    DefinedCondition::RegistrationRequired,
                )),
                Err(error) => Err(storage_error(error)),
            },
            RegisterRequest::Submit { username, password } => {
                let Some(in_band) = self.0.in_band else {
                    // Section 3.3: the server does not allow password changes.
                    return Err(error(ErrorType::Cancel, DefinedCondition::NotAllowed));
                };
                let same_user = NodePart::new(&username)
                    .ok()
                    .is_some_and(|node| Some(&*node) == user.node());
                if !same_user {
                    // A password change names the account it changes.
                    return Err(IqError::bad_request());
                }
                let credentials = in_band.credentials(password).await?;
                match server
                    .storage
                    .accounts()
                    .set_credentials(&user, &credentials)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(%user, "password changed in-band");
                        Ok(None)
                    }
                    Err(StorageError::NotFound) => Err(error(
                        ErrorType::Auth,
                        DefinedCondition::RegistrationRequired,
                    )),
                    Err(error) => Err(storage_error(error)),
                }
            }
        }
    }
}

/// `jabber:iq:register` before authentication: the fields, and the creation of an account,
/// at most one per address per `registration_timeout`.
struct NewAccount {
    in_band: RegisterConfig,
    /// When each address last registered an account.
    recent: Mutex<HashMap<IpAddr, Instant>>,
}

impl NewAccount {
    /// Whether `peer` registered an account less than `registration_timeout` ago.
    fn too_soon(&self, peer: IpAddr, now: Instant) -> bool {
        let Some(timeout) = self.in_band.registration_timeout else {
            return false;
        };
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(&peer)
            .is_some_and(|last| now.duration_since(*last) < timeout)
    }

    /// `peer` registered an account (older records are swept).
    fn registered(&self, peer: IpAddr, now: Instant) {
        let Some(timeout) = self.in_band.registration_timeout else {
            return;
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, last| now.duration_since(*last) < timeout);
        recent.insert(peer, now);
    }
}

#[async_trait::async_trait]
impl PreAuthIqHandler for NewAccount {
    async fn handle(&self, server: &Server, request: PreAuthRequest<'_>) -> IqResponse {
        match RegisterRequest::parse(request.kind, request.payload)? {
            RegisterRequest::Fields => {
                let query = LegacyQuery {
                    instructions: Some("Choose a username and password.".to_owned()),
                    username: Some(String::new()),
                    password: Some(String::new()),
                    ..LegacyQuery::default()
                };
                Ok(Some(query.into()))
            }
            // Section 3.2: an unauthenticated entity has nothing to cancel.
            RegisterRequest::Remove => Err(error(
                ErrorType::Auth,
                DefinedCondition::RegistrationRequired,
            )),
            RegisterRequest::Submit { username, password } => {
                let Ok(node) = NodePart::new(&username) else {
                    return Err(not_acceptable());
                };
                let user = BareJid::from_parts(Some(&node), request.domain);
                let credentials = self.in_band.credentials(password).await?;
                if self.too_soon(request.peer, Instant::now()) {
                    // XEP-0077 section 3.1 lets a server refuse; ejabberd answers the same.
                    tracing::debug!(peer = %request.peer, "in-band registration too soon after the last from this address");
                    return Err(error(ErrorType::Wait, DefinedCondition::ResourceConstraint));
                }
                match server.storage.accounts().create(&user, &credentials).await {
                    Ok(()) => {
                        self.registered(request.peer, Instant::now());
                        tracing::info!(%user, "account registered in-band");
                        Ok(None)
                    }
                    // Section 3.1: the username is taken.
                    Err(StorageError::AlreadyExists) => {
                        Err(error(ErrorType::Cancel, DefinedCondition::Conflict))
                    }
                    Err(error) => Err(storage_error(error)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: IqType, xml: &str) -> Result<RegisterRequest, IqError> {
        RegisterRequest::parse(kind, &xml.parse().unwrap())
    }

    #[test]
    fn the_examples_of_xep_0077_are_read() {
        assert_eq!(
            parse(IqType::Get, "<query xmlns='jabber:iq:register'/>"),
            Ok(RegisterRequest::Fields)
        );
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:register'><username>bill</username>\
                 <password>Calliope</password></query>"
            ),
            Ok(RegisterRequest::Submit {
                username: "bill".into(),
                password: "Calliope".into()
            })
        );
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:register'><remove/></query>"
            ),
            Ok(RegisterRequest::Remove)
        );
    }

    #[test]
    fn remove_with_other_children_is_a_bad_request() {
        assert_eq!(
            parse(
                IqType::Set,
                "<query xmlns='jabber:iq:register'><remove/><username>bill</username></query>"
            ),
            Err(IqError::bad_request())
        );
    }

    #[test]
    fn a_missing_or_empty_password_is_not_acceptable() {
        for xml in [
            "<query xmlns='jabber:iq:register'><username>bill</username></query>",
            "<query xmlns='jabber:iq:register'><username>bill</username><password/></query>",
            "<query xmlns='jabber:iq:register'><password>x</password></query>",
        ] {
            assert_eq!(parse(IqType::Set, xml), Err(not_acceptable()), "{xml}");
        }
    }

    #[test]
    fn entropy_grows_with_length_and_alphabet() {
        assert_eq!(entropy(""), 0.0);
        let digits = entropy("123456");
        let lower = entropy("abcdef");
        let mixed = entropy("aB3$eF");
        assert!(digits < lower && lower < mixed, "{digits} {lower} {mixed}");
        assert!((entropy("aaaaaaaa") - 8.0 * 26f64.log2()).abs() < 1e-9);
        assert!(entropy("correct horse battery staple") > 100.0);
    }
}
