//! Read-only SPI. pgrx's `Spi::get_one*` run their query as an update, which gives the
//! transaction an xid: on a hot standby that fails ("cannot assign TransactionIds during
//! recovery"), and a function that only reads should not take one anyway. Every single-value read
//! of the extension goes through these; statements that write use `Spi::connect_mut`.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiError;

/// The first column of the first row, or None when there is no row or it is NULL.
pub fn one<T: FromDatum + IntoDatum>(query: &str) -> Result<Option<T>, SpiError> {
    one_with_args(query, &[])
}

/// `one` with arguments.
pub fn one_with_args<T: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> Result<Option<T>, SpiError> {
    Spi::connect(|client| {
        let table = client.select(query, Some(1), args)?;
        if table.is_empty() {
            Ok(None)
        } else {
            table.first().get_one::<T>()
        }
    })
}
