//! Plugins (push.md section 6): the three decisions of the pipeline as a trait whose default
//! methods are the `defaults` plugin (push.md section 4). A custom plugin overrides one method and
//! keeps the defaults for the others.
//!
//! Every decision not to push carries a [`Skip`] reason, for logs and metrics.

mod defaults;
mod enhanced;
mod hints;
pub mod rules;

use std::sync::Arc;

pub use defaults::Defaults;
pub use enhanced::Enhanced;
pub use hints::Hints;

pub use crate::vocabulary::{Payload, Skip};
use crate::{
    config::PluginName,
    events::Event,
    registrations::{Registration, RegistrationKey},
};

/// What the pipeline knows about the recipient when the plugin decides.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Whether the recipient has an available resource with priority >= 0 (RFC 6121 section
    /// 8.5.2.1.1: one that would receive a message to the bare JID).
    pub recipient_available: bool,
    /// Whether one of the recipient's available sessions is connected and its client not
    /// inactive (XEP-0352): someone is looking.
    pub recipient_active: bool,
    /// For an [`Event::Unacknowledged`]: the registration enabled in that session, if any.
    pub session_registration: Option<RegistrationKey>,
}

/// The plugin behaviour (MongooseIM's `mod_event_pusher_push_plugin`). Every method has the
/// `defaults` behaviour; override the ones to change. A plugin decides only: it never sends.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, for logs.
    fn name(&self) -> &'static str;

    /// The notification for this event, or why there is none.
    fn prepare_notification(&self, event: &Event) -> Result<Payload, Skip> {
        defaults::prepare_notification(event)
    }

    /// Which of the recipient's registrations (never empty) to notify, or why none.
    fn should_publish(
        &self,
        context: &Context,
        event: &Event,
        registrations: Vec<Registration>,
    ) -> Result<Vec<Registration>, Skip> {
        defaults::should_publish(context, event, registrations)
    }

    /// What to send to each chosen registration (never empty, none notified yet for this
    /// message): by default the payload to every one. The pipeline then routes each
    /// delivery (XMPP or HTTP) and queues it.
    fn publish_notification(
        &self,
        event: &Event,
        payload: &Payload,
        registrations: Vec<Registration>,
    ) -> Vec<Delivery> {
        let _ = event;
        registrations
            .into_iter()
            .map(|registration| Delivery {
                registration,
                payload: payload.clone(),
            })
            .collect()
    }
}

/// One notification a plugin asks for: this payload to this registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where it goes.
    pub registration: Registration,
    /// What it says.
    pub payload: Payload,
}

/// The built-in plugin called `name`.
pub fn builtin(name: PluginName) -> Arc<dyn Plugin> {
    match name {
        PluginName::Defaults => Arc::new(Defaults),
        PluginName::Enhanced => Arc::new(Enhanced),
        PluginName::Hints => Arc::new(Hints),
    }
}
