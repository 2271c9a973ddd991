//! One row into a plain table without planning a query: the way PostgreSQL's logical
//! replication applies a row (`ExecSimpleRelationInsert`). The audit trail writes one log row
//! per categorization; through SPI, each of those paid for a cached plan's executor start-up and
//! for parsing the table's CHECK constraints from their stored text, about as much as the insert
//! itself (callgrind figures in BENCHMARKS.md).
//!
//! What an INSERT does, this does too: columns not given take their defaults (identity,
//! `clock_timestamp()`, `pg_current_xact_id()`), evaluated from the catalog; NOT NULL and CHECK
//! constraints are checked, indexes maintained, uniqueness enforced. What the executor would
//! read from the catalog on every statement (the column positions, the defaults' and CHECK
//! constraints' parsed trees) is kept per backend and dropped whenever the table's relation
//! cache entry is invalidated (any ALTER TABLE, trigger or constraint change); planning and
//! compiling those trees happens on every insert, as in the executor.
//!
//! Tables this path does not cover are left to the caller's SQL: any trigger (row or statement)
//! on INSERT, rules, forced row-level security, generated columns, a domain-typed column left to
//! its default, partitions and non-tables, and a role without INSERT privilege (the SQL then
//! reports it). One difference remains by design: no executor hooks run, so pg_stat_statements
//! and pgaudit see the categorizing statement but not this row's insert.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::IntoDatum;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;

/// A value for one column.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Text(Option<&'a str>),
    Timestamp(Option<TimestampWithTimeZone>),
}

impl Value<'_> {
    fn type_oid(self) -> pg_sys::Oid {
        match self {
            Value::Text(_) => pg_sys::TEXTOID,
            Value::Timestamp(_) => pg_sys::TIMESTAMPTZOID,
        }
    }

    /// The value as a datum allocated in the current memory context; None for NULL.
    unsafe fn datum(self) -> Option<pg_sys::Datum> {
        match self {
            Value::Text(text) => text.map(|t| {
                pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                    t.as_ptr().cast(),
                    t.len() as i32,
                ))
            }),
            Value::Timestamp(time) => time.and_then(|t| t.into_datum()),
        }
    }
}

/// What happened to the row.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Inserted,
    /// The table needs what only a planned INSERT does (the reason says what); nothing was written.
    NotCovered(&'static str),
}

/// What one insert needs from the catalog, for one table and one list of column names.
struct TableCache {
    relid: pg_sys::Oid,
    names: Vec<&'static CStr>,
    /// Why this path cannot write the table, or the positions of the named columns.
    covered: Result<Vec<i16>, &'static str>,
    /// Parsed defaults of the other columns, by 0-based position, in column order.
    defaults: Vec<(usize, *mut pg_sys::Node)>,
    /// Parsed CHECK constraints, in the relation cache's order (the order `ExecRelCheck` uses).
    checks: Vec<*mut pg_sys::Node>,
}

thread_local! {
    static CACHE: RefCell<Option<TableCache>> = const { RefCell::new(None) };
    /// Apart from `CACHE`, so the relation-cache callback never needs its borrow: the callback
    /// can run in the middle of a rebuild (a catalog read there may process invalidations).
    static CACHE_VALID: Cell<bool> = const { Cell::new(false) };
    static CACHE_RELID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// Holds the cached trees; reset on every rebuild, kept for the backend's life.
    static CACHE_CONTEXT: Cell<pg_sys::MemoryContext> = const { Cell::new(std::ptr::null_mut()) };
}

/// Registers the relation-cache callback that drops the cache; once, in `_PG_init`.
pub fn register_callbacks() {
    // SAFETY: a static callback registered once per backend.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), pg_sys::Datum::from(0)) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relcache(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || relid == CACHE_RELID.get() {
        CACHE_VALID.set(false);
    }
}

/// Inserts one row into table `relid`: `values` by column name, every other column its default.
/// The caller holds whatever role the row must be written as. Errors (a constraint, a unique
/// index) are raised as PostgreSQL errors, as from an INSERT.
pub fn insert(relid: pg_sys::Oid, values: &[(&'static CStr, Value)]) -> Outcome {
    // SAFETY: executor calls in the order logical replication's apply uses them; the relation
    // is opened and locked here and closed before returning (an error aborts the transaction,
    // which releases them).
    unsafe {
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // Opening takes the lock, which processes pending invalidations: the cache is checked
        // after it.
        let rel = pg_sys::table_open(relid, lock);
        let (covered, default_trees, check_trees) = CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let current = CACHE_VALID.get()
                && cache.as_ref().is_some_and(|c| {
                    c.relid == relid && c.names.iter().eq(values.iter().map(|(name, _)| name))
                });
            if !current {
                // Valid from here on unless an invalidation arrives during the build; then this
                // insert still uses what was read (the table cannot change while it is locked)
                // and the next one builds again.
                *cache = None;
                CACHE_RELID.set(relid);
                CACHE_VALID.set(true);
                *cache = Some(build_cache(rel, values));
            }
            let cache = cache.as_ref().expect("built above");
            (
                cache.covered.clone(),
                cache.defaults.clone(),
                cache.checks.clone(),
            )
        });
        // An INSERT checks the role's privilege; a REVOKE must stop this path too.
        let allowed = pg_sys::pg_class_aclcheck(
            relid,
            pg_sys::GetUserId(),
            pg_sys::ACL_INSERT as pg_sys::AclMode,
        ) == pg_sys::AclResult::ACLCHECK_OK;
        let attnums = match (covered, allowed) {
            (Ok(attnums), true) => attnums,
            (Ok(_), false) => {
                pg_sys::table_close(rel, lock);
                return Outcome::NotCovered("the role may not insert into the table");
            }
            (Err(reason), _) => {
                pg_sys::table_close(rel, lock);
                return Outcome::NotCovered(reason);
            }
        };
        let estate = pg_sys::CreateExecutorState();
        let old_context = pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        let result_rel =
            pgrx::PgBox::<pg_sys::ResultRelInfo>::alloc_node(pg_sys::NodeTag::T_ResultRelInfo)
                .into_pg();
        pg_sys::InitResultRelInfo(result_rel, rel, 0, std::ptr::null_mut(), 0);
        (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
        pg_sys::ExecOpenIndices(result_rel, false);
        // Every cached tree is copied into this insert's memory before any is planned: planning
        // may run functions, and a write they made could rebuild the cache under us.
        let default_copies: Vec<(usize, *mut pg_sys::Node)> = default_trees
            .iter()
            .map(|&(i, tree)| (i, copy(tree)))
            .collect();
        let check_copies: Vec<*mut pg_sys::Node> = check_trees.iter().map(|&t| copy(t)).collect();
        let defaults: Vec<(usize, *mut pg_sys::ExprState)> = default_copies
            .into_iter()
            .map(|(i, tree)| (i, compile(tree)))
            .collect();
        set_checks(rel, result_rel, &check_copies);

        let slot = pg_sys::table_slot_create(rel, &mut (*estate).es_tupleTable);
        let natts = (*(*rel).rd_att).natts as usize;
        let slot_values = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let slot_nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        slot_nulls.fill(true);
        let econtext = pg_sys::MakePerTupleExprContext(estate);
        pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
        for (&attnum, (_, value)) in attnums.iter().zip(values) {
            if let Some(datum) = value.datum() {
                let i = attnum as usize - 1;
                slot_values[i] = datum;
                slot_nulls[i] = false;
            }
        }
        // Defaults, in column order as an INSERT evaluates them.
        for (i, state) in defaults {
            slot_values[i] = pg_sys::ExecEvalExprSwitchContext(state, econtext, &mut slot_nulls[i]);
        }
        pg_sys::MemoryContextSwitchTo((*estate).es_query_cxt);
        pg_sys::ExecStoreVirtualTuple(slot);
        pg_sys::ExecSimpleRelationInsert(result_rel, estate, slot);
        pg_sys::MemoryContextSwitchTo(old_context);

        pg_sys::ExecCloseIndices(result_rel);
        pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
        pg_sys::FreeExecutorState(estate);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        // As logical replication's apply does after each change: later commands of this
        // transaction see the row.
        pg_sys::CommandCounterIncrement();
        Outcome::Inserted
    }
}

/// A copy of a cached tree in the current memory context.
unsafe fn copy(tree: *mut pg_sys::Node) -> *mut pg_sys::Node {
    pg_sys::copyObjectImpl(tree.cast()).cast()
}

/// A parsed expression planned and compiled in the current memory context, as
/// `ExecPrepareExpr` does.
unsafe fn compile(tree: *mut pg_sys::Node) -> *mut pg_sys::ExprState {
    pg_sys::ExecInitExpr(
        pg_sys::expression_planner(tree.cast()),
        std::ptr::null_mut(),
    )
}

/// Gives `result_rel` its CHECK constraints ready to run, as `ExecRelCheck` would build them on
/// the first row, from the cached trees: only the parsing is saved.
unsafe fn set_checks(
    rel: pg_sys::Relation,
    result_rel: *mut pg_sys::ResultRelInfo,
    trees: &[*mut pg_sys::Node],
) {
    let constr = (*(*rel).rd_att).constr;
    let checks = match constr.is_null() || (*constr).num_check == 0 {
        true => &[][..],
        false => std::slice::from_raw_parts((*constr).check, (*constr).num_check as usize),
    };
    // The cache is rebuilt on every invalidation of the table, and its constraints cannot change
    // while the row lock taken above is held: a mismatch is a bug, never a skipped constraint.
    assert_eq!(
        trees.len(),
        checks.len(),
        "cached CHECK constraints out of step"
    );
    if checks.is_empty() {
        return;
    }
    let exprs = pg_sys::palloc0(checks.len() * std::mem::size_of::<*mut pg_sys::ExprState>())
        .cast::<*mut pg_sys::ExprState>();
    for (i, (&tree, _check)) in trees.iter().zip(checks).enumerate() {
        #[cfg(feature = "pg18")]
        if !_check.ccenforced {
            continue;
        }
        *exprs.add(i) = compile(tree);
    }
    #[cfg(not(feature = "pg18"))]
    {
        (*result_rel).ri_ConstraintExprs = exprs;
    }
    #[cfg(feature = "pg18")]
    {
        (*result_rel).ri_CheckConstraintExprs = exprs;
    }
}

/// Reads what inserts into `rel` need from the catalog, into the cache's memory (reset first).
unsafe fn build_cache(rel: pg_sys::Relation, values: &[(&'static CStr, Value)]) -> TableCache {
    let mut context = CACHE_CONTEXT.get();
    if context.is_null() {
        context = pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"legacy_backup direct insert".as_ptr(),
            pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
            pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
            pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
        );
        CACHE_CONTEXT.set(context);
    } else {
        pg_sys::MemoryContextReset(context);
    }
    let mut cache = TableCache {
        relid: (*rel).rd_id,
        names: values.iter().map(|(name, _)| *name).collect(),
        covered: Err(""),
        defaults: Vec::new(),
        checks: Vec::new(),
    };
    if let Some(reason) = not_covered(rel) {
        cache.covered = Err(reason);
        return cache;
    }
    let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
    let mut attnums = Vec::with_capacity(values.len());
    for (name, value) in values {
        let attnum = pg_sys::SPI_fnumber((*rel).rd_att, name.as_ptr());
        if attnum <= 0 {
            // The caller's SQL reports it properly.
            cache.covered = Err("a named column is missing");
            return cache;
        }
        if tupdesc.get(attnum as usize - 1).map(|a| a.atttypid) != Some(value.type_oid()) {
            cache.covered = Err("a column's type is not the one given");
            return cache;
        }
        attnums.push(attnum as i16);
    }
    // A domain column left to its default must still meet the domain's constraints, which
    // only a planned INSERT adds: such a table goes through it.
    let domain_default = tupdesc.iter().enumerate().any(|(i, attr)| {
        !attr.attisdropped
            && !attnums.contains(&(i as i16 + 1))
            && pg_sys::get_typtype(attr.atttypid) == pg_sys::TYPTYPE_DOMAIN as std::ffi::c_char
    });
    if domain_default {
        cache.covered = Err("a column left to its default has a domain type");
        return cache;
    }
    let old_context = pg_sys::MemoryContextSwitchTo(context);
    for (i, attr) in tupdesc.iter().enumerate() {
        if attr.attisdropped || attnums.contains(&(i as i16 + 1)) {
            continue;
        }
        let default = pg_sys::build_column_default(rel, i as i32 + 1);
        if !default.is_null() {
            cache.defaults.push((i, default));
        }
    }
    let constr = (*(*rel).rd_att).constr;
    if !constr.is_null() && (*constr).num_check > 0 {
        let checks = std::slice::from_raw_parts((*constr).check, (*constr).num_check as usize);
        cache.checks = checks
            .iter()
            .map(|check| pg_sys::stringToNode(check.ccbin).cast::<pg_sys::Node>())
            .collect();
    }
    pg_sys::MemoryContextSwitchTo(old_context);
    cache.covered = Ok(attnums);
    cache
}

/// Why an INSERT into `rel` needs more than this path does, or None.
unsafe fn not_covered(rel: pg_sys::Relation) -> Option<&'static str> {
    let class = &*(*rel).rd_rel;
    if class.relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char || class.relispartition {
        return Some("not a plain table");
    }
    if class.relrowsecurity && class.relforcerowsecurity {
        return Some("row-level security is forced");
    }
    if class.relhasrules {
        return Some("the table has rules");
    }
    let triggers = (*rel).trigdesc;
    if !triggers.is_null() {
        let t = &*triggers;
        if t.trig_insert_before_row
            || t.trig_insert_after_row
            || t.trig_insert_instead_row
            || t.trig_insert_before_statement
            || t.trig_insert_after_statement
            || t.trig_insert_new_table
        {
            return Some("the table has INSERT triggers");
        }
    }
    let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
    if tupdesc.iter().any(|attr| attr.attgenerated != 0) {
        return Some("the table has generated columns");
    }
    None
}
