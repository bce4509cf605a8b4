//! Whole-database snapshots for backups, and restoring one in place of the database.
//!
//! A snapshot is a plain SQLite image that exists in memory only: SQLCipher exports the
//! encrypted database into an attached in-memory database (one statement on the writer
//! thread, so it is consistent), which is then serialized. A restore goes the other way:
//! the image is deserialized into an in-memory database, exported into a new file keyed
//! with this install's database key, and that file takes the database's place. No plain
//! page ever reaches the disk.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use zeroize::Zeroizing;

use super::{Db, StoreError, open_connection};

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An in-memory database holding `image` (a plain SQLite file's bytes).
pub fn image_connection(image: &[u8]) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    conn.deserialize_read_exact(rusqlite::MAIN_DB, image, image.len(), false)?;
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(StoreError::Decode(format!(
            "the database in the backup is damaged: {ok}"
        )));
    }
    Ok(conn)
}

impl Db {
    /// A consistent plain image of the whole database, in memory only.
    pub fn snapshot(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.conn
            .execute_batch("ATTACH DATABASE ':memory:' AS snapshot KEY '';")?;
        let taken = (|| -> Result<Zeroizing<Vec<u8>>, StoreError> {
            self.conn
                .query_row("SELECT sqlcipher_export('snapshot')", [], |_| Ok(()))?;
            let version: i64 = self
                .conn
                .query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
            self.conn
                .execute_batch(&format!("PRAGMA snapshot.user_version = {version};"))?;
            let data = self.conn.serialize(c"snapshot")?;
            Ok(Zeroizing::new(data.to_vec()))
        })();
        if let Err(e) = self.conn.execute_batch("DETACH DATABASE snapshot;") {
            tracing::warn!(cause = %e, "detaching the snapshot failed");
        }
        taken
    }

    /// Replaces the whole database by the contents of `source` (an in-memory database from
    /// [`image_connection`]), encrypted under this database's key, then lets `fix` adjust
    /// it (in one transaction) before it is used. The old database is gone afterwards.
    pub fn restore(
        &mut self,
        source: Connection,
        fix: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let key = self.key.clone().ok_or_else(|| {
            StoreError::Decode(
                "a backup cannot be restored into the in-memory database of --ephemeral".into(),
            )
        })?;
        let importing = sibling(&self.path, ".importing");
        for p in [importing.clone(), sibling(&importing, "-journal")] {
            let _ = std::fs::remove_file(p);
        }
        let target = importing
            .to_str()
            .ok_or_else(|| StoreError::Decode("the data directory path is not UTF-8".into()))?;
        source.execute(
            "ATTACH DATABASE ?1 AS restored KEY ?2",
            rusqlite::params![target, key.sql_literal().as_str()],
        )?;
        source.query_row("SELECT sqlcipher_export('restored')", [], |_| Ok(()))?;
        let version: i64 = source.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
        source.execute_batch(&format!("PRAGMA restored.user_version = {version};"))?;
        source.execute_batch("DETACH DATABASE restored;")?;
        drop(source);
        let sync = |p: &Path| -> Result<(), StoreError> {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::Decode(format!("cannot sync {}: {e}", p.display())))
        };
        sync(&importing)?;
        // Objects derived from the old database (MLS groups) must not outlive it.
        self.cache.clear();
        // Close the old connection (SQLite checkpoints and removes its WAL), then swap.
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        drop(old);
        for p in [sibling(&self.path, "-wal"), sibling(&self.path, "-shm")] {
            let _ = std::fs::remove_file(p);
        }
        std::fs::rename(&importing, &self.path).map_err(|e| {
            StoreError::Decode(format!("cannot rename {}: {e}", importing.display()))
        })?;
        if let Some(dir) = self.path.parent() {
            sync(dir)?;
        }
        self.conn = open_connection(&self.path, &key)?;
        self.prepare()?;
        let tx = self.conn.transaction()?;
        fix(&tx)?;
        tx.commit()?;
        Ok(())
    }
}
