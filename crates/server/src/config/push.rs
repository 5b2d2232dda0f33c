//! `[modules.mod_event_pusher]` read through the whole file: its shape and checks live with
//! the module (`herald_push::config`); these tests show them as an operator meets them.

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use crate::config::Config;
    use herald_push::config::{
        Backend, EventPusherConfig, IqDiscipline, PluginName, PushConfig, Strategy,
        VirtualPubsubHost,
    };

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
