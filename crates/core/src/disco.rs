//! Service discovery (XEP-0030), `[modules.mod_disco]`: the server's identity, the features
//! and items that modules register, and an account's identity for its owner.

use std::sync::Arc;

use herald_stream::Bare;
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
    /// `server_info`: contact addresses (XEP-0157), each a field name such as
    /// `abuse-addresses` with its URIs, in the server's disco#info.
    pub server_info: Vec<ServerInfoEntry>,
}

/// One `[[modules.mod_disco.server_info]]` entry (MongooseIM's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfoEntry {
    /// `name`: the field, e.g. `abuse-addresses` or `admin-addresses` (XEP-0157 section 2).
    pub name: String,
    /// `urls`: its values (`mailto:`, `xmpp:`, `https:` URIs).
    pub urls: Vec<String>,
}

/// `[modules.mod_disco]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawDisco {
    /// See [`DiscoConfig::extra_domains`].
    #[serde(default)]
    pub extra_domains: Vec<String>,
    /// See [`DiscoConfig::server_info`].
    #[serde(default)]
    pub server_info: Vec<RawServerInfoEntry>,
}

/// A `server_info` entry as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with name and urls")]
pub struct RawServerInfoEntry {
    /// See [`ServerInfoEntry::name`].
    pub name: Option<String>,
    /// See [`ServerInfoEntry::urls`].
    pub urls: Option<Vec<String>>,
}

impl crate::config::Section for DiscoConfig {
    type Raw = RawDisco;

    fn from_raw(
        raw: RawDisco,
        at: &crate::config::KeyPath,
    ) -> Result<Self, crate::config::Invalid> {
        let extra_domains = crate::config::domains(&raw.extra_domains, &at.key("extra_domains"))?;
        let mut server_info = Vec::new();
        for (index, entry) in raw.server_info.into_iter().enumerate() {
            let at = at.key("server_info").index(index);
            let name = crate::config::required(
                entry.name,
                &at.key("name"),
                "a field name such as \"abuse-addresses\"",
            )?;
            if name.is_empty() || name == "FORM_TYPE" {
                return Err(crate::config::Invalid::new(
                    at.key("name"),
                    "a field name such as \"abuse-addresses\"".to_owned(),
                ));
            }
            let urls = crate::config::required(entry.urls, &at.key("urls"), "a list of URIs")?;
            server_info.push(ServerInfoEntry { name, urls });
        }
        Ok(DiscoConfig {
            extra_domains: extra_domains
                .into_iter()
                .map(jid::DomainPart::into_inner)
                .collect(),
            server_info,
        })
    }
}

/// The disco module.
pub struct Disco {
    extra_domains: Vec<Jid>,
    server_info: Vec<ServerInfoEntry>,
}

impl Disco {
    /// `extra_domains` are listed in the server's disco#items (MongooseIM's option name).
    pub fn new(extra_domains: Vec<Jid>) -> Disco {
        Disco {
            extra_domains,
            server_info: Vec::new(),
        }
    }

    /// The module with its options.
    pub fn with_config(config: &DiscoConfig) -> Disco {
        Disco {
            server_info: config.server_info.clone(),
            ..Disco::new(
                config
                    .extra_domains
                    .iter()
                    .filter_map(|domain| Jid::new(domain).ok())
                    .collect(),
            )
        }
    }
}

/// XEP-0157's form: FORM_TYPE `http://jabber.org/network/serverinfo` and one field per entry.
fn server_info_form(entries: &[ServerInfoEntry]) -> xmpp_parsers::data_forms::DataForm {
    use xmpp_parsers::data_forms::{DataForm, DataFormType};
    let fields = entries
        .iter()
        .map(|entry| {
            xmpp_parsers::server_info::generate_address_field(&entry.name, entry.urls.clone())
        })
        .collect();
    let mut form = DataForm::new(DataFormType::Result_, ns::SERVER_INFO, fields);
    form.title = None;
    form
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
        if !self.server_info.is_empty() {
            r.server_form(server_info_form(&self.server_info));
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
        // XEP-0115 section 6.2: the caps node#ver names the same information.
        if query.node.is_some() && query.node.as_deref() != server.extensions.caps_ver() {
            return Err(IqError::item_not_found());
        }
        Ok(Some(server.extensions.server_info(query.node).into()))
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

/// XEP-0030 section 3.2 with RFC 6121 section 8.5.1: an account's disco answers its owner
/// and the contacts subscribed to its presence (XEP-0163 section 4.1: they look for the
/// `pubsub`/`pep` identity there) with the account identity and what modules add; others
/// get service-unavailable, which does not reveal whether the account exists.
struct AccountInfo;

#[async_trait::async_trait]
impl IqHandler for AccountInfo {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        only_get(&request)?;
        let user = request.target.bare();
        let contact = request.sender.bare();
        if user != contact {
            let subscribed = match server.roster() {
                Some(roster) => roster
                    .state(server, &user, &contact)
                    .await
                    .is_ok_and(|state| state.has_from()),
                None => false,
            };
            if !subscribed {
                return Err(IqError::service_unavailable());
            }
        }
        let query = DiscoInfoQuery::try_from(request.payload.clone())
            .map_err(|_| IqError::bad_request())?;
        if query.node.is_some() {
            return Err(IqError::item_not_found());
        }
        let mut identities = vec![Identity::new("account", "registered", "en", "")];
        identities.extend(
            server
                .extensions
                .account_identities()
                .iter()
                .map(|(category, type_)| Identity::new(*category, *type_, "en", "")),
        );
        let result = DiscoInfoResult {
            node: None,
            identities,
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
        if !request.target.same_bare(request.sender) {
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
