//! `[modules.mod_event_pusher.push]`: the module's options with MongooseIM's names, read once
//! into a typed [`PushConfig`] with defaults (push.md section 2).
//!
//! The section's serde shape ([`RawPush`]) and its checks ([`Section`] for [`PushConfig`] and
//! [`EventPusherConfig`]) live here with the types, so every rule about a value lives beside
//! its type, an option is added in this file only, and every message names its key and says
//! what is accepted. The server locates a failure in the file.

use std::{num::NonZeroUsize, time::Duration};

use herald_core::config::{Integer, Invalid, KeyPath, Section, integer, variant};
use jid::DomainPart;
use serde::Deserialize;

/// The placeholder that stands for each served domain in `virtual_pubsub_hosts`.
pub const HOST_PLACEHOLDER: &str = "@HOST@";

/// The module's options, every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// `backend`: where registrations are stored.
    pub backend: Backend,
    /// `wpool.*`: the publisher's worker pool.
    pub wpool: WorkerPool,
    /// `plugin_module`: which built-in plugin decides and publishes.
    pub plugin: PluginName,
    /// `virtual_pubsub_hosts`: pubsub domains served by the HTTP push service (push.md section 8).
    pub virtual_pubsub_hosts: Vec<VirtualPubsubHost>,
    /// `iqdisc.type`: accepted for compatibility; every value behaves as `parallel`.
    pub iqdisc: IqDiscipline,
    /// `[modules.mod_push_service_mongoosepush]` with its HTTP pool: where notifications to
    /// virtual pubsub hosts go (push.md section 8). `None` when the module is not configured.
    pub mongoosepush: Option<crate::mongoosepush::MongoosePushConfig>,
    /// `max_registrations` (herald's; MongooseIM has no limit): registrations kept per
    /// user. Enabling one more replaces the oldest, so that devices reinstalled many times
    /// cannot make every message fan out without bound, and a user is never locked out.
    pub max_registrations: NonZeroUsize,
    /// `keepalive.*` (ejabberd's `mod_push_keepalive` options): a session whose client
    /// enabled push in it hibernates past `resume_timeout`; `None` when turned off
    /// (`keepalive.resume_timeout = 0`).
    pub keepalive: Option<Keepalive>,
    /// `push_when_inactive` (MongooseIM 6.9's behaviour, on by default): a message written
    /// to a client that said it is inactive (XEP-0352) pushes to the registration enabled
    /// in that session, unless another session of the user is active.
    pub push_when_inactive: bool,
    /// `rules` (MongooseIM 6.9): declarative rules that decide instead of a plugin; refused
    /// together with `plugin_module`. `None` when absent.
    pub rules: Option<Vec<crate::rules::Rule>>,
    /// `retry.*` (herald's): how a notification that failed for a passing reason is tried
    /// again, and when a registration that keeps failing is disabled.
    pub retry: Retry,
    /// `outbox_gather` (herald's, milliseconds, default 20): how long the outbox gathers
    /// notifications before writing them; one delivered within it is never written. 0
    /// writes every notification, and waits for it, before sending it: a crash then loses
    /// none, at a cost in throughput.
    pub outbox_gather: Duration,
    /// `pacing.*` (herald's): how often one registration is notified; what comes faster is
    /// coalesced into the next notification.
    pub pacing: Pacing,
    /// `calls.*` (herald's, after MongooseIM 6.10): how call proposals (XEP-0353) are pushed.
    pub calls: Calls,
    /// `unread_count` (herald's, default true): `message-count` counts the messages
    /// notified since the user was last active (reset by an active session, or per
    /// conversation by a displayed marker); false sends MongooseIM's `1` without an inbox.
    pub unread_count: bool,
}

/// `[modules.mod_event_pusher.push.pacing]`: at most `burst` notifications at once to one
/// registration, then `rate_limit` per second, none closer than `coalesce_window` to the
/// one before; what would come sooner waits and is coalesced into one notification (the
/// latest message, the count of all), sent when allowed. Nothing is dropped: the last
/// message of a burst is always notified. Calls are never held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// `rate_limit` (notifications per second per registration, default 5, what Monal's
    /// app server and Openfire accept; 0 for no limit).
    pub rate_limit: u32,
    /// `burst` (default 5): notifications sent at once before the rate applies.
    pub burst: u32,
    /// `coalesce_window` (milliseconds, default 0): after a notification to a
    /// registration, those that follow within the window are gathered into one at its end.
    pub coalesce_window: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            rate_limit: 5,
            burst: 5,
            coalesce_window: Duration::ZERO,
        }
    }
}

impl Pacing {
    /// No pacing: every notification goes at once (MongooseIM's behaviour).
    pub const OFF: Pacing = Pacing {
        rate_limit: 0,
        burst: 0,
        coalesce_window: Duration::ZERO,
    };

    /// Whether any notification may be held.
    pub fn is_off(&self) -> bool {
        self.rate_limit == 0 && self.coalesce_window.is_zero()
    }
}

/// `[modules.mod_event_pusher.push.calls]`: call proposals (XEP-0353 `<propose/>`) push at
/// once with high priority, whatever the pacing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calls {
    /// `voip_topic_suffix` (default `".voip"`): appended to a MongoosePush registration's
    /// `topic` for a call, as MongooseIM 6.10 does (Apple's PushKit topic).
    pub voip_topic_suffix: String,
    /// `push_retract` (default true): a proposal withdrawn (`<retract/>`) sends a cancelling
    /// notification to the registrations notified of the proposal.
    pub push_retract: bool,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            voip_topic_suffix: crate::mongoosepush::VOIP_TOPIC_SUFFIX.to_owned(),
            push_retract: true,
        }
    }
}

/// `[modules.mod_event_pusher.push.retry]`: what is retried (a `wait` error, no reply, an
/// unreachable app server, HTTP 5xx or 429) and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// `max_retries` (default 5; 0 never retries): tries after the first.
    pub max_retries: u32,
    /// `max_age` (seconds, default 3,600): no try later than this after the decision.
    pub max_age: Duration,
    /// `backoff_base` (milliseconds, default 1,000): the first wait; each retry doubles it.
    pub backoff_base: Duration,
    /// `backoff_max` (seconds, default 300): the longest wait between tries.
    pub backoff_max: Duration,
    /// `disable_after` (seconds, default 604,800: a week; 0 never): a registration whose
    /// notifications have all failed this long, without one success, is disabled.
    pub disable_after: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_retries: 5,
            max_age: Duration::from_secs(3600),
            backoff_base: Duration::from_millis(1000),
            backoff_max: Duration::from_secs(300),
            disable_after: Some(Duration::from_secs(604_800)),
        }
    }
}

impl Retry {
    /// How long to wait before try number `attempt + 1` (the first retry is `attempt` 1)
    /// of a notification decided `age` ago, or `None` when it is given up: capped exponential
    /// backoff with jitter (half the wait fixed, half random), or the server's own
    /// `hint` (HTTP `Retry-After`), within `max_retries` and `max_age`.
    pub fn delay(&self, attempt: u32, age: Duration, hint: Option<Duration>) -> Option<Duration> {
        if attempt > self.max_retries || age >= self.max_age {
            return None;
        }
        let doubled = self
            .backoff_base
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
        let wait = doubled.min(self.backoff_max);
        let delay = match hint {
            Some(hint) => hint.min(self.backoff_max),
            None => {
                let half = wait / 2;
                let random = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
                half + Duration::from_millis(random)
            }
        };
        (age + delay < self.max_age).then_some(delay)
    }
}

/// `[modules.mod_event_pusher.push.keepalive]`: how long a vanished session with push
/// enabled in it is kept, and when it is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// `resume_timeout` (seconds, default 259,200: three days, ejabberd's): the longest a
    /// hibernating session waits, from the loss of its connection.
    pub resume_timeout: Duration,
    /// `wake_on_start` (default true): at start, a wake-up notification to each session
    /// that was hibernating when the server stopped.
    pub wake_on_start: bool,
    /// `wake_on_timeout` (default true): a wake-up notification `wake_before` ahead of a
    /// hibernating session's end.
    pub wake_on_timeout: bool,
    /// `wake_before` (herald's, seconds, default 120: ejabberd's grace after its wake-up).
    pub wake_before: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            resume_timeout: Duration::from_secs(259_200),
            wake_on_start: true,
            wake_on_timeout: true,
            wake_before: Duration::from_secs(120),
        }
    }
}

impl PushConfig {
    /// `max_registrations` when absent.
    pub const DEFAULT_MAX_REGISTRATIONS: usize = 10;
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            backend: Backend::Embedded,
            wpool: WorkerPool::default(),
            plugin: PluginName::Defaults,
            virtual_pubsub_hosts: Vec::new(),
            iqdisc: IqDiscipline::default(),
            mongoosepush: None,
            max_registrations: NonZeroUsize::new(Self::DEFAULT_MAX_REGISTRATIONS)
                .unwrap_or(NonZeroUsize::MIN),
            keepalive: Some(Keepalive::default()),
            push_when_inactive: true,
            rules: None,
            retry: Retry::default(),
            outbox_gather: Duration::from_millis(20),
            pacing: Pacing::default(),
            calls: Calls::default(),
            unread_count: true,
        }
    }
}

/// `backend`: the registration store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `"mnesia"`: MongooseIM's embedded database; in herald the embedded SQLite store.
    Embedded,
    /// `"rdbms"`: the relational pool (PostgreSQL).
    Rdbms,
}

impl Backend {
    /// Accepted names.
    pub const NAMES: &'static [(&'static str, Backend)] =
        &[("mnesia", Backend::Embedded), ("rdbms", Backend::Rdbms)];

    /// The backend called `name`.
    pub fn from_name(name: &str) -> Result<Backend, String> {
        variant(name, Self::NAMES)
    }
}

/// `wpool.*`: MongooseIM's worker pool options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPool {
    /// `wpool.workers`: how many publishes may be in flight at once.
    pub workers: NonZeroUsize,
    /// `wpool.strategy`: accepted for compatibility; herald hands each publish to the first
    /// free worker, which is what `available_worker` means.
    pub strategy: Strategy,
    /// `wpool.call_timeout`: accepted for compatibility. Enqueueing a publish never waits, so
    /// herald has no call to time out; the reply to a publish is awaited for 32 s.
    pub call_timeout: Duration,
}

impl WorkerPool {
    /// `wpool.workers` when absent.
    pub const DEFAULT_WORKERS: usize = 10;
    /// `wpool.call_timeout` when absent, in milliseconds.
    pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 5000;

    /// `wpool.workers` from the file: an integer of at least 1.
    pub fn parse_workers(value: i64) -> Result<NonZeroUsize, String> {
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| format!("{value} is out of range; expected at least 1 (workers)"))
    }

    /// `wpool.call_timeout` from the file: milliseconds, at least 1.
    pub fn parse_call_timeout(value: i64) -> Result<Duration, String> {
        match u64::try_from(value) {
            Ok(ms) if ms >= 1 => Ok(Duration::from_millis(ms)),
            _ => Err(format!(
                "{value} is out of range; expected at least 1 (milliseconds)"
            )),
        }
    }
}

impl Default for WorkerPool {
    fn default() -> Self {
        WorkerPool {
            workers: NonZeroUsize::new(Self::DEFAULT_WORKERS).unwrap_or(NonZeroUsize::MIN),
            strategy: Strategy::AvailableWorker,
            call_timeout: Duration::from_millis(Self::DEFAULT_CALL_TIMEOUT_MS),
        }
    }
}

/// `wpool.strategy`: worker_pool's strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `"best_worker"`.
    BestWorker,
    /// `"random_worker"`.
    RandomWorker,
    /// `"next_worker"`.
    NextWorker,
    /// `"available_worker"`: the default.
    AvailableWorker,
    /// `"next_available_worker"`.
    NextAvailableWorker,
}

impl Strategy {
    /// Accepted names.
    pub const NAMES: &'static [(&'static str, Strategy)] = &[
        ("best_worker", Strategy::BestWorker),
        ("random_worker", Strategy::RandomWorker),
        ("next_worker", Strategy::NextWorker),
        ("available_worker", Strategy::AvailableWorker),
        ("next_available_worker", Strategy::NextAvailableWorker),
    ];

    /// The strategy called `name`.
    pub fn from_name(name: &str) -> Result<Strategy, String> {
        variant(name, Self::NAMES)
    }
}

/// `plugin_module`: the built-in plugins (push.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginName {
    /// `"defaults"`: push.md section 4.
    Defaults,
    /// `"enhanced"`: also pushes unacknowledged messages to the session's own registration.
    Enhanced,
    /// `"hints"`: enhanced, plus XEP-0334 hints and Jingle Message Initiation calls.
    Hints,
}

impl PluginName {
    /// Accepted names: herald's short names and MongooseIM's module names.
    pub const NAMES: &'static [(&'static str, PluginName)] = &[
        ("defaults", PluginName::Defaults),
        ("enhanced", PluginName::Enhanced),
        ("hints", PluginName::Hints),
        (
            "mod_event_pusher_push_plugin_defaults",
            PluginName::Defaults,
        ),
        (
            "mod_event_pusher_push_plugin_enhanced",
            PluginName::Enhanced,
        ),
        ("mod_event_pusher_push_plugin_hints", PluginName::Hints),
    ];

    /// The plugin called `name` (either spelling).
    pub fn from_name(name: &str) -> Result<PluginName, String> {
        variant(name, Self::NAMES)
    }

    /// herald's short name.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginName::Defaults => "defaults",
            PluginName::Enhanced => "enhanced",
            PluginName::Hints => "hints",
        }
    }
}

/// One entry of `virtual_pubsub_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualPubsubHost {
    /// A domain, as written (normalised).
    Domain(String),
    /// `PREFIX.@HOST@`: `PREFIX.` followed by the recipient's domain. `prefix` includes the dot,
    /// and is empty for `@HOST@` alone (the recipient's domain itself).
    PerHost {
        /// What comes before the recipient's domain, dot included.
        prefix: String,
    },
}

impl VirtualPubsubHost {
    /// An entry from the file: a domain, or a domain whose last label is exactly `@HOST@`.
    pub fn parse(text: &str) -> Result<VirtualPubsubHost, String> {
        let expected = "expected a domain such as \"push.example.com\", or one whose last \
                        label is @HOST@ such as \"virtual.@HOST@\"";
        if let Some(prefix) = text.strip_suffix(HOST_PLACEHOLDER) {
            if !(prefix.is_empty() || prefix.ends_with('.')) || prefix.contains(HOST_PLACEHOLDER) {
                return Err(format!("{text:?} has @HOST@ inside a label; {expected}"));
            }
            // Checked as a domain with an example host in place of the placeholder.
            let example = format!("{prefix}example.org");
            let normalised = DomainPart::new(&example).map_err(|error| {
                format!("{text:?} is not a valid domain pattern ({error}); {expected}")
            })?;
            let prefix = normalised
                .as_str()
                .strip_suffix("example.org")
                .unwrap_or_default()
                .to_owned();
            return Ok(VirtualPubsubHost::PerHost { prefix });
        }
        if text.contains(HOST_PLACEHOLDER) {
            return Err(format!(
                "{text:?} has @HOST@ before its last label; {expected}"
            ));
        }
        if text.contains(['@', '/']) {
            return Err(format!("{text:?} is not a domain but a JID; {expected}"));
        }
        DomainPart::new(text)
            .map(|domain| VirtualPubsubHost::Domain(domain.as_str().to_owned()))
            .map_err(|error| format!("{text:?} is not a valid domain ({error}); {expected}"))
    }

    /// Whether `pubsub_domain` is this virtual host for a recipient on `recipient_domain`.
    pub fn matches(&self, pubsub_domain: &str, recipient_domain: &str) -> bool {
        match self {
            VirtualPubsubHost::Domain(domain) => domain == pubsub_domain,
            VirtualPubsubHost::PerHost { prefix } => pubsub_domain
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest == recipient_domain),
        }
    }
}

/// `iqdisc.type`: MongooseIM's IQ processing disciplines. herald's IQ handlers are safe to run
/// in parallel, so every value behaves as `parallel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IqDiscipline {
    /// `"no_queue"`: the default.
    #[default]
    NoQueue,
    /// `"one_queue"`.
    OneQueue,
    /// `"parallel"`.
    Parallel,
    /// `"queues"`, with `iqdisc.workers`.
    Queues {
        /// `iqdisc.workers`.
        workers: NonZeroUsize,
    },
}

impl IqDiscipline {
    /// Accepted names of `iqdisc.type`.
    pub const NAMES: &'static [&'static str] = &["no_queue", "one_queue", "parallel", "queues"];

    /// `iqdisc.type` with `iqdisc.workers`. `workers` is required by, and only allowed with,
    /// `"queues"`; errors say which key is wrong.
    pub fn parse(type_: &str, workers: Option<i64>) -> Result<IqDiscipline, IqDisciplineError> {
        let discipline = match type_ {
            "no_queue" => IqDiscipline::NoQueue,
            "one_queue" => IqDiscipline::OneQueue,
            "parallel" => IqDiscipline::Parallel,
            "queues" => {
                let Some(workers) = workers else {
                    return Err(IqDisciplineError::Workers(
                        "missing; expected at least 1 with type = \"queues\"".to_owned(),
                    ));
                };
                let workers =
                    WorkerPool::parse_workers(workers).map_err(IqDisciplineError::Workers)?;
                return Ok(IqDiscipline::Queues { workers });
            }
            _ => {
                let names: Vec<String> = Self::NAMES.iter().map(|n| format!("{n:?}")).collect();
                return Err(IqDisciplineError::Type(format!(
                    "unknown variant {type_:?}, expected one of {}",
                    names.join(", ")
                )));
            }
        };
        match workers {
            Some(_) => Err(IqDisciplineError::Workers(
                "is only allowed with type = \"queues\"".to_owned(),
            )),
            None => Ok(discipline),
        }
    }
}

/// Which `iqdisc` key is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IqDisciplineError {
    /// `iqdisc.type`.
    Type(String),
    /// `iqdisc.workers`.
    Workers(String),
}

/// `[modules.mod_event_pusher]`: MongooseIM's event pusher; `push` is its only backend so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPusherConfig {
    /// `[modules.mod_event_pusher.push]`: push notifications (XEP-0357); `None` when absent.
    pub push: Option<PushConfig>,
}

/// `[modules.mod_event_pusher]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawEventPusher {
    /// `[modules.mod_event_pusher.push]`.
    pub push: Option<RawPush>,
}

/// `[modules.mod_event_pusher.push]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPush {
    /// See [`PushConfig::backend`]; the server checks it against its storage engine.
    pub backend: Option<String>,
    wpool: Option<RawWpool>,
    plugin_module: Option<String>,
    virtual_pubsub_hosts: Option<Vec<String>>,
    iqdisc: Option<RawIqdisc>,
    max_registrations: Option<Integer>,
    keepalive: Option<RawKeepalive>,
    push_when_inactive: Option<bool>,
    rules: Option<Vec<crate::rules::RawRule>>,
    retry: Option<RawRetry>,
    outbox_gather: Option<Integer>,
    pacing: Option<RawPacing>,
    calls: Option<RawCalls>,
    unread_count: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPacing {
    rate_limit: Option<Integer>,
    burst: Option<Integer>,
    coalesce_window: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawCalls {
    voip_topic_suffix: Option<String>,
    push_retract: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRetry {
    max_retries: Option<Integer>,
    max_age: Option<Integer>,
    backoff_base: Option<Integer>,
    backoff_max: Option<Integer>,
    disable_after: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawKeepalive {
    resume_timeout: Option<Integer>,
    wake_on_start: Option<bool>,
    wake_on_timeout: Option<bool>,
    wake_before: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawWpool {
    workers: Option<Integer>,
    strategy: Option<String>,
    call_timeout: Option<Integer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawIqdisc {
    #[serde(rename = "type")]
    type_: Option<String>,
    workers: Option<Integer>,
}

impl Section for EventPusherConfig {
    type Raw = RawEventPusher;

    fn from_raw(raw: RawEventPusher, at: &KeyPath) -> Result<Self, Invalid> {
        let push = raw
            .push
            .map(|push| PushConfig::from_raw(push, &at.key("push")))
            .transpose()?;
        Ok(EventPusherConfig { push })
    }
}

impl Section for PushConfig {
    type Raw = RawPush;

    fn from_raw(raw: RawPush, at: &KeyPath) -> Result<Self, Invalid> {
        push_config(raw, at)
    }
}

fn push_config(raw: RawPush, at: &KeyPath) -> Result<PushConfig, Invalid> {
    let mut config = PushConfig::default();
    let at_key = |key: &str| at.key(key);
    let invalid = |key: KeyPath| move |message: String| Invalid::new(key, message);
    if let Some(name) = raw.backend {
        // Whether the server has the PostgreSQL pool "rdbms" needs is checked with the other
        // stores (`config/storage.rs`).
        config.backend = Backend::from_name(&name).map_err(invalid(at_key("backend")))?;
    }
    if let Some(wpool) = raw.wpool {
        let at = at_key("wpool");
        if let Some(workers) = wpool.workers {
            config.wpool.workers =
                WorkerPool::parse_workers(workers.0).map_err(invalid(at.key("workers")))?;
        }
        if let Some(strategy) = wpool.strategy {
            config.wpool.strategy =
                Strategy::from_name(&strategy).map_err(invalid(at.key("strategy")))?;
        }
        if let Some(timeout) = wpool.call_timeout {
            config.wpool.call_timeout = WorkerPool::parse_call_timeout(timeout.0)
                .map_err(invalid(at.key("call_timeout")))?;
        }
    }
    if let Some(rules) = raw.rules {
        // MongooseIM refuses the two together: one of them decides.
        if raw.plugin_module.is_some() {
            return Err(Invalid::new(
                at_key("rules"),
                "cannot be used together with plugin_module; expected one of the two".to_owned(),
            ));
        }
        let at = at_key("rules");
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| crate::rules::Rule::from_raw(rule, &at.index(index)))
            .collect::<Result<Vec<_>, Invalid>>()?;
        config.rules = Some(rules);
    }
    if let Some(name) = raw.plugin_module {
        config.plugin = PluginName::from_name(&name).map_err(invalid(at_key("plugin_module")))?;
    }
    if let Some(max) = raw.max_registrations {
        config.max_registrations = usize::try_from(max.0)
            .ok()
            .and_then(std::num::NonZeroUsize::new)
            .ok_or_else(|| {
                Invalid::new(
                    at_key("max_registrations"),
                    format!("{} is out of range; expected at least 1", max.0),
                )
            })?;
    }
    if let Some(inactive) = raw.push_when_inactive {
        config.push_when_inactive = inactive;
    }
    if let Some(gather) = raw.outbox_gather {
        config.outbox_gather = u64::try_from(gather.0)
            .ok()
            .filter(|ms| *ms <= 1000)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                Invalid::new(
                    at_key("outbox_gather"),
                    format!(
                        "{} is out of range; expected 0 to 1000 (milliseconds)",
                        gather.0
                    ),
                )
            })?;
    }
    if let Some(retry) = raw.retry {
        config.retry = retry_config(retry, &at_key("retry"))?;
    }
    if let Some(pacing) = raw.pacing {
        config.pacing = pacing_config(pacing, &at_key("pacing"))?;
    }
    if let Some(calls) = raw.calls {
        if let Some(suffix) = calls.voip_topic_suffix {
            config.calls.voip_topic_suffix = suffix;
        }
        if let Some(retract) = calls.push_retract {
            config.calls.push_retract = retract;
        }
    }
    if let Some(unread) = raw.unread_count {
        config.unread_count = unread;
    }
    if let Some(keepalive) = raw.keepalive {
        config.keepalive = keepalive_config(keepalive, &at_key("keepalive"))?;
    }
    if let Some(hosts) = raw.virtual_pubsub_hosts {
        let at = at_key("virtual_pubsub_hosts");
        for (index, text) in hosts.iter().enumerate() {
            let host = VirtualPubsubHost::parse(text).map_err(invalid(at.index(index)))?;
            if config.virtual_pubsub_hosts.contains(&host) {
                return Err(Invalid::new(
                    at.index(index),
                    format!("{text:?} is listed twice; expected distinct hosts"),
                ));
            }
            config.virtual_pubsub_hosts.push(host);
        }
    }
    if let Some(iqdisc) = raw.iqdisc {
        let at = at_key("iqdisc");
        let Some(type_) = iqdisc.type_ else {
            let names: Vec<String> = IqDiscipline::NAMES
                .iter()
                .map(|n| format!("{n:?}"))
                .collect();
            return Err(Invalid::new(
                at.key("type"),
                format!("missing; expected one of {}", names.join(", ")),
            ));
        };
        config.iqdisc = IqDiscipline::parse(&type_, iqdisc.workers.map(|w| w.0)).map_err(
            |error| match error {
                IqDisciplineError::Type(message) => Invalid::new(at.key("type"), message),
                IqDisciplineError::Workers(message) => Invalid::new(at.key("workers"), message),
            },
        )?;
    }
    Ok(config)
}

fn retry_config(raw: RawRetry, at: &KeyPath) -> Result<Retry, Invalid> {
    let mut retry = Retry::default();
    let seconds = |value, key: &str, least: u64| {
        let accepted = format!("at least {least} (seconds)");
        integer(value, least, &accepted, &at.key(key)).map(Duration::from_secs)
    };
    if let Some(value) = raw.max_retries {
        retry.max_retries = integer(value, 0u32, "at least 0 (retries)", &at.key("max_retries"))?;
    }
    if let Some(value) = raw.max_age {
        retry.max_age = seconds(value, "max_age", 1)?;
    }
    if let Some(value) = raw.backoff_base {
        let key = at.key("backoff_base");
        retry.backoff_base =
            Duration::from_millis(integer(value, 1u64, "at least 1 (milliseconds)", &key)?);
    }
    if let Some(value) = raw.backoff_max {
        retry.backoff_max = seconds(value, "backoff_max", 1)?;
    }
    if let Some(value) = raw.disable_after {
        let after = seconds(value, "disable_after", 0)?;
        retry.disable_after = (!after.is_zero()).then_some(after);
    }
    Ok(retry)
}

fn pacing_config(raw: RawPacing, at: &KeyPath) -> Result<Pacing, Invalid> {
    let mut pacing = Pacing::default();
    if let Some(value) = raw.rate_limit {
        let accepted = "0 (no limit) to 1000 (notifications per second)";
        pacing.rate_limit = integer(value, 0u32, accepted, &at.key("rate_limit"))?;
        if pacing.rate_limit > 1000 {
            return Err(Invalid::new(
                at.key("rate_limit"),
                format!("{} is out of range; expected {accepted}", pacing.rate_limit),
            ));
        }
    }
    if let Some(value) = raw.burst {
        pacing.burst = integer(value, 1u32, "at least 1 (notifications)", &at.key("burst"))?;
    }
    if let Some(value) = raw.coalesce_window {
        let key = at.key("coalesce_window");
        let window = integer(value, 0u64, "0 to 3600000 (milliseconds)", &key)?;
        if window > 3_600_000 {
            return Err(Invalid::new(
                key,
                format!("{window} is out of range; expected 0 to 3600000 (milliseconds)"),
            ));
        }
        pacing.coalesce_window = Duration::from_millis(window);
    }
    Ok(pacing)
}

fn keepalive_config(raw: RawKeepalive, at: &KeyPath) -> Result<Option<Keepalive>, Invalid> {
    let mut keepalive = Keepalive::default();
    let seconds = |value, key: &str, least: u64| {
        let accepted = format!("at least {least} (seconds)");
        integer(value, least, &accepted, &at.key(key)).map(Duration::from_secs)
    };
    if let Some(value) = raw.resume_timeout {
        keepalive.resume_timeout = seconds(value, "resume_timeout", 0)?;
    }
    if let Some(value) = raw.wake_before {
        keepalive.wake_before = seconds(value, "wake_before", 1)?;
    }
    if let Some(wake) = raw.wake_on_start {
        keepalive.wake_on_start = wake;
    }
    if let Some(wake) = raw.wake_on_timeout {
        keepalive.wake_on_timeout = wake;
    }
    // ejabberd's `resume_timeout = 0`: sessions are not kept past the stream-management one.
    if keepalive.resume_timeout.is_zero() {
        return Ok(None);
    }
    Ok(Some(keepalive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_within_their_count_and_age() {
        let retry = Retry {
            max_retries: 4,
            max_age: Duration::from_secs(100),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(10),
            disable_after: None,
        };
        for _ in 0..50 {
            let first = retry.delay(1, Duration::ZERO, None).unwrap();
            assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
            let second = retry.delay(2, Duration::ZERO, None).unwrap();
            assert!(second >= Duration::from_secs(2) && second <= Duration::from_secs(4));
            let capped = retry.delay(4, Duration::ZERO, None).unwrap();
            assert!(capped >= Duration::from_secs(5) && capped <= Duration::from_secs(10));
        }
        assert_eq!(retry.delay(5, Duration::ZERO, None), None, "max_retries");
        assert_eq!(
            retry.delay(1, Duration::from_secs(100), None),
            None,
            "max_age"
        );
        assert_eq!(
            retry.delay(1, Duration::from_secs(95), Some(Duration::from_secs(6))),
            None,
            "a wait past max_age is not taken"
        );
        assert_eq!(
            retry.delay(1, Duration::ZERO, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7)),
            "Retry-After is honoured"
        );
        assert_eq!(
            retry.delay(1, Duration::ZERO, Some(Duration::from_secs(700))),
            Some(Duration::from_secs(10)),
            "up to backoff_max"
        );
    }

    #[test]
    fn defaults_are_mongooseims() {
        let config = PushConfig::default();
        assert_eq!(config.backend, Backend::Embedded);
        assert_eq!(config.wpool.workers.get(), 10);
        assert_eq!(config.wpool.strategy, Strategy::AvailableWorker);
        assert_eq!(config.wpool.call_timeout, Duration::from_millis(5000));
        assert_eq!(config.plugin, PluginName::Defaults);
        assert!(config.virtual_pubsub_hosts.is_empty());
        assert_eq!(config.iqdisc, IqDiscipline::NoQueue);
    }

    #[test]
    fn plugins_are_named_by_short_name_or_mongooseim_module() {
        for (name, plugin) in [
            ("defaults", PluginName::Defaults),
            (
                "mod_event_pusher_push_plugin_defaults",
                PluginName::Defaults,
            ),
            ("enhanced", PluginName::Enhanced),
            (
                "mod_event_pusher_push_plugin_enhanced",
                PluginName::Enhanced,
            ),
            ("hints", PluginName::Hints),
            ("mod_event_pusher_push_plugin_hints", PluginName::Hints),
        ] {
            assert_eq!(PluginName::from_name(name), Ok(plugin), "{name}");
        }
        let error = PluginName::from_name("mod_custom").unwrap_err();
        assert!(
            error.starts_with("unknown variant \"mod_custom\", expected one of \"defaults\""),
            "{error}"
        );
    }

    #[test]
    fn mnesia_means_the_embedded_store() {
        assert_eq!(Backend::from_name("mnesia"), Ok(Backend::Embedded));
        assert_eq!(Backend::from_name("rdbms"), Ok(Backend::Rdbms));
        assert!(Backend::from_name("redis").is_err());
    }

    #[test]
    fn workers_must_be_positive() {
        assert_eq!(WorkerPool::parse_workers(200).unwrap().get(), 200);
        assert_eq!(
            WorkerPool::parse_workers(0).unwrap_err(),
            "0 is out of range; expected at least 1 (workers)"
        );
        assert!(WorkerPool::parse_workers(-3).is_err());
    }

    #[test]
    fn call_timeout_is_positive_milliseconds() {
        assert_eq!(
            WorkerPool::parse_call_timeout(5000),
            Ok(Duration::from_secs(5))
        );
        assert!(WorkerPool::parse_call_timeout(0).is_err());
    }

    #[test]
    fn a_virtual_host_is_a_domain_or_ends_with_the_host_placeholder() {
        assert_eq!(
            VirtualPubsubHost::parse("Push.Example.com"),
            Ok(VirtualPubsubHost::Domain("push.example.com".into()))
        );
        assert_eq!(
            VirtualPubsubHost::parse("virtual.@HOST@"),
            Ok(VirtualPubsubHost::PerHost {
                prefix: "virtual.".into()
            })
        );
        assert_eq!(
            VirtualPubsubHost::parse("@HOST@"),
            Ok(VirtualPubsubHost::PerHost { prefix: "".into() })
        );
    }

    #[test]
    fn the_host_placeholder_must_be_the_whole_last_label() {
        for bad in [
            "virtual@HOST@",
            "@HOST@.example.com",
            "a.@HOST@.b",
            "x@HOST@y",
            "@HOST@.@HOST@",
        ] {
            let error = VirtualPubsubHost::parse(bad).unwrap_err();
            assert!(error.contains("@HOST@"), "{bad}: {error}");
        }
        assert!(VirtualPubsubHost::parse("user@push.example.com").is_err());
        assert!(VirtualPubsubHost::parse("bad domain.@HOST@").is_err());
    }

    #[test]
    fn a_per_host_virtual_host_matches_the_recipients_domain_only() {
        let host = VirtualPubsubHost::parse("virtual.@HOST@").unwrap();
        assert!(host.matches("virtual.example.com", "example.com"));
        assert!(!host.matches("virtual.example.com", "example.org"));
        assert!(!host.matches("example.com", "example.com"));
        let exact = VirtualPubsubHost::parse("push.example.com").unwrap();
        assert!(exact.matches("push.example.com", "anything.org"));
    }

    #[test]
    fn iqdisc_accepts_mongooseims_types() {
        assert_eq!(
            IqDiscipline::parse("one_queue", None),
            Ok(IqDiscipline::OneQueue)
        );
        assert_eq!(
            IqDiscipline::parse("queues", Some(4)),
            Ok(IqDiscipline::Queues {
                workers: NonZeroUsize::new(4).unwrap()
            })
        );
        assert!(matches!(
            IqDiscipline::parse("queues", None),
            Err(IqDisciplineError::Workers(_))
        ));
        assert!(matches!(
            IqDiscipline::parse("parallel", Some(2)),
            Err(IqDisciplineError::Workers(_))
        ));
        assert!(matches!(
            IqDiscipline::parse("serial", None),
            Err(IqDisciplineError::Type(_))
        ));
    }
}
