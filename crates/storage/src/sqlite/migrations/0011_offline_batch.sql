-- Nothing on SQLite: its offline stores are group-committed by herald's writer task
-- (PostgreSQL's 0011 adds the function its batches are stored with).
SELECT 1;
