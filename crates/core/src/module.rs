//! The module API: a module adds IQ handlers, disco features and disco items to the server,
//! all in one `register` function (so a module's whole surface is in one place).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use herald_stream::stanza::{IqType, Stanza};
use jid::Jid;
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{Server, hooks::Hooks};

/// Whom an IQ handler answers for (RFC 6120 section 10.3.3 and RFC 6121 section 8.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IqScope {
    /// IQs addressed to a served domain.
    Server,
    /// IQs addressed to a user's bare JID, or with no `to` (processed by the server on
    /// behalf of the account, RFC 6120 section 8.1.1.1).
    Account,
}

/// An IQ request given to a handler, already parsed and checked.
#[derive(Debug)]
pub struct IqRequest<'a> {
    /// The whole stanza (addressing, id).
    pub stanza: &'a Stanza,
    /// Get or set.
    pub kind: IqType,
    /// The payload element the handler was chosen by.
    pub payload: &'a Element,
    /// The authenticated sender: a client's full JID, or a component's domain.
    pub sender: &'a Jid,
    /// The entity addressed: a domain for [`IqScope::Server`], the account's bare JID for
    /// [`IqScope::Account`].
    pub target: Jid,
}

/// A stanza error that a handler answers with (RFC 6120 section 8.3).
#[derive(Clone, Debug, PartialEq)]
pub struct IqError {
    /// cancel, continue, modify, auth or wait.
    pub type_: ErrorType,
    /// The defined condition.
    pub condition: DefinedCondition,
    /// An application-specific condition (RFC 6120 section 8.3.3, e.g. XEP-0060's
    /// `<presence-subscription-required/>`), as (element name, namespace).
    pub specific: Option<(&'static str, &'static str)>,
}

impl IqError {
    /// An error of this type and condition.
    pub fn new(type_: ErrorType, condition: DefinedCondition) -> IqError {
        IqError {
            type_,
            condition,
            specific: None,
        }
    }
    /// The same error with an application-specific condition.
    pub fn with_specific(self, name: &'static str, namespace: &'static str) -> IqError {
        IqError {
            specific: Some((name, namespace)),
            ..self
        }
    }
    /// modify / bad-request.
    pub fn bad_request() -> IqError {
        IqError::new(ErrorType::Modify, DefinedCondition::BadRequest)
    }
    /// cancel / feature-not-implemented.
    pub fn not_implemented() -> IqError {
        IqError::new(ErrorType::Cancel, DefinedCondition::FeatureNotImplemented)
    }
    /// cancel / service-unavailable.
    pub fn service_unavailable() -> IqError {
        IqError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable)
    }
    /// cancel / not-allowed.
    pub fn not_allowed() -> IqError {
        IqError::new(ErrorType::Cancel, DefinedCondition::NotAllowed)
    }
    /// auth / forbidden: the sender may not do this to this entity.
    pub fn forbidden() -> IqError {
        IqError::new(ErrorType::Auth, DefinedCondition::Forbidden)
    }
    /// cancel / item-not-found.
    pub fn item_not_found() -> IqError {
        IqError::new(ErrorType::Cancel, DefinedCondition::ItemNotFound)
    }
    /// wait / internal-server-error: a storage or other transient failure.
    pub fn internal() -> IqError {
        IqError::new(ErrorType::Wait, DefinedCondition::InternalServerError)
    }
}

/// What a handler answers: the result payload (or none), or an error.
pub type IqResponse = Result<Option<Element>, IqError>;

/// Handles the IQs of one payload namespace.
#[async_trait::async_trait]
pub trait IqHandler: Send + Sync + 'static {
    /// Answer one request. Every request gets exactly one reply, built by the caller from
    /// this return value.
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse;

    /// Whether this handler's error replies carry the request's payload before the
    /// `<error/>` (RFC 6120 section 8.3.1 allows it; XEP-0357 servers echo it). Off by
    /// default: echoing doubles the bytes of a large request.
    fn echoes_request_in_errors(&self) -> bool {
        false
    }
}

/// A server module.
pub trait Module: Send + Sync + 'static {
    /// The configuration name, e.g. `mod_disco`.
    fn name(&self) -> &'static str;
    /// Add everything the module provides.
    fn register(self: Arc<Self>, registrar: &mut Registrar);
    /// Called once the server is built, before any listener accepts: start background work
    /// (spawned on `server.tasks`, ending when `server.shutdown` is cancelled). A module
    /// keeps only a `Weak` of the server, which owns it. The default does nothing.
    fn start(self: Arc<Self>, server: &Arc<Server>) {
        let _ = server;
    }
}

/// Collects what modules add; frozen into the server's [`Extensions`] at start-up.
#[derive(Default)]
pub struct Registrar {
    extensions: Extensions,
}

impl Registrar {
    /// Route IQs whose payload is in `namespace` to `handler`. A second registration for
    /// the same scope and namespace is a programming error and panics at start-up.
    pub fn iq(&mut self, scope: IqScope, namespace: &'static str, handler: Arc<dyn IqHandler>) {
        let previous = self
            .extensions
            .iq_table_mut(scope)
            .insert(namespace, handler);
        assert!(
            previous.is_none(),
            "two IQ handlers for {namespace} ({scope:?})"
        );
    }

    /// Advertise a feature in the server's disco#info (XEP-0030 section 3.1).
    pub fn feature(&mut self, var: &'static str) {
        self.extensions.features.insert(var);
    }

    /// Advertise a feature in the disco#info of every account, as its owner sees it
    /// (XEP-0030 section 3.2; XEP-0357 section 5 asks for `urn:xmpp:push:0` there).
    pub fn account_feature(&mut self, var: &'static str) {
        self.extensions.account_features.insert(var);
    }

    /// Add an identity to the disco#info of every account (XEP-0163 section 4.1: `pubsub`/`pep`).
    pub fn account_identity(&mut self, category: &'static str, type_: &'static str) {
        self.extensions.account_identities.push((category, type_));
    }

    /// Add an extended information form to the server's disco#info (XEP-0128; XEP-0157's
    /// contact addresses).
    pub fn server_form(&mut self, form: xmpp_parsers::data_forms::DataForm) {
        self.extensions.server_forms.push(form);
    }

    /// List an entity in the server's disco#items (XEP-0030 section 4.1).
    pub fn item(&mut self, jid: Jid) {
        self.extensions.items.push(jid);
    }

    /// The hook catalogue, to attach handlers (see [`crate::hooks`]).
    pub fn hooks(&mut self) -> &mut Hooks {
        &mut self.extensions.hooks
    }

    /// Register every module. With disco on, the server's Entity Capabilities (XEP-0115
    /// section 6.3) are computed from its disco#info and offered among the stream features.
    pub fn build(modules: &[Arc<dyn Module>]) -> Extensions {
        let mut registrar = Registrar::default();
        for module in modules {
            tracing::debug!(module = module.name(), "starting module");
            Arc::clone(module).register(&mut registrar);
        }
        let mut extensions = registrar.extensions;
        if extensions.features.contains(xmpp_parsers::ns::DISCO_INFO) {
            let ver = crate::caps::caps_ver(&extensions.server_info(None));
            let mut caps = Element::bare("c", xmpp_parsers::ns::CAPS);
            herald_stream::stanza::set_attr(&mut caps, "hash", "sha-1");
            herald_stream::stanza::set_attr(&mut caps, "node", CAPS_NODE);
            herald_stream::stanza::set_attr(&mut caps, "ver", ver.clone());
            extensions.caps_ver = Some(format!("{CAPS_NODE}#{ver}"));
            extensions.stream_features.push(caps);
        }
        extensions
    }
}

/// What the modules added, read by routing and disco.
#[derive(Default)]
pub struct Extensions {
    server_iq: HashMap<&'static str, Arc<dyn IqHandler>>,
    account_iq: HashMap<&'static str, Arc<dyn IqHandler>>,
    features: BTreeSet<&'static str>,
    account_features: BTreeSet<&'static str>,
    items: Vec<Jid>,
    hooks: Hooks,
    stream_features: Vec<Element>,
    pre_auth_iq: HashMap<&'static str, PreAuthEntry>,
    account_identities: Vec<(&'static str, &'static str)>,
    server_forms: Vec<xmpp_parsers::data_forms::DataForm>,
    caps_ver: Option<String>,
}

/// The node of herald's Entity Capabilities (XEP-0115 section 4: the software's URI).
pub const CAPS_NODE: &str = "https://example.invalid/herald";

impl Extensions {
    /// The handler for a payload namespace in a scope.
    pub fn iq_handler(&self, scope: IqScope, namespace: &str) -> Option<&Arc<dyn IqHandler>> {
        match scope {
            IqScope::Server => self.server_iq.get(namespace),
            IqScope::Account => self.account_iq.get(namespace),
        }
    }

    fn iq_table_mut(&mut self, scope: IqScope) -> &mut HashMap<&'static str, Arc<dyn IqHandler>> {
        match scope {
            IqScope::Server => &mut self.server_iq,
            IqScope::Account => &mut self.account_iq,
        }
    }

    /// The server's disco features.
    pub fn features(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.features.iter().copied()
    }

    /// The server's disco#info (XEP-0030 section 3.1), for `node` (`None`, or the server's
    /// caps `node#ver`).
    pub fn server_info(&self, node: Option<String>) -> xmpp_parsers::disco::DiscoInfoResult {
        xmpp_parsers::disco::DiscoInfoResult {
            node,
            identities: vec![xmpp_parsers::disco::Identity::new(
                "server", "im", "en", "herald",
            )],
            features: self.features().map(str::to_owned).collect(),
            extensions: self.server_forms.clone(),
        }
    }

    /// The server's caps `node#ver`, when disco is on.
    pub fn caps_ver(&self) -> Option<&str> {
        self.caps_ver.as_deref()
    }

    /// The identities modules add to an account's disco#info.
    pub fn account_identities(&self) -> &[(&'static str, &'static str)] {
        &self.account_identities
    }

    /// The disco features of an account.
    pub fn account_features(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.account_features.iter().copied()
    }

    /// The hooks modules attached.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The server's disco items.
    pub fn items(&self) -> &[Jid] {
        &self.items
    }
}

/// An IQ on a client stream that has not authenticated yet (RFC 6120 section 6.1: before
/// SASL only what a module explicitly allows, such as XEP-0077 in-band registration).
#[derive(Debug)]
pub struct PreAuthRequest<'a> {
    /// The served domain the stream is for.
    pub domain: &'a jid::DomainPart,
    /// The client's address.
    pub peer: std::net::IpAddr,
    /// Get or set.
    pub kind: IqType,
    /// The payload element the handler was chosen by.
    pub payload: &'a Element,
}

/// Handles the IQs of one payload namespace on streams that have not authenticated.
#[async_trait::async_trait]
pub trait PreAuthIqHandler: Send + Sync + 'static {
    /// Answer one request; the caller builds the single reply.
    async fn handle(&self, server: &Server, request: PreAuthRequest<'_>) -> IqResponse;
}

struct PreAuthEntry {
    feature: Element,
    handler: Arc<dyn PreAuthIqHandler>,
}

impl Registrar {
    /// Advertise a stream feature after resource binding (RFC 6120 section 4.3.2), such as
    /// roster versioning (XEP-0237 section 2.1).
    pub fn stream_feature(&mut self, feature: Element) {
        self.extensions.stream_features.push(feature);
    }

    /// Answer IQs in `namespace` before authentication, and advertise `feature` among the
    /// features offered there. Only offered where passwords may cross the stream: over TLS,
    /// or on a listener without TLS.
    pub fn pre_auth_iq(
        &mut self,
        namespace: &'static str,
        feature: Element,
        handler: Arc<dyn PreAuthIqHandler>,
    ) {
        let previous = self
            .extensions
            .pre_auth_iq
            .insert(namespace, PreAuthEntry { feature, handler });
        assert!(
            previous.is_none(),
            "two pre-authentication IQ handlers for {namespace}"
        );
    }
}

impl Extensions {
    /// The stream features offered after resource binding.
    pub fn stream_features(&self) -> &[Element] {
        &self.stream_features
    }

    /// The handler for an IQ before authentication, by payload namespace.
    pub fn pre_auth_iq_handler(&self, namespace: &str) -> Option<&Arc<dyn PreAuthIqHandler>> {
        self.pre_auth_iq.get(namespace).map(|entry| &entry.handler)
    }

    /// The stream features of the handlers of IQs before authentication.
    pub fn pre_auth_features(&self) -> impl Iterator<Item = &Element> + '_ {
        self.pre_auth_iq.values().map(|entry| &entry.feature)
    }
}
