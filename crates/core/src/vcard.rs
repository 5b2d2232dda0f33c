//! vCard-temp (XEP-0054), `[modules.mod_vcard]`: each account's vCard, set by its owner and
//! read by anyone (section 3.1: a user's vCard is public, like the avatar hashes clients
//! advertise in presence). A vCard is kept as the client sent it, up to `max_size` bytes.
//! Docs: `docs/modules/vcard.md`.

use std::sync::Arc;

use herald_storage::UserDataStore;
use herald_stream::Bare;
use herald_stream::stanza::IqType;
use minidom::Element;

use crate::{
    Server,
    config::{self, Integer, Invalid, KeyPath, Section},
    hooks::Priority,
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

/// XEP-0054's namespace.
pub const NS: &str = "vcard-temp";
/// The rows' kind in the per-user data store.
const KIND: &str = "vcard";

/// `[modules.mod_vcard]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcardConfig {
    /// `max_size`: the largest vCard accepted, in bytes of XML (default 64 KiB; an avatar
    /// belongs in PEP, XEP-0084).
    pub max_size: usize,
}

impl Default for VcardConfig {
    fn default() -> Self {
        VcardConfig {
            max_size: 64 * 1024,
        }
    }
}

/// `[modules.mod_vcard]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawVcard {
    /// See [`VcardConfig::max_size`].
    pub max_size: Option<Integer>,
}

impl Section for VcardConfig {
    type Raw = RawVcard;

    fn from_raw(raw: RawVcard, at: &KeyPath) -> Result<Self, Invalid> {
        let max_size = match raw.max_size {
            Some(n) => config::integer(n, 1usize, "at least 1 (bytes)", &at.key("max_size"))?,
            None => VcardConfig::default().max_size,
        };
        Ok(VcardConfig { max_size })
    }
}

/// The vCard module.
pub struct Vcard {
    config: VcardConfig,
    store: Arc<dyn UserDataStore>,
}

impl Vcard {
    /// The module over the server's store.
    pub fn new(config: VcardConfig, store: Arc<dyn UserDataStore>) -> Arc<Vcard> {
        Arc::new(Vcard { config, store })
    }
}

impl Module for Vcard {
    fn name(&self) -> &'static str {
        "mod_vcard"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(NS);
        r.account_feature(NS);
        r.iq(IqScope::Account, NS, Arc::new(Requests(Arc::clone(&self))));
        r.hooks().user_removed.add(
            Priority::NORMAL,
            Arc::new(crate::user_data::RemoveUserData(Arc::clone(&self.store))),
        );
    }
}

struct Requests(Arc<Vcard>);

#[async_trait::async_trait]
impl IqHandler for Requests {
    async fn handle(&self, _server: &Server, request: IqRequest<'_>) -> IqResponse {
        if request.payload.name() != "vCard" {
            return Err(IqError::bad_request());
        }
        let user = request.target.bare();
        let vcard = &self.0;
        match request.kind {
            IqType::Get => {
                let stored = vcard
                    .store
                    .get(&user, KIND, "", "")
                    .await
                    .map_err(|_| IqError::internal())?;
                // Section 3.1: no vCard is an empty one (the account's existence is not
                // revealed either way).
                let element = stored
                    .and_then(|text| text.parse::<Element>().ok())
                    .unwrap_or_else(|| Element::bare("vCard", NS));
                Ok(Some(element))
            }
            IqType::Set => {
                // Section 3.2: only the owner sets it.
                if !request.sender.same_bare(&user) {
                    return Err(IqError::forbidden());
                }
                let text = String::from(request.payload);
                if text.len() > vcard.config.max_size {
                    return Err(IqError::new(
                        xmpp_parsers::stanza_error::ErrorType::Modify,
                        xmpp_parsers::stanza_error::DefinedCondition::NotAcceptable,
                    ));
                }
                vcard
                    .store
                    .put(&user, KIND, "", "", &text)
                    .await
                    .map_err(|_| IqError::internal())?;
                Ok(None)
            }
            _ => Err(IqError::bad_request()),
        }
    }
}
