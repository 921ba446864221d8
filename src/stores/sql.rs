//! SQL stores (Celery's `db+` backend): PostgreSQL, MySQL/MariaDB and SQLite through sqlx.
//! Cleanup deletes exactly what Celery's `DatabaseBackend.cleanup` deletes (rows of the task and
//! group tables with `date_done` before the cutoff), in bounded batches instead of one statement.

use std::time::Instant;

use sqlx::Connection;

use super::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

pub struct SqlStore {
    engine: Engine,
    /// sqlx connection URL (credentials inside; never logged).
    url: String,
    task_table: String,
    group_table: String,
}

/// Quote an identifier (optionally schema-qualified) for the engine.
fn ident(engine: Engine, name: &str) -> String {
    name.split('.')
        .map(|p| match engine {
            Engine::Mysql => format!("`{}`", p.replace('`', "``")),
            _ => format!("\"{}\"", p.replace('"', "\"\"")),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Read `database_table_names`/`database_table_schemas` from the rendered settings.
fn table(cfg: &BackendConfig, which: &str, default: &str) -> String {
    let find = |setting: &str| -> Option<String> {
        cfg.settings
            .get(setting)?
            .get(which)?
            .as_str()
            .map(String::from)
    };
    let name = find("database_table_names").unwrap_or_else(|| default.to_string());
    match find("database_table_schemas") {
        Some(schema) => format!("{schema}.{name}"),
        None => name,
    }
}

impl SqlStore {
    pub fn new(cfg: &BackendConfig) -> Self {
        let rest = cfg.uri.trim_start_matches("db+");
        let (scheme, tail) = rest.split_once("://").unwrap_or((rest, ""));
        let engine_name = scheme.split('+').next().unwrap_or_default();
        let engine = match engine_name {
            "mysql" | "mariadb" => Engine::Mysql,
            "sqlite" => Engine::Sqlite,
            _ => Engine::Postgres,
        };
        let url = match engine {
            Engine::Postgres => format!("postgres://{tail}"),
            Engine::Mysql => format!("mysql://{tail}"),
            // SQLAlchemy: sqlite:////abs/path ; sqlx: sqlite:///abs/path
            // mode=rwc: like SQLAlchemy, a missing database file is created.
            Engine::Sqlite => format!("sqlite:///{}?mode=rwc", tail.trim_start_matches('/')),
        };
        SqlStore {
            engine,
            url,
            task_table: table(cfg, "task", "celery_taskmeta"),
            group_table: table(cfg, "group", "celery_tasksetmeta"),
        }
    }

    pub fn engine(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }

    async fn connect(&self) -> Result<sqlx::AnyConnection, StoreError> {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.url)
            .await
            .map_err(|e| StoreError::connect(self.engine(), e))
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let mut c = self.connect().await?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut c)
            .await
            .map_err(|e| StoreError::protocol(self.engine(), e))?;
        let _ = c.close().await;
        Ok(format!("SELECT 1 returned {one}"))
    }

    /// The cutoff as a UTC timestamp literal the engine compares with Celery's naive UTC `date_done`.
    fn cutoff_literal(cutoff_unix: i64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(cutoff_unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// Statements for one batch: count (dry run) and delete, bounded by the primary key.
    /// Statements for one batch: count (dry run), the upper id bound of the next batch, and the
    /// delete. PostgreSQL and SQLite walk the primary key (keyset: each batch is an id range after
    /// the previous one, found and deleted through the primary-key index, so no batch rescans the
    /// table or the dead rows of earlier batches). MySQL cannot LIMIT a subquery of IN but can
    /// LIMIT a DELETE ordered by the primary key.
    fn statements(
        &self,
        table: &str,
        batch: u32,
        cutoff: &str,
        after: i64,
        upto: Option<i64>,
    ) -> (String, String, String) {
        let t = ident(self.engine, table);
        let count = format!("SELECT COUNT(*) FROM {t} WHERE date_done < '{cutoff}'");
        let bound = format!(
            "SELECT id FROM {t} WHERE id > {after} AND date_done < '{cutoff}' ORDER BY id LIMIT 1 OFFSET {}",
            batch.saturating_sub(1)
        );
        let delete = match (self.engine, upto) {
            (Engine::Mysql, _) => {
                format!("DELETE FROM {t} WHERE date_done < '{cutoff}' ORDER BY id LIMIT {batch}")
            }
            (_, Some(upto)) => format!(
                "DELETE FROM {t} WHERE id > {after} AND id <= {upto} AND date_done < '{cutoff}'"
            ),
            (_, None) => format!("DELETE FROM {t} WHERE id > {after} AND date_done < '{cutoff}'"),
        };
        (count, bound, delete)
    }

    async fn table_exists(&self, c: &mut sqlx::AnyConnection, table: &str) -> bool {
        let q = format!(
            "SELECT COUNT(*) FROM {} WHERE 1 = 0",
            ident(self.engine, table)
        );
        sqlx::query(&q).fetch_all(&mut *c).await.is_ok()
    }

    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let mut c = self.connect().await?;
        let cutoff = Self::cutoff_literal(opts.cutoff_unix);
        let mut report = PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let started = Instant::now();
        let batch = opts.batch.max(1);
        for (is_group, table) in [(false, &self.task_table), (true, &self.group_table)] {
            if !self.table_exists(&mut c, table).await {
                continue; // Celery creates its tables lazily; no table, no results.
            }
            let (count, _, _) = self.statements(table, batch, &cutoff, 0, None);
            let n: u64 = if opts.dry_run {
                let n: i64 = sqlx::query_scalar(&count)
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| StoreError::protocol(self.engine(), e))?;
                n.max(0) as u64
            } else {
                let mut total = 0u64;
                let mut after = i64::MIN;
                loop {
                    let t0 = Instant::now();
                    let (done, last) = if self.engine == Engine::Mysql {
                        let (_, _, delete) = self.statements(table, batch, &cutoff, after, None);
                        let n = sqlx::query(&delete)
                            .execute(&mut c)
                            .await
                            .map_err(|e| StoreError::protocol(self.engine(), e))?
                            .rows_affected();
                        (n, n < u64::from(batch))
                    } else {
                        let (_, bound, _) = self.statements(table, batch, &cutoff, after, None);
                        let upto: Option<i64> = sqlx::query_scalar(&bound)
                            .fetch_optional(&mut c)
                            .await
                            .map_err(|e| StoreError::protocol(self.engine(), e))?;
                        let (_, _, delete) = self.statements(table, batch, &cutoff, after, upto);
                        let n = sqlx::query(&delete)
                            .execute(&mut c)
                            .await
                            .map_err(|e| StoreError::protocol(self.engine(), e))?
                            .rows_affected();
                        if let Some(u) = upto {
                            after = u;
                        }
                        (n, upto.is_none())
                    };
                    report.longest_batch = report.longest_batch.max(t0.elapsed());
                    report.batches += 1;
                    total += done;
                    if last {
                        break;
                    }
                    pace(opts.rate, report.tasks + report.groups + total, started).await;
                    tokio::task::yield_now().await;
                }
                total
            };
            if is_group {
                report.groups += n;
            } else {
                report.tasks += n;
            }
        }
        let _ = c.close().await;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(uri: &str) -> BackendConfig {
        BackendConfig {
            uri: uri.into(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_and_statements() {
        let pg = SqlStore::new(&cfg("db+postgresql+psycopg2://u:p%40w@h:5432/db"));
        assert_eq!(pg.url, "postgres://u:p%40w@h:5432/db");
        let (count, bound, delete) =
            pg.statements("celery_taskmeta", 500, "2026-01-01 00:00:00", 42, Some(900));
        assert!(count.contains("\"celery_taskmeta\" WHERE date_done < '2026-01-01 00:00:00'"));
        assert!(
            bound.contains("id > 42 AND") && bound.ends_with("LIMIT 1 OFFSET 499"),
            "{bound}"
        );
        assert!(
            delete.contains("id > 42 AND id <= 900 AND date_done <"),
            "{delete}"
        );
        let my = SqlStore::new(&cfg("db+mysql+pymysql://u:p@h:3306/db"));
        assert_eq!(my.url, "mysql://u:p@h:3306/db");
        assert!(my
            .statements("s.t", 10, "x", 0, None)
            .2
            .starts_with("DELETE FROM `s`.`t` WHERE"));
        let lite = SqlStore::new(&cfg("db+sqlite:////var/tmp/r.db"));
        assert_eq!(lite.url, "sqlite:///var/tmp/r.db?mode=rwc");
        assert_eq!(SqlStore::cutoff_literal(0), "1970-01-01 00:00:00");
    }

    #[test]
    fn custom_table_names_and_schemas() {
        let mut c = cfg("db+postgresql://u:p@h/db");
        c.settings.insert(
            "database_table_names".into(),
            serde_json::json!({"task": "my_tasks", "group": "my_groups"}),
        );
        c.settings.insert(
            "database_table_schemas".into(),
            serde_json::json!({"task": "results", "group": "results"}),
        );
        let s = SqlStore::new(&c);
        assert_eq!(s.task_table, "results.my_tasks");
        assert_eq!(s.group_table, "results.my_groups");
    }
}
