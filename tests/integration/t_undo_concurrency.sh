#!/usr/bin/env bash
# Undo under concurrency, with real concurrent sessions:
#  A. two undos by the same actor racing: they serialize and undo two different changes;
#  B. an undo racing a new categorization of the same document by someone else: the undo waits
#     for the row, sees the new change and refuses;
#  C. a categorization racing an undo that got there first: it waits, then applies on top.
# Counters start exact, so any lost or doubled counter move shows up in the snapshot's
# consistency report.
source "$(dirname "$0")/lib.sh"
start_cluster
q postgres -c "CREATE DATABASE undo"
load_app undo us 300
q undo -f "$ROOT/tests/fixtures/app_workload.sql"
q undo -c "SELECT app_recount('us')" -c "CREATE EXTENSION legacy_backup" >/dev/null
drift() { q undo -c "SELECT json_array_length(legacy_snapshot('us')->'consistency')"; }
categorize() { # doc category actor
  q undo -c "BEGIN" -c "SET LOCAL legacy_backup.actor = '$3'" \
         -c "SELECT app_categorize('us-doc-$1', 'us-cat-$2', '$3')" -c "COMMIT" >/dev/null
}

echo "A. two undos racing"
categorize 000270 001 u-paralegal
categorize 000271 002 u-paralegal
categorize 000272 003 u-paralegal
q undo -c "BEGIN" -c "SELECT legacy_undo_last_categorization('u-paralegal')->'documents'->0->>'documentId'" \
       -c "SELECT pg_sleep(1.5)" -c "COMMIT" >"$CLUSTER/a1.out" &
first=$!
sleep 0.4
second_doc=$(q undo -c "SELECT legacy_undo_last_categorization('u-paralegal')->'documents'->0->>'documentId'")
wait $first
check "first undo took the newest change" us-doc-000272 "$(head -1 "$CLUSTER/a1.out")"
check "second undo waited and took the one before" us-doc-000271 "$second_doc"
check "two changes marked undone" 2 "$(q undo -c "SELECT count(*) FROM category_assignment_logs WHERE undone_by IS NOT NULL")"
check "counters exact after racing undos" 0 "$(drift)"

echo "B. undo racing a new categorization by someone else"
q undo -c "BEGIN" -c "SET LOCAL legacy_backup.actor = 'u-associate'" \
       -c "SELECT app_categorize('us-doc-000270', 'us-cat-007', 'u-associate')" \
       -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null &
writer=$!
sleep 0.4
refusal=$(q undo -c "SELECT legacy_undo_last_categorization('u-paralegal')" 2>&1 || true)
wait $writer
check "undo refused after waiting" 1 "$(echo "$refusal" | grep -c 'was changed since by "u-associate"')"
check "the new categorization stands" us-cat-007 "$(q undo -c "SELECT category_id FROM extracted_documents WHERE id = 'us-doc-000270'")"
check "counters exact after the refused undo" 0 "$(drift)"

echo "C. categorization racing an undo that got there first"
categorize 000280 004 u-paralegal
q undo -c "BEGIN" -c "SELECT legacy_undo_last_categorization('u-paralegal')" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null &
undo=$!
sleep 0.4
categorize 000280 005 u-associate
wait $undo
check "the later categorization applies on top of the undo" us-cat-005 \
  "$(q undo -c "SELECT category_id FROM extracted_documents WHERE id = 'us-doc-000280'")"
check "history of the document in order" "app:us-cat-004,undo:,app:us-cat-005" \
  "$(q undo -c "SELECT string_agg(source || ':' || coalesce(new_category_id, ''), ',' ORDER BY id) FROM legacy_document_history('us-doc-000280') WHERE source <> 'baseline'")"
check "counters exact at the end" 0 "$(drift)"
