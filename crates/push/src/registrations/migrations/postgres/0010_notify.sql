-- Every change to a user's registrations (or to what they asked for at enable) tells the
-- servers sharing this database, on channel herald_push_registrations with the user's bare
-- JID, at commit: each server caches registrations and forgets the user's entry when told.
-- A trigger, so that a write by any server, by an older herald or by hand is told too.
CREATE FUNCTION herald_push_registrations_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('herald_push_registrations', OLD.owner_jid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('herald_push_registrations', NEW.owner_jid);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER herald_push_subscription_changed
    AFTER INSERT OR UPDATE OR DELETE ON event_pusher_push_subscription
    FOR EACH ROW EXECUTE FUNCTION herald_push_registrations_changed();

CREATE TRIGGER herald_push_options_changed
    AFTER INSERT OR UPDATE OR DELETE ON herald_push_options
    FOR EACH ROW EXECUTE FUNCTION herald_push_registrations_changed();
