//! One error type for the whole extension: every failure carries an explicit SQLSTATE, and
//! usually DETAIL and HINT, so callers (Prisma, psql, triggers) can act on it.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type LbResult<T> = Result<T, LbError>;

impl LbError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        LbError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }
    pub fn null_value(param: &str) -> Self {
        Self::new(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{param} must not be NULL"),
        )
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_NO_DATA_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message)
    }

    /// Raises this error as a PostgreSQL ERROR; never returns.
    pub fn raise(self) -> ! {
        ErrorReport::from(self).report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

impl fmt::Display for LbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LbError {}

impl From<LbError> for ErrorReport {
    fn from(e: LbError) -> Self {
        let mut report = ErrorReport::new(e.code, e.message, "legacy_backup");
        if let Some(detail) = e.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = e.hint {
            report = report.set_hint(hint);
        }
        report
    }
}

/// Object storage failing a SQL function's request (verify, fetch, manual cleanup).
impl From<crate::storage::StorageError> for LbError {
    fn from(e: crate::storage::StorageError) -> Self {
        LbError::new(PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE, format!("object storage: {e}"))
            .hint("Check the legacy_backup.r2_* settings and the credentials file, and that the object storage is reachable.")
    }
}

/// SPI failures are bugs or catalog trouble, never user input: report them as internal errors.
impl From<pgrx::spi::SpiError> for LbError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        LbError::internal(format!("SPI failure: {e}"))
    }
}

/// Unwraps a domain result inside a `#[pg_extern]`, raising the error with its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for LbResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
