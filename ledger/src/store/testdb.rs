//! Throwaway databases for tests, benchmarks and the crash harness: each
//! gets its own database on the server `DATABASE_URL` names, migrated, and
//! dropped afterwards. Never a mock: this is the real server.

use super::postgres::PgStore;
use crate::error::{LedgerError, Result};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every database this creates.
const PREFIX: &str = "sparkcap_t_";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database.
    pub url: String,
    name: String,
    admin_url: String,
}

/// The server URL tests use: `DATABASE_URL`.
pub fn server_url() -> Result<String> {
    std::env::var("DATABASE_URL").map_err(|_| {
        LedgerError::Configuration(
            "DATABASE_URL is not set: run the tests with ./scripts/test.sh, which starts a throwaway \
             PostgreSQL, or export DATABASE_URL=postgres://user@host:port/db"
                .into(),
        )
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| i + scheme_end);
    let mut out = format!("{}/{}", &base[..path_start], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDatabase {
    /// Creates and migrates a fresh database; drops leftovers of crashed
    /// test runs older than two hours on the way.
    pub async fn create() -> Result<Self> {
        let db = Self::create_empty().await?;
        db.store().await?.migrate().await?;
        Ok(db)
    }

    /// Creates a fresh database with no schema (for upgrade tests, which
    /// build an older ledger first).
    pub async fn create_empty() -> Result<Self> {
        let admin_url = server_url()?;
        let mut admin = PgConnection::connect(&admin_url).await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sparkcap\\_t\\_%'")
                .fetch_all(&mut admin)
                .await?;
        for name in stale {
            let born = name
                .trim_start_matches(PREFIX)
                .split('_')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            if born.is_some_and(|b| b + 7200 < now) {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        }
        let name = format!("{PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await?;
        let db = Self {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        };
        Ok(db)
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on this database.
    pub async fn store(&self) -> Result<PgStore> {
        PgStore::connect(&self.url).await
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, ending any session still on it.
    pub async fn drop_db(self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_database_name() {
        assert_eq!(with_database("postgres://u@h:5/db", "x"), "postgres://u@h:5/x");
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
