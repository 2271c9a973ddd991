#!/usr/bin/env bash
# Evidence-grade backups against s3s-fs with the real worker (issue #20):
# - sealed uploads (no content in the object, key id recorded), chained snapshots;
# - fetching is verifying: a flipped byte, a forged plain document, another session's object and
#   an old object replayed under a new key are refused with LB010, nothing changed;
# - the scrub (scrub_interval 1s) notices a deleted, a flipped and a forged object: an
#   R2_BACKUP_DAMAGED row, health not ok, then put back from the database (R2_BACKUP_REPAIRED),
#   health ok again; one whose body was pruned stays damaged;
# - legacy_backup_verify_all() and the storage-only walk (a deleted middle snapshot breaks the chain);
# - backups in their own bucket: a cleanup never touches it;
# - key rotation: old objects still open with the previous key, new ones sealed with the new key;
# - the disaster drill: a fresh database, same credentials file and key, fetches, verifies and
#   imports (dry run, then for real) the newest backup from storage alone; a tampered one is refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
mkdir -p "$S3_DIR/data/firm-backups"
SRC=$S3_DIR/data/legacy-import
BAK=$S3_DIR/data/firm-backups
KEY1=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KEY2=$(head -c 32 /dev/urandom | base64)
with_keys() { # current [previous]
  write_credentials "$S3_SECRET_KEY"
  printf 'LEGACY_BACKUP_KEY=%s\n' "$1" >>"$CREDENTIALS"
  [ -z "${2:-}" ] || printf 'LEGACY_BACKUP_KEY_PREVIOUS=%s\n' "$2" >>"$CREDENTIALS"
}
start_cluster_with_worker "legacy_backup.scrub_interval = '1h'" "legacy_backup.r2_backup_bucket = 'firm-backups'"
with_keys "$KEY1"
q postgres -c "CREATE DATABASE app"
load_app app s1 200
q app -v sid=s2 -v docs=50 -f "$ROOT/tests/fixtures/seed.sql" >/dev/null
q app -c "CREATE EXTENSION legacy_backup"
q app -c "CREATE FUNCTION sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS \$\$
          BEGIN EXECUTE statement; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END \$\$"
wait_for "worker running" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'legacy_backup worker'" 1 15
snap() { q app -c "SELECT legacy_snapshot_take('$1')->>'snapshotId'"; }
key_of() { q app -c "SELECT snapshot_key FROM legacy_backup.snapshots WHERE id = '$1'"; }
health() { q app -c "SELECT ok FROM legacy_backup_health() WHERE check_name = '$1'"; }
flip() { python3 - "$1" <<'EOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 1; open(p, 'wb').write(bytes(b))
EOF
}

echo "sealed, chained uploads into the backup bucket"
a1=$(snap s1)
q app -c "BEGIN" -c "SET LOCAL legacy_backup.actor = 'u-paralegal'" \
      -c "UPDATE extracted_documents SET category_id = 's1-cat-002', status = 'Categorized', categorized_by = 'u-paralegal', categorized_at = now() WHERE id IN (SELECT id FROM extracted_documents WHERE session_id = 's1' AND status = 'Uncategorized' ORDER BY id LIMIT 5)" -c "COMMIT" >/dev/null
a2=$(snap s1)
a3=$(snap s1)
b1=$(snap s2)
for id in $a1 $a2 $a3 $b1; do
  wait_for "snapshot $id uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$id'" uploaded 10
done
k1=$(key_of "$a1"); k2=$(key_of "$a2"); k3=$(key_of "$a3"); kb=$(key_of "$b1")
check "objects are in the backup bucket, none in the source bucket" "4 0" \
  "$(find "$BAK/backups" -type f -name 'categorization-*.json' | wc -l) $(find "$SRC" -path '*backups*' -type f 2>/dev/null | wc -l)"
check "each object starts with the envelope's magic" LBSEAL "$(head -c 6 "$BAK/$k3")"
check "no content in clear (file names, subjects)" 0 "$(grep -c -a -e 'archive-s1' -e 'formatVersion' "$BAK/$k3" || true)"
id1=$(python3 -c "import hashlib,sys; print(hashlib.sha256(b'legacy_backup key id v1\0' + bytes.fromhex(sys.argv[1])).hexdigest()[:16])" "$KEY1")
check "legacy_snapshots: sealed with the key's id" "t $id1" "$(q app -F' ' -c "SELECT sealed, key_id FROM legacy_snapshots WHERE snapshot_id = '$a3'")"
check "the chain: a2 links to a1, a3 to a2, the first to nothing" "t t t" \
  "$(q app -F' ' -c "SELECT (SELECT previous_sha256 IS NULL FROM legacy_backup.snapshots WHERE id = '$a1'),
                           (SELECT n.previous_sha256 = p.sha256 FROM legacy_backup.snapshots n, legacy_backup.snapshots p WHERE n.id = '$a2' AND p.id = '$a1'),
                           (SELECT n.previous_sha256 = p.sha256 FROM legacy_backup.snapshots n, legacy_backup.snapshots p WHERE n.id = '$a3' AND p.id = '$a2')")"
check "health: sealing key ok" t "$(health 'backup sealing key')"
check "fetch opens a sealed object: the stored document" "$(q app -c "SELECT sha256 FROM legacy_backup.snapshots WHERE id = '$a3'")" \
  "$(q app -c "SELECT encode(sha256(convert_to(legacy_snapshot_fetch('$k3')::text, 'UTF8')), 'hex')")"
check "verify_all: the four snapshots ok" "ok ok ok ok" "$(q app -c "SELECT string_agg(state, ' ' ORDER BY snapshot_key) FROM legacy_backup_verify_all() WHERE snapshot_key LIKE '%/categorization-%'")"
check "verify_storage: seals and chains ok" "ok ok ok ok" "$(q app -c "SELECT string_agg(state, ' ' ORDER BY snapshot_key) FROM legacy_backup_verify_storage() WHERE snapshot_key LIKE '%/categorization-%'")"

echo "the audit trail leaves the database: sealed, chained segments within the naptime"
trail_total() { q app -c "SELECT count(*) FROM category_assignment_logs WHERE session_id = '$1'"; }
trail_up() { q app -c "SELECT coalesce(sum(row_count), 0) FROM legacy_backup.trail_segments WHERE session_id = '$1' AND upload_state = 'uploaded'"; }
wait_for "every log row of s1 is in an uploaded segment" "SELECT ($(trail_total s1) = (SELECT coalesce(sum(row_count), 0) FROM legacy_backup.trail_segments WHERE session_id = 's1' AND upload_state = 'uploaded'))::text" true 15
T_MID=$(q app -c "SELECT now()")
sleep 0.2
start=$(date +%s%N)
q app -c "BEGIN" -c "SET LOCAL legacy_backup.actor = 'u-associate'" \
      -c "UPDATE extracted_documents SET category_id = 's1-cat-003', status = 'Categorized', categorized_by = 'u-associate', categorized_at = now() WHERE id IN (SELECT id FROM extracted_documents WHERE session_id = 's1' AND status = 'Uncategorized' ORDER BY id LIMIT 3)" -c "COMMIT" >/dev/null
wait_for "three more rows shipped" "SELECT ($(trail_total s1) = (SELECT coalesce(sum(row_count), 0) FROM legacy_backup.trail_segments WHERE session_id = 's1' AND upload_state = 'uploaded'))::text" true 5
echo "  info: commit to shipped in $(( ($(date +%s%N) - start) / 1000000 )) ms (naptime 1 s)"
seg=$(q app -c "SELECT object_key FROM legacy_backup.trail_segments WHERE session_id = 's1' ORDER BY sequence DESC LIMIT 1")
check "the newest segment is sealed" LBSEAL "$(head -c 6 "$BAK/$seg")"
check "no actor or document id in clear" 0 "$(grep -c -a -e 'u-associate' -e 's1-doc' "$BAK/$seg" || true)"
check "segments chained: each links to the one before" 0 \
  "$(q app -c "SELECT count(*) FROM legacy_backup.trail_segments n LEFT JOIN legacy_backup.trail_segments p ON p.session_id = n.session_id AND p.instance = n.instance AND p.sequence = n.sequence - 1 WHERE n.previous_sha256 IS DISTINCT FROM p.sha256")"
check "verify_all: trail segments ok too" 0 "$(q app -c "SELECT count(*) FROM legacy_backup_verify_all() WHERE snapshot_key LIKE '%/trail-%' AND state <> 'ok'")"
check "verify_storage: trail chains ok" 0 "$(q app -c "SELECT count(*) FROM legacy_backup_verify_storage() WHERE snapshot_key LIKE '%/trail-%' AND state <> 'ok'")"

echo "a holder of the bucket's credentials"
cp "$BAK/$k3" "$CLUSTER/k3.orig"; cp "$BAK/$kb" "$CLUSTER/kb.orig"
flip "$BAK/$k3"
check "a flipped byte: LB010" "LB010" "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$k3')\$q\$), 5)")"
q app -c "SELECT legacy_snapshot_fetch('$k3')" 2>&1 | sed -n 1p | sed 's/^/  info: /' || true
cp "$CLUSTER/kb.orig" "$BAK/$k3"
check "another session's object swapped in: LB010" "LB010" "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$k3')\$q\$), 5)")"
cp "$BAK/$k1" "$BAK/$k3"
check "an old object replayed under a newer key: LB010" "LB010" "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$k3')\$q\$), 5)")"
q app -c "SELECT legacy_snapshot('s1')" >"$BAK/$k3"
check "a forged plain document: LB010" "LB010" "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$k3')\$q\$), 5)")"
check "... even through the partner's override (the database records a sealed object)" "LB010" \
  "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch_unverified('$k3', 'u-partner')\$q\$), 5)")"
check "verify_all names it" "mismatch" "$(q app -c "SELECT state FROM legacy_backup_verify_all() WHERE snapshot_key = '$k3'")"
check "an unknown object under backups/ is unexpected" "unexpected" \
  "$(cp "$BAK/$kb" "$BAK/backups/s2/categorization-2030-01-01T00-00-00-000Z.json"; q app -c "SELECT state FROM legacy_backup_verify_all() WHERE snapshot_key LIKE '%2030-01-01%'")"
check "the override admits an unknown plain file, audited" "1
1" \
  "$(q app -c "SELECT legacy_snapshot('s2')" >"$BAK/backups/s2/categorization-2030-01-01T00-00-00-000Z.json"
     q app -c "SELECT (legacy_snapshot_fetch_unverified('backups/s2/categorization-2030-01-01T00-00-00-000Z.json', 'u-partner')->>'sessionId' = 's2')::int"
     q app -c "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_FETCHED_UNVERIFIED'")" 
check "... and only for a partner" "42501" \
  "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch_unverified('backups/s2/categorization-2030-01-01T00-00-00-000Z.json', 'u-paralegal')\$q\$), 5)")"
rm "$BAK/backups/s2/categorization-2030-01-01T00-00-00-000Z.json"

echo "the scrub: damage noticed, audited, repaired"
rm "$BAK/$k2"
seg1=$(q app -c "SELECT object_key FROM legacy_backup.trail_segments WHERE session_id = 's1' ORDER BY sequence LIMIT 1")
rm "$BAK/$seg1"
printf '{"formatVersion":1,"kind":"auditTrail","sessionId":"s1","rows":[]}' >"$BAK/$seg"
# a1's body pruned: the scrub cannot put it back.
q app -c "UPDATE legacy_backup.snapshots SET body = NULL, pruned_at = now() WHERE id = '$a1'"
flip "$BAK/$k1"
q postgres -c "ALTER SYSTEM SET legacy_backup.scrub_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for "k3 (forged) repaired" "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$a3'" repaired 20
wait_for "k2 (deleted) repaired" "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$a2'" repaired 20
wait_for "k1 (flipped, body pruned) stays damaged" "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$a1'" mismatch 20
wait_for "the deleted trail segment repaired" "SELECT verify_result FROM legacy_backup.trail_segments WHERE object_key = '$seg1'" repaired 20
wait_for "the forged trail segment repaired" "SELECT verify_result FROM legacy_backup.trail_segments WHERE object_key = '$seg'" repaired 20
check "R2_BACKUP_DAMAGED rows for the five" 5 "$(q app -c "SELECT count(DISTINCT details->>'snapshotKey') FROM legacy_import_audit_logs WHERE action = 'R2_BACKUP_DAMAGED'")"
check "R2_BACKUP_REPAIRED rows for the four" 4 "$(q app -c "SELECT count(DISTINCT details->>'snapshotKey') FROM legacy_import_audit_logs WHERE action = 'R2_BACKUP_REPAIRED'")"
check "the repaired objects are sealed again and open" "2" \
  "$(q app -c "SELECT count(*) FROM legacy_backup_verify_all() WHERE snapshot_key IN ('$k2', '$k3') AND state IN ('ok', 'repaired')")"
check "health: backup objects not ok while k1 is damaged" f "$(health 'backup objects')"
q app -c "SELECT detail FROM legacy_backup_health() WHERE check_name = 'backup objects'" | sed 's/^/  info: /'
check "a damaged object without its body in the database stays damaged" mismatch "$(q app -c "SELECT verify_result FROM legacy_backup.snapshots WHERE id = '$a1'")"
before=$(q app -c "SELECT md5(string_agg(id || coalesce(category_id, '') || status, ',' ORDER BY id)) FROM extracted_documents WHERE session_id = 's1'")
check "restoring a1 (body pruned, object flipped) is refused: LB010" "LB010" \
  "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_restore_snapshot('$a1', 'u-partner', false)\$q\$), 5)")"
check "the refused restore changed nothing" "$before" \
  "$(q app -c "SELECT md5(string_agg(id || coalesce(category_id, '') || status, ',' ORDER BY id)) FROM extracted_documents WHERE session_id = 's1'")"
q postgres -c "ALTER SYSTEM SET legacy_backup.scrub_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null

echo "the storage-only walk finds a deleted middle snapshot"
mv "$BAK/$k2" "$CLUSTER/k2.moved"
check "a3 breaks the chain once a2 is gone" "broken_chain" "$(q app -c "SELECT state FROM legacy_backup_verify_storage() WHERE snapshot_key = '$k3'")"
mv "$CLUSTER/k2.moved" "$BAK/$k2"

echo "key rotation"
with_keys "$KEY2" "$KEY1"
q postgres -c "SELECT pg_reload_conf()" >/dev/null
a4=$(snap s1)
wait_for "a4 uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$a4'" uploaded 10
check "a4 sealed with the new key, a3 with the old" "2 t" \
  "$(q app -F' ' -c "SELECT count(DISTINCT sealed_key_id), bool_and(sealed_key_id IS NOT NULL) FROM legacy_backup.snapshots WHERE id IN ('$a3', '$a4')")"
check "the old object still opens with the previous key" "ok" "$(q app -c "SELECT left(sqlstate_of(\$q\$SELECT legacy_snapshot_fetch('$k3')\$q\$), 2)")"
check "a4 links to a3" t "$(q app -c "SELECT n.previous_sha256 = p.sha256 FROM legacy_backup.snapshots n, legacy_backup.snapshots p WHERE n.id = '$a4' AND p.id = '$a3'")"

echo "the cleanup never touches the backup bucket"
mkdir -p "$SRC/pst/s2" "$SRC/documents/s2"
echo pst >"$SRC/pst/s2/archive.pst"; echo doc >"$SRC/documents/s2/a.pdf"

b2=$(snap s2)
wait_for "b2 uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$b2'" uploaded 10
export_and_make_due s2
wait_for "s2 cleaned up" "SELECT cleaned_up_at IS NOT NULL FROM legacy_import_sessions WHERE id = 's2'" t 20
check "source files deleted" 0 "$(find "$SRC/pst/s2" "$SRC/documents/s2" -type f | wc -l)"
check "every backup object still there (six snapshots)" 6 "$(find "$BAK/backups" -type f -name 'categorization-*.json' | wc -l)"

T_END=$(q app -c "SELECT now()")
echo "the disaster drill: a fresh database, the same credentials file and key"
q postgres -c "CREATE DATABASE drill"
load_app drill s1 200
q drill -c "CREATE EXTENSION legacy_backup"
q drill -c "UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized', categorized_by = NULL, categorized_at = NULL WHERE session_id = 's1'" >/dev/null 2>&1 || true
newest=$(q drill -c "SELECT snapshot_key FROM legacy_backup_verify_storage() WHERE session_id = 's1' AND state = 'ok' AND snapshot_key LIKE '%/categorization-%' ORDER BY snapshot_key DESC LIMIT 1")
check "the newest backup of s1, found and verified from storage alone" "$(key_of "$a4")" "$newest"
q drill -c "SELECT snapshot_key, state, left(detail, 60) FROM legacy_backup_verify_storage() WHERE session_id = 's1' ORDER BY 1" | sed 's/^/  info: /'
dry=$(q drill -c "SELECT (legacy_snapshot_import(legacy_snapshot_fetch('$newest'), 'u-partner', true)->>'changes')")
echo "  info: dry run would change $dry documents"
check "dry run changes nothing" 0 "$(q drill -c "SELECT count(*) FROM extracted_documents WHERE session_id = 's1' AND status <> 'Uncategorized'")"
q drill -c "SELECT legacy_snapshot_import(legacy_snapshot_fetch('$newest'), 'u-partner', false)->>'changes'" >/dev/null
check "imported: the categorization equals the source database's" \
  "$(q app -c "SELECT md5(string_agg(concat_ws(',', id, category_id, status), '|' ORDER BY id)) FROM extracted_documents WHERE session_id = 's1'")" \
  "$(q drill -c "SELECT md5(string_agg(concat_ws(',', id, category_id, status), '|' ORDER BY id)) FROM extracted_documents WHERE session_id = 's1'")"
wait_for "the trail is fully shipped before the drill" "SELECT ($(trail_total s1) = (SELECT coalesce(sum(row_count), 0) FROM legacy_backup.trail_segments WHERE session_id = 's1' AND upload_state = 'uploaded'))::text" true 15
dry=$(q drill -c "SELECT legacy_trail_rebuild('s1', 'u-partner')")
echo "  info: trail rebuild, dry run: $(echo "$dry" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["segments"]), "segments,", d["rows"], "rows,", d["toInsert"], "to insert")')"
check "dry run: every row of the source database's trail is in storage" "$(trail_total s1)" "$(echo "$dry" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"])')"
q drill -c "SELECT legacy_trail_rebuild('s1', 'u-partner', false)" >/dev/null
who() { q "$1" -c "SELECT string_agg(changed_by || ':' || count, ',' ORDER BY changed_by) FROM (SELECT changed_by, count(*) FROM category_assignment_logs WHERE session_id = 's1' AND changed_at < '$T_END' GROUP BY 1) x"; }
check "who did what: the same in the rebuilt trail" "$(who app)" "$(who drill)"
pit() { q "$1" -c "SELECT md5(string_agg(concat_ws(',', document_id, category_id, status, changed_by), '|' ORDER BY document_id)) FROM legacy_categorization_at('s1', '$T_MID')"; }
check "point in time: the session as it was before the last change, the same" "$(pit app)" "$(pit drill)"
doc=$(q app -c "SELECT document_id FROM category_assignment_logs WHERE session_id = 's1' AND changed_by = 'u-associate' LIMIT 1")
check "a document's history names u-associate" u-associate "$(q drill -c "SELECT changed_by FROM legacy_document_history('$doc') WHERE changed_by = 'u-associate' LIMIT 1")"
check "rebuilt twice: nothing added" 0 "$(q drill -c "SELECT legacy_trail_rebuild('s1', 'u-partner', false)->>'inserted'")"
cp "$BAK/$seg1" "$CLUSTER/seg1.keep"; flip "$BAK/$seg1"
check "a tampered trail segment: the rebuild is refused with LB010" "LB010" \
  "$(q drill -c "DO \$\$ BEGIN PERFORM legacy_trail_rebuild('s1', 'u-partner'); EXCEPTION WHEN OTHERS THEN RAISE EXCEPTION '%', SQLSTATE; END \$\$" 2>&1 | grep -o 'LB010' | head -1)"
cp "$CLUSTER/seg1.keep" "$BAK/$seg1"
flip "$BAK/$newest"
check "a tampered newest backup is refused in the fresh database" "LB010" \
  "$(q drill -c "DO \$\$ BEGIN PERFORM legacy_snapshot_fetch('$newest'); EXCEPTION WHEN OTHERS THEN RAISE EXCEPTION '%', SQLSTATE; END \$\$" 2>&1 | grep -o 'LB010' | head -1)"
q drill -c "SELECT legacy_snapshot_fetch('$newest')" 2>&1 | sed -n 1,3p | sed 's/^/  info: /' || true

echo "no key: uploads go on in plain form, health says so"
write_credentials "$S3_SECRET_KEY"
q postgres -c "SELECT pg_reload_conf()" >/dev/null
a5=$(snap s1)
wait_for "a5 uploaded" "SELECT upload_state FROM legacy_backup.snapshots WHERE id = '$a5'" uploaded 10
check "a5 plain, sealed = false" "f" "$(q app -c "SELECT sealed FROM legacy_snapshots WHERE snapshot_id = '$a5'")"
check "health: sealing key not ok" f "$(health 'backup sealing key')"
echo "t_sealed: all checks passed"
