-- Accounts (RFC 6120 section 6): MongooseIM's `users` table, keyed by the normalised domainpart
-- (`server`) and localpart (`username`) of the bare JID, plus herald's SCRAM secrets.
--
-- `password` and `pass_details` are MongooseIM's columns, kept so that its tooling and queries
-- still work: herald writes '' and NULL there and never reads them. What herald reads is the
-- SCRAM secrets derived from the password (RFC 5802 section 3), one set for SCRAM-SHA-1 and one
-- for SCRAM-SHA-256 (RFC 7677); rows copied from MongooseIM have none, so their users must set
-- a password again (`herald user add` after removing them).
--
-- Key columns use the "C" collation: herald lists accounts in code point order.
CREATE TABLE users (
    username          VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(username) > 0),
    server            VARCHAR(250) COLLATE "C" NOT NULL CHECK (length(server) > 0),
    password          TEXT         NOT NULL DEFAULT '',
    pass_details      TEXT,
    created_at        TIMESTAMP    NOT NULL DEFAULT now(),
    sha1_salt         BYTEA        NOT NULL,
    sha1_iterations   BIGINT       NOT NULL,
    sha1_stored_key   BYTEA        NOT NULL,
    sha1_server_key   BYTEA        NOT NULL,
    sha256_salt       BYTEA        NOT NULL,
    sha256_iterations BIGINT       NOT NULL,
    sha256_stored_key BYTEA        NOT NULL,
    sha256_server_key BYTEA        NOT NULL,
    PRIMARY KEY (server, username)
);
