//! Stanza routing (RFC 6120 section 10 and RFC 6121 section 8).
//!
//! Every stanza enters through [`Server::route`] with its [`Origin`] and a `from` already
//! stamped by the edge that received it. The destination decides the path: a component's
//! domain goes to that component, a served domain to the local rules (sessions, IQ
//! handlers, presence), any other domain to federation ([`crate::s2s`]) when it is
//! configured, else it is unreachable. Routing never
//! waits on another session: delivery is a non-blocking queue push
//! (see [`crate::sessions::SessionHandle::deliver`]).

use herald_stream::Bare;
use herald_stream::stanza::{IqType, MessageType, Stanza, StanzaKind, iq_result};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Server,
    envelope::{Envelope, Meta},
    hooks::{
        Direction, Flow, MessageArriving, MessageDelivered, MessageRefused, MessageSent,
        OfflineMessage, PrivacyCheck,
    },
    lanes::{Job, Sender, Then},
    module::{IqError, IqRequest, IqScope},
    presence,
};

/// Who sent a stanza into the router.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// A bound client session.
    Client(&'a FullJid),
    /// An authenticated external component (XEP-0114), by its domain.
    Component(&'a Jid),
    /// A remote server (federation), by the authenticated domain the stanza came from.
    Remote(&'a Jid),
    /// The server itself (outbound IQs, notifications).
    Server,
}

impl Server {
    /// Route a stanza (a [`Stanza`], or an [`Envelope`] carrying what modules recorded about
    /// it). Its `from` must already be set by the receiving edge.
    pub async fn route(&self, origin: Origin<'_>, stanza: impl Into<Envelope<Stanza>>) {
        self.route_envelope(origin, stanza.into()).await;
    }

    async fn route_envelope(&self, origin: Origin<'_>, envelope: Envelope<Stanza>) {
        let Envelope {
            mut stanza,
            mut meta,
        } = envelope;
        crate::metrics::routed(match stanza.kind {
            StanzaKind::Message(_) => "message",
            StanzaKind::Presence(_) => "presence",
            StanzaKind::Iq(_) => "iq",
        });
        // RFC 6120 section 8.1.1.1: a stanza without `to` from a client is handled on behalf
        // of its account (a message goes to the account's bare JID).
        if stanza.to.is_none() {
            match (origin, stanza.kind) {
                (Origin::Client(sender), StanzaKind::Message(_)) => {
                    stanza.set_to(Jid::from(sender.bare()));
                }
                (Origin::Client(_), _) => {}
                // Components and the server always address their stanzas.
                _ => {
                    self.bounce(&stanza, ErrorType::Modify, DefinedCondition::BadRequest);
                    return;
                }
            }
        }
        if let (Origin::Client(sender), Some(to)) = (origin, &stanza.to)
            && !to.same_bare(sender)
            && self.blocked(Direction::Out, &sender.bare(), to).await
        {
            // XEP-0191 section 3.6: not routed; the user learns why.
            self.refuse_blocked(&stanza);
            return;
        }
        if let (Origin::Client(sender), StanzaKind::Message(_)) = (origin, stanza.kind) {
            let hooks = self.extensions.hooks();
            if !hooks.message_sent.is_empty() {
                let mut event = MessageSent {
                    sender: sender.clone(),
                    stanza,
                    meta,
                };
                hooks.message_sent.run(self, &mut event).await;
                (stanza, meta) = (event.stanza, event.meta);
            }
        }
        if let Some(to) = &stanza.to
            && let Some(component) = self.components.get(to.domain().as_str())
        {
            if let (Origin::Client(sender), StanzaKind::Presence(kind)) = (origin, stanza.kind) {
                // Client presence to a component still goes through presence processing:
                // directed presence is remembered and subscriptions change the roster
                // (RFC 6121 sections 3 and 4.6); presence hands it to the component.
                presence::route(self, sender, kind, stanza).await;
                return;
            }
            // Handed over whole; back only if refused, for the error reply.
            if let Err(refused) = component.try_deliver(Envelope::new(stanza.element)) {
                stanza.element = refused.stanza;
                self.bounce(
                    &stanza,
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                );
            }
            return;
        }
        if let Some(to) = &stanza.to
            && !self.is_local_domain(to.domain().as_str())
        {
            if self.components.was_connected(to.domain().as_str()) {
                // A local service whose component is disconnected: unavailable, and of type
                // wait because it is expected back (a push registration at it must survive
                // a component restart).
                self.bounce(
                    &stanza,
                    ErrorType::Wait,
                    DefinedCondition::ServiceUnavailable,
                );
            } else if let Some(s2s) = &self.s2s()
                && !matches!(origin, Origin::Remote(_))
            {
                if let (Origin::Client(sender), StanzaKind::Presence(kind)) = (origin, stanza.kind)
                {
                    // As for a component: subscriptions change the roster and directed
                    // presence is remembered first; presence then sends it on.
                    presence::route(self, sender, kind, stanza).await;
                    return;
                }
                // Another server's domain: queued on the link to it, never waited for.
                s2s.send(self, stanza);
            } else {
                // No federation: the remote domain cannot be reached (RFC 6120 section
                // 8.3.3.15).
                self.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::RemoteServerNotFound,
                );
            }
            return;
        }
        if !matches!(stanza.kind, StanzaKind::Presence(_))
            && let (Some(to), Some(from)) = (&stanza.to, &stanza.from)
            && to.node().is_some()
            && !to.same_bare(from)
            && self.blocked(Direction::In, &to.bare(), from).await
        {
            // XEP-0191 section 3.5: a blocked entity's message or request is refused as if
            // the account did not exist; nothing is stored, nothing pushed.
            let hooks = self.extensions.hooks();
            if matches!(stanza.kind, StanzaKind::Message(_))
                && !meta.is_empty()
                && !hooks.message_refused.is_empty()
            {
                let mut event = MessageRefused {
                    user: to.bare(),
                    stanza,
                    meta,
                };
                hooks.message_refused.run(self, &mut event).await;
                stanza = event.stanza;
            }
            if matches!(
                stanza.kind,
                StanzaKind::Message(_) | StanzaKind::Iq(IqType::Get | IqType::Set)
            ) {
                self.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                );
            }
            return;
        }
        if let (StanzaKind::Message(_), Some(to)) = (stanza.kind, &stanza.to)
            && to.node().is_some()
        {
            let hooks = self.extensions.hooks();
            if !hooks.message_arriving.is_empty() {
                let mut event = MessageArriving {
                    user: to.bare(),
                    rerouted: matches!(origin, Origin::Server),
                    stanza,
                    meta,
                };
                hooks.message_arriving.run(self, &mut event).await;
                (stanza, meta) = (event.stanza, event.meta);
            }
        }
        match stanza.kind {
            StanzaKind::Iq(kind) => self.route_iq(origin, kind, stanza).await,
            StanzaKind::Message(kind) => {
                // A client waits for its message to be stored (its read loop and XEP-0198
                // `h` follow); a component or a server link hands it over (lanes).
                let sender = match origin {
                    Origin::Client(_) => Sender::Waits,
                    _ => Sender::HandsOver,
                };
                self.route_message(kind, stanza, meta, sender).await;
            }
            StanzaKind::Presence(kind) => match origin {
                Origin::Client(sender) => presence::route(self, sender, kind, stanza).await,
                // A component's or a remote contact's subscription stanzas change the user's
                // roster; probes are answered.
                Origin::Component(_) | Origin::Remote(_) => {
                    presence::from_component(self, kind, stanza).await
                }
                // Presence from the server itself: delivered as addressed.
                Origin::Server => self.deliver_addressed(stanza),
            },
        }
    }

    /// Whether a message addressed to `to` reaches a local account's `message_arriving` (or,
    /// refused by its block list, `message_refused`) hooks: a localpart on a served domain that
    /// no component has, as [`Server::route`] decides.
    pub fn reaches_local_account(&self, to: &Jid) -> bool {
        self.is_local_user(to) && self.components.get(to.domain().as_str()).is_none()
    }

    /// Whether the privacy rules of the local account `user` (XEP-0191 block lists) stop a
    /// stanza between it and `peer`.
    pub async fn blocked(&self, direction: Direction, user: &BareJid, peer: &Jid) -> bool {
        let hooks = self.extensions.hooks();
        if hooks.privacy_check.is_empty() {
            return false;
        }
        let mut event = PrivacyCheck {
            user: user.clone(),
            peer: peer.clone(),
            direction,
            blocked: false,
        };
        hooks.privacy_check.run(self, &mut event).await;
        event.blocked
    }

    /// XEP-0191 section 3.6: a stanza from a user to an entity the user blocks is answered
    /// with not-acceptable and `<blocked xmlns='urn:xmpp:blocking:errors'/>`; presence is
    /// dropped silently.
    fn refuse_blocked(&self, stanza: &Stanza) {
        if matches!(
            stanza.kind,
            StanzaKind::Presence(_) | StanzaKind::Iq(IqType::Result)
        ) {
            return;
        }
        if stanza.is_error() {
            return;
        }
        let error = IqError::new(ErrorType::Cancel, DefinedCondition::NotAcceptable)
            .with_specific("blocked", BLOCKING_ERRORS);
        self.deliver_reply(error_element(stanza, error));
    }

    /// Send an error reply for `stanza` back to its sender, unless it is itself an error
    /// (RFC 6120 section 8.3.1: errors are never answered with errors).
    pub fn bounce(&self, stanza: &Stanza, type_: ErrorType, condition: DefinedCondition) {
        if let Some(reply) = stanza.error_reply(type_, condition) {
            self.deliver_reply(reply);
        }
    }

    /// Deliver a reply (an IQ result or error, or a bounce) to a local session, a component
    /// or a waiting outbound IQ. Replies are never bounced.
    pub(crate) fn deliver_reply(&self, reply: Element) {
        let Some(to) = reply.attr("to").and_then(|to| Jid::new(to).ok()) else {
            return;
        };
        let domain = to.domain().as_str();
        if let Some(component) = self.components.get(domain) {
            component.deliver(reply);
        } else if !self.is_local_domain(domain) {
            // A reply to a remote entity goes back over federation (not to a local
            // component's domain while it is away).
            if let Some(s2s) = self.s2s()
                && !self.components.was_connected(domain)
                && let Ok(stanza) = Stanza::parse(reply)
            {
                s2s.send(self, stanza);
            }
        } else if let Ok(full) = to.try_as_full() {
            if let Some(session) = self.sessions.get(full) {
                session.deliver(reply);
            }
        } else if to.node().is_none() {
            // A reply to the server itself: an answer to an outbound IQ.
            if let Ok(stanza) = Stanza::parse(reply) {
                self.outbound.resolve(stanza);
            }
        }
    }

    /// Deliver a stanza to exactly the entity it is addressed to, if it is connected; used for
    /// stanzas whose sender cannot be bounced to meaningfully.
    fn deliver_addressed(&self, stanza: Stanza) {
        let Some(to) = &stanza.to else { return };
        match to.try_as_full() {
            Ok(full) => {
                if let Some(session) = self.sessions.get(full) {
                    session.deliver(stanza.element);
                }
            }
            Err(bare) => {
                for session in self.sessions.available(bare) {
                    session.deliver(stanza.element.clone());
                }
            }
        }
    }

    async fn route_message(&self, kind: MessageType, stanza: Stanza, meta: Meta, sender: Sender) {
        let Some(to) = stanza.to.clone() else { return };
        if to.node().is_none() {
            // A message to the server itself: nothing handles messages here.
            self.bounce(
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
            );
            return;
        }
        if let Ok(full) = to.try_as_full()
            && let Some(session) = self.sessions.get(full)
        {
            if session.deliver(Envelope::with_meta(stanza.element.clone(), meta.clone())) {
                self.delivered(to.bare(), vec![session.id], stanza.element)
                    .await;
            } else {
                // The client is not reading (its connection is being dropped): the message
                // is kept as for an absent resource, not bounced.
                self.undeliverable(kind, &to.bare(), stanza, meta, sender)
                    .await;
            }
            return;
        }
        // RFC 6121 section 8.5.3.2.1: to a full JID with no such resource, groupchat is
        // bounced, headline and error are dropped, normal and chat go to the bare JID.
        // Groupchat passes the offline-message hook first (as at a bare JID), so a room
        // member whose session ended still gets a push (push.md sections 4 and 7).
        if to.is_full() && matches!(kind, MessageType::Groupchat) {
            self.offline(&to.bare(), stanza, meta, sender).await;
            return;
        }
        self.message_to_bare(kind, &to.bare(), stanza, meta, sender)
            .await;
    }

    /// A message for an account with no resource to take it: the `offline_message` hook
    /// (offline storage, push notifications), and a bounce if no handler took charge.
    async fn offline(&self, to: &BareJid, stanza: Stanza, meta: Meta, sender: Sender) {
        let job = Job {
            to: to.clone(),
            then: Then::Offline,
            stanza,
            meta,
        };
        self.lanes.submit(self, job, sender).await;
    }

    /// A message a recipient lane handles ([`crate::lanes`]), in the lane's task (or inline
    /// when there are no lanes).
    pub(crate) async fn run_lane_job(&self, job: Job) {
        let Job {
            to,
            then,
            stanza,
            meta,
        } = job;
        match then {
            Then::Offline => self.offline_now(&to, stanza, meta).await,
            Then::Bare(kind) => {
                let targets = self.sessions.message_targets(&to);
                self.deliver_to_bare(kind, &to, stanza, meta, targets, Via::Now)
                    .await;
            }
        }
    }

    /// The `offline_message` hook, now.
    async fn offline_now(&self, to: &BareJid, stanza: Stanza, meta: Meta) {
        // Metadata modules recorded earlier (the message may come back from a
        // stream-management buffer or a re-route) is handed over, not lost.
        let mut event = OfflineMessage {
            recipient: to.clone(),
            stanza,
            meta,
        };
        let hooks = self.extensions.hooks();
        if hooks.offline_message.run(self, &mut event).await == Flow::Stop {
            return;
        }
        self.bounce(
            &event.stanza,
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
        );
    }

    /// RFC 6121 section 8.5.2: a message to a local bare JID. A message that may have to be
    /// stored, or that must follow messages for the account still in its lane, goes to the
    /// account's lane ([`crate::lanes`]), which routes it again there.
    async fn message_to_bare(
        &self,
        kind: MessageType,
        to: &BareJid,
        stanza: Stanza,
        meta: Meta,
        sender: Sender,
    ) {
        let held = self.lanes.holds(to);
        let targets = if held {
            Vec::new()
        } else {
            self.sessions.message_targets(to)
        };
        if held || (targets.is_empty() && kept(kind)) {
            if sender == Sender::Waits && !held {
                // A client's message with nothing ahead of it in a lane: handled here and now
                // (what `Lanes::submit` would do, without looking up the lane and the
                // sessions again).
                return self
                    .deliver_to_bare(kind, to, stanza, meta, targets, Via::Now)
                    .await;
            }
            let job = Job {
                to: to.clone(),
                then: Then::Bare(kind),
                stanza,
                meta,
            };
            return self.lanes.submit(self, job, sender).await;
        }
        self.deliver_to_bare(kind, to, stanza, meta, targets, Via::Lane(sender))
            .await;
    }

    /// [`Server::message_to_bare`] without the lane (in it, or when nothing needs it): to
    /// `targets` (the available resources with the highest priority), else the
    /// `offline_message` hook (now, or through the lane).
    async fn deliver_to_bare(
        &self,
        kind: MessageType,
        to: &BareJid,
        stanza: Stanza,
        meta: Meta,
        targets: Vec<crate::sessions::SessionHandle>,
        via: Via,
    ) {
        let mut delivered = Vec::with_capacity(targets.len());
        for target in &targets {
            if target.deliver(Envelope::with_meta(stanza.element.clone(), meta.clone())) {
                delivered.push(target.id);
            }
        }
        if !delivered.is_empty() {
            self.delivered(to.clone(), delivered, stanza.element).await;
            return;
        }
        if !targets.is_empty() {
            tracing::debug!(user = %to, "recipient not reading; message kept offline");
        }
        // RFC 6121 section 8.5.2.2.1: chat and normal with no available resource (or none
        // reading) are stored offline (the `offline_message` hook: XEP-0160) or bounced.
        // Groupchat goes through the hook too (the push module notifies offline room members,
        // push.md section 4) but is never stored, so it is bounced. Headline and error are
        // dropped.
        if !kept(kind) {
            return;
        }
        match via {
            Via::Now => self.offline_now(to, stanza, meta).await,
            Via::Lane(sender) => self.offline(to, stanza, meta, sender).await,
        }
    }

    /// A message reached some sessions of `user`: the `message_delivered` hook (carbons).
    async fn delivered(
        &self,
        user: BareJid,
        delivered: Vec<crate::sessions::SessionId>,
        stanza: Element,
    ) {
        let hooks = self.extensions.hooks();
        if hooks.message_delivered.is_empty() {
            return;
        }
        let mut event = MessageDelivered {
            user,
            delivered,
            stanza,
        };
        hooks.message_delivered.run(self, &mut event).await;
    }

    /// A message that no session could take because their queues are full (clients that
    /// stopped reading, whose connections are being dropped): chat and normal go to the
    /// `offline_message` hook (stored and pushed, as for a user with no resource), groupchat
    /// through it too (pushed, then bounced), headline and error are dropped.
    async fn undeliverable(
        &self,
        kind: MessageType,
        to: &BareJid,
        stanza: Stanza,
        meta: Meta,
        sender: Sender,
    ) {
        if kept(kind) {
            tracing::debug!(user = %to, "recipient not reading; message kept offline");
            self.offline(to, stanza, meta, sender).await;
        }
    }

    async fn route_iq(&self, origin: Origin<'_>, kind: IqType, mut stanza: Stanza) {
        let replying = matches!(kind, IqType::Result | IqType::Error);
        let (scope, target) = match (&stanza.to, origin) {
            // RFC 6120 section 8.1.1.1 and 10.3.3: no `to` is answered by the server on
            // behalf of the sender's account.
            (None, Origin::Client(sender)) => (IqScope::Account, Jid::from(sender.bare())),
            (None, _) => return,
            (Some(to), _) if to.is_full() => {
                let Ok(full) = to.try_as_full() else { return };
                match self.sessions.get(full) {
                    Some(session) => {
                        if let Err(refused) = session.try_deliver(Envelope::new(stanza.element)) {
                            stanza.element = refused.stanza;
                            self.bounce(
                                &stanza,
                                ErrorType::Wait,
                                DefinedCondition::ResourceConstraint,
                            );
                        }
                    }
                    // RFC 6121 section 8.5.3.2.1: an IQ to an absent resource gets
                    // service-unavailable (results and errors are dropped by `bounce`).
                    None => self.bounce(
                        &stanza,
                        ErrorType::Cancel,
                        DefinedCondition::ServiceUnavailable,
                    ),
                }
                return;
            }
            (Some(to), _) if to.node().is_some() => (IqScope::Account, to.clone()),
            (Some(to), _) => {
                if replying {
                    // A reply addressed to the server: the answer to an outbound IQ.
                    self.outbound.resolve(stanza);
                    return;
                }
                (IqScope::Server, to.clone())
            }
        };
        if replying {
            // Replies to an account are never answered.
            return;
        }
        let Some(sender) = stanza.from.clone() else {
            return;
        };
        let reply = self.handle_iq(&sender, kind, scope, target, &stanza).await;
        self.deliver_reply(reply);
    }

    /// Run the registered handler and build the single reply every IQ gets
    /// (RFC 6120 section 8.2.3).
    async fn handle_iq(
        &self,
        sender: &Jid,
        kind: IqType,
        scope: IqScope,
        target: Jid,
        stanza: &Stanza,
    ) -> Element {
        // RFC 6120 section 8.2.3: a get or set contains exactly one payload element.
        let mut children = stanza.element.children();
        let (Some(payload), None) = (children.next(), children.next()) else {
            return error_element(stanza, IqError::bad_request());
        };
        if payload.ns() == stanza.element.ns() {
            // A payload without a namespace of its own (it inherits the stream's) names no
            // protocol: malformed rather than unsupported.
            return error_element(stanza, IqError::bad_request());
        }
        let Some(handler) = self.extensions.iq_handler(scope, &payload.ns()) else {
            return error_element(stanza, IqError::service_unavailable());
        };
        let request = IqRequest {
            stanza,
            kind,
            payload,
            sender,
            target: target.clone(),
        };
        let mut reply = match handler.handle(self, request).await {
            Ok(payload) => iq_result(stanza, payload),
            Err(error) if handler.echoes_request_in_errors() => {
                let mut reply = error_element(stanza, error);
                let error = reply.take_nodes();
                reply.append_child(payload.clone());
                for node in error {
                    reply.append_node(node);
                }
                reply
            }
            Err(error) => error_element(stanza, error),
        };
        if stanza.to.is_none() {
            // Answered on behalf of the account: the reply comes from it.
            herald_stream::stanza::set_attr(&mut reply, "from", target.to_string());
        }
        reply
    }
}

/// XEP-0191 section 3.6's application error namespace.
const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

fn error_element(stanza: &Stanza, error: IqError) -> Element {
    let Some(mut reply) = stanza.error_reply(error.type_, error.condition) else {
        return iq_result(stanza, None);
    };
    if let Some((name, namespace)) = error.specific
        && let Some(element) = reply.children_mut().find(|child| child.name() == "error")
    {
        element.append_child(Element::bare(name, namespace));
    }
    reply
}

/// Whether a message of this type goes to the `offline_message` hook when no session takes
/// it (chat, normal, groupchat); headline and error are dropped.
fn kept(kind: MessageType) -> bool {
    matches!(
        kind,
        MessageType::Chat | MessageType::Normal | MessageType::Groupchat
    )
}

/// Where [`Server::deliver_to_bare`] sends a message no session takes.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The `offline_message` hook now (in the recipient's lane).
    Now,
    /// The recipient's lane, for this sender.
    Lane(Sender),
}
