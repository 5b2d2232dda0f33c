-- Nothing on SQLite: one server owns the file and forgets what it writes itself
-- (PostgreSQL's 0010 tells the servers sharing a database of each change).
SELECT 1;
