//! Personal Eventing Protocol (XEP-0163) on a subset of Publish-Subscribe (XEP-0060),
//! `[modules.mod_pep]`: every account is a pubsub service at its bare JID, with nodes its
//! owner publishes to (avatars, OMEMO device lists and bundles, bookmarks, nicknames).
//!
//! - The owner publishes (section 7.1, nodes created on first publish, XEP-0163 section 3),
//!   with `publish-options` as preconditions (section 7.1.5), retracts (7.2), creates (8.1),
//!   configures (8.2) and deletes (8.4) nodes.
//! - Items are retrieved (6.5) by whoever the node's access model lets in (4.5): `open`
//!   (anyone: OMEMO bundles), `presence` (the default: contacts subscribed to the owner's
//!   presence), `roster` (contacts in `pubsub#roster_groups_allowed`), `whitelist` (the owner
//!   only: bookmarks).
//! - Notifications go to the owner's resources and the allowed contacts' resources whose
//!   Entity Capabilities (XEP-0115) list `NODE+notify` (XEP-0163 section 4.3), and the last
//!   item of each such node goes to a resource when it comes online (section 4.3.2).
//! - Nodes and items are kept in the per-user data store, at most `max_items_node` items per
//!   node and `max_payload_size` bytes per item; account removal deletes them.
//!
//! Docs: `docs/modules/pep.md`.

mod caps;
pub mod node;

use std::{sync::Arc, time::Duration};

use herald_storage::{StorageError, UserDataStore};
use herald_stream::Bare;
use herald_stream::stanza::{IqType, set_attr};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Origin, Server,
    config::{self, Integer, Invalid, KeyPath, Section},
    hooks::{Direction, Flow, Handler, PepChanged, PresenceIn, Priority, SubscriptionApproved},
    module::{IqError, IqHandler, IqRequest, IqResponse, IqScope, Module, Registrar},
    sessions::Availability,
};
use caps::{Features, Interest, Seen};
use node::{AccessModel, ERRORS, NODE_CONFIG, NodeConfig, PUBLISH_OPTIONS};

/// XEP-0060's namespaces.
pub const NS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// The kinds of rows in the per-user data store.
const NODES: &str = "pep_node";
/// The kind of the rows holding PEP items in the user-data store; a row's scope is its node
/// and its name the item id, its value the `<item/>` as XML.
pub const ITEMS: &str = "pep_item";
/// Most nodes per account.
const MAX_NODES: usize = 1000;
/// How long a caps query may take.
const CAPS_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// `[modules.mod_pep]` (MongooseIM's `mod_pubsub` names where they apply to PEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PepConfig {
    /// `max_items_node`: most items a node keeps (what `pubsub#max_items = "max"` means);
    /// default 256.
    pub max_items_node: usize,
    /// `max_payload_size`: largest item payload, in bytes of XML (MongooseIM's default,
    /// 60000).
    pub max_payload_size: usize,
    /// `caps_cache_size`: most Entity Capabilities hashes remembered (default 4096).
    pub caps_cache_size: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            max_items_node: 256,
            max_payload_size: 60_000,
            caps_cache_size: 4096,
        }
    }
}

/// `[modules.mod_pep]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPep {
    /// See [`PepConfig::max_items_node`].
    pub max_items_node: Option<Integer>,
    /// See [`PepConfig::max_payload_size`].
    pub max_payload_size: Option<Integer>,
    /// See [`PepConfig::caps_cache_size`].
    pub caps_cache_size: Option<Integer>,
}

impl Section for PepConfig {
    type Raw = RawPep;

    fn from_raw(raw: RawPep, at: &KeyPath) -> Result<Self, Invalid> {
        let defaults = PepConfig::default();
        let number = |value: Option<Integer>, key: &str, default: usize| match value {
            Some(n) => config::integer(n, 1usize, "at least 1", &at.key(key)),
            None => Ok(default),
        };
        Ok(PepConfig {
            max_items_node: number(
                raw.max_items_node,
                "max_items_node",
                defaults.max_items_node,
            )?,
            max_payload_size: number(
                raw.max_payload_size,
                "max_payload_size",
                defaults.max_payload_size,
            )?,
            caps_cache_size: number(
                raw.caps_cache_size,
                "caps_cache_size",
                defaults.caps_cache_size,
            )?,
        })
    }
}

/// The PEP module.
pub struct Pep {
    config: PepConfig,
    store: Arc<dyn UserDataStore>,
    interest: Interest,
    /// The server, once started, for the caps queries made in the background.
    server: std::sync::OnceLock<std::sync::Weak<Server>>,
}

/// The features advertised on accounts (XEP-0060 section 10 names, as clients look for them).
const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

fn storage(error: StorageError) -> IqError {
    tracing::error!(%error, "PEP storage failed");
    IqError::internal()
}

fn pubsub_error(type_: ErrorType, condition: DefinedCondition, specific: &'static str) -> IqError {
    IqError::new(type_, condition).with_specific(specific, ERRORS)
}

impl Pep {
    /// The module over the server's store.
    pub fn new(config: PepConfig, store: Arc<dyn UserDataStore>) -> Arc<Pep> {
        Arc::new(Pep {
            config,
            interest: Interest::new(config.caps_cache_size),
            store,
            server: std::sync::OnceLock::new(),
        })
    }

    async fn node(&self, owner: &BareJid, node: &str) -> Result<Option<NodeConfig>, IqError> {
        let stored = self
            .store
            .get(owner, NODES, "", node)
            .await
            .map_err(storage)?;
        Ok(stored
            .map(|json| serde_json::from_str(&json).unwrap_or_else(|_| NodeConfig::defaults())))
    }

    async fn save_node(
        &self,
        owner: &BareJid,
        node: &str,
        config: &NodeConfig,
    ) -> Result<(), IqError> {
        let json = serde_json::to_string(config).map_err(|_| IqError::internal())?;
        self.store
            .put(owner, NODES, "", node, &json)
            .await
            .map_err(storage)
    }

    /// Keep the node's `max_items` latest items.
    async fn trim(&self, owner: &BareJid, node: &str, config: &NodeConfig) -> Result<(), IqError> {
        let keep = config.max_items(self.config.max_items_node);
        self.store
            .trim(owner, ITEMS, node, keep)
            .await
            .map(|_| ())
            .map_err(storage)
    }

    /// Create a node, within the account's limit.
    async fn create(
        &self,
        owner: &BareJid,
        node: &str,
        config: &NodeConfig,
    ) -> Result<(), IqError> {
        let nodes = self.store.list(owner, NODES, "").await.map_err(storage)?;
        if nodes.len() >= MAX_NODES {
            return Err(pubsub_error(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "max-nodes-exceeded",
            ));
        }
        self.save_node(owner, node, config).await
    }

    /// Whether `requester` may see the node's items (XEP-0060 section 4.5); the error to
    /// answer otherwise.
    async fn may_read(
        &self,
        server: &Server,
        owner: &BareJid,
        requester: &BareJid,
        config: &NodeConfig,
    ) -> Result<(), IqError> {
        if owner == requester {
            return Ok(());
        }
        if server
            .blocked(Direction::Out, owner, &Jid::from(requester.clone()))
            .await
        {
            return Err(IqError::service_unavailable());
        }
        let item = match server.roster() {
            Some(_) => server
                .storage
                .roster()
                .item(owner, requester)
                .await
                .map_err(storage)?,
            None => None,
        };
        match config.access_model() {
            AccessModel::Open => Ok(()),
            AccessModel::Presence if item.as_ref().is_some_and(|item| item.state.has_from()) => {
                Ok(())
            }
            AccessModel::Presence => Err(pubsub_error(
                ErrorType::Auth,
                DefinedCondition::NotAuthorized,
                "presence-subscription-required",
            )),
            AccessModel::Roster
                if item.as_ref().is_some_and(|item| {
                    item.groups
                        .iter()
                        .any(|group| config.roster_groups().contains(group))
                }) =>
            {
                Ok(())
            }
            AccessModel::Roster => Err(pubsub_error(
                ErrorType::Auth,
                DefinedCondition::NotAuthorized,
                "not-in-roster-group",
            )),
            AccessModel::Whitelist => Err(pubsub_error(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "closed-node",
            )),
        }
    }

    /// The resources to notify of a change to `node`: the owner's and the allowed contacts'
    /// available resources whose caps ask for `node+notify`.
    async fn recipients(
        &self,
        server: &Server,
        owner: &BareJid,
        node: &str,
        config: &NodeConfig,
    ) -> Vec<FullJid> {
        let notify = format!("{node}+notify");
        let mut targets: Vec<(FullJid, String)> = local_resources(server, owner);
        if config.access_model() != AccessModel::Whitelist
            && let Some(roster) = server.roster()
        {
            let items = match roster.items(server, owner).await {
                Ok(items) => items,
                Err(error) => {
                    tracing::error!(%owner, %error, "cannot read the roster to notify");
                    Vec::new()
                }
            };
            for item in items
                .into_iter()
                .filter(|item| item.state.has_from() && &item.contact != owner)
            {
                if config.access_model() == AccessModel::Roster
                    && !item
                        .groups
                        .iter()
                        .any(|group| config.roster_groups().contains(group))
                {
                    continue;
                }
                if server
                    .blocked(Direction::Out, owner, &Jid::from(item.contact.clone()))
                    .await
                {
                    continue;
                }
                if server.is_local_domain(item.contact.domain().as_str()) {
                    targets.extend(local_resources(server, &item.contact));
                } else {
                    targets.extend(self.interest.remote_resources(&item.contact));
                }
            }
        }
        targets
            .into_iter()
            .filter(|(_, caps)| {
                self.interest
                    .features(caps)
                    .is_some_and(|features| features.contains(&notify))
            })
            .map(|(jid, _)| jid)
            .collect()
    }

    /// Send the last item of each of `owner`'s nodes that `to` asks for and may see
    /// (XEP-0163 section 4.3.2).
    async fn send_last_items(
        &self,
        server: &Server,
        owner: &BareJid,
        to: &FullJid,
        features: &Features,
    ) {
        if !features.iter().any(|feature| feature.ends_with("+notify")) {
            return;
        }
        let nodes = match self.store.list(owner, NODES, "").await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::error!(%owner, %error, "cannot read PEP nodes");
                return;
            }
        };
        for entry in nodes {
            if !features.contains(&format!("{}+notify", entry.item)) {
                continue;
            }
            let config: NodeConfig =
                serde_json::from_str(&entry.value).unwrap_or_else(|_| NodeConfig::defaults());
            if !config.sends_last_item()
                || !config.delivers_notifications()
                || self
                    .may_read(server, owner, &to.bare(), &config)
                    .await
                    .is_err()
            {
                continue;
            }
            let last = match self.store.list(owner, ITEMS, &entry.item).await {
                Ok(mut items) => items.pop(),
                Err(_) => None,
            };
            let Some(last) = last.and_then(|item| item.value.parse::<Element>().ok()) else {
                continue;
            };
            let mut items = element("items", EVENT, "node", entry.item.as_str());
            items.append_child(event_item(&last, config.delivers_payloads()));
            notify(server, owner, std::slice::from_ref(to), items).await;
        }
    }

    fn check_payload(&self, item: &Element) -> Result<(), IqError> {
        let mut payloads = item.children();
        match (payloads.next(), payloads.next()) {
            (Some(payload), None) => {
                if String::from(payload).len() > self.config.max_payload_size {
                    return Err(pubsub_error(
                        ErrorType::Modify,
                        DefinedCondition::NotAcceptable,
                        "payload-too-big",
                    ));
                }
                Ok(())
            }
            (None, _) => Err(pubsub_error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "payload-required",
            )),
            (Some(_), Some(_)) => Err(pubsub_error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "invalid-payload",
            )),
        }
    }

    /// Publish (XEP-0060 section 7.1), creating the node on first use with publish-options
    /// as its configuration, or checking them as preconditions.
    async fn publish(
        &self,
        server: &Server,
        owner: &BareJid,
        pubsub: &Element,
        publish: &Element,
    ) -> IqResponse {
        let node = node_name(publish)?;
        let mut items = publish.children().filter(|child| child.is("item", NS));
        let item = match (items.next(), items.next()) {
            (Some(item), None) => item,
            (None, _) => {
                return Err(pubsub_error(
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    "item-required",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(pubsub_error(
                    ErrorType::Modify,
                    DefinedCondition::BadRequest,
                    "invalid-payload",
                ));
            }
        };
        self.check_payload(item)?;
        let options = match pubsub
            .get_child("publish-options", NS)
            .and_then(|options| options.get_child("x", node::DATA))
        {
            Some(form) => Some(node::submitted(form, PUBLISH_OPTIONS)?),
            None => None,
        };
        let config = match self.node(owner, node).await? {
            Some(config) => {
                if let Some(options) = &options
                    && !config.meets(options)?
                {
                    return Err(pubsub_error(
                        ErrorType::Cancel,
                        DefinedCondition::Conflict,
                        "precondition-not-met",
                    ));
                }
                config
            }
            None => {
                let mut config = NodeConfig::defaults();
                if let Some(options) = &options {
                    config.apply(options)?;
                }
                self.create(owner, node, &config).await?;
                config
            }
        };
        let id = item
            .attr("id")
            .filter(|id| !id.is_empty())
            .map_or_else(crate::random_id, str::to_owned);
        let mut stored = element("item", NS, "id", id.as_str());
        for payload in item.children() {
            stored.append_child(payload.clone());
        }
        self.store
            .put(
                owner,
                ITEMS,
                node,
                &id,
                &herald_stream::serialise::to_string(&stored),
            )
            .await
            .map_err(storage)?;
        self.trim(owner, node, &config).await?;
        if config.delivers_notifications() {
            let recipients = self.recipients(server, owner, node, &config).await;
            let mut items = element("items", EVENT, "node", node);
            items.append_child(event_item(&stored, config.delivers_payloads()));
            notify(server, owner, &recipients, items).await;
        }
        let mut reply_item = element("item", NS, "id", id.as_str());
        reply_item.take_nodes();
        let mut reply_publish = element("publish", NS, "node", node);
        reply_publish.append_child(reply_item);
        let mut reply = Element::bare("pubsub", NS);
        reply.append_child(reply_publish);
        Ok(Some(reply))
    }

    /// Retract (XEP-0060 section 7.2), notified when `notify` is true.
    async fn retract(&self, server: &Server, owner: &BareJid, retract: &Element) -> IqResponse {
        let node = node_name(retract)?;
        let Some(config) = self.node(owner, node).await? else {
            return Err(IqError::item_not_found());
        };
        let ids: Vec<&str> = retract
            .children()
            .filter(|child| child.is("item", NS))
            .filter_map(|item| item.attr("id"))
            .collect();
        if ids.is_empty() {
            return Err(pubsub_error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "item-required",
            ));
        }
        let mut removed = Vec::new();
        for id in ids {
            if self
                .store
                .delete(owner, ITEMS, node, id)
                .await
                .map_err(storage)?
            {
                removed.push(id);
            }
        }
        if removed.is_empty() {
            return Err(IqError::item_not_found());
        }
        if matches!(retract.attr("notify"), Some("true" | "1")) {
            let recipients = self.recipients(server, owner, node, &config).await;
            let mut items = element("items", EVENT, "node", node);
            for id in removed {
                items.append_child(element("retract", EVENT, "id", id));
            }
            notify(server, owner, &recipients, items).await;
        }
        Ok(None)
    }

    /// Retrieve items (XEP-0060 section 6.5): all, the `max_items` latest, or by id.
    async fn items(
        &self,
        server: &Server,
        owner: &BareJid,
        requester: &BareJid,
        request: &Element,
    ) -> IqResponse {
        let node = node_name(request)?;
        let Some(config) = self.node(owner, node).await? else {
            return Err(IqError::item_not_found());
        };
        self.may_read(server, owner, requester, &config).await?;
        let wanted: Vec<&str> = request
            .children()
            .filter(|child| child.is("item", NS))
            .filter_map(|item| item.attr("id"))
            .collect();
        let mut stored: Vec<Element> = if wanted.is_empty() {
            self.store
                .list(owner, ITEMS, node)
                .await
                .map_err(storage)?
                .into_iter()
                .filter_map(|entry| entry.value.parse().ok())
                .collect()
        } else {
            let mut found = Vec::new();
            for id in wanted {
                if let Some(value) = self
                    .store
                    .get(owner, ITEMS, node, id)
                    .await
                    .map_err(storage)?
                {
                    found.extend(value.parse::<Element>().ok());
                }
            }
            found
        };
        if let Some(max) = request
            .attr("max_items")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let skip = stored.len().saturating_sub(max);
            stored.drain(..skip);
        }
        let mut items = element("items", NS, "node", node);
        for item in stored {
            items.append_child(item);
        }
        let mut reply = Element::bare("pubsub", NS);
        reply.append_child(items);
        Ok(Some(reply))
    }

    /// Create a node (XEP-0060 section 8.1), with an optional configuration form.
    async fn create_node(&self, owner: &BareJid, pubsub: &Element, create: &Element) -> IqResponse {
        let node = node_name(create)?;
        if self.node(owner, node).await?.is_some() {
            return Err(IqError::new(ErrorType::Cancel, DefinedCondition::Conflict));
        }
        let mut config = NodeConfig::defaults();
        if let Some(form) = pubsub
            .get_child("configure", NS)
            .and_then(|configure| configure.get_child("x", node::DATA))
        {
            config.apply(&node::submitted(form, NODE_CONFIG)?)?;
        }
        self.create(owner, node, &config).await?;
        Ok(None)
    }

    /// The owner's requests (XEP-0060 section 8): configure, delete, purge.
    async fn owner_request(
        &self,
        server: &Server,
        owner: &BareJid,
        kind: IqType,
        request: &Element,
    ) -> IqResponse {
        let node = node_name(request)?;
        let Some(mut config) = self.node(owner, node).await? else {
            return Err(IqError::item_not_found());
        };
        match (kind, request.name()) {
            (IqType::Get, "configure") => {
                let mut configure = element("configure", OWNER, "node", node);
                configure.append_child(config.form());
                let mut reply = Element::bare("pubsub", OWNER);
                reply.append_child(configure);
                Ok(Some(reply))
            }
            (IqType::Set, "configure") => {
                let Some(form) = request.get_child("x", node::DATA) else {
                    return Err(IqError::bad_request());
                };
                if form.attr("type") == Some("cancel") {
                    return Ok(None);
                }
                config.apply(&node::submitted(form, NODE_CONFIG)?)?;
                self.save_node(owner, node, &config).await?;
                self.trim(owner, node, &config).await?;
                Ok(None)
            }
            (IqType::Set, "delete") => {
                let recipients = if config.notifies_delete() {
                    self.recipients(server, owner, node, &config).await
                } else {
                    Vec::new()
                };
                self.store
                    .delete_scope(owner, ITEMS, node)
                    .await
                    .map_err(storage)?;
                self.store
                    .delete(owner, NODES, "", node)
                    .await
                    .map_err(storage)?;
                notify(
                    server,
                    owner,
                    &recipients,
                    element("delete", EVENT, "node", node),
                )
                .await;
                Ok(None)
            }
            (IqType::Set, "purge") => {
                self.store
                    .delete_scope(owner, ITEMS, node)
                    .await
                    .map_err(storage)?;
                Ok(None)
            }
            _ => Err(unsupported(request.name())),
        }
    }
}

/// `feature-not-implemented` with `<unsupported feature='...'/>` (XEP-0060 section 7.1.3).
fn unsupported(_what: &str) -> IqError {
    pubsub_error(
        ErrorType::Cancel,
        DefinedCondition::FeatureNotImplemented,
        "unsupported",
    )
}

fn node_name(element: &Element) -> Result<&str, IqError> {
    element
        .attr("node")
        .filter(|node| !node.is_empty())
        .ok_or_else(|| {
            pubsub_error(
                ErrorType::Modify,
                DefinedCondition::BadRequest,
                "nodeid-required",
            )
        })
}

/// An element with one attribute.
pub(crate) fn element(name: &str, namespace: &str, attr: &'static str, value: &str) -> Element {
    let mut element = Element::bare(name, namespace);
    set_attr(&mut element, attr, value);
    element
}

/// A stored item as a notification carries it (with or without its payload).
fn event_item(stored: &Element, payloads: bool) -> Element {
    let mut item = element("item", EVENT, "id", stored.attr("id").unwrap_or_default());
    if payloads {
        for payload in stored.children() {
            item.append_child(payload.clone());
        }
    }
    item
}

/// The available resources of a local account with their caps `node#ver`.
fn local_resources(server: &Server, user: &BareJid) -> Vec<(FullJid, String)> {
    server
        .sessions
        .resources(user)
        .into_iter()
        .filter_map(|resource| match &resource.availability {
            Availability::Available { presence, .. } => Some((
                resource.handle.jid.clone(),
                crate::presence::caps_of(&presence.element())?,
            )),
            Availability::Unavailable => None,
        })
        .collect()
}

/// Send an event notification (XEP-0060 section 7.1.2.1: a headline message from the
/// account's bare JID) to each recipient.
async fn notify(server: &Server, owner: &BareJid, recipients: &[FullJid], payload: Element) {
    for to in recipients {
        let mut event = Element::bare("event", EVENT);
        event.append_child(payload.clone());
        let mut message = Element::bare("message", herald_stream::ns::CLIENT);
        set_attr(&mut message, "from", owner.to_string());
        set_attr(&mut message, "to", to.to_string());
        set_attr(&mut message, "type", "headline");
        set_attr(&mut message, "id", crate::random_id());
        message.append_child(event);
        if let Ok(stanza) = herald_stream::Stanza::parse(message) {
            Box::pin(server.route(Origin::Server, stanza)).await;
        }
    }
}

impl Module for Pep {
    fn name(&self) -> &'static str {
        "mod_pep"
    }

    fn register(self: Arc<Self>, r: &mut Registrar) {
        r.account_identity("pubsub", "pep");
        // The account is the pubsub service, not the server (XEP-0163 section 4.1).
        r.account_feature(NS);
        for feature in FEATURES {
            r.account_feature(feature);
        }
        r.iq(IqScope::Account, NS, Arc::new(Requests(Arc::clone(&self))));
        r.iq(
            IqScope::Account,
            OWNER,
            Arc::new(OwnerRequests(Arc::clone(&self))),
        );
        r.hooks()
            .presence_in
            .add(Priority::NORMAL, Arc::new(Presence(Arc::clone(&self))));
        r.hooks()
            .subscription_approved
            .add(Priority::NORMAL, Arc::new(Approved(Arc::clone(&self))));
        r.hooks().user_removed.add(
            Priority::NORMAL,
            Arc::new(crate::user_data::RemoveUserData(Arc::clone(&self.store))),
        );
    }

    fn start(self: Arc<Self>, server: &Arc<Server>) {
        let _ = self.server.set(Arc::downgrade(server));
    }
}

struct Requests(Arc<Pep>);

#[async_trait::async_trait]
impl IqHandler for Requests {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let owner = request.target.bare();
        let requester = request.sender.bare();
        let pep = &self.0;
        let pubsub = request.payload;
        if pubsub.name() != "pubsub" {
            return Err(IqError::bad_request());
        }
        let Some(action) = pubsub.children().find(|child| {
            child.ns() == NS && !matches!(child.name(), "publish-options" | "configure")
        }) else {
            return Err(IqError::bad_request());
        };
        match (request.kind, action.name()) {
            (IqType::Get, "items") => pep.items(server, &owner, &requester, action).await,
            (IqType::Set, name @ ("publish" | "retract" | "create")) => {
                // XEP-0163 section 3: only the account publishes to its own nodes.
                if owner != requester {
                    return Err(IqError::forbidden());
                }
                let done = match name {
                    "publish" => pep.publish(server, &owner, pubsub, action).await,
                    "retract" => pep.retract(server, &owner, action).await,
                    _ => pep.create_node(&owner, pubsub, action).await,
                };
                if done.is_ok() {
                    changed(server, &owner, action).await;
                }
                done
            }
            (_, name) => Err(unsupported(name)),
        }
    }
}

struct OwnerRequests(Arc<Pep>);

#[async_trait::async_trait]
impl IqHandler for OwnerRequests {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let owner = request.target.bare();
        if !request.sender.same_bare(&owner) {
            return Err(IqError::forbidden());
        }
        let Some(action) = request.payload.children().next() else {
            return Err(IqError::bad_request());
        };
        let done = self
            .0
            .owner_request(server, &owner, request.kind, action)
            .await;
        if done.is_ok() && request.kind == IqType::Set {
            changed(server, &owner, action).await;
        }
        done
    }
}

/// Tell the modules that `owner`'s node named by `action` changed ([`PepChanged`]).
async fn changed(server: &Server, owner: &BareJid, action: &Element) {
    let hooks = server.extensions.hooks();
    if hooks.pep_changed.is_empty() {
        return;
    }
    if let Some(node) = action.attr("node") {
        let mut event = PepChanged {
            owner: owner.clone(),
            node: node.to_owned(),
        };
        hooks.pep_changed.run(server, &mut event).await;
    }
}

/// Presence reaching an account: remember a remote resource's caps, learn unknown caps, and
/// send the account's last items to a resource that asks for them.
struct Presence(Arc<Pep>);

#[async_trait::async_trait]
impl Handler<PresenceIn> for Presence {
    async fn call(&self, server: &Server, event: &mut PresenceIn) -> Flow {
        let pep = &self.0;
        if !server.is_local_domain(event.from.domain().as_str()) {
            pep.interest.remote(&event.from, event.caps.clone());
        }
        let Some(caps) = &event.caps else {
            pep.interest.offline(&event.user, &event.from);
            return Flow::Continue;
        };
        // Last items go to a resource when it comes online (or its caps change), not with
        // every presence update.
        if !pep.interest.first_presence(&event.user, &event.from, caps) {
            return Flow::Continue;
        }
        match pep.interest.seen(caps, &event.user, &event.from) {
            Seen::Known(features) => {
                pep.send_last_items(server, &event.user, &event.from, &features)
                    .await
            }
            Seen::Waiting => {}
            Seen::Ask => {
                // Asked in the background: presence is not held up by the answer.
                let (pep, caps, from) = (Arc::clone(pep), caps.clone(), event.from.clone());
                if let Some(server) = pep.server.get().and_then(std::sync::Weak::upgrade) {
                    let tracker = server.tasks.clone();
                    tracker.spawn(async move {
                        let features = ask_caps(&server, &from, &caps).await;
                        let known = features.is_some();
                        for (owner, resource) in pep.interest.learned(&caps, features) {
                            if known && let Some(features) = pep.interest.features(&caps) {
                                pep.send_last_items(&server, &owner, &resource, &features)
                                    .await;
                            }
                        }
                    });
                }
            }
        }
        Flow::Continue
    }
}

/// A contact newly subscribed to the owner's presence gets the owner's last items on the
/// resources whose caps are known to ask for them ("on subscription", XEP-0163 section 4.3.2).
struct Approved(Arc<Pep>);

#[async_trait::async_trait]
impl Handler<SubscriptionApproved> for Approved {
    async fn call(&self, server: &Server, event: &mut SubscriptionApproved) -> Flow {
        let pep = &self.0;
        let resources = if server.is_local_domain(event.contact.domain().as_str()) {
            local_resources(server, &event.contact)
        } else {
            pep.interest.remote_resources(&event.contact)
        };
        for (resource, caps) in resources {
            // Served now: its next presence update is not a login.
            pep.interest.first_presence(&event.user, &resource, &caps);
            if let Some(features) = pep.interest.features(&caps) {
                pep.send_last_items(server, &event.user, &resource, &features)
                    .await;
            }
        }
        Flow::Continue
    }
}

/// Ask `from` what `caps` means (XEP-0115 section 6.2) and check the answer's hash
/// (section 5.4); `None` if it does not match or does not come.
async fn ask_caps(server: &Server, from: &FullJid, caps: &str) -> Option<Features> {
    let (_, ver) = caps.rsplit_once('#')?;
    let mut query = element("query", xmpp_parsers::ns::DISCO_INFO, "node", caps);
    query.take_nodes();
    let mut iq = Element::bare("iq", herald_stream::ns::CLIENT);
    set_attr(&mut iq, "type", "get");
    set_attr(&mut iq, "to", from.to_string());
    set_attr(&mut iq, "id", "caps");
    iq.append_child(query);
    let reply = match server.send_iq(iq, CAPS_QUERY_TIMEOUT).await {
        Ok(crate::outbound::IqOutcome::Result(reply)) => reply,
        _ => return None,
    };
    let info = reply
        .get_child("query", xmpp_parsers::ns::DISCO_INFO)?
        .clone();
    let info = xmpp_parsers::disco::DiscoInfoResult::try_from(info).ok()?;
    if crate::caps::caps_ver(&info) != ver {
        tracing::debug!(%from, caps, answer = %String::from(&reply), "caps hash does not match the disco#info answer");
        return None;
    }
    Some(Arc::new(info.features.into_iter().collect()))
}
