-- Rosters (RFC 6121 section 2), with MongooseIM's table and column names so that a PostgreSQL
-- engine can share its schema. Every row belongs to the account (`server`, `username`), the
-- normalised parts of its bare JID, and names the contact by its normalised bare JID (`jid`).
--
-- The subscription state of RFC 6121 appendix A is two one-letter codes, as in MongooseIM:
-- `subscription` is N (none), T (to), F (from) or B (both); `ask` is the pending flags, N (none),
-- O (out: the user asked the contact), I (in: the contact asked the user) or B (both). The
-- combinations that name no state (a pending request for a subscription already held) are
-- refused here as well as in the code.
CREATE TABLE rosterusers (
    server       TEXT    NOT NULL CHECK (length(server) > 0),
    username     TEXT    NOT NULL CHECK (length(username) > 0),
    jid          TEXT    NOT NULL CHECK (length(jid) > 0),
    -- The name the user gave the contact; '' for none.
    nick         TEXT    NOT NULL,
    subscription TEXT    NOT NULL CHECK (subscription IN ('N', 'T', 'F', 'B')),
    ask          TEXT    NOT NULL CHECK (ask IN ('N', 'O', 'I', 'B')),
    -- The status text of the contact's pending subscription request; '' for none.
    askmessage   TEXT    NOT NULL,
    -- Unix time, in seconds, of the item's creation.
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (server, username, jid),
    CHECK (NOT (subscription IN ('T', 'B') AND ask IN ('O', 'B'))),
    CHECK (NOT (subscription IN ('F', 'B') AND ask IN ('I', 'B')))
) STRICT, WITHOUT ROWID;

-- The groups of each item, one row per group.
CREATE TABLE rostergroups (
    server   TEXT NOT NULL,
    username TEXT NOT NULL,
    jid      TEXT NOT NULL,
    grp      TEXT NOT NULL,
    PRIMARY KEY (server, username, jid, grp),
    FOREIGN KEY (server, username, jid) REFERENCES rosterusers (server, username, jid)
        ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- The roster version of each account (XEP-0237), when versions are stored rather than computed.
CREATE TABLE roster_version (
    server   TEXT NOT NULL,
    username TEXT NOT NULL,
    version  TEXT NOT NULL,
    PRIMARY KEY (server, username)
) STRICT, WITHOUT ROWID;
