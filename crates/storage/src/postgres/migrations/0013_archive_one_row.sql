-- The archive as one row a message, kept by its sender's archive, its recipient's, or both
-- (`kept`: 1 the sender's, 2 the recipient's, 3 both), where version 6 had a row per message
-- per archive. Accounts and correspondents are integer keys of `mam_jid` (as MongooseIM's
-- `mam_server_user` ids); `conversation` is the two keys in one number (the smaller shifted
-- left by 32 bits, or-ed with the larger), for queries `with` a JID. Archive ids are made by
-- each server process, so two servers sharing the database can make the same one: the key is
-- the id and the sender's key. The indexes of each side hold only the rows that side keeps.
CREATE TABLE mam_jid (
    id  BIGSERIAL PRIMARY KEY,
    jid TEXT COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE mam_message_v3 (
    id                 BIGINT  NOT NULL,
    sender             BIGINT  NOT NULL,
    recipient          BIGINT  NOT NULL,
    conversation       BIGINT  NOT NULL,
    kept               INTEGER NOT NULL CHECK (kept BETWEEN 1 AND 3),
    sender_resource    TEXT    NOT NULL,
    recipient_resource TEXT    NOT NULL,
    origin_id          TEXT,
    search_body        TEXT    NOT NULL,
    message            TEXT    NOT NULL,
    PRIMARY KEY (id, sender)
);

-- Every row of version 6 becomes a row kept by its owner's side: an outgoing row's owner is
-- its sender (its resource from `from_jid`), an incoming row's its recipient.
INSERT INTO mam_jid (jid)
SELECT owner FROM mam_message UNION SELECT remote_bare_jid FROM mam_message
ON CONFLICT DO NOTHING;

INSERT INTO mam_message_v3 (id, sender, recipient, conversation, kept, sender_resource,
    recipient_resource, origin_id, search_body, message)
SELECT m.id,
       CASE m.direction WHEN 'O' THEN o.id ELSE r.id END,
       CASE m.direction WHEN 'O' THEN r.id ELSE o.id END,
       (LEAST(o.id, r.id) << 32) | GREATEST(o.id, r.id),
       CASE WHEN m.direction = 'O' AND o.id <> r.id THEN 1 ELSE 2 END,
       CASE m.direction
           WHEN 'O' THEN CASE WHEN position('/' IN m.from_jid) > 0
                              THEN substring(m.from_jid FROM position('/' IN m.from_jid) + 1)
                              ELSE '' END
           ELSE m.remote_resource END,
       CASE m.direction WHEN 'O' THEN m.remote_resource ELSE '' END,
       m.origin_id, m.search_body, m.message
FROM mam_message m
JOIN mam_jid o ON o.jid = m.owner
JOIN mam_jid r ON r.jid = m.remote_bare_jid
ON CONFLICT DO NOTHING;

DROP TABLE mam_message;
ALTER TABLE mam_message_v3 RENAME TO mam_message;
ALTER INDEX mam_message_v3_pkey RENAME TO mam_message_pkey;
CREATE INDEX i_mam_message_sent ON mam_message (sender, id) WHERE kept <> 2;
CREATE INDEX i_mam_message_received ON mam_message (recipient, id) WHERE kept <> 1;
CREATE INDEX i_mam_message_conversation ON mam_message (conversation, id);
