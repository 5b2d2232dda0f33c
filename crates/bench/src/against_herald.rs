//! Every scenario end to end against a herald started in-process on 127.0.0.1:0, over real
//! sockets with STARTTLS: the tool keeps working as herald changes, and every message
//! arrives exactly once. No timing is asserted.

use std::time::Duration;

use herald_server::{app, config::Config};

use crate::{
    component::ComponentTarget,
    register,
    scenario::{
        Ctx,
        enable::{self, EnableParams},
        idle::{self, IdleParams},
        push::{self, PushParams},
        route::{self, RouteParams},
    },
    xmpp::{Target, TlsMode},
};

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "{DATA}"
loglevel = "error"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
tls.mode = "starttls"

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "bench-secret"

[modules.mod_register]
# The bench registers its users in-band, all from 127.0.0.1.
registration_timeout = "infinity"
[modules.mod_offline]
[modules.mod_event_pusher.push]
# One notification per message, as the push scenario counts them (bench/herald/herald.toml).
pacing.rate_limit = 0
"#;

fn ctx(running: &app::Running) -> Ctx {
    Ctx {
        target: Target {
            addr: running.c2s_addrs[0],
            domain: "localhost".into(),
            tls: TlsMode::Starttls,
            mechanism: None,
            password: "bench-password".into(),
        },
        prefix: "t".into(),
        name: "herald".into(),
        label: None,
        // The server runs in this process: its figures are ours.
        server_pid: Some(std::process::id()),
        db_pid: None,
        concurrency: 4,
        deadline: tokio::time::Instant::now() + Duration::from_secs(120),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_delivers_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG.replace("{DATA}", &dir.path().join("data").display().to_string());
    let config = Config::parse(&text, "herald.toml", dir.path()).unwrap();
    let running = app::start(&config).await.unwrap();
    let ctx = ctx(&running);
    register(&ctx, 8).await.unwrap();

    let component = ComponentTarget {
        addr: running.service_addrs[0],
        domain: "push.localhost".into(),
        secret: "bench-secret".into(),
    };
    let flat_out = PushParams {
        users: 4,
        senders: 2,
        registrations: 1,
        messages: 200,
        rate: None,
        window: 50,
        stall: Duration::from_secs(20),
        component,
    };
    let report = push::run(&ctx, &flat_out).await.unwrap();
    assert_eq!(
        (report.sent, report.delivered),
        (Some(200), Some(200)),
        "{report:?}"
    );
    assert_eq!(
        (report.duplicates, report.errors),
        (Some(0), Some(0)),
        "{report:?}"
    );
    assert!(report.latency_ms.is_some() && report.tool_cpu_s.is_some());

    // Paced, with the app server reconnecting right after the previous run's close.
    let paced = PushParams {
        messages: 50,
        rate: Some(500.0),
        ..flat_out.clone()
    };
    let report = push::run(&ctx, &paced).await.unwrap();
    assert_eq!(
        (report.delivered, report.duplicates),
        (Some(50), Some(0)),
        "{report:?}"
    );

    // Three devices per recipient: every message is a publish to each, all counted.
    let three = PushParams {
        registrations: 3,
        messages: 60,
        ..flat_out
    };
    let report = push::run(&ctx, &three).await.unwrap();
    assert_eq!(
        (report.sent, report.delivered, report.duplicates),
        (Some(60), Some(180), Some(0)),
        "{report:?}"
    );
    assert_eq!(report.delivery_ratio, Some(1.0), "{report:?}");

    let report = route::run(
        &ctx,
        &RouteParams {
            pairs: 3,
            messages: 300,
            rate: None,
            window: 100,
            stall: Duration::from_secs(20),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (report.delivered, report.duplicates),
        (Some(300), Some(0)),
        "{report:?}"
    );

    let report = enable::run(
        &ctx,
        &EnableParams {
            users: 2,
            duration: Duration::from_millis(300),
            service: "push.localhost".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(report.errors, Some(0), "{report:?}");
    assert_eq!(report.sent, report.delivered, "{report:?}");

    let report = idle::run(
        &ctx,
        &IdleParams {
            sessions: 5,
            hold: Duration::from_millis(100),
            settle: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sessions, Some(5));
    assert!(report.server_rss_after_kib.is_some() && report.rss_per_session_kib.is_some());

    running.shutdown(Duration::from_secs(5)).await;
}
