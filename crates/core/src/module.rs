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
}

impl IqError {
    /// modify / bad-request.
    pub fn bad_request() -> IqError {
        IqError {
            type_: ErrorType::Modify,
            condition: DefinedCondition::BadRequest,
        }
    }
    /// cancel / feature-not-implemented.
    pub fn not_implemented() -> IqError {
        IqError {
            type_: ErrorType::Cancel,
            condition: DefinedCondition::FeatureNotImplemented,
        }
    }
    /// cancel / service-unavailable.
    pub fn service_unavailable() -> IqError {
        IqError {
            type_: ErrorType::Cancel,
            condition: DefinedCondition::ServiceUnavailable,
        }
    }
    /// cancel / item-not-found.
    pub fn item_not_found() -> IqError {
        IqError {
            type_: ErrorType::Cancel,
            condition: DefinedCondition::ItemNotFound,
        }
    }
    /// wait / internal-server-error: a storage or other transient failure.
    pub fn internal() -> IqError {
        IqError {
            type_: ErrorType::Wait,
            condition: DefinedCondition::InternalServerError,
        }
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
}

/// A server module.
pub trait Module: Send + Sync + 'static {
    /// The configuration name, e.g. `mod_disco`.
    fn name(&self) -> &'static str;
    /// Add everything the module provides.
    fn register(self: Arc<Self>, registrar: &mut Registrar);
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

    /// List an entity in the server's disco#items (XEP-0030 section 4.1).
    pub fn item(&mut self, jid: Jid) {
        self.extensions.items.push(jid);
    }

    /// The hook catalogue, to attach handlers (see [`crate::hooks`]).
    pub fn hooks(&mut self) -> &mut Hooks {
        &mut self.extensions.hooks
    }

    /// Register every module.
    pub fn build(modules: &[Arc<dyn Module>]) -> Extensions {
        let mut registrar = Registrar::default();
        for module in modules {
            tracing::debug!(module = module.name(), "starting module");
            Arc::clone(module).register(&mut registrar);
        }
        registrar.extensions
    }
}

/// What the modules added, read by routing and disco.
#[derive(Default)]
pub struct Extensions {
    server_iq: HashMap<&'static str, Arc<dyn IqHandler>>,
    account_iq: HashMap<&'static str, Arc<dyn IqHandler>>,
    features: BTreeSet<&'static str>,
    items: Vec<Jid>,
    hooks: Hooks,
}

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

    /// The hooks modules attached.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The server's disco items.
    pub fn items(&self) -> &[Jid] {
        &self.items
    }
}
