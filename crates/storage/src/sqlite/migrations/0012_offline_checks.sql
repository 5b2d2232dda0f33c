-- `offline_message` as in version 3, its account checked as non-empty by comparisons instead
-- of length(). An offline store is an INSERT ... SELECT (its WHERE checks the account and the
-- count), which SQLite counts as a statement that may write several rows; with a CHECK that
-- calls a function (or a NOT NULL that aborts: the insert is now INSERT OR IGNORE) it may
-- also fail half-way, and SQLite then keeps a statement journal for every store: a copy of
-- each page it changes (docs/BENCHMARKS.md, "Statement journals"). SQLite cannot alter a
-- CHECK: the table is built again, rows, index and AUTOINCREMENT counter (ids are never
-- reused, even those of messages already delivered).
CREATE TABLE offline_message_v12 (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Unix time, in microseconds, at which the message was stored.
    timestamp INTEGER NOT NULL,
    server    TEXT    NOT NULL CHECK (server <> ''),
    username  TEXT    NOT NULL CHECK (username <> ''),
    from_jid  TEXT    NOT NULL,
    -- The whole stanza, serialised.
    packet    TEXT    NOT NULL,
    -- What modules recorded about the message (JSON by convention), returned untouched.
    metadata  TEXT    NOT NULL DEFAULT ''
) STRICT;

INSERT INTO offline_message_v12 (id, timestamp, server, username, from_jid, packet, metadata)
SELECT id, timestamp, server, username, from_jid, packet, metadata
FROM offline_message ORDER BY id;

DELETE FROM sqlite_sequence WHERE name = 'offline_message_v12';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'offline_message_v12', seq FROM sqlite_sequence WHERE name = 'offline_message';

DROP TABLE offline_message;
ALTER TABLE offline_message_v12 RENAME TO offline_message;
CREATE INDEX i_offline_message ON offline_message (server, username, id);
