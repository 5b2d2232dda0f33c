-- Rosters (RFC 6121 section 2): MongooseIM's `rosterusers`, `rostergroups` and `roster_version`.
-- Every row belongs to the account (`server`, `username`) and names the contact by its
-- normalised bare JID (`jid`).
--
-- The subscription state of RFC 6121 appendix A is two one-letter codes, as in MongooseIM:
-- `subscription` is N (none), T (to), F (from) or B (both); `ask` is the pending flags, N (none),
-- O (out: the user asked the contact), I (in: the contact asked the user) or B (both). The
-- combinations that name no state are refused here as well as in the code. `subscribe` and
-- `type` are MongooseIM's columns, which herald leaves at their defaults.
CREATE TABLE rosterusers (
    username     VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(username) > 0),
    server       VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(server) > 0),
    jid          VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(jid) > 0),
    -- The name the user gave the contact; '' for none.
    nick         TEXT         NOT NULL,
    subscription CHAR(1)      NOT NULL CHECK (subscription IN ('N', 'T', 'F', 'B')),
    ask          CHAR(1)      NOT NULL CHECK (ask IN ('N', 'O', 'I', 'B')),
    -- The status text of the contact's pending subscription request; '' for none.
    askmessage   TEXT         NOT NULL,
    subscribe    TEXT         NOT NULL DEFAULT '',
    type         TEXT         DEFAULT 'item',
    created_at   TIMESTAMP    NOT NULL DEFAULT now(),
    PRIMARY KEY (server, username, jid),
    CHECK (NOT (subscription IN ('T', 'B') AND ask IN ('O', 'B'))),
    CHECK (NOT (subscription IN ('F', 'B') AND ask IN ('I', 'B')))
);

-- The groups of each item, one row per group; they go with their item.
CREATE TABLE rostergroups (
    username VARCHAR(250) COLLATE "C" NOT NULL,
    server   VARCHAR(250) COLLATE "C" NOT NULL,
    jid      VARCHAR(250) COLLATE "C" NOT NULL,
    grp      TEXT         COLLATE "C" NOT NULL,
    PRIMARY KEY (server, username, jid, grp),
    FOREIGN KEY (server, username, jid) REFERENCES rosterusers (server, username, jid)
        ON DELETE CASCADE
);

-- The roster version of each account (XEP-0237), a number kept as text.
CREATE TABLE roster_version (
    username VARCHAR(250) COLLATE "C" NOT NULL,
    server   VARCHAR(250) COLLATE "C" NOT NULL,
    version  TEXT         NOT NULL,
    PRIMARY KEY (server, username)
);
