//! Stanza routing for stanzas sent by a bound client session (RFC 6120 section 10 and
//! RFC 6121 section 8).
//!
//! The sender's task calls [`Server::route`] with a stanza whose `from` is already
//! stamped. Routing never waits on another session: delivery is a non-blocking queue push
//! (see [`crate::sessions::SessionHandle::deliver`]).

use herald_stream::stanza::{IqType, MessageType, Stanza, StanzaKind, iq_result};
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::{
    Server,
    module::{IqError, IqRequest, IqScope},
    presence,
};

impl Server {
    /// Route a stanza from the local session `sender`.
    pub async fn route(&self, sender: &FullJid, stanza: Stanza) {
        match stanza.kind {
            StanzaKind::Iq(kind) => self.route_iq(sender, kind, stanza).await,
            StanzaKind::Message(kind) => self.route_message(sender, kind, stanza),
            StanzaKind::Presence(kind) => presence::route(self, sender, kind, stanza),
        }
    }

    /// Send an error reply for `stanza` back to the local sender, unless it is itself an error.
    pub fn bounce(&self, stanza: &Stanza, type_: ErrorType, condition: DefinedCondition) {
        if let Some(reply) = stanza.error_reply(type_, condition) {
            self.deliver_to_sender(stanza, reply);
        }
    }

    fn deliver_to_sender(&self, stanza: &Stanza, reply: Element) {
        if let Some(Ok(from)) = stanza.from.as_ref().map(Jid::try_as_full)
            && let Some(session) = self.sessions.get(from)
        {
            session.deliver(reply);
        }
    }

    fn route_message(&self, sender: &FullJid, kind: MessageType, mut stanza: Stanza) {
        // RFC 6120 section 8.1.1.1: no `to` means the sender's own bare JID.
        let to = match &stanza.to {
            Some(to) => to.clone(),
            None => {
                let bare = Jid::from(sender.to_bare());
                stanza.set_to(bare.clone());
                bare
            }
        };
        if !self.is_local_domain(to.domain().as_str()) {
            // No federation yet: the remote domain cannot be reached (RFC 6120 section
            // 8.3.3.15).
            self.bounce(
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::RemoteServerNotFound,
            );
            return;
        }
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
            if !session.deliver(stanza.element.clone()) {
                self.bounce(
                    &stanza,
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                );
            }
            return;
        }
        // RFC 6121 section 8.5.3.2.1: to a full JID with no such resource, groupchat is
        // bounced, headline and error are dropped, normal and chat go to the bare JID.
        if to.is_full() && matches!(kind, MessageType::Groupchat) {
            self.bounce(
                &stanza,
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
            );
            return;
        }
        self.message_to_bare(kind, &to.to_bare(), stanza);
    }

    /// RFC 6121 section 8.5.2: a message to a local bare JID.
    fn message_to_bare(&self, kind: MessageType, to: &BareJid, stanza: Stanza) {
        let targets = self.sessions.message_targets(to);
        if targets.is_empty() {
            match kind {
                // RFC 6121 section 8.5.2.2.1: chat and normal with no available resource
                // are stored offline (the offline-storage module) or bounced; until that
                // module exists they are bounced.
                MessageType::Chat | MessageType::Normal | MessageType::Groupchat => self.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                ),
                MessageType::Headline | MessageType::Error => {}
            }
            return;
        }
        let mut delivered = false;
        for target in &targets {
            delivered |= target.deliver(stanza.element.clone());
        }
        if !delivered {
            self.bounce(
                &stanza,
                ErrorType::Wait,
                DefinedCondition::ResourceConstraint,
            );
        }
    }

    async fn route_iq(&self, sender: &FullJid, kind: IqType, mut stanza: Stanza) {
        let to = stanza.to.clone();
        let (scope, target) = match &to {
            // RFC 6120 section 8.1.1.1 and 10.3.3: no `to`, or the account's bare JID,
            // is answered by the server on behalf of the account.
            None => (IqScope::Account, Jid::from(sender.to_bare())),
            Some(to) if !self.is_local_domain(to.domain().as_str()) => {
                self.bounce(
                    &stanza,
                    ErrorType::Cancel,
                    DefinedCondition::RemoteServerNotFound,
                );
                return;
            }
            Some(to) if to.is_full() => {
                let Ok(full) = to.try_as_full() else { return };
                match self.sessions.get(full) {
                    Some(session) => {
                        if !session.deliver(stanza.element.clone()) {
                            self.bounce(
                                &stanza,
                                ErrorType::Wait,
                                DefinedCondition::ResourceConstraint,
                            );
                        }
                    }
                    // RFC 6121 section 8.5.3.2.1: an IQ to an absent resource gets
                    // service-unavailable (results and errors are dropped).
                    None => self.bounce(
                        &stanza,
                        ErrorType::Cancel,
                        DefinedCondition::ServiceUnavailable,
                    ),
                }
                return;
            }
            Some(to) if to.node().is_some() => (IqScope::Account, to.clone()),
            Some(to) => (IqScope::Server, to.clone()),
        };
        if matches!(kind, IqType::Result | IqType::Error) {
            // A reply addressed to the server or an account: no request of ours is
            // waiting for it yet, and replies are never answered.
            return;
        }
        if stanza.to.is_none() {
            stanza.to = Some(target.clone());
        }
        let reply = self.handle_iq(sender, kind, scope, target, &stanza).await;
        self.deliver_to_sender(&stanza, reply);
    }

    /// Run the registered handler and build the single reply every IQ gets
    /// (RFC 6120 section 8.2.3).
    async fn handle_iq(
        &self,
        sender: &FullJid,
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
        let Some(handler) = self.extensions.iq_handler(scope, &payload.ns()) else {
            return error_element(stanza, IqError::service_unavailable());
        };
        let request = IqRequest {
            stanza,
            kind,
            payload,
            sender,
            target,
        };
        match handler.handle(self, request).await {
            Ok(payload) => iq_result(stanza, payload),
            Err(error) => error_element(stanza, error),
        }
    }
}

fn error_element(stanza: &Stanza, error: IqError) -> Element {
    stanza
        .error_reply(error.type_, error.condition)
        .unwrap_or_else(|| iq_result(stanza, None))
}
