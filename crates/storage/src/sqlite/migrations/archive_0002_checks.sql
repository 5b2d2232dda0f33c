-- Version 2 of the archive's file: `mam_message` as in version 1, its owner checked as
-- non-empty by a comparison instead of length(). SQLite keeps a statement journal (a copy of
-- every page the statement changes, to undo it alone) for a statement that writes several
-- rows and may fail half-way, and a CHECK that calls a function counts as one that may: every
-- batch of the archive's writer copied the pages it changed, about a tenth of the writing
-- (docs/BENCHMARKS.md, "Statement journals"). The insert skips what it cannot store
-- (INSERT OR IGNORE), so without the call nothing makes it fail half-way. SQLite cannot alter
-- a CHECK: the table is built again, rows and index.
CREATE TABLE mam_message_v2 (
    id              INTEGER NOT NULL,
    owner           TEXT    NOT NULL CHECK (owner <> ''),
    remote_bare_jid TEXT    NOT NULL,
    remote_resource TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('I', 'O')),
    from_jid        TEXT    NOT NULL,
    origin_id       TEXT,
    search_body     TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    PRIMARY KEY (owner, id)
) STRICT;

INSERT INTO mam_message_v2 (id, owner, remote_bare_jid, remote_resource, direction, from_jid,
    origin_id, search_body, message)
SELECT id, owner, remote_bare_jid, remote_resource, direction, from_jid, origin_id,
    search_body, message
FROM mam_message;

DROP TABLE mam_message;
ALTER TABLE mam_message_v2 RENAME TO mam_message;
CREATE INDEX i_mam_message_remote ON mam_message (owner, remote_bare_jid, id);
