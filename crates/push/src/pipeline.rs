//! The pipeline (push.md section 4), in named steps: for each event, the plugin prepares the
//! notification, the recipient's registrations are loaded, the plugin chooses among them,
//! those already notified for this message are left out (at most once per message and
//! registration), the plugin says what each one gets ([`Delivery`]), each delivery is routed
//! (XMPP or HTTP, [`Routes`]) and queued on the publisher. Every skip, of the whole event or
//! of one delivery, is counted here and only here.

use std::sync::Arc;

use crate::{
    events::{Event, Notified},
    metrics::{RequestId, Stats},
    plugin::{Context, Delivery, Plugin},
    publisher::{Publisher, Submitted},
    registrations::{Registration, RegistrationStore},
    route::Routes,
    vocabulary::Skip,
};

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
        let request = RequestId::next();
        let result = self
            .decide(event, recipient_available, notified, request)
            .await;
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
        recipient_available: bool,
        notified: &mut Notified,
        request: RequestId,
    ) -> Result<usize, Skip> {
        let payload = self.plugin.prepare_notification(event)?;
        let registrations = self.load(event).await?;
        let context = self.context(event, recipient_available);
        let chosen = self.plugin.should_publish(&context, event, registrations)?;
        let fresh = not_yet_notified(chosen, notified)?;
        let deliveries = self.plugin.publish_notification(event, &payload, fresh);
        let mut queued = 0;
        for delivery in deliveries {
            if self.send(event, delivery, notified, request) {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Route one delivery and queue it; whether it was queued (and is now notified).
    fn send(
        &self,
        event: &Event,
        delivery: Delivery,
        notified: &mut Notified,
        request: RequestId,
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
                    .submit_with(key.clone(), route, request, None);
                if submitted == Submitted::Queued {
                    notified.insert(key);
                }
                submitted == Submitted::Queued
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

    fn context(&self, event: &Event, recipient_available: bool) -> Context {
        let session_registration = match event {
            Event::Unacknowledged { registration, .. } => registration.clone(),
            Event::Chat(_) => None,
        };
        Context {
            recipient_available,
            session_registration,
        }
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
