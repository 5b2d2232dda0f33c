-- Nothing on SQLite: the archive lives in a file of its own, whose version 3
-- (archive_0003_one_row.sql) makes the same change; the main file's `mam_message` of version
-- 6 is only read once, to move an earlier version's rows into that file.
SELECT 1;
