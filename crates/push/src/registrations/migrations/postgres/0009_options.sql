-- What a client asked for at enable beyond XEP-0357 (Tigase's push extensions: encryption
-- key, priority, muted conversations, groupchat filter, calls), as a JSON object, for the
-- registration of the same key. A table of herald's beside MongooseIM's
-- event_pusher_push_subscription, which stays exactly MongooseIM's; a registration without
-- extensions has no row here.
CREATE TABLE herald_push_options (
    owner_jid  VARCHAR(250),
    node       VARCHAR(250),
    pubsub_jid VARCHAR(250),
    options    TEXT NOT NULL,
    PRIMARY KEY (owner_jid, node, pubsub_jid)
);
