-- Notifications decided and not yet delivered (docs/modules/push.md, "Retries and the
-- outbox"): one that is not delivered within a few milliseconds is written here, and removed
-- when its outcome is final (delivered, rejected, given up), so that a restart or a crash
-- sends what was pending. `id` is herald's (unique across restarts); `message` identifies
-- the notified message (its archive id), so that a message is pending once per registration; `route` is 'xmpp' (body: the publish
-- IQ) or 'http' (device, body: the MongoosePush request). Times in microseconds.
CREATE TABLE herald_push_outbox (
    id         INTEGER PRIMARY KEY,
    owner_jid  TEXT    NOT NULL,
    pubsub_jid TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    message    TEXT,
    route      TEXT    NOT NULL CHECK (route IN ('xmpp', 'http')),
    device     TEXT,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_jid, pubsub_jid, node, message)
) STRICT;
