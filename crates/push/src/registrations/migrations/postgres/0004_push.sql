-- Push registrations (XEP-0357), herald-push's relational store: MongooseIM's
-- event_pusher_push_subscription exactly (docs/modules/push.md section 9), so registrations move
-- between the two by copying rows. `form` is a JSON object of strings; `created_at` is in
-- microseconds since the Unix epoch.
CREATE TABLE event_pusher_push_subscription (
    owner_jid  VARCHAR(250),
    node       VARCHAR(250),
    pubsub_jid VARCHAR(250),
    form       JSON   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (owner_jid, node, pubsub_jid)
);

CREATE INDEX i_event_pusher_push_subscription ON event_pusher_push_subscription (owner_jid);
