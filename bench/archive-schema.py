#!/usr/bin/env python3
"""bench/archive-schema.py: what the archive's table layout costs SQLite per message.

Inserts the rows the push benchmark makes the archive write (20,000 messages from 20 senders
to 1,000 recipients, a row for the recipient and one for the sender) into variants of the
`mam_message` table, in transactions of 50 and of 1,000 rows, in WAL mode with
`synchronous = NORMAL` as herald opens its files, and prints the process's CPU time per
message. It runs on Python's own SQLite, not herald's (sqlx's bundled one): read the variants
against each other, not against the server's figures.

    python3 bench/archive-schema.py [--messages N] [--dir DIR]
"""

import argparse
import os
import random
import resource
import sqlite3
import tempfile

MESSAGE = (
    '<message xmlns="jabber:client" to="bench{r}@localhost" from="sender{s}@localhost/r" '
    'type="chat" id="abcdefgh-{m}"><body>Hello, this is message number {m} of the bench'
    '</body><origin-id xmlns="urn:xmpp:sid:0" id="0a1b2c3d-{m}"/><stanza-id '
    'xmlns="urn:xmpp:sid:0" id="{i}" by="bench{r}@localhost"/></message>'
)

TEXT_COLUMNS = (
    "id INTEGER NOT NULL, owner TEXT NOT NULL, remote_bare_jid TEXT NOT NULL, "
    "remote_resource TEXT NOT NULL, direction TEXT NOT NULL, from_jid TEXT NOT NULL, "
    "origin_id TEXT, search_body TEXT NOT NULL, message TEXT NOT NULL"
)
INT_COLUMNS = (
    "id INTEGER NOT NULL, owner INTEGER NOT NULL, remote_bare_jid INTEGER NOT NULL, "
    "remote_resource TEXT NOT NULL, direction TEXT NOT NULL, from_jid TEXT NOT NULL, "
    "origin_id TEXT, search_body TEXT NOT NULL, message TEXT NOT NULL"
)

# name: (schema, owners as integers, rows per message)
VARIANTS = {
    # herald's table today (0006_archive.sql): a rowid table, its (owner, id) key and the
    # index for queries by correspondent.
    "herald's": (
        [
            f"CREATE TABLE mam_message ({TEXT_COLUMNS}, PRIMARY KEY (owner, id))",
            "CREATE INDEX r ON mam_message (owner, remote_bare_jid, id)",
        ],
        False,
        2,
    ),
    "clustered (WITHOUT ROWID)": (
        [
            f"CREATE TABLE mam_message ({TEXT_COLUMNS}, PRIMARY KEY (owner, id)) WITHOUT ROWID",
            "CREATE INDEX r ON mam_message (owner, remote_bare_jid, id)",
        ],
        False,
        2,
    ),
    "no index by correspondent": (
        [f"CREATE TABLE mam_message ({TEXT_COLUMNS}, PRIMARY KEY (owner, id))"],
        False,
        2,
    ),
    "integer owner and correspondent": (
        [
            f"CREATE TABLE mam_message ({INT_COLUMNS}, PRIMARY KEY (owner, id))",
            "CREATE INDEX r ON mam_message (owner, remote_bare_jid, id)",
        ],
        True,
        2,
    ),
    "one row per message": (
        [
            f"CREATE TABLE mam_message ({TEXT_COLUMNS}, PRIMARY KEY (owner, id))",
            "CREATE INDEX r ON mam_message (owner, remote_bare_jid, id)",
        ],
        False,
        1,
    ),
    # The next table, modelled: one row a message shared by its two owners (the sender's and
    # the recipient's archive), owners and correspondents as integer keys (MongooseIM's
    # mam_server_user ids), the archive id as the rowid, and what the queries need: each
    # owner's messages by id (as sender, as recipient) and a conversation's by id (`with`).
    "one row a message, integer keys, three indexes": (
        [
            "CREATE TABLE mam_message (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, "
            "remote_bare_jid INTEGER NOT NULL, remote_resource TEXT NOT NULL, "
            "direction TEXT NOT NULL, from_jid TEXT NOT NULL, origin_id TEXT, "
            "search_body TEXT NOT NULL, message TEXT NOT NULL, "
            "conversation INTEGER AS (min(owner, remote_bare_jid) * 1048576 + "
            "max(owner, remote_bare_jid)) VIRTUAL)",
            "CREATE INDEX s ON mam_message (owner, id)",
            "CREATE INDEX r ON mam_message (remote_bare_jid, id)",
            "CREATE INDEX c ON mam_message (conversation, id)",
        ],
        "small",
        1,
    ),
}


def rows(messages, integers, per_message):
    if integers == "small":
        ids = {}
        key = lambda jid: ids.setdefault(jid, len(ids) + 1)  # noqa: E731
    elif integers:
        key = lambda jid: hash(jid) >> 1  # noqa: E731
    else:
        key = lambda jid: jid  # noqa: E731
    base = 1 << 40
    made = []
    for m in range(messages):
        r, s = random.randrange(1000), m % 20
        recipient, sender = f"bench{r}@localhost", f"sender{s}@localhost"
        text = MESSAGE.format(r=r, s=s, m=m, i=base + 2 * m)
        if per_message == 1 and integers == "small":
            # The shared row: the sender as `owner`, the recipient as `remote_bare_jid`.
            made.append((base + 2 * m, key(sender), key(recipient), "r", "O", sender + "/r",
                         None, "hello", text))
            continue
        made.append((base + 2 * m, key(recipient), key(sender), "r", "I", sender + "/r", None,
                     "hello", text))
        if per_message == 2:
            made.append((base + 2 * m + 1, key(sender), key(recipient), "", "O", sender + "/r",
                         None, "hello", text))
    return made


def run(directory, name, schema, integers, per_message, batch, messages):
    path = os.path.join(directory, "archive.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -16384",
                   "mmap_size = 268435456"):
        db.execute(f"PRAGMA {pragma}")
    for statement in schema:
        db.execute(statement)
    todo = rows(messages, integers, per_message)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for start in range(0, len(todo), batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR IGNORE INTO mam_message (id, owner, remote_bare_jid, remote_resource, "
            "direction, from_jid, origin_id, search_body, message) VALUES (?,?,?,?,?,?,?,?,?)",
            todo[start:start + batch],
        )
        db.execute("COMMIT")
    after = resource.getrusage(resource.RUSAGE_SELF)
    db.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"| {name} | {batch} | {cpu * 1e6 / messages:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    random.seed(1)
    print(f"SQLite {sqlite3.sqlite_version}, {args.messages} messages")
    print("| table | rows per transaction | CPU per message (us) |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for batch in (50, 1000):
            for name, (schema, integers, per_message) in VARIANTS.items():
                run(directory, name, schema, integers, per_message, batch, args.messages)


if __name__ == "__main__":
    main()
