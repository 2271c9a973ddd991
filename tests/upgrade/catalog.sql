-- Everything legacy_backup defines in the current database, one sorted line per fact, for
-- tests/integration/t_upgrade.sh: an updated database must print exactly what a fresh install
-- prints. Covers member objects and what hangs off them (columns, defaults, constraints,
-- indexes, triggers, comments, privileges), and the dump registration.
WITH ext AS (SELECT oid, extconfig FROM pg_extension WHERE extname = 'legacy_backup'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
member_rels AS (SELECT c.oid FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid),
facts(line) AS (
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
    UNION ALL
    SELECT format('function %s: %s acl=%s comment=%s', p.oid::regprocedure, pg_get_functiondef(p.oid), p.proacl, obj_description(p.oid, 'pg_proc'))
    FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT format('relation %s kind=%s acl=%s comment=%s view=%s', c.oid::regclass, c.relkind, c.relacl, obj_description(c.oid, 'pg_class'),
                  CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END)
    FROM pg_class c WHERE c.oid IN (SELECT oid FROM member_rels)
    UNION ALL
    SELECT format('column %s.%s %s notnull=%s default=%s identity=%s comment=%s', a.attrelid::regclass, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, col_description(a.attrelid, a.attnum))
    FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attrelid IN (SELECT oid FROM member_rels) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s.%s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE conrelid IN (SELECT oid FROM member_rels)
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid IN (SELECT oid FROM member_rels)
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t
    WHERE NOT t.tgisinternal AND (t.tgfoid IN (SELECT objid FROM members WHERE classid = 'pg_proc'::regclass) OR t.tgrelid IN (SELECT oid FROM member_rels))
    UNION ALL
    SELECT format('event trigger %s on %s tags=%s function=%s enabled=%s comment=%s', e.evtname, e.evtevent, e.evttags, e.evtfoid::regproc, e.evtenabled,
                  obj_description(e.oid, 'pg_event_trigger'))
    FROM pg_event_trigger e WHERE e.oid IN (SELECT objid FROM members WHERE classid = 'pg_event_trigger'::regclass)
    UNION ALL
    SELECT format('schema %s acl=%s comment=%s', n.nspname, n.nspacl, obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n WHERE n.oid IN (SELECT objid FROM members WHERE classid = 'pg_namespace'::regclass)
    UNION ALL
    SELECT format('dumped with data: %s', c::regclass) FROM ext, unnest(ext.extconfig) c
)
SELECT line FROM facts ORDER BY line;
