-- The message archive (XEP-0313), MongooseIM's `mam_message` where it fits: one row per
-- message per archive (the sender's and the recipient's each have theirs). `id` is the
-- archive id, the stanza-id clients see: microseconds since the Unix epoch shifted left by 8
-- bits plus a sequence, so ids grow with time and a time range is an id range. `owner` is the
-- archive's account (MongooseIM's user_id), `direction` I (received) or O (sent),
-- `search_body` the body in lowercase for full-text queries, `message` the stanza as the
-- owner saw it.
CREATE TABLE mam_message (
    id              INTEGER NOT NULL,
    owner           TEXT    NOT NULL CHECK (length(owner) > 0),
    remote_bare_jid TEXT    NOT NULL,
    remote_resource TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('I', 'O')),
    from_jid        TEXT    NOT NULL,
    origin_id       TEXT,
    search_body     TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    PRIMARY KEY (owner, id)
) STRICT;

CREATE INDEX i_mam_message_remote ON mam_message (owner, remote_bare_jid, id);
