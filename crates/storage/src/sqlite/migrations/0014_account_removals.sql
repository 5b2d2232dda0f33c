-- How many accounts were ever removed, counted by a trigger on `users`, so that a writer of
-- another file that attaches this one (the archive's) can remember which accounts it found
-- and know when to check again: the count is read in the same transaction, and so from the
-- same snapshot, as the accounts. Removed through herald or any other connection to the
-- file (`herald user remove` beside a running server), an account bumps it. One row.
CREATE TABLE herald_account_removals (
    removals INTEGER NOT NULL
) STRICT;

INSERT INTO herald_account_removals (removals) VALUES (0);

CREATE TRIGGER herald_account_removed AFTER DELETE ON users
BEGIN
    UPDATE herald_account_removals SET removals = removals + 1;
END;
