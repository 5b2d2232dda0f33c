//! The route step of the pipeline (docs/modules/push.md, "Virtual pubsub hosts"): each
//! delivery goes either to an XMPP app server as a PubSub publish (XEP-0357 section 6), or,
//! for a registration on a virtual pubsub host, to the HTTP push service as a MongoosePush
//! request. A delivery that cannot go either way is a [`Skip`], counted by the pipeline.

use jid::BareJid;
use minidom::Element;

use crate::{
    config::VirtualPubsubHost,
    mongoosepush::{Notification, RequestSkip},
    redact::Redacted,
    registrations::{Registration, StoredRoute},
    stanza::publish_iq,
    vocabulary::{Payload, Skip},
};

/// How a notification reaches its app server.
#[derive(Debug, Clone)]
pub enum Route {
    /// A PubSub publish over XMPP, from the recipient's domain (push.md section 5).
    Xmpp(Element),
    /// A POST to the HTTP push service (push.md section 8).
    Http(Notification),
}

impl Route {
    /// The route as the outbox keeps it.
    pub fn stored(&self) -> StoredRoute {
        match self {
            Route::Xmpp(iq) => StoredRoute::Xmpp(herald_stream::serialise::to_string(iq)),
            Route::Http(notification) => StoredRoute::Http {
                device: notification.device_id.clone(),
                body: String::from_utf8_lossy(&notification.body).into_owned(),
            },
        }
    }

    /// The route the outbox kept; `None` for a publish that no longer parses.
    pub fn from_stored(stored: StoredRoute) -> Option<Route> {
        match stored {
            StoredRoute::Xmpp(iq) => iq.parse::<Element>().ok().map(Route::Xmpp),
            StoredRoute::Http { device, body } => Some(Route::Http(Notification {
                device_id: device,
                body: body.into(),
            })),
        }
    }
}

/// Which registrations go over HTTP, and whether an HTTP push service exists.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    virtual_hosts: Vec<VirtualPubsubHost>,
    http: bool,
    voip_topic_suffix: String,
}

impl Routes {
    /// Registrations on `virtual_hosts` go to the HTTP push service when there is one
    /// (`http`), and are skipped otherwise.
    pub fn new(virtual_hosts: Vec<VirtualPubsubHost>, http: bool) -> Routes {
        Routes {
            virtual_hosts,
            http,
            voip_topic_suffix: crate::mongoosepush::VOIP_TOPIC_SUFFIX.to_owned(),
        }
    }

    /// These routes with a call's MongoosePush topic ending in `suffix`.
    pub fn with_voip_topic_suffix(mut self, suffix: &str) -> Routes {
        suffix.clone_into(&mut self.voip_topic_suffix);
        self
    }

    /// The route of `payload` to `registration`, for `recipient`, or why there is none.
    pub fn choose(
        &self,
        recipient: &BareJid,
        registration: &Registration,
        payload: &Payload,
    ) -> Result<Route, Skip> {
        let recipient_domain = recipient.domain().as_str();
        let pubsub_domain = registration.key.pubsub.domain().as_str();
        let virtual_host = self
            .virtual_hosts
            .iter()
            .any(|host| host.matches(pubsub_domain, recipient_domain));
        if !virtual_host {
            return Ok(Route::Xmpp(publish_iq(
                recipient_domain,
                registration,
                payload,
            )));
        }
        if !self.http {
            tracing::warn!(pubsub = %registration.key.pubsub, owner = %registration.key.owner, "virtual pubsub host without an HTTP push service: nothing sent");
            return Err(Skip::VirtualPubsubHost);
        }
        Notification::build_with(payload, &registration.form, &self.voip_topic_suffix)
            .map(Route::Http)
            .map_err(|reason| {
                let reason = match reason {
                    RequestSkip::MissingService => Skip::MissingService,
                    RequestSkip::MissingDeviceId => Skip::MissingDeviceId,
                };
                tracing::warn!(owner = %registration.key.owner, pubsub = %registration.key.pubsub, node = %Redacted(&registration.key.node), reason = reason.as_str(), "push registration on a virtual pubsub host lacks an option: nothing sent");
                reason
            })
    }
}
