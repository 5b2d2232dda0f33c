-- Offline messages stored many at a time, in one statement (one round trip and one commit for a
-- batch instead of four round trips per message). The recipients (`servers`, `usernames`) are
-- given once each; every message names its recipient by position (`recipients`, from 1).
-- Returns, per message and in order: its id when stored, 0 when its recipient already had
-- `limits` messages waiting, -1 when `checks` asked for an existing account and there is none.
--
-- Each recipient's advisory lock (the one a single store takes) is taken first, in the order of
-- the keys, so that two batches never wait for each other in a circle; the counts are read by a
-- statement after the locks', which in READ COMMITTED sees every row that earlier holders
-- committed. The messages are inserted in their order, so that each recipient's ids grow in it.
CREATE FUNCTION herald_store_offline(
    servers    TEXT[],
    usernames  TEXT[],
    recipients INTEGER[],
    timestamps BIGINT[],
    froms      TEXT[],
    packets    TEXT[],
    metadatas  TEXT[],
    limits     BIGINT[],
    checks     BOOLEAN[]
) RETURNS BIGINT[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    present  BOOLEAN[];
    waiting  BIGINT[];
    kept     BOOLEAN[] := '{}';
    outcomes BIGINT[] := '{}';
    ids      BIGINT[];
    r        INTEGER;
    taken    INTEGER := 1;
    stored   BIGINT;
BEGIN
    -- One message (a quiet server's batch): the statements of a store of its own, cheaper for
    -- the database than the general case's arrays.
    IF array_length(recipients, 1) = 1 THEN
        PERFORM pg_advisory_xact_lock(18502, hashtext(servers[1] || '/' || usernames[1]));
        IF checks[1] AND NOT EXISTS (SELECT 1 FROM users
                                     WHERE server = servers[1] AND username = usernames[1]) THEN
            RETURN ARRAY[-1::BIGINT];
        END IF;
        INSERT INTO offline_message (timestamp, server, username, from_jid, packet, metadata)
        SELECT timestamps[1], servers[1], usernames[1], froms[1], packets[1], metadatas[1]
        WHERE (SELECT COUNT(*) FROM offline_message
               WHERE server = servers[1] AND username = usernames[1]) < limits[1]
        RETURNING id INTO stored;
        RETURN ARRAY[coalesce(stored, 0)];
    END IF;

    PERFORM pg_advisory_xact_lock(18502, h)
    FROM (SELECT DISTINCT hashtext(s || '/' || u) AS h
          FROM unnest(servers, usernames) AS k(s, u)
          ORDER BY h) AS keys;

    SELECT array_agg(EXISTS (SELECT 1 FROM users WHERE server = k.s AND username = k.u)
                     ORDER BY k.n),
           array_agg((SELECT COUNT(*) FROM offline_message
                      WHERE server = k.s AND username = k.u) ORDER BY k.n)
    INTO present, waiting
    FROM unnest(servers, usernames) WITH ORDINALITY AS k(s, u, n);

    FOR i IN 1 .. coalesce(array_length(recipients, 1), 0) LOOP
        r := recipients[i];
        IF checks[i] AND NOT present[r] THEN
            kept[i] := false;
            outcomes[i] := -1;
        ELSIF waiting[r] < limits[i] THEN
            waiting[r] := waiting[r] + 1;
            kept[i] := true;
            outcomes[i] := 0;
        ELSE
            kept[i] := false;
            outcomes[i] := 0;
        END IF;
    END LOOP;

    WITH inserted AS (
        INSERT INTO offline_message (timestamp, server, username, from_jid, packet, metadata)
        SELECT m.t, servers[m.r], usernames[m.r], m.f, m.p, m.d
        FROM unnest(recipients, timestamps, froms, packets, metadatas, kept)
             WITH ORDINALITY AS m(r, t, f, p, d, k, n)
        WHERE m.k
        ORDER BY m.n
        RETURNING id
    )
    SELECT array_agg(id ORDER BY id) INTO ids FROM inserted;

    FOR i IN 1 .. coalesce(array_length(recipients, 1), 0) LOOP
        IF kept[i] THEN
            outcomes[i] := ids[taken];
            taken := taken + 1;
        END IF;
    END LOOP;
    RETURN outcomes;
END
$$;
