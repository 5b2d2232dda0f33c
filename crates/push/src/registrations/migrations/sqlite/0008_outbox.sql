-- Notifications decided and not yet delivered (docs/modules/push.md, "Retries and the
-- outbox"): each is written here before it is sent and marked done when its outcome is
-- final (delivered, rejected, given up), so that a restart or a crash sends what was pending.
-- `message` identifies the notified message (its archive id, or sender and id) so that one
-- message is notified at most once per registration: a done row stays for retry.max_age
-- (one without identity goes at once); `route` is 'xmpp' (body: the publish
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
    done       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner_jid, pubsub_jid, node, message)
) STRICT;
