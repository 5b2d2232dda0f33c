-- Nothing on PostgreSQL: version 14 counts SQLite's account removals for the archive's file,
-- whose writer remembers the accounts it found. PostgreSQL's archive is in the same database
-- as the accounts and checks them in each insert.
SELECT 1;
