//! In-database tests (`cargo pgrx test`). Each runs in a transaction that is rolled back, so each
//! creates the application's tables itself (from the same fixture the regress suite uses).

// `#[pg_schema]` puts the test functions in schema `tests`, where `cargo pgrx test` finds them.
use pgrx::prelude::*;

#[pg_schema]
mod tests {

    use pgrx::prelude::*;

    const APP_SCHEMA: &str = include_str!("../tests/fixtures/app_schema.sql");

    /// Creates the application's tables, attaches, and seeds one session of `docs` documents.
    fn app_with_session(session: &str, docs: i32) {
        Spi::run(APP_SCHEMA).unwrap();
        Spi::run("SELECT * FROM legacy_backup_attach()").unwrap();
        Spi::run_with_args(
        r#"
        INSERT INTO users (id, email, first_name, last_name, role, status, azure_ad_id)
        VALUES ('u1', 'u1@firm.test', 'Ann', 'Lee', 'Partner', 'Active', 'aad-u1');
        INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, total_documents, updated_at)
        VALUES ($1, 'f1', 'a.pst', 1, 'u1', 'InProgress', $2, now());
        INSERT INTO import_categories (id, session_id, name, created_by, updated_at)
        SELECT $1 || '-c' || g, $1, 'Cat ' || g, 'u1', now() FROM generate_series(1, 3) g;
        INSERT INTO document_batches (id, session_id, month_year, assigned_to, document_count, updated_at)
        VALUES ($1 || '-b1', $1, '2020-01', 'u1', $2, now());
        INSERT INTO extracted_documents (id, session_id, batch_id, file_name, file_extension, file_size_bytes,
            storage_path, folder_path, category_id, status, categorized_by, categorized_at, updated_at)
        SELECT $1 || '-d' || lpad(g::text, 5, '0'), $1, $1 || '-b1', 'f' || g || '.pdf', 'pdf', 10,
               'documents/' || $1 || '/' || g, 'Inbox',
               CASE WHEN g % 3 <> 0 THEN $1 || '-c' || (1 + g % 3) END,
               (CASE WHEN g % 3 <> 0 THEN 'Categorized' ELSE 'Uncategorized' END)::"DocumentCategorizationStatus",
               CASE WHEN g % 3 <> 0 THEN 'u1' END, CASE WHEN g % 3 <> 0 THEN now() END, now()
        FROM generate_series(1, $2) g;
        "#
        .replace("$1", &format!("'{session}'"))
        .replace("$2", &docs.to_string())
        .as_str(),
        &[],
    )
    .unwrap();
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap()
            .expect("query returned NULL")
    }

    #[pg_test]
    fn snapshot_agrees_with_the_rows_document_for_document() {
        app_with_session("s1", 250);
        let mismatches: i64 = one(
        "SELECT count(*) FROM json_to_recordset(legacy_snapshot('s1')->'documents') \
             AS j(id text, \"categoryId\" text, status text, \"categorizedBy\" text) \
         FULL JOIN extracted_documents d ON d.id = j.id \
         WHERE d.id IS NULL OR j.id IS NULL OR d.category_id IS DISTINCT FROM j.\"categoryId\" \
            OR d.status::text IS DISTINCT FROM j.status OR d.categorized_by IS DISTINCT FROM j.\"categorizedBy\"",
    );
        assert_eq!(mismatches, 0);
        let stats: pgrx::JsonB = one("SELECT (legacy_snapshot('s1')->'stats')::jsonb");
        assert_eq!(
            stats.0,
            serde_json::json!({"totalDocuments": 250, "categorizedCount": 167, "skippedCount": 0, "uncategorizedCount": 83,
        "total": 250, "categorized": 167, "skipped": 0, "uncategorized": 83})
        );
    }

    #[pg_test]
    fn categorized_at_keeps_microseconds() {
        app_with_session("s1", 3);
        Spi::run("UPDATE extracted_documents SET categorized_at = '2025-12-09 10:20:30.123456+00' WHERE id = 's1-d00001'")
        .unwrap();
        let at: String = one("SELECT legacy_snapshot('s1')->'documents'->0->>'categorizedAt'");
        assert_eq!(at, "2025-12-09T10:20:30.123456Z");
    }

    #[pg_test]
    fn take_stores_exact_bytes_and_records_everything() {
        app_with_session("s1", 40);
        let taken: pgrx::JsonB = one("SELECT legacy_snapshot_take('s1', 'u1')");
        let id = taken.0["snapshotId"].as_str().unwrap().to_string();
        let ok: bool = one(&format!(
            "SELECT sha256 = encode(sha256(body), 'hex') AND bytes = octet_length(body) \
                AND upload_state = 'pending' AND taken_by = 'u1' \
         FROM legacy_backup.snapshots WHERE id = '{id}'"
        ));
        assert!(ok);
        let audit: i64 = one(&format!(
        "SELECT count(*) FROM legacy_import_audit_logs WHERE action = 'CATEGORIZATION_SNAPSHOT' \
           AND session_id = 's1' AND details->>'snapshotId' = '{id}'"
    ));
        assert_eq!(audit, 1);
        let stamped: bool = one(&format!(
            "SELECT s.last_snapshot_at = b.snapshot_at FROM legacy_import_sessions s \
         JOIN legacy_backup.snapshots b ON b.session_id = s.id WHERE b.id = '{id}'"
        ));
        assert!(stamped);
    }

    #[pg_test]
    fn two_snapshots_in_one_transaction_get_distinct_keys() {
        app_with_session("s1", 5);
        let distinct: i64 = one(
        "SELECT count(DISTINCT k) FROM (SELECT legacy_snapshot_take('s1')->>'snapshotKey' AS k \
         FROM generate_series(1, 5)) x",
    );
        assert_eq!(distinct, 5);
    }

    #[pg_test]
    fn actor_comes_from_the_setting_then_the_role() {
        app_with_session("s1", 2);
        Spi::run("SET LOCAL legacy_backup.actor = 'u-from-app'").unwrap();
        let id: String = one("SELECT legacy_snapshot_take('s1')->>'snapshotId'");
        let by: String = one(&format!(
            "SELECT user_id FROM legacy_import_audit_logs WHERE details->>'snapshotId' = '{id}'"
        ));
        assert_eq!(by, "u-from-app");
        Spi::run("SET LOCAL legacy_backup.actor = ''").unwrap();
        let id: String = one("SELECT legacy_snapshot_take('s1')->>'snapshotId'");
        let by: String = one(&format!(
            "SELECT taken_by FROM legacy_backup.snapshots WHERE id = '{id}'"
        ));
        assert!(by.starts_with("pg:"), "{by}");
    }

    #[pg_test(error = "session_id must not be NULL")]
    fn null_session_is_refused() {
        app_with_session("s1", 1);
        Spi::run("SELECT legacy_snapshot(NULL)").unwrap();
    }

    #[pg_test(error = "session_id is not a safe identifier")]
    fn path_traversal_is_refused() {
        app_with_session("s1", 1);
        Spi::run("SELECT legacy_snapshot_take('../s1')").unwrap();
    }

    #[pg_test(error = "import session \"nope\" does not exist")]
    fn unknown_session_is_refused() {
        app_with_session("s1", 1);
        Spi::run("SELECT legacy_snapshot_take('nope')").unwrap();
    }

    #[pg_test(error = "legacy_backup is not attached to the application's tables")]
    fn detached_functions_say_so() {
        Spi::run("SELECT legacy_snapshot('s1')").unwrap();
    }

    #[pg_test]
    fn each_snapshot_links_to_the_previous_one_of_its_session() {
        app_with_session("s1", 20);
        app_with_session_more("s2");
        let first: String = one("SELECT legacy_snapshot_take('s1')->>'snapshotId'");
        Spi::run("SELECT legacy_snapshot_take('s2')").unwrap();
        let second: String = one("SELECT legacy_snapshot_take('s1')->>'snapshotId'");
        let (first_sha, first_link): (Option<String>, Option<String>) = Spi::get_two_with_args(
            "SELECT sha256, previous_sha256 FROM legacy_backup.snapshots WHERE id = $1",
            &[first.as_str().into()],
        )
        .unwrap();
        assert_eq!(
            first_link, None,
            "the first snapshot of a session links to nothing"
        );
        let (link, document_link): (Option<String>, Option<String>) = Spi::get_two_with_args(
            "SELECT previous_sha256, convert_from(body, 'UTF8')::json->>'previousSha256' FROM legacy_backup.snapshots WHERE id = $1",
            &[second.as_str().into()],
        )
        .unwrap();
        assert_eq!(link, first_sha, "s2's snapshot in between is another chain");
        assert_eq!(
            document_link, link,
            "the document carries the link the table records"
        );
        let version: i32 = one(
            "SELECT format_version FROM legacy_backup.snapshots ORDER BY created_at DESC LIMIT 1",
        );
        assert_eq!(version, 3);
    }

    /// A second session in the tables `app_with_session` created.
    fn app_with_session_more(session: &str) {
        Spi::run(&format!(
            "INSERT INTO legacy_import_sessions (id, firm_id, pst_file_name, pst_file_size, uploaded_by, status, total_documents, updated_at) \
             VALUES ('{session}', 'f1', 'b.pst', 1, 'u1', 'InProgress', 0, now())"
        ))
        .unwrap();
    }

    #[pg_test(error = "\"backups/s1/../x.json\" is not a snapshot key")]
    fn fetch_refuses_a_hostile_key_before_reaching_storage() {
        app_with_session("s1", 1);
        Spi::run("SELECT legacy_snapshot_fetch('backups/s1/../x.json')").unwrap();
    }

    #[pg_test]
    fn attach_is_idempotent_and_adds_missing_columns() {
        Spi::run(APP_SCHEMA).unwrap();
        let added: i64 = one("SELECT count(*) FROM legacy_backup_attach() WHERE outcome = 'added'");
        assert_eq!(added, 2);
        let added_again: i64 =
            one("SELECT count(*) FROM legacy_backup_attach() WHERE outcome = 'added'");
        assert_eq!(added_again, 0);
    }

    #[pg_test]
    fn deleting_a_session_with_work_takes_a_final_snapshot_and_schedules_its_files() {
        app_with_session("s1", 30);
        Spi::run("SET legacy_backup.cleanup_delay = '3 days'").unwrap();
        let before: i64 =
            one("SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's1'");
        Spi::run("DELETE FROM legacy_import_sessions WHERE id = 's1'").unwrap();
        let (documents, uncategorized): (Option<i64>, Option<i64>) = Spi::get_two(
            "SELECT (stats->>'totalDocuments')::int8, (stats->>'uncategorizedCount')::int8 \
             FROM legacy_backup.snapshots WHERE session_id = 's1' ORDER BY snapshot_at DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(before, 0);
        assert_eq!(
            (documents, uncategorized),
            (Some(30), Some(10)),
            "the final snapshot saw every document, before the cascade deleted them"
        );
        let queued: i64 = one(
            "SELECT count(*) FROM legacy_backup.jobs WHERE kind = 'upload' AND session_id = 's1'",
        );
        assert_eq!(queued, 1, "the final snapshot is uploaded like any other");
        let (after_delete, exported): (Option<bool>, Option<bool>) = Spi::get_two(
            "SELECT scheduled_at = deleted_at + interval '3 days', exported_at IS NOT NULL \
             FROM legacy_backup.cleanup_schedule WHERE session_id = 's1'",
        )
        .unwrap();
        assert_eq!((after_delete, exported), (Some(true), Some(false)));
        let audit: String = one(
            "SELECT string_agg(action || ':' || coalesce(details->>'occasion', details->>'finalSnapshotId', ''), ',' ORDER BY action) \
             FROM legacy_import_audit_logs WHERE session_id = 's1' AND action IN ('CATEGORIZATION_SNAPSHOT', 'SESSION_DELETED')",
        );
        let final_id: String =
            one("SELECT id FROM legacy_backup.snapshots WHERE session_id = 's1'");
        assert_eq!(
            audit,
            format!("CATEGORIZATION_SNAPSHOT:sessionDeleted,SESSION_DELETED:{final_id}")
        );
    }

    #[pg_test]
    fn a_session_without_work_is_deleted_without_a_snapshot_but_its_files_are_scheduled() {
        // A cancelled upload: the session row only, no document, no category.
        app_with_session("s0", 0);
        app_with_session_more("s1");
        Spi::run("DELETE FROM legacy_import_sessions WHERE id = 's1'").unwrap();
        let snapshots: i64 =
            one("SELECT count(*) FROM legacy_backup.snapshots WHERE session_id = 's1'");
        assert_eq!(
            snapshots, 0,
            "no document, no category, nothing logged: no final snapshot"
        );
        let scheduled: i64 = one(
            "SELECT count(*) FROM legacy_backup.cleanup_schedule WHERE session_id = 's1' AND deleted_at IS NOT NULL",
        );
        assert_eq!(
            scheduled, 1,
            "a cancelled upload's files are deleted too, when due"
        );
    }

    #[pg_test]
    fn a_session_with_documents_only_gets_a_final_snapshot() {
        // Nothing categorized yet, but the pipeline's and the validators' work is in its rows.
        app_with_session("s0", 0);
        app_with_session_more("s1");
        Spi::run(
            "INSERT INTO extracted_documents (id, session_id, file_name, file_extension, file_size_bytes, storage_path, folder_path, status, updated_at) \
             VALUES ('s1-d1', 's1', 'a.pdf', 'pdf', 1, 'documents/s1/a.pdf', 'Inbox', 'Uncategorized', now())",
        )
        .unwrap();
        Spi::run("DELETE FROM legacy_import_sessions WHERE id = 's1'").unwrap();
        let documents: i64 = one(
            "SELECT (stats->>'totalDocuments')::int8 FROM legacy_backup.snapshots WHERE session_id = 's1'",
        );
        assert_eq!(documents, 1);
    }

    #[pg_test]
    fn an_exported_session_deleted_keeps_its_schedule_and_a_new_row_of_its_id_starts_again() {
        app_with_session("s1", 6);
        // In one transaction the seeding counts as changes after any snapshot: a superuser's export
        // past the snapshot check (audited) stands in for the application's.
        Spi::run("SET LOCAL legacy_backup.skip_snapshot_check = on").unwrap();
        Spi::run("UPDATE legacy_import_sessions SET status = 'Exported', updated_at = now() WHERE id = 's1'").unwrap();
        let exported_schedule: TimestampWithTimeZone =
            one("SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 's1'");
        Spi::run("SET legacy_backup.cleanup_delay = '30 days'").unwrap();
        Spi::run("DELETE FROM legacy_import_sessions WHERE id = 's1'").unwrap();
        let kept: TimestampWithTimeZone =
            one("SELECT scheduled_at FROM legacy_backup.cleanup_schedule WHERE session_id = 's1' AND deleted_at IS NOT NULL");
        assert_eq!(kept, exported_schedule);
        // The same id again, then deleted again: the schedule counts from the second delete.
        app_with_session_more("s1");
        let live: bool = one("SELECT legacy_export_readiness('s1')->>'cleanupScheduledAt' IS NULL");
        assert!(
            live,
            "the new row does not inherit the deleted session's schedule"
        );
        Spi::run("DELETE FROM legacy_import_sessions WHERE id = 's1'").unwrap();
        let restarted: bool = one(
            "SELECT scheduled_at = deleted_at + interval '30 days' FROM legacy_backup.cleanup_schedule WHERE session_id = 's1'",
        );
        assert!(restarted);
    }
}
