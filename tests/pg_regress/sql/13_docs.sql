-- docs/api.md describes every function of the extension once: its function tables must name
-- exactly the installed functions, with their argument names and types, and the role each row
-- names must be the one that may execute it. Any difference is listed (none expected).
\set api `cat docs/api.md`
CREATE TEMP TABLE documented AS
SELECT m[1] AS name, regexp_replace(replace(m[2], 'timestamptz', 'timestamp with time zone'), ' DEFAULT [^,]*', '', 'g') AS args,
       btrim((regexp_match(r.line, '^\| `[^`]*` \| [^|]* \| `?([A-Za-z_ ]+)`?'))[1]) AS role
FROM regexp_split_to_table(:'api', E'\n') AS r(line),
     regexp_matches(r.line, '^\| `((?:legacy_backup\.)?[a-z_]+)\(([^`]*)\)`', 'g') AS m;
CREATE TEMP TABLE installed AS
SELECT CASE WHEN p.pronamespace = 'legacy_backup'::regnamespace THEN 'legacy_backup.' ELSE '' END || p.proname AS name,
       pg_get_function_identity_arguments(p.oid) AS args, p.oid
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'legacy_backup');
SELECT count(*) > 30 AS many_documented FROM documented;
-- Functions documented but not installed, or installed but not documented (name and arguments).
SELECT coalesce(d.name, i.name) AS function, coalesce(d.args, i.args) AS args,
       d.name IS NOT NULL AS documented, i.name IS NOT NULL AS installed
FROM documented d FULL JOIN installed i ON i.name = d.name AND i.args = d.args
WHERE d.name IS NULL OR i.name IS NULL ORDER BY 1, 2;
-- The role column: the named role may execute the function; "PUBLIC" means everyone may;
-- "owner", "trigger" and "event trigger" mean none of the extension's roles nor PUBLIC may.
SELECT d.name, d.role,
       has_function_privilege('legacy_backup_reader', i.oid, 'EXECUTE') AS reader,
       has_function_privilege('legacy_backup_operator', i.oid, 'EXECUTE') AS operator,
       has_function_privilege('legacy_backup_admin', i.oid, 'EXECUTE') AS admin
FROM documented d JOIN installed i USING (name, args)
CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM aclexplode(coalesce((SELECT proacl FROM pg_proc WHERE oid = i.oid), acldefault('f', (SELECT proowner FROM pg_proc WHERE oid = i.oid)))) a WHERE a.grantee = 0) AS public) p
WHERE CASE
        WHEN d.role IN ('legacy_backup_reader', 'legacy_backup_operator', 'legacy_backup_admin') THEN NOT has_function_privilege(d.role, i.oid, 'EXECUTE') OR p.public
        WHEN d.role = 'PUBLIC' THEN NOT p.public
        ELSE p.public OR has_function_privilege('legacy_backup_admin', i.oid, 'EXECUTE')
      END
ORDER BY 1;
-- The views, likewise.
SELECT coalesce(d.name, i.name) AS view, d.name IS NOT NULL AS documented, i.name IS NOT NULL AS installed
FROM (SELECT m[1] AS name FROM regexp_matches(:'api', '\| view `([a-z_]+)`', 'g') m) d
FULL JOIN (SELECT c.relname::text AS name FROM pg_depend dep JOIN pg_class c ON c.oid = dep.objid
           WHERE dep.classid = 'pg_class'::regclass AND dep.deptype = 'e' AND c.relkind = 'v'
             AND dep.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'legacy_backup')) i USING (name)
WHERE d.name IS NULL OR i.name IS NULL;
