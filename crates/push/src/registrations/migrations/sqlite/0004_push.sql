-- Push registrations (XEP-0357), herald-push's embedded store. The columns are MongooseIM's
-- event_pusher_push_subscription, so registrations move between the two by copying rows:
-- owner and pubsub bare JIDs, the publish-options form as a JSON object of strings, and the
-- creation time in microseconds since the Unix epoch.
CREATE TABLE event_pusher_push_subscription (
    owner_jid  TEXT    NOT NULL,
    node       TEXT    NOT NULL,
    pubsub_jid TEXT    NOT NULL,
    form       TEXT    NOT NULL CHECK (json_valid(form)),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner_jid, node, pubsub_jid)
) STRICT;

CREATE INDEX i_event_pusher_push_subscription ON event_pusher_push_subscription (owner_jid);
