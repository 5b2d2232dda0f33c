-- Accounts (RFC 6120 section 6): one row per bare JID, keyed by its normalised domainpart
-- (`server`) and localpart (`username`), the column names MongooseIM uses.
-- There is no password column, on purpose: only the SCRAM secrets derived from the password
-- (RFC 5802 section 3), one set for SCRAM-SHA-1 and one for SCRAM-SHA-256 (RFC 7677).
CREATE TABLE users (
    server            TEXT    NOT NULL CHECK (length(server) > 0),
    username          TEXT    NOT NULL CHECK (length(username) > 0),
    sha1_salt         BLOB    NOT NULL,
    sha1_iterations   INTEGER NOT NULL,
    sha1_stored_key   BLOB    NOT NULL,
    sha1_server_key   BLOB    NOT NULL,
    sha256_salt       BLOB    NOT NULL,
    sha256_iterations INTEGER NOT NULL,
    sha256_stored_key BLOB    NOT NULL,
    sha256_server_key BLOB    NOT NULL,
    -- Unix time, in seconds, of the registration.
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (server, username)
) STRICT, WITHOUT ROWID;
