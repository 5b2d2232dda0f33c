//! `[modules.mod_event_pusher]` with its `push` backend (spec `push.md` section 2): the file's
//! shape and its checks. The value types, defaults and per-value rules are herald-push's
//! (`herald_push::config`); this file walks the table and names the key of each failure.

use herald_push::config::{
    Backend, IqDiscipline, IqDisciplineError, PluginName, PushConfig, Strategy, VirtualPubsubHost,
    WorkerPool,
};
use serde::Deserialize;

use super::error::{Invalid, KeyPath};
use super::raw::Integer;

/// `[modules.mod_event_pusher]`: MongooseIM's event pusher; `push` is its only backend so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPusherConfig {
    /// `[modules.mod_event_pusher.push]`: push notifications (XEP-0357); `None` when absent.
    pub push: Option<PushConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawEventPusher {
    pub(super) push: Option<RawPush>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPush {
    pub(super) backend: Option<String>,
    wpool: Option<RawWpool>,
    plugin_module: Option<String>,
    virtual_pubsub_hosts: Option<Vec<String>>,
    iqdisc: Option<RawIqdisc>,
    max_registrations: Option<Integer>,
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

/// Checks `[modules.mod_event_pusher]` at `at`.
pub(super) fn event_pusher(
    raw: RawEventPusher,
    at: &KeyPath,
) -> Result<EventPusherConfig, Invalid> {
    let push = raw
        .push
        .map(|push| push_config(push, &at.key("push")))
        .transpose()?;
    Ok(EventPusherConfig { push })
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

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "[general]\nhosts = [\"example.com\"]\n";

    fn parse(modules: &str) -> Result<Config, String> {
        Config::parse(
            &format!("{MINIMAL}{modules}"),
            "herald.toml",
            Path::new("/etc/herald"),
        )
        .map_err(|error| error.to_string())
    }

    fn push(modules: &str) -> PushConfig {
        parse(modules)
            .unwrap()
            .modules
            .mod_event_pusher
            .unwrap()
            .push
            .unwrap()
    }

    #[test]
    fn the_seed_example_starts_as_is() {
        let config = push(
            "[modules.mod_event_pusher.push]\nbackend = \"mnesia\"\nwpool.workers = 200\n\
             plugin_module = \"mod_event_pusher_push_plugin_defaults\"\n",
        );
        assert_eq!(config.backend, Backend::Embedded);
        assert_eq!(config.wpool.workers.get(), 200);
        assert_eq!(config.plugin, PluginName::Defaults);
    }

    #[test]
    fn the_spec_example_parses_with_every_key() {
        let config = push(
            "[modules.mod_event_pusher.push]
backend = \"mnesia\"
wpool.workers = 100
wpool.strategy = \"available_worker\"
wpool.call_timeout = 5000
plugin_module = \"mod_event_pusher_push_plugin_enhanced\"
virtual_pubsub_hosts = [\"virtual.@HOST@\", \"push.example.com\"]
iqdisc.type = \"one_queue\"
[modules.mod_push_service_mongoosepush]
pool_name = \"mongoose_push_http\"
[outgoing_pools.http.mongoose_push_http]
connection.host = \"https://localhost:8443\"
",
        );
        assert_eq!(config.wpool.workers.get(), 100);
        assert_eq!(config.wpool.strategy, Strategy::AvailableWorker);
        assert_eq!(config.wpool.call_timeout, Duration::from_secs(5));
        assert_eq!(config.plugin, PluginName::Enhanced);
        assert_eq!(
            config.virtual_pubsub_hosts,
            [
                VirtualPubsubHost::PerHost {
                    prefix: "virtual.".into()
                },
                VirtualPubsubHost::Domain("push.example.com".into())
            ]
        );
        assert_eq!(config.iqdisc, IqDiscipline::OneQueue);
    }

    #[test]
    fn an_empty_push_table_enables_the_module_with_defaults() {
        assert_eq!(
            push("[modules.mod_event_pusher.push]\n"),
            PushConfig::default()
        );
    }

    #[test]
    fn an_event_pusher_without_push_does_not_enable_push() {
        let config = parse("[modules.mod_event_pusher]\n").unwrap();
        assert_eq!(
            config.modules.mod_event_pusher,
            Some(EventPusherConfig { push: None })
        );
        assert_eq!(parse("").unwrap().modules.mod_event_pusher, None);
    }

    #[test]
    fn an_unknown_plugin_names_its_key_and_line() {
        let error = parse(
            "[modules.mod_event_pusher.push]\nplugin_module = \"mod_event_pusher_push_plugin_custom\"\n",
        )
        .unwrap_err();
        assert!(
            error.starts_with(
                "herald.toml:4: modules.mod_event_pusher.push.plugin_module: unknown variant \
                 \"mod_event_pusher_push_plugin_custom\", expected one of \"defaults\""
            ),
            "{error}"
        );
    }

    #[test]
    fn zero_workers_are_rejected() {
        assert_eq!(
            parse("[modules.mod_event_pusher.push]\nwpool.workers = 0\n").unwrap_err(),
            "herald.toml:4: modules.mod_event_pusher.push.wpool.workers: 0 is out of range; \
             expected at least 1 (workers)"
        );
    }

    #[test]
    fn a_host_placeholder_inside_a_label_is_rejected() {
        let error = parse(
            "[modules.mod_event_pusher.push]\nvirtual_pubsub_hosts = [\"push.example.com\", \"x@HOST@\"]\n",
        )
        .unwrap_err();
        assert!(
            error.starts_with(
                "herald.toml:4: modules.mod_event_pusher.push.virtual_pubsub_hosts[1]: \"x@HOST@\""
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = parse("[modules.mod_event_pusher.push]\nworkers = 3\n").unwrap_err();
        assert!(
            error.starts_with(
                "herald.toml:4: modules.mod_event_pusher.push.workers: unknown field `workers`"
            ),
            "{error}"
        );
        let error = parse("[modules.mod_event_pusher.push]\nwpool.size = 3\n").unwrap_err();
        assert!(
            error.contains("wpool.size: unknown field `size`"),
            "{error}"
        );
        let error = parse("[modules.mod_event_pusher.pubsub]\n").unwrap_err();
        assert!(
            error.contains("mod_event_pusher.pubsub: unknown field"),
            "{error}"
        );
    }

    #[test]
    fn rdbms_without_a_postgresql_pool_is_refused() {
        let error = parse("[modules.mod_event_pusher.push]\nbackend = \"rdbms\"\n").unwrap_err();
        assert!(
            error.starts_with("herald.toml:4: modules.mod_event_pusher.push.backend: \"rdbms\""),
            "{error}"
        );
        assert!(error.contains("PostgreSQL"), "{error}");
        assert!(parse("[modules.mod_event_pusher.push]\nbackend = \"cassandra\"\n").is_err());
    }

    #[test]
    fn wpool_strategy_and_call_timeout_are_checked() {
        assert!(
            parse("[modules.mod_event_pusher.push]\nwpool.strategy = \"fastest\"\n")
                .unwrap_err()
                .contains("wpool.strategy: unknown variant \"fastest\"")
        );
        assert!(
            parse("[modules.mod_event_pusher.push]\nwpool.call_timeout = 0\n")
                .unwrap_err()
                .contains("wpool.call_timeout: 0 is out of range")
        );
    }

    #[test]
    fn iqdisc_is_checked() {
        assert!(
            parse("[modules.mod_event_pusher.push]\niqdisc.type = \"serial\"\n")
                .unwrap_err()
                .contains("iqdisc.type: unknown variant \"serial\"")
        );
        assert!(
            parse("[modules.mod_event_pusher.push]\niqdisc.workers = 2\n")
                .unwrap_err()
                .contains("iqdisc.type: missing")
        );
        assert!(
            parse("[modules.mod_event_pusher.push]\niqdisc.type = \"queues\"\n")
                .unwrap_err()
                .contains("iqdisc.workers: missing")
        );
        assert_eq!(
            push("[modules.mod_event_pusher.push]\niqdisc.type = \"queues\"\niqdisc.workers = 4\n")
                .iqdisc,
            IqDiscipline::Queues {
                workers: std::num::NonZeroUsize::new(4).unwrap()
            }
        );
    }
}
