-- Traps the application's role plants after CREATE EXTENSION: casts on its enums (see below
-- why not before), and index expressions, partial-index predicates and extended statistics
-- calling a trap (an IMMUTABLE function, or an operator of
-- its schema), on every application table. The planner may evaluate these with the rights of
-- whoever plans a query on the table, so the extension's guard may refuse them (LB006 on the
-- tables it reads): each refusal is recorded in public.trap_refused, each success in
-- public.trap_planted.
SET search_path = pg_catalog, pg_temp;
SET client_min_messages = warning;
-- 1. Casts from and to the application's enums (it owns them): to text, varchar, json and jsonb
-- AS IMPLICIT (json_build_object and to_json use a cast to json when the type has one; with an
-- implicit cast to text, `status = 'Exported'` resolves to text = text through it), and from
-- text and varchar AS ASSIGNMENT (an explicit `x::enum` runs the cast function whatever its
-- context). Planted after CREATE EXTENSION, and from text not implicit, because:
--   - with an implicit cast enum -> text, `enum = enum` has no unique best operator in a
--     pg_catalog-only search path ("operator is not unique"), so CREATE EXTENSION, whose attach
--     creates triggers WHEN (OLD.status IS DISTINCT FROM NEW.status), fails: an application
--     can only break its own install that way, not borrow rights;
--   - implicit casts both ways would make `enum = text` ambiguous as well, which finds nothing
--     more than the casts above.
DO $plant$
DECLARE
    e regtype;
    s name := 'public';
    target text;
    expr text;
    fn text;
    i int := 0;
BEGIN
    FOR e IN SELECT y.oid::regtype FROM pg_type y
             WHERE y.typtype = 'e' AND y.typowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) ORDER BY 1 LOOP
        i := i + 1;
        FOREACH target IN ARRAY ARRAY['text', 'varchar', 'json', 'jsonb'] LOOP
            fn := format('public.trap_cast_%s_%s', i, target);
            expr := CASE target WHEN 'text' THEN 'pg_catalog.format(''%s'', $1)'
                                WHEN 'varchar' THEN 'pg_catalog.format(''%s'', $1)::pg_catalog.varchar'
                                WHEN 'json' THEN 'pg_catalog.to_json(pg_catalog.format(''%s'', $1))'
                                ELSE 'pg_catalog.to_jsonb(pg_catalog.format(''%s'', $1))' END;
            BEGIN
                EXECUTE format('CREATE FUNCTION %s(%s) RETURNS %s LANGUAGE sql IMMUTABLE AS %L',
                               fn, e, target, format('SELECT CASE WHEN public.trap_const(%L) THEN %s END', format('cast %s AS %s', e, target), expr));
                EXECUTE format('CREATE CAST (%s AS %s) WITH FUNCTION %s(%s) AS IMPLICIT', e, target, fn, e);
                INSERT INTO public.trap_planted VALUES (s, 'cast', 1);
            EXCEPTION WHEN others THEN
                INSERT INTO public.trap_refused VALUES (format('CREATE CAST (%s AS %s)', e, target), SQLSTATE, SQLERRM);
            END;
        END LOOP;
        FOREACH target IN ARRAY ARRAY['text', 'varchar'] LOOP
            fn := format('public.trap_cast_%s_from_%s', i, target);
            BEGIN
                EXECUTE format($f$CREATE FUNCTION %s(v %s) RETURNS %s LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $b$
                    DECLARE r %s;
                    BEGIN
                        PERFORM public.trap(%L);
                        SELECT x INTO r FROM pg_catalog.unnest(pg_catalog.enum_range(NULL::%s)) x
                        WHERE pg_catalog.format('%%s', x) OPERATOR(pg_catalog.=) v::pg_catalog.text;
                        IF r IS NULL AND v IS NOT NULL THEN
                            RAISE EXCEPTION 'invalid input value for enum %%: "%%"', %L, v USING ERRCODE = '22P02';
                        END IF;
                        RETURN r;
                    END $b$ $f$, fn, target, e, e, format('cast %s AS %s', target, e), e, e::text);
                EXECUTE format('CREATE CAST (%s AS %s) WITH FUNCTION %s(%s) AS ASSIGNMENT', target, e, fn, target);
                INSERT INTO public.trap_planted VALUES (s, 'cast', 1);
            EXCEPTION WHEN others THEN
                INSERT INTO public.trap_refused VALUES (format('CREATE CAST (%s AS %s)', target, e), SQLSTATE, SQLERRM);
            END;
        END LOOP;
    END LOOP;
END $plant$;

-- 2. Indexes and statistics.
DO $plant$
DECLARE
    r regclass;
    stmt text;
    what text;
BEGIN
    FOR r IN SELECT c.oid::regclass FROM pg_class c
             WHERE c.relkind IN ('r', 'p') AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
               AND c.relnamespace IN (SELECT n.oid FROM pg_namespace n WHERE has_schema_privilege(current_user, n.oid, 'CREATE'))
               AND c.relname !~ '^trap_'
             ORDER BY 1
    LOOP
        FOREACH stmt IN ARRAY ARRAY[
            format('CREATE INDEX trap_index_expr ON %s (public.trap_imm(%L, id::text))', r, 'index expression on ' || r::text),
            format('CREATE INDEX trap_index_pred ON %s (id) WHERE public.trap_imm_bool(%L, id::text)', r, 'index predicate on ' || r::text),
            format('CREATE INDEX trap_index_op ON %s (id) WHERE id::text OPERATOR(public.=) ''x''', r),
            format('CREATE STATISTICS trap_stats ON (public.trap_imm(%L, id::text)) FROM %s', 'statistics expression on ' || r::text, r)]
        LOOP
            what := split_part(stmt, ' ON ', 1) || ' on ' || r::text;
            BEGIN
                EXECUTE stmt;
                INSERT INTO public.trap_planted VALUES ('public', 'accepted: ' || what, 1);
            EXCEPTION WHEN others THEN
                INSERT INTO public.trap_refused VALUES (what, SQLSTATE, SQLERRM);
            END;
        END LOOP;
    END LOOP;
END $plant$;

SELECT schema_name, kind, sum(n) FROM public.trap_planted GROUP BY 1, 2 ORDER BY 1, 2;
