-- Version 3 of the archive's file: one row a message, kept by its sender's archive, its
-- recipient's, or both (`kept`: 1 the sender's, 2 the recipient's, 3 both), where version 2
-- had a row per message per archive. Accounts and correspondents are integer keys of
-- `mam_jid` (as MongooseIM's `mam_server_user` ids); `conversation` is the two keys in one
-- number (the smaller shifted left by 32 bits, or-ed with the larger), for queries `with` a
-- JID. `id` is the archive id, unique in the file (one process gives them), and the rowid.
-- SQLite's work per archived message is about half that of two rows on text keys
-- (docs/BENCHMARKS.md, "The archive's account check in the insert").
--
-- The indexes of each side hold only the rows that side keeps, and queries name the same
-- condition (`kept <> 2`, `kept <> 1`) so that SQLite uses them. No CHECK calls a function
-- (the inserts write many rows a statement: see archive_0002).
CREATE TABLE mam_jid (
    id  INTEGER PRIMARY KEY,
    jid TEXT    NOT NULL UNIQUE
) STRICT;

CREATE TABLE mam_message_v3 (
    id                 INTEGER PRIMARY KEY,
    sender             INTEGER NOT NULL,
    recipient          INTEGER NOT NULL,
    conversation       INTEGER NOT NULL,
    kept               INTEGER NOT NULL CHECK (kept BETWEEN 1 AND 3),
    sender_resource    TEXT    NOT NULL,
    recipient_resource TEXT    NOT NULL,
    origin_id          TEXT,
    search_body        TEXT    NOT NULL,
    message            TEXT    NOT NULL
) STRICT;

-- Every row of version 2 becomes a row kept by its owner's side: an outgoing row's owner is
-- its sender (its resource from `from_jid`), an incoming row's its recipient.
INSERT OR IGNORE INTO mam_jid (jid)
SELECT owner FROM mam_message UNION SELECT remote_bare_jid FROM mam_message;

CREATE TEMP TABLE mam_old AS
SELECT m.id AS id,
       CASE m.direction WHEN 'O' THEN o.id ELSE r.id END AS sender,
       CASE m.direction WHEN 'O' THEN r.id ELSE o.id END AS recipient,
       (min(o.id, r.id) << 32) | max(o.id, r.id) AS conversation,
       CASE WHEN m.direction = 'O' AND o.id <> r.id THEN 1 ELSE 2 END AS kept,
       CASE m.direction
           WHEN 'O' THEN CASE WHEN instr(m.from_jid, '/') > 0
                              THEN substr(m.from_jid, instr(m.from_jid, '/') + 1)
                              ELSE '' END
           ELSE m.remote_resource END AS sender_resource,
       CASE m.direction WHEN 'O' THEN m.remote_resource ELSE '' END AS recipient_resource,
       m.origin_id AS origin_id, m.search_body AS search_body, m.message AS message
FROM mam_message m
JOIN mam_jid o ON o.jid = m.owner
JOIN mam_jid r ON r.jid = m.remote_bare_jid;

INSERT OR IGNORE INTO mam_message_v3 (id, sender, recipient, conversation, kept,
    sender_resource, recipient_resource, origin_id, search_body, message)
SELECT id, sender, recipient, conversation, kept, sender_resource, recipient_resource,
    origin_id, search_body, message
FROM mam_old ORDER BY id;

-- Two archives' rows with one id (ids were per archive; only a clock set back across a
-- restart made them): the ones left out get new ids after the last, in their order.
INSERT INTO mam_message_v3 (id, sender, recipient, conversation, kept, sender_resource,
    recipient_resource, origin_id, search_body, message)
SELECT (SELECT max(id) FROM mam_message_v3) + row_number() OVER (ORDER BY o.id, o.sender),
    o.sender, o.recipient, o.conversation, o.kept, o.sender_resource, o.recipient_resource,
    o.origin_id, o.search_body, o.message
FROM mam_old o
WHERE NOT EXISTS (
    SELECT 1 FROM mam_message_v3 v
    WHERE v.id = o.id AND v.sender = o.sender AND v.recipient = o.recipient
      AND v.kept = o.kept AND v.message = o.message
);

DROP TABLE mam_old;
DROP TABLE mam_message;
ALTER TABLE mam_message_v3 RENAME TO mam_message;
CREATE INDEX i_mam_message_sent ON mam_message (sender, id) WHERE kept <> 2;
CREATE INDEX i_mam_message_received ON mam_message (recipient, id) WHERE kept <> 1;
CREATE INDEX i_mam_message_conversation ON mam_message (conversation, id);
