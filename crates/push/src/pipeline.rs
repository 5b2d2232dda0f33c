//! The pipeline (push.md section 4), in named steps: for each event, the plugin prepares the
//! notification, the recipient's registrations are loaded, the plugin chooses among them,
//! those already notified for this message are left out (at most once per message and
//! registration), the plugin says what each one gets ([`Delivery`]), each delivery is routed
//! (XMPP or HTTP, [`Routes`]) and queued on the publisher. Every skip, of the whole event or
//! of one delivery, is counted here and only here.

use std::sync::Arc;

use herald_stream::Bare;

use crate::{
    events::{Event, Message, Notified},
    metrics::{RequestId, Stats},
    plugin::{Context, Delivery, Payload, Plugin},
    publisher::{Publisher, Submitted},
    registrations::{Registration, RegistrationKey, RegistrationStore},
    route::Routes,
    settings::ChatSetting,
    unread::{Calls, Unread},
    vocabulary::{Kind, Skip},
};

/// Where the recipient is, as the plugin's [`Context`] tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// An available resource with priority >= 0 would receive the message.
    pub available: bool,
    /// One of them is connected and its client not inactive (XEP-0352).
    pub active: bool,
    /// What the recipient set for the message's conversation in their notification
    /// settings (XEP-0492), if anything.
    pub setting: Option<ChatSetting>,
}

/// What the pipeline works with, built when the module starts.
pub struct Pipeline {
    /// The plugin that decides.
    pub plugin: Arc<dyn Plugin>,
    /// The registrations.
    pub store: Arc<dyn RegistrationStore>,
    /// Which way each notification goes.
    pub routes: Routes,
    /// Where notifications go.
    pub publisher: Publisher,
    /// The counts.
    pub stats: Arc<Stats>,
    /// The users' unread counts, which `message-count` carries (`unread_count`); `None`
    /// sends MongooseIM's `1`.
    pub unread: Option<Unread>,
    /// The calls whose proposal was notified.
    pub calls: Calls,
    /// `calls.push_retract`: a withdrawn proposal that was notified sends a cancelling
    /// notification.
    pub push_retract: bool,
}

impl Pipeline {
    /// Decide on `event` and queue its notifications; `recipient_available` says whether the
    /// recipient has an available resource with priority >= 0. `notified` holds the
    /// registrations already notified for this message and gains those notified now. Returns
    /// how many notifications were queued, or why none.
    pub async fn notify(
        &self,
        event: &Event,
        recipient_available: bool,
        notified: &mut Notified,
    ) -> Result<usize, Skip> {
        let presence = Presence {
            available: recipient_available,
            active: recipient_available,
            setting: None,
        };
        self.notify_in(event, presence, notified).await
    }

    /// [`Pipeline::notify`] knowing whether the recipient is available and active.
    pub async fn notify_in(
        &self,
        event: &Event,
        presence: Presence,
        notified: &mut Notified,
    ) -> Result<usize, Skip> {
        let request = RequestId::next();
        let result = self.decide(event, presence, notified, request).await;
        match result {
            Ok(queued) => {
                tracing::debug!(request_id = %request, recipient = %event.recipient(), kind = event.kind(), queued, "push notifications queued");
            }
            Err(skip) => {
                self.stats.skipped(skip);
                tracing::debug!(request_id = %request, recipient = %event.recipient(), kind = event.kind(), reason = skip.as_str(), "no push");
            }
        }
        result
    }

    async fn decide(
        &self,
        event: &Event,
        presence: Presence,
        notified: &mut Notified,
        request: RequestId,
    ) -> Result<usize, Skip> {
        let mut payload = self.plugin.prepare_notification(event)?;
        let kind = payload.subject().kind;
        let call = payload.get("jingle-session-id").map(str::to_owned);
        if kind == Kind::CallEnded
            && !(self.push_retract
                && self
                    .calls
                    .take(event.recipient(), call.as_deref().unwrap_or_default()))
        {
            return Err(Skip::NoCallToCancel);
        }
        if let Some(setting) = presence.setting {
            setting.allows(event.recipient(), event.message(), &payload)?;
        }
        let registrations = self.load(event).await?;
        let context = self.context(event, presence);
        let chosen = self.plugin.should_publish(&context, event, registrations)?;
        let chosen = filtered(chosen, event.message(), &payload)?;
        let fresh = not_yet_notified(chosen, notified)?;
        // A message counts once, when it is first notified (the record travels with it).
        if let Some(unread) = &self.unread
            && notified.is_empty()
            && !kind.is_call()
            && payload.get("message-count").is_some()
        {
            let conversation = event.message().from.bare();
            let total = unread.add(event.recipient(), &conversation);
            payload.set("message-count", total.to_string());
        }
        let urgent = payload.is_urgent();
        let deliveries = self.plugin.publish_notification(event, &payload, fresh);
        let mut queued = 0;
        for delivery in deliveries {
            if self.send(event, delivery, notified, request, urgent).await {
                queued += 1;
            }
        }
        if kind == Kind::Call
            && queued > 0
            && let Some(sid) = &call
        {
            self.calls.proposed_to(event.recipient(), sid);
        }
        Ok(queued)
    }

    /// Queue a wake-up notification to `key` (a hibernating session's registration, or one
    /// that was hibernating when the server stopped): a summary with only `message-count`,
    /// the messages waiting for the device. Whether it was queued; a registration that no
    /// longer exists is not woken.
    pub async fn wake(&self, key: &RegistrationKey, pending: usize) -> bool {
        let registrations = match self.store.list(&key.owner).await {
            Ok(registrations) => registrations,
            Err(error) => {
                tracing::error!(%error, owner = %key.owner, "cannot load push registrations to wake a session");
                return false;
            }
        };
        let Some(registration) = registrations.into_iter().find(|r| &r.key == key) else {
            return false;
        };
        let payload = Payload::new(vec![("message-count".into(), pending.to_string())]);
        let request = RequestId::next();
        match self.routes.choose(&key.owner, &registration, &payload) {
            Ok(route) => {
                let queued = self
                    .publisher
                    .submit_with(registration.key, route, request, None)
                    == Submitted::Queued;
                tracing::debug!(request_id = %request, owner = %key.owner, queued, "wake-up notification");
                queued
            }
            Err(skip) => {
                self.stats.skipped(skip);
                false
            }
        }
    }

    /// Route one delivery and queue it; whether it was queued (and is now notified).
    async fn send(
        &self,
        event: &Event,
        delivery: Delivery,
        notified: &mut Notified,
        request: RequestId,
        urgent: bool,
    ) -> bool {
        let Delivery {
            registration,
            payload,
        } = delivery;
        match self
            .routes
            .choose(event.recipient(), &registration, &payload)
        {
            Ok(route) => {
                let key = registration.key;
                let submitted = self
                    .publisher
                    .submit_paced(key.clone(), route, request, message_identity(event), urgent)
                    .await;
                match submitted {
                    // Held for the registration's turn: it goes, or a later one for it.
                    Submitted::Queued | Submitted::Held => {
                        notified.insert(key);
                        true
                    }
                    // Pending already (queued, or waiting for a retry): notified all the same.
                    Submitted::AlreadyPending => {
                        notified.insert(key);
                        false
                    }
                    Submitted::QueueFull | Submitted::UserLimit | Submitted::Stopped => false,
                }
            }
            Err(skip) => {
                self.stats.skipped(skip);
                false
            }
        }
    }

    /// The recipient's registrations; none, or a store failure, is a skip.
    async fn load(&self, event: &Event) -> Result<Vec<Registration>, Skip> {
        let started = std::time::Instant::now();
        let listed = self.store.list(event.recipient()).await;
        herald_core::metrics::store_latency("push_registrations", started);
        match listed {
            Ok(registrations) if registrations.is_empty() => Err(Skip::NoRegistrations),
            Ok(registrations) => Ok(registrations),
            Err(error) => {
                tracing::error!(%error, recipient = %event.recipient(), "cannot load push registrations");
                Err(Skip::StoreFailed)
            }
        }
    }

    fn context(&self, event: &Event, presence: Presence) -> Context {
        let session_registration = match event {
            Event::Unacknowledged { registration, .. } => registration.clone(),
            Event::Chat(_) => None,
        };
        Context {
            recipient_available: presence.available,
            recipient_active: presence.active,
            session_registration,
        }
    }
}

/// What identifies the message of `event` in the outbox, so that it is notified at most once
/// per registration: the id the recipient's archive gave it (XEP-0359, unique and the same
/// on every copy of the message, in every session's buffer and in offline storage). A client's
/// own `id` is not used: clients reuse them (counters that restart), and a notification must
/// never be suppressed for another message. Without the archive, nothing: the message's own
/// record of notified registrations still holds for each copy.
fn message_identity(event: &Event) -> Option<String> {
    const PREFIX: &str = "archive:";
    // Made at its length, without the formatting machinery (once per notification).
    event.message().archive_id().map(|id| {
        let mut identity = String::with_capacity(PREFIX.len() + id.len());
        identity.push_str(PREFIX);
        identity.push_str(id);
        identity
    })
}

/// The chosen registrations whose client's filters (Tigase's muted and groupchat filters) let
/// `message` notify; none is a skip with the first filter's reason.
fn filtered(
    chosen: Vec<Registration>,
    message: &Message,
    payload: &Payload,
) -> Result<Vec<Registration>, Skip> {
    if chosen.iter().all(|r| !r.extensions.has_filters()) {
        return Ok(chosen);
    }
    let conversation = message.from.bare();
    let mut reason = None;
    let kept: Vec<Registration> = chosen
        .into_iter()
        .filter(|registration| {
            let body = || message.first_body().unwrap_or_default();
            match registration.extensions.filter(&conversation, body, payload) {
                Ok(()) => true,
                Err(skip) => {
                    reason.get_or_insert(skip);
                    false
                }
            }
        })
        .collect();
    match (kept.is_empty(), reason) {
        (true, Some(skip)) => Err(skip),
        _ => Ok(kept),
    }
}

/// Spec section 4: "at most one push per (message, registration)".
fn not_yet_notified(
    chosen: Vec<Registration>,
    notified: &Notified,
) -> Result<Vec<Registration>, Skip> {
    if chosen.is_empty() {
        return Err(Skip::NoRegistrations);
    }
    let fresh: Vec<Registration> = chosen
        .into_iter()
        .filter(|registration| !notified.contains(&registration.key))
        .collect();
    if fresh.is_empty() {
        return Err(Skip::AlreadyNotified);
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests;
