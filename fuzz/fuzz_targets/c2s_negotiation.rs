//! Arbitrary bytes on a client stream's negotiation (and a component's handshake, and a
//! remote server's stream) of a real in-process server over loopback TCP: every connection
//! ends within the deadlines, no task panics, and the server goes on accepting.
//!
//! Input: `[listener, data @ ..]`: `listener % 3` picks the client, component or
//! server-to-server listener; `data` is sent as it is, then the connection is read until it
//! closes. Federation denies every domain, so no input makes the server connect elsewhere.

#![no_main]

use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use herald_server::{app, config::Config};
use libfuzzer_sys::fuzz_target;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};

const CONFIG: &str = r#"
[general]
hosts = ["localhost"]
data_dir = "DATA"

[[listen.c2s]]
port = 0
ip_address = "127.0.0.1"
max_stanza_size = 4096
state_timeout = 500
handshake_timeout = 1

[[listen.service]]
port = 0
ip_address = "127.0.0.1"
password = "secret"
state_timeout = 500

[[listen.s2s]]
port = 0
ip_address = "127.0.0.1"
state_timeout = 500

[s2s]
default_policy = "deny"

[modules.mod_disco]
[modules.mod_ping]
[modules.mod_roster]
[modules.mod_offline]
[modules.mod_register]
registration_timeout = "infinity"
[modules.mod_stream_management]
[modules.mod_fail2ban]
c2s_max_auth_failures = 1000000
[modules.mod_event_pusher.push]
"#;

static PANICS: AtomicUsize = AtomicUsize::new(0);

struct Harness {
    runtime: Runtime,
    c2s: SocketAddr,
    service: SocketAddr,
    s2s: SocketAddr,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        let runtime = Runtime::new().unwrap();
        let dir = std::env::temp_dir().join(format!("herald-fuzz-{}", std::process::id()));
        let text = CONFIG.replace("DATA", &dir.display().to_string());
        let config = Config::parse(&text, "fuzz.toml", &dir).unwrap();
        let running = runtime.block_on(app::start(&config)).unwrap();
        let (c2s, service, s2s) = (
            running.c2s_addrs[0],
            running.service_addrs[0],
            running.s2s_addrs[0],
        );
        // The server runs as long as the fuzzing process.
        std::mem::forget(running);
        Harness {
            runtime,
            c2s,
            service,
            s2s,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let [listener, data @ ..] = input else {
        return;
    };
    let harness = harness();
    let addr = match listener % 3 {
        0 => harness.c2s,
        1 => harness.service,
        _ => harness.s2s,
    };
    harness.runtime.block_on(async {
        let mut tcp = TcpStream::connect(addr).await.expect("the server accepts");
        let _ = tcp.write_all(data).await;
        let mut buf = vec![0u8; 8192];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection outlived its deadlines");
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked");
});
