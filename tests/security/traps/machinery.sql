-- The trap machinery, created by the application's role (psql variable app_role) in schema
-- public of both databases (the one with traps and the one without), so that the two differ
-- only by the traps themselves.
--
-- public.trap(tag) is what every trap calls. It records who ran it, then behaves as
-- public.trap_mode says:
--   record  return normally (every trap returns the value the query would have had anyway);
--   raise   RAISE EXCEPTION (SQLSTATE TR001), unless it runs in the application's own
--           client backend (session_user = app_role);
--   sleep   sleep up to sleep_seconds (RAISE WARNING 'trap-sleep|role|session role|backend
--           type|phase|tag' first, so the server log says which trap slept where, even if the
--           statement is then cancelled), unless it runs in the
--           application's own client backend. It wakes as soon as the mode changes.
-- Rows of public.trap_log are keyed by (tag, role, session role, backend type, phase, mode)
-- and count calls. phase: the caller's application_name (the harness names each call), else
-- the harness's current phase (public.trap_phase; the worker has no application_name).

CREATE TABLE public.trap_mode (
    mode          text NOT NULL CHECK (mode IN ('record', 'raise', 'sleep')),
    sleep_seconds float8 NOT NULL,
    app_role      name NOT NULL
);
INSERT INTO public.trap_mode VALUES ('record', 30, :'app_role');
CREATE TABLE public.trap_phase (phase text NOT NULL);
INSERT INTO public.trap_phase VALUES ('setup');
CREATE TABLE public.trap_log (
    tag          text NOT NULL,
    role         name NOT NULL,
    session_role name NOT NULL,
    superuser    boolean,
    backend_type text NOT NULL,
    phase        text NOT NULL,
    mode         text NOT NULL,
    calls        bigint NOT NULL DEFAULT 1,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL,
    CONSTRAINT trap_log_key UNIQUE (tag, role, session_role, backend_type, phase, mode)
);
-- What was planted and what the extension refused, for the report.
CREATE TABLE public.trap_planted (schema_name name, kind text, n int);
CREATE TABLE public.trap_refused (what text, sqlstate text, message text);
GRANT SELECT, INSERT, UPDATE ON public.trap_log TO PUBLIC;
GRANT SELECT ON public.trap_mode, public.trap_phase TO PUBLIC;

CREATE FUNCTION public.trap(tag text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m text;
    secs float8;
    own boolean;
    bt text;
    su boolean;
    ph text := nullif(current_setting('application_name', true), '');
    deadline timestamptz;
BEGIN
    SELECT t.mode, t.sleep_seconds, session_user = t.app_role INTO m, secs, own FROM public.trap_mode t;
    bt := public.trap_backend_type();  -- created by the superuser (run.sh)
    SELECT r.rolsuper INTO su FROM pg_roles r WHERE r.rolname = current_user;
    IF ph IS NULL THEN
        SELECT p.phase INTO ph FROM public.trap_phase p;
    END IF;
    INSERT INTO public.trap_log AS l (tag, role, session_role, superuser, backend_type, phase, mode, first_at, last_at)
    VALUES (tag, current_user, session_user, su, coalesce(bt, '?'), coalesce(ph, '?'), m, clock_timestamp(), clock_timestamp())
    ON CONFLICT ON CONSTRAINT trap_log_key
    DO UPDATE SET calls = l.calls + 1, last_at = excluded.last_at;
    IF NOT own THEN
        IF m = 'raise' THEN
            RAISE EXCEPTION 'trap-raise|%|%|%|%|%', current_user, session_user, bt, ph, tag USING ERRCODE = 'TR001';
        ELSIF m = 'sleep' THEN
            RAISE WARNING 'trap-sleep|%|%|%|%|%', current_user, session_user, bt, ph, tag;
            deadline := clock_timestamp() + make_interval(secs => secs);
            WHILE clock_timestamp() < deadline AND (SELECT t.mode FROM public.trap_mode t) = 'sleep' LOOP
                PERFORM pg_sleep(0.1);
            END LOOP;
        END IF;
    END IF;
    RETURN true;
END $$;

-- trap_const(tag): IMMUTABLE, so a call with a constant tag is folded while the query is
-- PLANNED. Every operator, function and cast trap is an inlinable SQL function whose body is
-- `CASE WHEN public.trap_const('…') THEN <pg_catalog's own expression> END`: the planner
-- inlines it and folds the trap away, so the trap fires when a statement that resolved to it
-- is planned, even if no row ever reaches the expression, and execution is pg_catalog's own.
CREATE FUNCTION public.trap_const(tag text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN public.trap(tag); END $$;

-- For defaults, CHECK constraints, policies, index expressions and triggers.
CREATE FUNCTION public.trap_text(tag text) RETURNS text
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT public.trap(tag); SELECT 'trap'::text $$;
-- IMMUTABLE, as an index expression requires (it still records and sleeps).
CREATE FUNCTION public.trap_imm(tag text, value text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT public.trap(tag); SELECT value $$;
CREATE FUNCTION public.trap_imm_bool(tag text, value text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT public.trap(tag); SELECT value IS NOT NULL $$;
CREATE FUNCTION public.trap_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM public.trap(format('trigger %s on %s', TG_NAME, TG_TABLE_NAME));
    IF TG_LEVEL = 'ROW' AND TG_WHEN = 'BEFORE' THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
