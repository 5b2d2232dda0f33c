//! Service discovery (XEP-0030), `[modules.mod_disco]`: the server's identity, the features
//! and items that modules register, and an account's identity for its owner.

use std::sync::Arc;

use herald_stream::stanza::IqType;
use jid::Jid;
use xmpp_parsers::{
    disco::{DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity, Item},
    ns,
};

use crate::{
    Server,
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
};

/// `[modules.mod_disco]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoConfig {
    /// `extra_domains`: further domains listed as items of the server's disco#items, in
    /// normalised (lowercase) form.
    pub extra_domains: Vec<String>,
}

/// `[modules.mod_disco]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawDisco {
    /// See [`DiscoConfig::extra_domains`].
    #[serde(default)]
    pub extra_domains: Vec<String>,
}

impl crate::config::Section for DiscoConfig {
    type Raw = RawDisco;

    fn from_raw(
        raw: RawDisco,
        at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        let extra_domains = crate::config::domains(&raw.extra_domains, &at.key("extra_domains"))?;
        Ok(DiscoConfig {
            extra_domains: extra_domains
                .into_iter()
                .map(jid::DomainPart::into_inner)
                .collect(),
        })
    }
}

/// The disco module.
pub struct Disco {
    extra_domains: Vec<Jid>,
}

impl Disco {
    /// `extra_domains` are listed in the server's disco#items (MongooseIM's option name).
    pub fn new(extra_domains: Vec<Jid>) -> Disco {
        Disco { extra_domains }
    }

    /// The module with its options.
    pub fn with_config(config: &DiscoConfig) -> Disco {
        Disco::new(
            config
                .extra_domains
                .iter()
                .filter_map(|domain| Jid::new(domain).ok())
                .collect(),
        )
    }
}

impl Module for Disco {
    fn name(&self) -> &'static str {
        "mod_disco"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.feature(ns::DISCO_INFO);
        r.feature(ns::DISCO_ITEMS);
        r.account_feature(ns::DISCO_INFO);
        r.account_feature(ns::DISCO_ITEMS);
        for domain in &self.extra_domains {
            r.item(domain.clone());
        }
        r.iq(IqScope::Server, ns::DISCO_INFO, Arc::new(ServerInfo));
        r.iq(IqScope::Server, ns::DISCO_ITEMS, Arc::new(ServerItems));
        r.iq(IqScope::Account, ns::DISCO_INFO, Arc::new(AccountInfo));
        r.iq(IqScope::Account, ns::DISCO_ITEMS, Arc::new(AccountItems));
    }
}

fn only_get(request: &IqRequest<'_>) -> Result<(), IqError> {
    match request.kind {
        IqType::Get => Ok(()),
        // XEP-0030 section 3.1: disco is queried with get.
        _ => Err(IqError::not_implemented()),
    }
}

struct ServerInfo;

#[async_trait::async_trait]
impl IqHandler for ServerInfo {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        only_get(&request)?;
        let query = DiscoInfoQuery::try_from(request.payload.clone())
            .map_err(|_| IqError::bad_request())?;
        if query.node.is_some() {
            return Err(IqError::item_not_found());
        }
        let result = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("server", "im", "en", "herald")],
            features: server.extensions.features().map(str::to_owned).collect(),
            extensions: Vec::new(),
        };
        Ok(Some(result.into()))
    }
}

struct ServerItems;

#[async_trait::async_trait]
impl IqHandler for ServerItems {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        only_get(&request)?;
        let query = DiscoItemsQuery::try_from(request.payload.clone())
            .map_err(|_| IqError::bad_request())?;
        if query.node.is_some() {
            return Err(IqError::item_not_found());
        }
        // Configured extra domains, then the connected components (XEP-0114 components
        // are listed unless hidden).
        let items = server
            .extensions
            .items()
            .iter()
            .cloned()
            .chain(server.components.visible())
            .map(|jid| Item {
                jid,
                node: None,
                name: None,
            })
            .collect();
        Ok(Some(
            DiscoItemsResult {
                node: None,
                items,
                rsm: None,
            }
            .into(),
        ))
    }
}

/// XEP-0030 section 3.2 with RFC 6121 section 8.5.1: an account's own disco answers with
/// the account identity; others get service-unavailable, which does not reveal whether
/// the account exists.
struct AccountInfo;

#[async_trait::async_trait]
impl IqHandler for AccountInfo {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        only_get(&request)?;
        if request.target.to_bare() != request.sender.to_bare() {
            return Err(IqError::service_unavailable());
        }
        let query = DiscoInfoQuery::try_from(request.payload.clone())
            .map_err(|_| IqError::bad_request())?;
        if query.node.is_some() {
            return Err(IqError::item_not_found());
        }
        let result = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("account", "registered", "en", "")],
            features: server
                .extensions
                .account_features()
                .map(str::to_owned)
                .collect(),
            extensions: Vec::new(),
        };
        Ok(Some(result.into()))
    }
}

struct AccountItems;

#[async_trait::async_trait]
impl IqHandler for AccountItems {
    async fn handle(&self, _server: &Server, request: IqRequest<'_>) -> IqResponse {
        only_get(&request)?;
        if request.target.to_bare() != request.sender.to_bare() {
            return Err(IqError::service_unavailable());
        }
        Ok(Some(
            DiscoItemsResult {
                node: None,
                items: Vec::new(),
                rsm: None,
            }
            .into(),
        ))
    }
}
