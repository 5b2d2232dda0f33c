-- Nothing on PostgreSQL: version 12 rebuilds SQLite's offline_message so that its stores
-- need no statement journal (a SQLite matter).
SELECT 1;
