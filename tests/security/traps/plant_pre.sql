-- Traps planted by the application's role before CREATE EXTENSION, in every schema it may
-- CREATE in (has_schema_privilege(current_user, nsp, 'CREATE'), temporary schemas aside), and on
-- every application table (tables it owns there, the trap machinery aside).
--
-- Inputs (custom settings set by run.sh): traps.operators and traps.functions, the lists
-- gen_lists.py generated from the extension's SQL, one per line; traps.types, the base types
-- the extension's statements compare (the application's enums are added from the catalog).
--
-- Every trap returns what the query would have had without it: an operator trap returns
-- `$1 OPERATOR(pg_catalog.op) $2`, a function trap `pg_catalog.f($1, …)`, an aggregate trap
-- pg_catalog's aggregate over the same rows in the same order, a cast trap the enum's label.
-- Operator and function traps are SQL functions the planner inlines (no SET clause, every name
-- in them qualified): `CASE WHEN public.trap_const('tag') THEN <that expression> END`, so the
-- trap fires when a statement using them is planned (machinery.sql).
-- Only signatures pg_catalog itself can resolve are planted, so the traps change no answer.
-- The probes and the bodies resolve with search_path = pg_catalog, pg_temp (set below): the
-- planting session must not capture itself.
SET search_path = pg_catalog, pg_temp;
SET client_min_messages = warning;

CREATE TEMP TABLE trap_types AS
SELECT t::regtype AS t, false AS is_enum
FROM unnest(string_to_array(current_setting('traps.types'), ',')) t
UNION ALL
SELECT y.oid::regtype, true FROM pg_type y
WHERE y.typtype = 'e' AND y.typowner = (SELECT oid FROM pg_roles WHERE rolname = current_user);

CREATE TEMP TABLE trap_schemas AS
SELECT n.nspname AS s FROM pg_namespace n
WHERE has_schema_privilege(current_user, n.oid, 'CREATE')
  AND n.nspname !~ '^pg_(toast_)?temp_';

-- 1. Operators: every symbol of the extension's SQL, for every pair of types pg_catalog can
-- compare that way. (type, type) also covers (type, unknown): PostgreSQL looks for an operator
-- taking the known type on both sides first, so `name_col LIKE 'x'` finds (name, name).
-- Enums: pg_catalog compares them with its polymorphic enum functions, called by name here.
DO $plant$
DECLARE
    sym text;
    a record;
    b record;
    rt regtype;
    body text;
    fn text;
    n int := 0;
    s name;
    enum_fn text;
BEGIN
    FOREACH sym IN ARRAY string_to_array(current_setting('traps.operators'), E'\n') LOOP
        CONTINUE WHEN sym = '';
        FOR a IN SELECT * FROM trap_types LOOP
            FOR b IN SELECT * FROM trap_types LOOP
                IF a.is_enum OR b.is_enum THEN
                    CONTINUE WHEN a.t <> b.t;
                    enum_fn := CASE sym WHEN '=' THEN 'enum_eq' WHEN '<>' THEN 'enum_ne' WHEN '<' THEN 'enum_lt'
                                        WHEN '<=' THEN 'enum_le' WHEN '>' THEN 'enum_gt' WHEN '>=' THEN 'enum_ge' END;
                    CONTINUE WHEN enum_fn IS NULL;
                    rt := 'boolean';
                    body := format('pg_catalog.%s($1, $2)', enum_fn);
                ELSE
                    BEGIN
                        EXECUTE format('SELECT pg_catalog.pg_typeof(NULL::%s OPERATOR(pg_catalog.%s) NULL::%s)', a.t, sym, b.t) INTO rt;
                    EXCEPTION WHEN others THEN
                        CONTINUE;
                    END;
                    CONTINUE WHEN rt IN ('unknown'::regtype, 'record'::regtype);
                    body := format('$1 OPERATOR(pg_catalog.%s) $2', sym);
                END IF;
                n := n + 1;
                FOR s IN SELECT * FROM trap_schemas LOOP
                    fn := format('%I.trap_op_%s', s, n);
                    BEGIN
                        EXECUTE format('CREATE FUNCTION %s(%s, %s) RETURNS %s LANGUAGE sql STABLE AS %L',
                                       fn, a.t, b.t, rt,
                                       format('SELECT CASE WHEN public.trap_const(%L) THEN %s END',
                                              format('operator %s.%s(%s, %s)', s, sym, a.t, b.t), body));
                        EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)', s, sym, a.t, b.t, fn);
                        INSERT INTO public.trap_planted VALUES (s, 'operator', 1);
                    EXCEPTION WHEN others THEN
                        INSERT INTO public.trap_planted VALUES (s, 'operator not planted: ' || SQLERRM, 1);
                    END;
                END LOOP;
            END LOOP;
        END LOOP;
    END LOOP;
END $plant$;

-- 2. Functions and aggregates: every name the extension calls. For a name pg_catalog has, a
-- trap for each signature that would beat pg_catalog's own in a writable schema on the path:
-- pg_catalog's polymorphic or "any" parameters (and VARIADIC "any", with one or two arguments)
-- made concrete with each type, and text parameters taken as varchar or name (an exact match
-- wins over a coercion). For any other name (an alias, a table, a word of a message): (text),
-- (text, text), (name) and (anyelement) variants.
CREATE TEMP TABLE trap_sigs (name text, args regtype[], retset boolean, vol "char", agg boolean);
DO $sigs$
DECLARE
    fname text;
    p record;
    argtypes regtype[];
    nvar int;
    nargs int;
    ty regtype;
    opts text[];
    all_opts text[][] := '{}';
    combos text[];
    total bigint;
    scalar_types text[] := ARRAY(SELECT tt.t::text FROM trap_types tt WHERE tt.t::text NOT LIKE '%[]');
    array_types text[] := ARRAY(SELECT tt.t::text FROM trap_types tt WHERE tt.t::text LIKE '%[]'
                                UNION SELECT y.typarray::regtype::text FROM pg_type y JOIN trap_types tt ON tt.t = y.oid
                                WHERE tt.is_enum);
    enum_types text[] := ARRAY(SELECT tt.t::text FROM trap_types tt WHERE tt.is_enum);
    opt_lists text[];
BEGIN
    FOREACH fname IN ARRAY string_to_array(current_setting('traps.functions'), E'\n') LOOP
        CONTINUE WHEN fname = '';
        IF NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = fname AND pronamespace = 'pg_catalog'::regnamespace) THEN
            INSERT INTO trap_sigs VALUES (fname, ARRAY['text']::regtype[], false, 'v', false),
                                         (fname, ARRAY['text', 'text']::regtype[], false, 'v', false),
                                         (fname, ARRAY['name']::regtype[], false, 'v', false),
                                         (fname, ARRAY['anyelement']::regtype[], false, 'v', false);
            CONTINUE;
        END IF;
        FOR p IN SELECT ARRAY(SELECT unnest(pr.proargtypes::regtype[])) AS args, pr.provariadic, pr.proretset, pr.provolatile, pr.prokind
                 FROM pg_proc pr WHERE pr.proname = fname AND pr.pronamespace = 'pg_catalog'::regnamespace
                   AND pr.prokind IN ('f', 'a')
                   AND NOT pr.proargtypes::regtype[] && ARRAY['internal', 'cstring', 'trigger', 'event_trigger',
                        'anyrange', 'anymultirange', 'anycompatiblerange', 'anycompatiblemultirange', 'record']::regtype[]
        LOOP
            CONTINUE WHEN p.prokind = 'a' AND coalesce(array_length(p.args, 1), 0) <> 1;
            -- VARIADIC "any" is tried with one and with two arguments; another VARIADIC array
            -- with one element.
            argtypes := p.args;
            nvar := 0;
            IF p.provariadic <> 0 THEN
                argtypes := argtypes[1:array_length(argtypes, 1) - 1];
                nvar := CASE WHEN p.provariadic = '"any"'::regtype THEN 2 ELSE 1 END;
            END IF;
            FOR k IN (CASE WHEN nvar = 0 THEN 0 ELSE 1 END)..nvar LOOP
                nargs := coalesce(array_length(argtypes, 1), 0) + k;
                CONTINUE WHEN nargs = 0;
                -- Each parameter's candidate types, as one '|'-separated string per parameter.
                opt_lists := '{}';
                total := 1;
                FOR i IN 1..nargs LOOP
                    ty := CASE WHEN i > coalesce(array_length(argtypes, 1), 0) THEN p.provariadic::regtype ELSE argtypes[i] END;
                    opts := CASE
                        WHEN ty::text IN ('anyelement', 'anynonarray', 'anycompatible', 'anycompatiblenonarray', '"any"') THEN scalar_types
                        WHEN ty::text = 'anyenum' THEN enum_types
                        WHEN ty::text IN ('anyarray', 'anycompatiblearray') THEN array_types
                        WHEN ty::text = 'text' THEN ARRAY['text', 'character varying', 'name']
                        ELSE ARRAY[ty::text] END;
                    IF p.prokind = 'a' THEN
                        opts := ARRAY(SELECT o FROM unnest(opts) o WHERE o NOT LIKE '%[]');
                    END IF;
                    opt_lists := opt_lists || array_to_string(opts, '|');
                    total := total * cardinality(opts);
                END LOOP;
                IF total <= 100 THEN
                    -- Every combination.
                    combos := ARRAY[''];
                    FOR i IN 1..nargs LOOP
                        combos := ARRAY(SELECT CASE WHEN c = '' THEN o ELSE c || '|' || o END
                                        FROM unnest(combos) c, unnest(string_to_array(opt_lists[i], '|')) o);
                    END LOOP;
                ELSE
                    -- One parameter varies, the others take their first candidate.
                    combos := ARRAY(
                        SELECT DISTINCT array_to_string(ARRAY(
                                   SELECT CASE WHEN j = i THEN o ELSE split_part(opt_lists[j], '|', 1) END
                                   FROM generate_series(1, nargs) j ORDER BY j), '|')
                        FROM generate_series(1, nargs) i, unnest(string_to_array(opt_lists[i], '|')) o);
                END IF;
                INSERT INTO trap_sigs
                SELECT fname, string_to_array(c, '|')::regtype[], p.proretset, p.provolatile, p.prokind = 'a'
                FROM unnest(combos) c;
            END LOOP;
        END LOOP;
    END LOOP;
    -- pg_catalog's own signatures always win over an identical one elsewhere: leave them out.
    DELETE FROM trap_sigs g USING pg_proc pr
    WHERE pr.pronamespace = 'pg_catalog'::regnamespace AND pr.proname = g.name
      AND ARRAY(SELECT unnest(pr.proargtypes::regtype[])) = g.args;
END $sigs$;

DO $plant$
DECLARE
    g record;
    rt regtype;
    s name;
    args text;
    params text;
    n int := 0;
    tag text;
    vol text;
BEGIN
    FOR g IN SELECT DISTINCT ON (name, args) * FROM trap_sigs ORDER BY name, args LOOP
        args := array_to_string(ARRAY(SELECT format('NULL::%s', a) FROM unnest(g.args) a), ', ');
        params := array_to_string(ARRAY(SELECT '$' || i FROM generate_series(1, array_length(g.args, 1)) i), ', ');
        vol := CASE g.vol WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END;
        -- The result type pg_catalog's resolution gives (also for set-returning functions).
        IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = g.name AND pronamespace = 'pg_catalog'::regnamespace) THEN
            BEGIN
                EXECUTE format('PREPARE trap_probe AS SELECT pg_catalog.%I(%s)', g.name, args);
                SELECT ps.result_types[1] INTO rt FROM pg_prepared_statements ps WHERE ps.name = 'trap_probe';
                DEALLOCATE trap_probe;
            EXCEPTION WHEN others THEN
                CONTINUE;
            END;
            CONTINUE WHEN rt IS NULL OR rt IN ('record'::regtype, 'unknown'::regtype);
        ELSIF g.args = ARRAY['anyelement']::regtype[] THEN
            rt := 'anyelement';
        ELSE
            rt := g.args[1];
        END IF;
        n := n + 1;
        FOR s IN SELECT * FROM trap_schemas LOOP
            tag := format('%s %s.%s(%s)', CASE WHEN g.agg THEN 'aggregate' ELSE 'function' END, s, g.name,
                          array_to_string(g.args::text[], ', '));
            IF g.agg THEN
                -- The state is the rows in order; the final function runs pg_catalog's
                -- aggregate over them.
                BEGIN
                    EXECUTE format('CREATE FUNCTION %I.trap_agg_append(%s[], %s) RETURNS %s[] LANGUAGE sql IMMUTABLE '
                                   'SET search_path = pg_catalog, pg_temp AS %L',
                                   s, g.args[1], g.args[1], g.args[1], 'SELECT pg_catalog.array_append($1, $2)');
                EXCEPTION WHEN duplicate_function THEN NULL;
                END;
            END IF;
            BEGIN
                IF g.agg THEN
                    EXECUTE format('CREATE FUNCTION %I.trap_agg_final_%s(%s[]) RETURNS %s LANGUAGE sql %s AS %L',
                                   s, n, g.args[1], rt, vol,
                                   format('SELECT pg_catalog.%I(u.v ORDER BY u.o) '
                                          'FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(v, o) WHERE public.trap_const(%L)', g.name, tag));
                    EXECUTE format('CREATE AGGREGATE %I.%I(%s) (SFUNC = %I.trap_agg_append, STYPE = %s[], FINALFUNC = %I.trap_agg_final_%s)',
                                   s, g.name, g.args[1], s, g.args[1], s, n);
                    INSERT INTO public.trap_planted VALUES (s, 'aggregate', 1);
                ELSIF rt = 'anyelement'::regtype OR NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = g.name AND pronamespace = 'pg_catalog'::regnamespace) THEN
                    EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE sql AS %L',
                                   s, g.name, array_to_string(g.args::text[], ', '), rt,
                                   format('SELECT CASE WHEN public.trap_const(%L) THEN $1 END', tag));
                    INSERT INTO public.trap_planted VALUES (s, 'function (other name)', 1);
                ELSE
                    EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s%s LANGUAGE sql %s AS %L',
                                   s, g.name, array_to_string(g.args::text[], ', '),
                                   CASE WHEN g.retset THEN 'SETOF ' ELSE '' END, rt, vol,
                                   CASE WHEN g.retset
                                        THEN format('SELECT * FROM pg_catalog.%I(%s) WHERE public.trap_const(%L)', g.name, params, tag)
                                        ELSE format('SELECT CASE WHEN public.trap_const(%L) THEN pg_catalog.%I(%s) END', tag, g.name, params) END);
                    INSERT INTO public.trap_planted VALUES (s, 'function', 1);
                END IF;
            EXCEPTION WHEN others THEN
                INSERT INTO public.trap_planted VALUES (s, 'function not planted: ' || SQLSTATE, 1);
            END;
        END LOOP;
    END LOOP;
END $plant$;

-- 3. On every application table: (with traps.rls = 1) FORCE row-level security with a policy
-- calling the trap (true: every row stays visible), a trigger for every timing, level and
-- event, a column whose default calls the trap, and a CHECK constraint calling it.
DO $plant$
DECLARE
    r regclass;
    w text;
    l text;
    ev text;
BEGIN
    FOR r IN SELECT c.oid::regclass FROM pg_class c
             WHERE c.relkind IN ('r', 'p') AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
               AND c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN (SELECT s FROM trap_schemas))
               AND c.relname !~ '^trap_'
             ORDER BY 1
    LOOP
        -- Row-level security only when asked (traps.rls): the extension refuses to read a table
        -- with it (docs/security.md, C3), so run.sh plants it in a phase of its own.
        IF current_setting('traps.rls', true) = '1' THEN
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', r);
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', r);
            EXECUTE format('CREATE POLICY trap_policy ON %s USING (public.trap_const(%L)) WITH CHECK (public.trap(%L))',
                           r, 'policy USING on ' || r::text, 'policy WITH CHECK on ' || r::text);
        END IF;
        FOREACH w IN ARRAY ARRAY['BEFORE', 'AFTER'] LOOP
            FOREACH l IN ARRAY ARRAY['ROW', 'STATEMENT'] LOOP
                FOREACH ev IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE'] LOOP
                    EXECUTE format('CREATE TRIGGER %I %s %s ON %s FOR EACH %s EXECUTE FUNCTION public.trap_trigger()',
                                   lower(format('trap_%s_%s_%s', w, l, ev)), w, ev, r, l);
                END LOOP;
            END LOOP;
        END LOOP;
        EXECUTE format('ALTER TABLE %s ADD COLUMN trap_default text DEFAULT public.trap_text(%L)', r, 'default on ' || r::text);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT trap_check CHECK (public.trap(%L))', r, 'check on ' || r::text);
        INSERT INTO public.trap_planted VALUES ('public', 'table traps (policy, 12 triggers, default, check) on ' || r::text, 1);
    END LOOP;
END $plant$;

