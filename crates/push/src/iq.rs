//! Enable and disable (XEP-0357 sections 5 and 7, push.md section 3): the IQ payload parsed at
//! the edge into an [`EnableRequest`] or [`DisableRequest`], with the rules checked in the
//! order of push.md section 3, and the handler that applies it.

use std::sync::Arc;

use herald_core::{
    Server,
    module::{IqError, IqHandler, IqRequest, IqResponse},
};
use herald_stream::Bare;
use herald_stream::stanza::IqType;
use jid::{BareJid, Jid};
use minidom::Element;

use crate::{
    Push,
    error::{PushError, RequestError},
    extensions::Extensions,
    publisher::PUBLISH_OPTIONS,
    registrations::{
        EnabledInSession, PublishOptions, Registration, RegistrationKey, RegistrationStore,
    },
};

/// XEP-0357's namespace.
pub const NS: &str = crate::stanza::PUSH;
/// XEP-0004's namespace.
const DATA_FORMS: &str = herald_stream::ns::DATA_FORMS;

/// `<enable/>`: notify `node` at `pubsub` with these publish-options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnableRequest {
    /// The app server's pubsub service (`jid`), made bare.
    pub pubsub: BareJid,
    /// The node (`node`), never empty.
    pub node: String,
    /// The publish-options fields, `FORM_TYPE` excluded; empty without a form.
    pub form: PublishOptions,
    /// What the client asks for beyond XEP-0357 (Tigase's extensions).
    pub extensions: Extensions,
}

/// `<disable/>`: stop notifying `node` (or every node) at `pubsub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisableRequest {
    /// The app server's pubsub service (`jid`), made bare.
    pub pubsub: BareJid,
    /// The node; `None` for every node at `pubsub`. Never empty.
    pub node: Option<String>,
}

/// An enable or disable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRequest {
    /// See [`EnableRequest`].
    Enable(EnableRequest),
    /// See [`DisableRequest`].
    Disable(DisableRequest),
}

impl PushRequest {
    /// Check an IQ of type `kind` whose payload (in [`NS`]) is `payload`, rule by rule in the
    /// order of push.md section 3.
    pub fn parse(kind: IqType, payload: &Element) -> Result<PushRequest, RequestError> {
        // Rule 1: a get on this namespace.
        if kind != IqType::Set {
            return Err(RequestError::NotAllowed("push is configured with iq set"));
        }
        // Rule 2: enable or disable.
        let enable = match (payload.name(), payload.ns() == NS) {
            ("enable", true) => true,
            ("disable", true) => false,
            _ => return Err(RequestError::BadRequest("expected enable or disable")),
        };
        // Rule 3: a valid jid, stored bare; no reachability check.
        let pubsub = match payload.attr("jid") {
            None | Some("") => return Err(RequestError::BadRequest("jid is missing")),
            Some(text) => Jid::new(text)
                .map_err(|_| RequestError::BadRequest("jid is not a valid JID"))?
                .bare(),
        };
        // Rule 4: node.
        let node = match payload.attr("node") {
            Some("") => return Err(RequestError::BadRequest("node is empty")),
            Some(node) if node.len() > MAX_FORM_TEXT => {
                return Err(RequestError::BadRequest("node is too long"));
            }
            node => node.map(str::to_owned),
        };
        if !enable {
            return Ok(PushRequest::Disable(DisableRequest { pubsub, node }));
        }
        let node = node.ok_or(RequestError::BadRequest("enable needs a node"))?;
        // Rule 5: the optional publish-options form.
        let form = match payload.children().find(|child| child.is("x", DATA_FORMS)) {
            Some(x) => publish_options(x)?,
            None => PublishOptions::new(),
        };
        let extensions = Extensions::parse(payload)?;
        Ok(PushRequest::Enable(EnableRequest {
            pubsub,
            node,
            form,
            extensions,
        }))
    }
}

/// Most fields a publish-options form may carry: app servers need a handful (a token, a
/// secret, a service, a topic...); the form is stored and copied into every publish.
pub const MAX_FORM_FIELDS: usize = 32;

/// Longest field name or value in a publish-options form, and longest node, in bytes (device
/// tokens run to a few hundred bytes).
pub const MAX_FORM_TEXT: usize = 4096;

/// The fields of a publish-options form (XEP-0357 section 5, push.md section 3 rule 5), within
/// [`MAX_FORM_FIELDS`] and [`MAX_FORM_TEXT`].
fn publish_options(x: &Element) -> Result<PublishOptions, RequestError> {
    if x.attr("type") != Some("submit") {
        return Err(RequestError::BadRequest("the form is not of type submit"));
    }
    if x.children().filter(|c| c.is("field", DATA_FORMS)).count() > MAX_FORM_FIELDS + 1 {
        return Err(RequestError::BadRequest("the form has too many fields"));
    }
    let mut form_type = None;
    let mut fields = PublishOptions::new();
    for field in x.children().filter(|child| child.is("field", DATA_FORMS)) {
        // "Fields without var are ignored."
        let Some(var) = field.attr("var") else {
            continue;
        };
        let mut values = field
            .children()
            .filter(|child| child.is("value", DATA_FORMS))
            .map(Element::text);
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(RequestError::BadRequest(
                "a form field needs exactly one value",
            ));
        };
        if var.len() > MAX_FORM_TEXT || value.len() > MAX_FORM_TEXT {
            return Err(RequestError::BadRequest("a form field is too long"));
        }
        if var == "FORM_TYPE" {
            if form_type.replace(value).is_some() {
                return Err(RequestError::BadRequest(
                    "the form has two FORM_TYPE fields",
                ));
            }
        } else {
            // "A repeated var keeps the last."
            fields.insert(var.to_owned(), value);
        }
    }
    match form_type.as_deref() {
        Some(PUBLISH_OPTIONS) => Ok(fields),
        Some(_) => Err(RequestError::BadRequest(
            "the form's FORM_TYPE is not publish-options",
        )),
        None => Err(RequestError::BadRequest("the form has no FORM_TYPE")),
    }
}

/// The `urn:xmpp:push:0` IQ handler, for IQs to the server domain and to the own account.
pub(crate) struct PushIq(pub(crate) Arc<Push>);

#[async_trait::async_trait]
impl IqHandler for PushIq {
    async fn handle(&self, server: &Server, request: IqRequest<'_>) -> IqResponse {
        let owner = owner(server, &request)?;
        let done = match PushRequest::parse(request.kind, request.payload)? {
            PushRequest::Enable(enable) => self.enable(server, &request, owner, enable).await,
            PushRequest::Disable(disable) => self.disable(server, owner, disable).await,
        };
        // The one place a store failure becomes a stanza error, and is logged
        // (push.md section 10: answered, never a crash; it may succeed later).
        done.map_err(|error| {
            tracing::error!(%error, "push registration store failed");
            IqError::from(error)
        })?;
        Ok(None)
    }

    /// Spec section 3: every failure echoes the request element.
    fn echoes_request_in_errors(&self) -> bool {
        true
    }
}

/// "The owner is always the sender's bare JID": a local account, asking for itself.
fn owner(server: &Server, request: &IqRequest<'_>) -> Result<BareJid, RequestError> {
    let owner = request.sender.bare();
    if owner.node().is_none() || !server.is_local_domain(owner.domain().as_str()) {
        return Err(RequestError::NotAllowed("only local accounts enable push"));
    }
    // To another account's bare JID: answered as disco does, without revealing the account.
    if request.target.node().is_some() && !request.target.same_bare(&owner) {
        return Err(RequestError::ServiceUnavailable("not the sender's account"));
    }
    Ok(owner)
}

impl PushIq {
    async fn enable(
        &self,
        server: &Server,
        request: &IqRequest<'_>,
        owner: BareJid,
        enable: EnableRequest,
    ) -> Result<(), PushError> {
        let store = self.0.store();
        let key = RegistrationKey {
            owner,
            pubsub: enable.pubsub,
            node: enable.node,
        };
        self.make_room(server, store.as_ref(), &key).await?;
        store
            .enable(&Registration::new(key.clone(), enable.form).with_extensions(enable.extensions))
            .await?;
        self.0.stats.enabled();
        // "The registration is also remembered on the current session."
        if let Ok(resource) = request.sender.try_as_full()
            && let Some(session) = server.sessions.get(resource)
        {
            EnabledInSession::remember(&session, key);
        }
        Ok(())
    }

    /// `max_registrations`: before a new registration is added to a user who has the most
    /// allowed, the oldest go (re-enabling an existing one only refreshes it).
    async fn make_room(
        &self,
        server: &Server,
        store: &dyn RegistrationStore,
        key: &RegistrationKey,
    ) -> Result<(), PushError> {
        let max = self.0.config.max_registrations.get();
        let mut existing = store.list(&key.owner).await?;
        if existing.len() < max || existing.iter().any(|r| r.key == *key) {
            return Ok(());
        }
        existing.sort_by_key(|registration| registration.created_at);
        let excess = existing.len() + 1 - max;
        for old in existing.iter().take(excess) {
            tracing::debug!(owner = %old.key.owner, pubsub = %old.key.pubsub, "push: the oldest registration makes room for a new one");
            store.disable(&old.key).await?;
            EnabledInSession::forget_key(&server.sessions, &old.key);
        }
        Ok(())
    }

    async fn disable(
        &self,
        server: &Server,
        owner: BareJid,
        disable: DisableRequest,
    ) -> Result<(), PushError> {
        let store = self.0.store();
        let removed = match &disable.node {
            Some(node) => {
                let key = RegistrationKey {
                    owner: owner.clone(),
                    pubsub: disable.pubsub.clone(),
                    node: node.clone(),
                };
                u64::from(store.disable(&key).await?)
            }
            None => store.disable_all(&owner, &disable.pubsub).await?.len() as u64,
        };
        self.0.stats.disabled(removed);
        // "Matching session entries are cleared on every session of the user."
        EnabledInSession::forget(
            &server.sessions,
            &owner,
            &disable.pubsub,
            disable.node.as_deref(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: IqType, xml: &str) -> Result<PushRequest, RequestError> {
        PushRequest::parse(kind, &xml.parse::<Element>().unwrap())
    }

    fn set(xml: &str) -> Result<PushRequest, RequestError> {
        parse(IqType::Set, xml)
    }

    fn bad(xml: &str) -> bool {
        matches!(set(xml), Err(RequestError::BadRequest(_)))
    }

    fn form(fields: &str) -> String {
        format!(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='n'>\
             <x xmlns='jabber:x:data' type='submit'>{fields}</x></enable>"
        )
    }

    const FORM_TYPE: &str = "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>";

    #[test]
    fn enable_with_the_xep_0357_example_form_is_parsed() {
        // XEP-0357 example 9.
        let request = set("<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'>
              <x xmlns='jabber:x:data' type='submit'>
                <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
                <field var='secret'><value>eruio234vzxc2kla-91</value></field>
              </x>
            </enable>")
        .unwrap();
        assert_eq!(
            request,
            PushRequest::Enable(EnableRequest {
                pubsub: BareJid::new("push-5.client.example").unwrap(),
                node: "yxs32uqsflafdk3iuqo".into(),
                form: [("secret".to_owned(), "eruio234vzxc2kla-91".to_owned())].into(),
                extensions: Extensions::default(),
            })
        );
    }

    #[test]
    fn enable_without_form_has_empty_options() {
        let Ok(PushRequest::Enable(enable)) =
            set("<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='n'/>")
        else {
            panic!()
        };
        assert!(enable.form.is_empty());
    }

    #[test]
    fn get_is_not_allowed() {
        assert!(matches!(
            parse(
                IqType::Get,
                "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='n'/>"
            ),
            Err(RequestError::NotAllowed(_))
        ));
        // Rule 1 comes first: even a malformed get is not-allowed.
        assert!(matches!(
            parse(IqType::Get, "<bogus xmlns='urn:xmpp:push:0'/>"),
            Err(RequestError::NotAllowed(_))
        ));
    }

    #[test]
    fn a_child_other_than_enable_or_disable_is_bad_request() {
        assert!(bad("<notification xmlns='urn:xmpp:push:0'/>"));
        assert!(bad(
            "<enable xmlns='urn:xmpp:push:1' jid='push.example.com' node='n'/>"
        ));
    }

    #[test]
    fn enable_without_jid_is_bad_request() {
        assert!(bad("<enable xmlns='urn:xmpp:push:0' node='n'/>"));
    }

    #[test]
    fn enable_with_empty_or_invalid_jid_is_bad_request() {
        assert!(bad("<enable xmlns='urn:xmpp:push:0' jid='' node='n'/>"));
        assert!(bad(
            "<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>"
        ));
        assert!(bad(
            "<enable xmlns='urn:xmpp:push:0' jid='@push.example.com' node='n'/>"
        ));
    }

    #[test]
    fn the_jid_is_stored_bare_with_its_localpart() {
        let Ok(PushRequest::Enable(enable)) =
            set("<enable xmlns='urn:xmpp:push:0' jid='Pusher@Push.Example.com/res' node='n'/>")
        else {
            panic!()
        };
        assert_eq!(enable.pubsub.as_str(), "pusher@push.example.com");
    }

    #[test]
    fn enable_without_node_is_bad_request() {
        assert!(bad(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.com'/>"
        ));
    }

    fn form_with(fields: &str) -> String {
        format!(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='n'>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>{fields}</x></enable>"
        )
    }

    #[test]
    fn a_form_with_more_fields_than_allowed_is_bad_request() {
        let field = |n: usize| format!("<field var='f{n}'><value>v</value></field>");
        let most: String = (0..MAX_FORM_FIELDS).map(field).collect();
        assert!(set(&form_with(&most)).is_ok());
        let too_many: String = (0..=MAX_FORM_FIELDS).map(field).collect();
        assert!(bad(&form_with(&too_many)));
    }

    #[test]
    fn a_form_value_or_node_longer_than_allowed_is_bad_request() {
        let long = "x".repeat(MAX_FORM_TEXT + 1);
        assert!(bad(&form_with(&format!(
            "<field var='secret'><value>{long}</value></field>"
        ))));
        assert!(bad(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='{long}'/>"
        )));
        let longest = "x".repeat(MAX_FORM_TEXT);
        assert!(
            set(&form_with(&format!(
                "<field var='secret'><value>{longest}</value></field>"
            )))
            .is_ok()
        );
    }

    #[test]
    fn enable_with_empty_node_is_bad_request() {
        assert!(bad(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.com' node=''/>"
        ));
    }

    #[test]
    fn disable_without_jid_or_with_empty_jid_is_bad_request() {
        assert!(bad("<disable xmlns='urn:xmpp:push:0' node='n'/>"));
        assert!(bad("<disable xmlns='urn:xmpp:push:0' jid='' node='n'/>"));
    }

    #[test]
    fn disable_with_empty_node_is_bad_request() {
        assert!(bad(
            "<disable xmlns='urn:xmpp:push:0' jid='push.example.com' node=''/>"
        ));
    }

    #[test]
    fn disable_without_node_means_every_node() {
        assert_eq!(
            set("<disable xmlns='urn:xmpp:push:0' jid='push.example.com'/>"),
            Ok(PushRequest::Disable(DisableRequest {
                pubsub: BareJid::new("push.example.com").unwrap(),
                node: None
            }))
        );
    }

    #[test]
    fn a_form_not_of_type_submit_is_bad_request() {
        assert!(bad(&form(FORM_TYPE).replace("type='submit'", "type='form'")));
        assert!(bad(&form(FORM_TYPE).replace(" type='submit'", "")));
    }

    #[test]
    fn a_form_without_form_type_is_bad_request() {
        assert!(bad(&form("<field var='secret'><value>s</value></field>")));
    }

    #[test]
    fn a_form_with_the_wrong_form_type_is_bad_request() {
        assert!(bad(&form(
            "<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>"
        )));
    }

    #[test]
    fn a_form_type_with_two_values_or_twice_is_bad_request() {
        assert!(bad(&form(
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value><value>x</value></field>"
        )));
        assert!(bad(&form(&format!("{FORM_TYPE}{FORM_TYPE}"))));
    }

    #[test]
    fn a_form_field_without_value_is_bad_request() {
        assert!(bad(&form(&format!("{FORM_TYPE}<field var='secret'/>"))));
    }

    #[test]
    fn a_form_field_with_two_values_is_bad_request() {
        assert!(bad(&form(&format!(
            "{FORM_TYPE}<field var='secret'><value>a</value><value>b</value></field>"
        ))));
    }

    #[test]
    fn fields_without_var_are_ignored_and_a_repeated_var_keeps_the_last() {
        let Ok(PushRequest::Enable(enable)) = set(&form(&format!(
            "<field type='fixed'><value>a</value><value>b</value></field>{FORM_TYPE}\
             <field var='secret'><value>first</value></field>\
             <field var='secret'><value>last</value></field>\
             <field var='empty'><value/></field>"
        ))) else {
            panic!()
        };
        assert_eq!(
            enable.form,
            [
                ("empty".to_owned(), String::new()),
                ("secret".to_owned(), "last".to_owned())
            ]
            .into()
        );
    }

    #[test]
    fn rules_are_checked_in_order() {
        // No jid and no node: the jid rule answers first; both are bad-request anyway, but a
        // get with both missing is not-allowed.
        assert!(bad("<enable xmlns='urn:xmpp:push:0'/>"));
        // A bad form does not matter when the node is missing.
        assert_eq!(
            set(
                "<enable xmlns='urn:xmpp:push:0' jid='p.x'><x xmlns='jabber:x:data' type='form'/></enable>"
            ),
            Err(RequestError::BadRequest("enable needs a node"))
        );
        assert_eq!(
            set("<enable xmlns='urn:xmpp:push:0' node=''/>"),
            Err(RequestError::BadRequest("jid is missing"))
        );
    }
}
