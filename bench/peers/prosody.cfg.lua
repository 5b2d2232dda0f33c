-- Prosody as benchmarked by bench/run, written for herald's benchmarks: the same accounts,
-- push app server and features as bench/herald/herald.toml, on its own loopback ports.
-- bench/peers/prosody replaces @WORK@ and the ports before starting.

pidfile = "@WORK@/prosody.pid"
data_path = "@WORK@/data"
log = { error = "@WORK@/prosody.log" }
network_backend = "epoll"

c2s_ports = { @C2S_PORT@ }
c2s_interfaces = { "127.0.0.1" }
component_ports = { @COMPONENT_PORT@ }
component_interfaces = { "127.0.0.1" }
-- No server-to-server and no HTTP: nothing else listens.
modules_disabled = { "s2s" }
http_ports = {}
https_ports = {}

authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
allow_registration = true

modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "posix";
    "offline"; "smacks"; "cloud_notify";
}

-- mod_cloud_notify leaves the body out of the summary unless asked; the benchmark reads its
-- timestamp from last-message-body, as it does with the other servers.
push_notification_with_body = true
push_notification_with_sender = true

ssl = {
    certificate = "@WORK@/cert.pem";
    key = "@WORK@/key.pem";
}

VirtualHost "localhost"

Component "push.localhost"
    component_secret = "@SECRET@"
