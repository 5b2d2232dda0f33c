-- Sessions that hibernate past resume_timeout because their client enabled push in them
-- (docs/modules/push.md, "Hibernation"): the session's full JID and the registration that
-- wakes it, so that a restart can send each one a wake-up notification. Since when it
-- hibernates, in microseconds since the Unix epoch.
CREATE TABLE herald_push_hibernation (
    owner_jid  TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    pubsub_jid TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    since      INTEGER NOT NULL,
    PRIMARY KEY (owner_jid, resource)
) STRICT;
