-- Offline messages (XEP-0160), with MongooseIM's table and column names so that a PostgreSQL
-- engine can share its schema. A message waits here for the account (`server`, `username`) until
-- it sends available presence; `id` gives the delivery order.
CREATE TABLE offline_message (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Unix time, in microseconds, at which the message was stored.
    timestamp INTEGER NOT NULL,
    server    TEXT    NOT NULL CHECK (length(server) > 0),
    username  TEXT    NOT NULL CHECK (length(username) > 0),
    from_jid  TEXT    NOT NULL,
    -- The whole stanza, serialised.
    packet    TEXT    NOT NULL,
    -- What modules recorded about the message (JSON by convention), returned untouched.
    metadata  TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX i_offline_message ON offline_message (server, username, id);
