//! In-database tests (`cargo pgrx test`). Each runs in a transaction that is rolled back.
