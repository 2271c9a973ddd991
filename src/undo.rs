//! Undo of categorization changes, driven by the audit trail (`category_assignment_logs`).
//!
//! Rules (also in docs/api.md, Undo):
//! - The target is the actor's most recent change not yet undone (of the given document, when
//!   one is named), from the application or a restore, within `legacy_backup.undo_window`.
//! - With no document named, every change the actor made in the target's transaction is undone
//!   together: undoing a bulk merge restores every document it moved.
//! - Refused, with nothing changed: nothing to undo, outside the window, a document changed since
//!   by a change still in force (an undone change and its undo cancel out), a deleted document, or
//!   a document whose current state is not what the log says.
//! - Documents get back category, status, categorized_by and categorized_at; counters move as the
//!   application's own rule moves them (+1 on the category a document enters, -1 on the one it
//!   leaves; batch and session categorized/skipped by the status change); a merged-away category
//!   that gets documents back is no longer marked merged.
//! - The undo's own changes are logged by the triggers with source `undo`; the undone rows point
//!   to them (`undone_by`), so repeated calls walk further back.

use crate::attach::sql;
use crate::error::{LbError, LbResult};
use crate::privilege;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;
use serde::Serialize;
use std::collections::BTreeMap;

/// One logged change selected for undo.
struct LoggedChange {
    id: i64,
    document_id: String,
    old_category: Option<String>,
    new_category: Option<String>,
    old_status: String,
    new_status: String,
    old_categorized_by: Option<String>,
    old_categorized_at: Option<pgrx::datum::TimestampWithTimeZone>,
}

/// Per document: the state to go back to, and the state the log says it is in now.
struct DocumentUndo {
    to_category: Option<String>,
    to_status: String,
    to_categorized_by: Option<String>,
    to_categorized_at: Option<pgrx::datum::TimestampWithTimeZone>,
    from_category: Option<String>,
    from_status: String,
    last_log_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredDocument {
    document_id: String,
    category_id: Option<String>,
    status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoResult {
    actor_id: String,
    session_id: String,
    transaction_id: String,
    bulk: bool,
    undone_changes: usize,
    documents: Vec<RestoredDocument>,
}

fn refused(code: PgSqlErrorCode, message: String) -> LbError {
    LbError::new(code, message)
}

/// Undoes `actor`'s most recent change (to `document`, when given). Runs in the caller's
/// transaction; every query takes a fresh snapshot after the locks, so racing writers are seen.
pub fn undo_last(actor: &str, document: Option<&str>) -> LbResult<UndoResult> {
    // A partner's restore is undone only by an administrator: an operator (the application's
    // role) could otherwise revert it and have the revert recorded in the partner's name.
    let sources: Vec<&str> = if privilege::session_is_admin()? {
        vec!["app", "restore"]
    } else {
        vec!["app"]
    };
    Spi::connect_mut(|client| {
        // One undo per actor at a time: two racing undos must not pick the same change.
        client.update(
            "SELECT pg_advisory_xact_lock(hashtext('legacy_backup.undo'), hashtext($1))",
            None,
            &[actor.into()],
        )?;

        // Within the window, found through the BRIN index on changed_at.
        let target = client.update(
            &sql("SELECT l.id, l.txid::text, l.session_id \
             FROM @extschema@.category_assignment_logs l \
             WHERE l.changed_at >= now() - pg_catalog.make_interval(secs => $4) \
               AND l.changed_by = $1 AND l.source = ANY($3) AND l.undone_by IS NULL \
               AND l.old_status IS NOT NULL AND l.new_status IS NOT NULL \
               AND ($2::text IS NULL OR l.document_id = $2) \
             ORDER BY l.changed_at DESC, l.id DESC LIMIT 1")?,
            None,
            &[
                actor.into(),
                document.into(),
                sources.clone().into(),
                crate::guc::undo_window().as_secs_f64().into(),
            ],
        )?;
        if target.is_empty() {
            // Tell "too old" from "nothing at all" (a scan of older history: the refusal path only).
            let older = client.update(
                &sql("SELECT (now() - max(l.changed_at))::text \
                 FROM @extschema@.category_assignment_logs l \
                 WHERE l.changed_by = $1 AND l.source = ANY($3) AND l.undone_by IS NULL \
                   AND l.old_status IS NOT NULL AND l.new_status IS NOT NULL \
                   AND ($2::text IS NULL OR l.document_id = $2)")?,
                None,
                &[actor.into(), document.into(), sources.clone().into()],
            )?;
            let row = older.first();
            if let Some(age) = row.get::<String>(1)? {
                let window = crate::guc::text(&crate::guc::UNDO_WINDOW);
                return Err(refused(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("the most recent change by \"{actor}\" is outside the undo window"),
                )
                .detail(format!("It was made {age} ago; legacy_backup.undo_window is {window}."))
                .hint("Restore from a snapshot instead, or ask a superuser to widen legacy_backup.undo_window."));
            }
            let scope = document
                .map(|d| format!(" to document \"{d}\""))
                .unwrap_or_default();
            return Err(refused(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("\"{actor}\" has no change{scope} left to undo"),
            )
            .hint("Only changes logged with this actor id (legacy_backup.actor or categorized_by) can be undone."));
        }
        let row = target.first();
        let target_id: i64 = row.get(1)?.unwrap_or_default();
        let txid: String = row.get(2)?.unwrap_or_default();
        let session_id: String = row.get(3)?.unwrap_or_default();

        let changes = load_changes(
            client,
            actor,
            target_id,
            &txid,
            document.is_some(),
            &sources,
        )?;
        let plan = plan_documents(&changes);
        let doc_ids: Vec<String> = plan.keys().cloned().collect();
        check_documents(client, &plan)?;

        let log_high_water: i64 = client
            .update(
                &sql("SELECT coalesce(max(id), 0) FROM @extschema@.category_assignment_logs")?,
                None,
                &[],
            )?
            .first()
            .get(1)?
            .unwrap_or(0);
        let to_category: Vec<Option<String>> =
            plan.values().map(|p| p.to_category.clone()).collect();
        let to_status: Vec<String> = plan.values().map(|p| p.to_status.clone()).collect();
        let to_by: Vec<Option<String>> =
            plan.values().map(|p| p.to_categorized_by.clone()).collect();
        let to_at: Vec<Option<pgrx::datum::TimestampWithTimeZone>> =
            plan.values().map(|p| p.to_categorized_at).collect();
        let from_category: Vec<Option<String>> =
            plan.values().map(|p| p.from_category.clone()).collect();
        let from_status: Vec<String> = plan.values().map(|p| p.from_status.clone()).collect();
        // The triggers record the undo itself, attributed to the actor, with source `undo`; the
        // UPDATE runs as the documents' owner.
        let revert = sql("UPDATE @extschema@.extracted_documents d SET category_id = p.cat, status = p.status::@extschema@.\"DocumentCategorizationStatus\", \
                    categorized_by = p.by, categorized_at = p.at, updated_at = now() \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS p(doc, cat, status, by, at) \
             WHERE d.id = p.doc")?;
        privilege::with_change_source("undo", actor, || {
            crate::audit_trail::writing(&doc_ids, || {
                client.update(
                    &revert,
                    None,
                    &[
                        doc_ids.clone().into(),
                        to_category.clone().into(),
                        to_status.clone().into(),
                        to_by.into(),
                        to_at.into(),
                    ],
                )
            })?;
            privilege::verify_written(client, "undo", &doc_ids, &to_category, &to_status)
        })?;
        let undone_ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
        client.update(
            &sql(
                "UPDATE @extschema@.category_assignment_logs o SET undone_by = u.id \
             FROM @extschema@.category_assignment_logs u \
             WHERE u.id > $1 AND u.source = 'undo' AND u.txid = pg_current_xact_id() \
               AND u.document_id = o.document_id AND o.id = ANY($2)",
            )?,
            None,
            &[log_high_water.into(), undone_ids.clone().into()],
        )?;
        // The counters are the application's tables: written as their owner.
        privilege::as_owner_of("legacy_import_sessions", || {
            apply_counter_moves(
                client,
                &doc_ids,
                &from_category,
                &to_category,
                &from_status,
                &to_status,
            )
        })?;

        let result = UndoResult {
            actor_id: actor.to_string(),
            session_id: session_id.clone(),
            transaction_id: txid.clone(),
            bulk: plan.len() > 1,
            undone_changes: changes.len(),
            documents: plan
                .iter()
                .map(|(doc, p)| RestoredDocument {
                    document_id: doc.clone(),
                    category_id: p.to_category.clone(),
                    status: p.to_status.clone(),
                })
                .collect(),
        };
        let details = serde_json::json!({
            "undoneLogIds": undone_ids,
            "transactionId": txid,
            "documents": plan.len(),
            "bulk": plan.len() > 1,
            "documentIds": doc_ids.iter().take(100).collect::<Vec<_>>(),
        });
        crate::app_audit_log::write(
            client,
            &session_id,
            actor,
            "CATEGORIZATION_UNDONE",
            &details,
        )?;
        Ok(result)
    })
}

/// The changes to undo: the target alone when a document was named, else every change the
/// actor made in the target's transaction that is not undone yet.
fn load_changes(
    client: &mut SpiClient<'_>,
    actor: &str,
    target_id: i64,
    txid: &str,
    single: bool,
    sources: &[&str],
) -> LbResult<Vec<LoggedChange>> {
    let rows = client.update(
        &sql("SELECT l.id, l.document_id, l.old_category_id, l.new_category_id, l.old_status, l.new_status, \
                l.old_categorized_by, l.old_categorized_at \
         FROM @extschema@.category_assignment_logs l \
         WHERE CASE WHEN $4 THEN l.id = $2 \
                    ELSE l.txid = $3::xid8 AND l.changed_by = $1 AND l.source = ANY($5) \
                         AND l.undone_by IS NULL AND l.old_status IS NOT NULL AND l.new_status IS NOT NULL \
                         AND l.changed_at >= now() - pg_catalog.make_interval(secs => $6) END \
         ORDER BY l.id")?,
        None,
        &[
            actor.into(),
            target_id.into(),
            txid.into(),
            single.into(),
            sources.to_vec().into(),
            crate::guc::undo_window().as_secs_f64().into(),
        ],
    )?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        changes.push(LoggedChange {
            id: row.get(1)?.unwrap_or_default(),
            document_id: row.get(2)?.unwrap_or_default(),
            old_category: row.get(3)?,
            new_category: row.get(4)?,
            old_status: row.get(5)?.unwrap_or_default(),
            new_status: row.get(6)?.unwrap_or_default(),
            old_categorized_by: row.get(7)?,
            old_categorized_at: row.get(8)?,
        });
    }
    Ok(changes)
}

/// Collapses several changes of one document (in id order) into one move: back to the state
/// before the first, from the state after the last.
fn plan_documents(changes: &[LoggedChange]) -> BTreeMap<String, DocumentUndo> {
    let mut plan: BTreeMap<String, DocumentUndo> = BTreeMap::new();
    for c in changes {
        plan.entry(c.document_id.clone())
            .and_modify(|p| {
                p.from_category = c.new_category.clone();
                p.from_status = c.new_status.clone();
                p.last_log_id = c.id;
            })
            .or_insert_with(|| DocumentUndo {
                to_category: c.old_category.clone(),
                to_status: c.old_status.clone(),
                to_categorized_by: c.old_categorized_by.clone(),
                to_categorized_at: c.old_categorized_at,
                from_category: c.new_category.clone(),
                from_status: c.new_status.clone(),
                last_log_id: c.id,
            });
    }
    plan
}

/// Locks the documents, then refuses if any was changed since by a change still in force (changes
/// that were undone, and the undos themselves, cancel out), was deleted, or is not in the state
/// the log says.
fn check_documents(
    client: &mut SpiClient<'_>,
    plan: &BTreeMap<String, DocumentUndo>,
) -> LbResult<()> {
    let doc_ids: Vec<String> = plan.keys().cloned().collect();
    let last_ids: Vec<i64> = plan.values().map(|p| p.last_log_id).collect();
    let lock = sql("SELECT id, category_id, pg_catalog.format('%s', status) FROM @extschema@.extracted_documents WHERE id = ANY($1) ORDER BY id FOR UPDATE")?;
    let mut found = BTreeMap::new();
    privilege::as_owner_of("extracted_documents", || {
        for row in client.update(&lock, None, &[doc_ids.clone().into()])? {
            let id: String = row.get(1)?.unwrap_or_default();
            found.insert(
                id,
                (
                    row.get::<String>(2)?,
                    row.get::<String>(3)?.unwrap_or_default(),
                ),
            );
        }
        Ok(())
    })?;
    let later = client.update(
        &sql("SELECT l.document_id, l.changed_by, to_char(l.changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US \"UTC\"') \
         FROM unnest($1::text[], $2::int8[]) AS p(doc, last_id) \
         JOIN @extschema@.extracted_documents d ON d.id = p.doc \
         JOIN @extschema@.category_assignment_logs l ON l.session_id = d.session_id AND l.document_id = p.doc AND l.id > p.last_id \
         WHERE l.source <> 'undo' AND l.undone_by IS NULL \
         ORDER BY l.id LIMIT 1")?,
        None,
        &[doc_ids.clone().into(), last_ids.into()],
    )?;
    if !later.is_empty() {
        let row = later.first();
        let doc: String = row.get(1)?.unwrap_or_default();
        let by: String = row.get(2)?.unwrap_or_default();
        let at: String = row.get(3)?.unwrap_or_default();
        return Err(refused(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("cannot undo: document \"{doc}\" was changed since by \"{by}\""),
        )
        .detail(format!(
            "That change was made at {at}; undoing now would discard it."
        ))
        .hint("Ask that user to undo their change first, or categorize the document again."));
    }
    for (doc, p) in plan {
        match found.get(doc) {
            None => {
                return Err(refused(
                    PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                    format!("cannot undo: document \"{doc}\" no longer exists"),
                ))
            }
            Some((category, status)) if *category != p.from_category || *status != p.from_status => {
                return Err(refused(
                    PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                    format!("cannot undo: document \"{doc}\" is no longer in the state this change left it in"),
                )
                .detail(format!(
                    "The log says category {}, status {}; the row has category {}, status {}.",
                    p.from_category.as_deref().unwrap_or("none"),
                    p.from_status,
                    category.as_deref().unwrap_or("none"),
                    status
                ))
                .hint("The document was changed without being logged (were the triggers disabled?); categorize it again instead."))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Moves the denormalized counters as the application's own categorize rule would.
fn apply_counter_moves(
    client: &mut SpiClient<'_>,
    docs: &[String],
    from_category: &[Option<String>],
    to_category: &[Option<String>],
    from_status: &[String],
    to_status: &[String],
) -> LbResult<()> {
    let args = || {
        [
            docs.to_vec().into(),
            from_category.to_vec().into(),
            to_category.to_vec().into(),
            from_status.to_vec().into(),
            to_status.to_vec().into(),
        ]
    };
    const MOVES: &str = "WITH moves AS ( \
            SELECT p.doc, p.from_cat, p.to_cat, \
                   (p.to_status = 'Categorized')::int - (p.from_status = 'Categorized')::int AS cat_delta, \
                   (p.to_status = 'Skipped')::int - (p.from_status = 'Skipped')::int AS skip_delta, \
                   d.batch_id, d.session_id \
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS p(doc, from_cat, to_cat, from_status, to_status) \
            JOIN @extschema@.extracted_documents d ON d.id = p.doc) ";
    // Categories gain and lose documents (and a category a document moves back into is no longer
    // merged away); batches and sessions move their categorized and skipped counts.
    let statements = [
        "{MOVES}, deltas AS ( \
            SELECT to_cat AS cat, 1 AS delta FROM moves WHERE to_cat IS NOT NULL AND to_cat IS DISTINCT FROM from_cat \
            UNION ALL SELECT from_cat, -1 FROM moves WHERE from_cat IS NOT NULL AND to_cat IS DISTINCT FROM from_cat) \
         UPDATE @extschema@.import_categories c SET document_count = c.document_count + x.delta, updated_at = now() \
         FROM (SELECT cat, sum(delta)::int AS delta FROM deltas GROUP BY cat) x WHERE c.id = x.cat",
        "{MOVES} UPDATE @extschema@.import_categories c SET merged_into = NULL, updated_at = now() \
         WHERE c.id IN (SELECT to_cat FROM moves) AND c.merged_into IN (SELECT from_cat FROM moves)",
        "{MOVES} UPDATE @extschema@.document_batches b SET categorized_count = b.categorized_count + x.c, \
                skipped_count = b.skipped_count + x.s, updated_at = now() \
         FROM (SELECT batch_id, sum(cat_delta)::int AS c, sum(skip_delta)::int AS s FROM moves \
               WHERE batch_id IS NOT NULL GROUP BY batch_id) x \
         WHERE b.id = x.batch_id AND (x.c <> 0 OR x.s <> 0)",
        "{MOVES} UPDATE @extschema@.legacy_import_sessions s SET categorized_count = s.categorized_count + x.c, \
                skipped_count = s.skipped_count + x.s, updated_at = now() \
         FROM (SELECT session_id, sum(cat_delta)::int AS c, sum(skip_delta)::int AS s FROM moves GROUP BY session_id) x \
         WHERE s.id = x.session_id AND (x.c <> 0 OR x.s <> 0)",
    ];
    for statement in statements {
        client.update(&sql(&statement.replace("{MOVES}", MOVES))?, None, &args())?;
    }
    Ok(())
}
