-- Per-user data of the core modules, one table for all of them: the block list (XEP-0191,
-- kind 'block'), the vCard (XEP-0054, kind 'vcard') and the personal eventing nodes and items
-- (XEP-0163, kinds 'pep_node' and 'pep_item', scope = the node). Each row belongs to the
-- account `owner` (its normalised bare JID); `item` names the row within (owner, kind, scope);
-- `seq` orders the rows of a scope by their last write (a growing number of microseconds).
CREATE TABLE herald_user_data (
    owner TEXT    NOT NULL CHECK (length(owner) > 0),
    kind  TEXT    NOT NULL,
    scope TEXT    NOT NULL,
    item  TEXT    NOT NULL,
    value TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (owner, kind, scope, item)
) STRICT;

CREATE INDEX i_herald_user_data_seq ON herald_user_data (owner, kind, scope, seq);
