-- Offline messages (XEP-0160): MongooseIM's `offline_message`. A message waits here for the
-- account (`server`, `username`) until it sends available presence; `id` gives the delivery
-- order. `expire` and `permanent_fields` are MongooseIM's columns, which herald leaves NULL;
-- `metadata` is herald's: what modules recorded about the message, returned untouched.
CREATE TABLE offline_message (
    id               BIGSERIAL    PRIMARY KEY,
    -- Unix time, in microseconds, at which the message was stored.
    timestamp        BIGINT       NOT NULL,
    expire           BIGINT,
    server           VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(server) > 0),
    username         VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(username) > 0),
    from_jid         VARCHAR(250) NOT NULL,
    -- The whole stanza, serialised.
    packet           TEXT         NOT NULL,
    permanent_fields BYTEA,
    metadata         TEXT         NOT NULL DEFAULT ''
);

CREATE INDEX i_offline_message ON offline_message (server, username, id);
