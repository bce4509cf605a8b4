//! A pooled connection, or a transaction on one, whose statements fail with a
//! [`StoreError`] under one context: the store's methods name their context once (in
//! [`PgStore::with_conn`](super::PgStore)) instead of mapping every statement's error.

use deadpool_postgres::{Client, GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::db;
use crate::storage::StoreError;

/// A `u64` as a `BIGINT` (PostgreSQL has no unsigned integers), saturating.
pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `BIGINT` column as a `u64`; a negative value (never written) reads as 0.
pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The parameters of one statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection (`C` = [`Client`]) or a transaction (`C` = [`Transaction`]) with the
/// context its errors are reported under.
pub(super) struct Conn<C> {
    c: C,
    context: &'static str,
}

impl Conn<Client> {
    pub fn new(c: Client, context: &'static str) -> Conn<Client> {
        Conn { c, context }
    }

    /// Begins a transaction; dropping it uncommitted rolls it back.
    pub async fn transaction(&mut self) -> Result<Conn<Transaction<'_>>, StoreError> {
        let context = self.context;
        let tx = self.c.transaction().await.map_err(|e| db(context, e))?;
        Ok(Conn { c: tx, context })
    }
}

impl Conn<Transaction<'_>> {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.c.commit().await.map_err(|e| db(self.context, e))
    }
}

impl<C: GenericClient> Conn<C> {
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        self.c
            .execute(sql, params)
            .await
            .map_err(|e| db(self.context, e))
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.c
            .query(sql, params)
            .await
            .map_err(|e| db(self.context, e))
    }

    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        self.c
            .query_one(sql, params)
            .await
            .map_err(|e| db(self.context, e))
    }

    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        self.c
            .query_opt(sql, params)
            .await
            .map_err(|e| db(self.context, e))
    }
}
