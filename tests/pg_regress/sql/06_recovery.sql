-- Restore and import from snapshots held in the database: the dry-run diff, the rules for
-- missing documents, deleted and merged categories, counters recomputed, partners only.
\set VERBOSITY default
\set ECHO none
\set sid rec
\set docs 30
\set cats 4
\set months 2
\i tests/fixtures/seed.sql
\set ECHO all
SELECT app_recount('rec');
SELECT legacy_snapshot_take('rec', 'u-partner')->>'snapshotId' AS snap \gset

-- Damage: a merge of cat-002 into cat-001, a category deleted, a document deleted, a skip.
SELECT app_merge('rec', 'rec-cat-001', ARRAY['rec-cat-002'], 'u-partner') AS moved;
DELETE FROM extracted_documents WHERE id = 'rec-doc-000003';
UPDATE extracted_documents SET category_id = NULL, status = 'Uncategorized', categorized_by = NULL, categorized_at = NULL, updated_at = now()
WHERE category_id = 'rec-cat-003';
DELETE FROM import_categories WHERE id = 'rec-cat-003';
SELECT app_skip('rec-doc-000004', 'u-paralegal');

-- Dry run: what would change, and what cannot be restored.
SELECT r->'dryRun' AS dry_run, r->'changes' AS changes, r->'unchanged' AS unchanged,
       r->'missingDocuments' AS missing_documents, r->'missingCategories' AS missing_categories,
       r->'mergedCategories' AS merged_categories, r->'documentsNotInSnapshot' AS not_in_snapshot
FROM (SELECT legacy_restore_snapshot(:'snap', 'u-partner') AS r) x;
SELECT d->>'documentId' AS document, d->>'currentStatus' AS current_status, d->>'snapshotStatus' AS snapshot_status,
       d->>'snapshotCategoryId' AS snapshot_category, d->>'restoredCategoryId' AS restored_to
FROM jsonb_array_elements(legacy_restore_snapshot(:'snap', 'u-partner')->'documents') d
WHERE d->>'documentId' IN ('rec-doc-000001', 'rec-doc-000004');
SELECT count(*) AS logged_by_dry_run FROM category_assignment_logs WHERE source = 'restore';

-- Only partners.
SELECT code, message FROM regress.error_of($$SELECT legacy_restore_snapshot((SELECT snapshot_id FROM legacy_snapshots WHERE session_id = 'rec'), 'u-paralegal', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_restore_snapshot('no-such-snapshot', 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_restore_snapshot(NULL, 'u-partner')$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_restore_snapshot((SELECT snapshot_id FROM legacy_snapshots WHERE session_id = 'rec'), 'u-partner', NULL)$$);

-- Apply: documents back (merged ones into the category that holds them now), counters exact.
SELECT r->'changes' AS changes FROM (SELECT legacy_restore_snapshot(:'snap', 'u-partner', false) AS r) x;
SELECT id, category_id, status FROM extracted_documents WHERE id IN ('rec-doc-000001', 'rec-doc-000004', 'rec-doc-000005') ORDER BY id;
SELECT json_array_length(legacy_snapshot('rec')->'consistency') AS counters_out_of_line;
SELECT source, changed_by, attribution, count(*) FROM category_assignment_logs WHERE source = 'restore' GROUP BY 1, 2, 3;
SELECT action, user_id, details->'changes' AS changes, details->'missingCategories' AS missing_categories
FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_RESTORED';
-- A second restore finds nothing left to change.
SELECT legacy_restore_snapshot(:'snap', 'u-partner', false)->'changes' AS changes_second_time;

-- Import: the same from a document; bad documents change nothing.
SELECT count(*) AS rows_before FROM category_assignment_logs \gset
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 1, "sessionId": "rec"}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('[1, 2]', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 1, "sessionId": "../x", "documents": [], "stats": {"total": 0}}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 1, "sessionId": "rec", "documents": [{"id": "rec-doc-000001", "status": "Lost"}], "stats": {"total": 1}}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import(NULL, 'u-partner', false)$$);
SELECT count(*) - :rows_before AS rows_added_by_bad_imports FROM category_assignment_logs;
SELECT r->'changes' AS changes, r->'documentsNotInSnapshot' AS not_in_snapshot
FROM (SELECT legacy_snapshot_import('{"formatVersion": 1, "sessionId": "rec", "documents": [{"id": "rec-doc-000001", "categoryId": null, "status": "Skipped"}], "stats": {"total": 1}}', 'u-partner', false) AS r) x;
SELECT status, category_id FROM extracted_documents WHERE id = 'rec-doc-000001';

-- Format 2 carries the application's later columns: a restore brings back the soft delete of
-- validation, the skip reason and the cluster.
UPDATE extracted_documents SET validation_status = 'Deleted', validated_by = 'u-partner', skip_reason = 'Duplicate',
       cluster_id = '6f1c0f52-0d7c-4b8e-9a57-6a0d1f3e2b11'
WHERE id = 'rec-doc-000006';
SELECT legacy_snapshot_take('rec', 'u-partner')->>'snapshotId' AS snap2 \gset
SELECT d->'validationStatus' AS validation_status, d->'skipReason' AS skip_reason, d->'clusterId' AS cluster_id
FROM json_array_elements(legacy_snapshot('rec')->'documents') d WHERE d->>'id' = 'rec-doc-000006';
UPDATE extracted_documents SET validation_status = 'Accepted', skip_reason = NULL, cluster_id = NULL WHERE id = 'rec-doc-000006';
SELECT r->'format' AS format, r->'changes' AS changes, r->'restoredColumns' AS restored_columns,
       r->'documents'->0->'changed' AS changed
FROM (SELECT legacy_restore_snapshot(:'snap2', 'u-partner', false) AS r) x;
SELECT validation_status, skip_reason, cluster_id FROM extracted_documents WHERE id = 'rec-doc-000006';
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 2, "sessionId": "rec", "documents": [{"id": "rec-doc-000001", "status": "Skipped", "clusterId": "../x"}], "stats": {"totalDocuments": 1}}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 2, "sessionId": "rec", "documents": [{"id": "rec-doc-000001", "status": "Skipped"}], "stats": {"total": 1}}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 4, "sessionId": "rec", "documents": [], "stats": {"totalDocuments": 0}}', 'u-partner', false)$$);
SELECT code, message FROM regress.error_of($$SELECT legacy_snapshot_import('{"formatVersion": 2, "sessionId": "rec", "documents": [{"id": "rec-doc-000001", "status": "Skipped", "validationStatus": "Gone"}], "stats": {"totalDocuments": 1}}', 'u-partner', false)$$);
SELECT validation_status, status FROM extracted_documents WHERE id = 'rec-doc-000001';

-- The application's own export-snapshot file (pretty-printed, no formatVersion, its stats
-- copied from drifted counters, no categorizedBy): imported, categorized_by left as it is.
UPDATE extracted_documents SET category_id = 'rec-cat-004', status = 'Categorized', categorized_by = 'u-associate'
WHERE id = 'rec-doc-000007';
SELECT legacy_snapshot_import($json${
  "sessionId": "rec",
  "snapshotAt": "2026-11-20T10:00:00.000Z",
  "firmId": "firm-1",
  "pstFileName": "archive-rec.pst",
  "stats": {
    "totalDocuments": 31,
    "categorizedCount": 1,
    "skippedCount": 0,
    "uncategorizedCount": 1
  },
  "categories": [
    { "id": "rec-cat-001", "name": "Contracts 1", "documentCount": 12, "mergedInto": null }
  ],
  "documents": [
    {
      "id": "rec-doc-000007",
      "fileName": "attachment 7.msg",
      "fileExtension": "msg",
      "storagePath": "documents/rec/7/attachment 7",
      "folderPath": "Inbox/Clients/7",
      "categoryId": "rec-cat-001",
      "categoryName": "Contracts 1",
      "status": "Categorized",
      "emailSubject": "Re: matter 7",
      "emailSender": "sender7@client.test",
      "emailDate": "2019-01-01T00:00:00.000Z",
      "isSent": false,
      "batchId": "rec-batch-02",
      "categorizedAt": "2026-11-19T09:00:00.000Z"
    },
    {
      "id": "rec-doc-000008",
      "fileName": "attachment 8.pdf",
      "fileExtension": "pdf",
      "storagePath": "documents/rec/8/attachment 8",
      "folderPath": "Inbox/Clients/8",
      "categoryId": null,
      "categoryName": null,
      "status": "Uncategorized",
      "emailSubject": null,
      "emailSender": null,
      "emailDate": null,
      "isSent": true,
      "batchId": null,
      "categorizedAt": "2026-11-19T09:00:00.000Z"
    }
  ],
  "batches": []
}$json$, 'u-partner', false) AS r \gset
SELECT :'r'::jsonb->'format' AS format, :'r'::jsonb->'changes' AS changes,
       :'r'::jsonb->'categorizedByRestored' AS categorized_by_restored, jsonb_pretty(:'r'::jsonb->'notes') AS notes;
SELECT id, category_id, status, categorized_by FROM extracted_documents WHERE id IN ('rec-doc-000007', 'rec-doc-000008') ORDER BY id;
SELECT details->'format' AS format, details->'categorizedByRestored' AS categorized_by_restored
FROM legacy_import_audit_logs WHERE action = 'SNAPSHOT_RESTORED' ORDER BY "timestamp" DESC LIMIT 1;
