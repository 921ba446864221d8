//! SQL stores (Celery's `db+` backend): PostgreSQL, MySQL/MariaDB and SQLite through sqlx.
//! Cleanup deletes the rows of the task and group tables whose `date_done` is before the cutoff,
//! read the way Celery wrote it (see `SqlTimeRule`), in bounded batches instead of one statement.

use std::time::Instant;

use sqlx::Connection;

use crate::stores::plan::{self, CeleryClock};
use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

/// How `date_done` (a naive `TIMESTAMP WITHOUT TIME ZONE` / `DATETIME` column, as Celery's
/// SQLAlchemy models create it) holds an instant, per engine and table. Celery 5.7 writes
/// timezone-aware datetimes: `app.now()` in Celery's zone for task rows
/// (`BaseBackend._get_result_meta`), and UTC now for group rows (the models' `_get_utc_now`
/// default). Its `cleanup()` compares with `datetime.now(timezone.utc) - result_expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlTimeRule {
    /// PostgreSQL (psycopg2): an aware datetime is sent as `timestamptz` and stored as wall time
    /// in the **session's** `TimeZone`, whatever Celery's zone; Celery's cleanup converts its
    /// cutoff the same way (`::TIMESTAMP WITHOUT TIME ZONE`). The operator sets its own session
    /// to the zone Celery's sessions get (role/database settings, else the server's) and uses
    /// the same cast. Holds for task and group rows alike.
    SessionZone {
        /// The zone name, as PostgreSQL knows it.
        zone: String,
        /// Where it came from (for the report).
        source: String,
    },
    /// MySQL/MariaDB (pymysql) and SQLite (SQLAlchemy's string format): the offset is dropped,
    /// so a row holds the wall time of the datetime Celery passed: Celery's zone for task rows,
    /// UTC for group rows. MySQL's `time_zone` does not apply to `DATETIME` columns. Celery's
    /// own cleanup compares both with a UTC wall time, so with a non-UTC zone it deletes task
    /// rows early (zones west of UTC) or late (east); the operator uses each table's zone.
    DroppedOffset {
        /// Celery's zone (task rows).
        zone: String,
        tz: jiff::tz::TimeZone,
    },
}

impl SqlTimeRule {
    /// The SQL expression of the cutoff for the task (`is_group` false) or group table.
    pub fn cutoff_expr(&self, cutoff_unix: i64, is_group: bool) -> String {
        match self {
            SqlTimeRule::SessionZone { .. } => {
                let utc = plan::wall_time(cutoff_unix, &jiff::tz::TimeZone::UTC);
                format!("CAST(CAST('{utc}+00' AS TIMESTAMP WITH TIME ZONE) AS TIMESTAMP WITHOUT TIME ZONE)")
            }
            SqlTimeRule::DroppedOffset { tz, .. } => {
                let zone = if is_group {
                    &jiff::tz::TimeZone::UTC
                } else {
                    tz
                };
                format!("'{}'", plan::wall_time(cutoff_unix, zone))
            }
        }
    }

    /// The rule in words, for the report and status.
    pub fn describe(&self, engine: &str) -> String {
        match self {
            SqlTimeRule::SessionZone { zone, source } => format!(
                "{engine}: date_done is wall time in the database session time zone {zone} ({source}), compared as Celery's cleanup() does"
            ),
            SqlTimeRule::DroppedOffset { zone, .. } => format!(
                "{engine}: task date_done is wall time in Celery's time zone {zone}, group date_done in UTC (the driver drops the offset)"
            ),
        }
    }
}

/// The PostgreSQL time zone Celery's sessions get, from `pg_db_role_setting` rows
/// (`setconfig` entries such as `TimeZone=America/Los_Angeles`), in PostgreSQL's precedence:
/// role in this database, then role, then database. `None` when none sets it.
pub fn pg_zone_from_settings(
    role_in_db: &[String],
    role: &[String],
    db: &[String],
) -> Option<(String, String)> {
    let find = |entries: &[String]| {
        entries.iter().find_map(|e| {
            let (k, v) = e.split_once('=')?;
            k.eq_ignore_ascii_case("timezone")
                .then(|| v.trim_matches('\'').trim_matches('"').to_string())
        })
    };
    find(role_in_db)
        .map(|z| (z, "ALTER ROLE … IN DATABASE … SET timezone".to_string()))
        .or_else(|| find(role).map(|z| (z, "ALTER ROLE … SET timezone".into())))
        .or_else(|| find(db).map(|z| (z, "ALTER DATABASE … SET timezone".into())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

pub struct SqlStore {
    engine: Engine,
    /// sqlx connection URL (credentials and TLS material inside; never logged).
    url: String,
    /// `host:port` (or the SQLite file), for messages.
    endpoint: String,
    /// What to add to a TLS failure (see `stores::tls_hint`).
    tls_hint: Option<String>,
    /// TLS material from the backend's Secrets, written to private files only while a connection
    /// is made (see `with_tls_material`), never when the client is merely chosen.
    tls: Option<crate::uri::TlsMaterial>,
    task_table: String,
    group_table: String,
    /// Celery's `timezone`/`enable_utc` (MySQL and SQLite task rows).
    clock: CeleryClock,
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

/// The URL the operator connects with, given the backend's TLS material. libpq's file
/// parameters (`sslrootcert`, `sslcert`, `sslkey`) name paths inside workers, and sqlx reads
/// them from files only: the PEM is written to a private temporary directory (0700, files 0600,
/// removed when the returned guard drops; a memory-backed `/tmp` in the chart) and the URL names
/// those files. A CA the operator has only as a worker path (`caFile`) is dropped: sqlx then
/// verifies against the webpki roots. `sslmode` stays, so TLS is never turned off.
fn with_tls_material(
    engine: Engine,
    url: &str,
    t: &crate::uri::TlsMaterial,
) -> Result<(String, crate::stores::PrivateFiles), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut files = crate::stores::PrivateFiles::default();
    let mut file = |name: &str, pem: &[u8]| -> Result<String, String> {
        let path = files.write(name, pem)?;
        Ok(crate::uri::encode::component(&path.to_string_lossy()))
    };
    let mut pairs = vec![];
    match engine {
        Engine::Postgres => {
            for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                let (k, _) = kv.split_once('=').unwrap_or((kv, ""));
                let replaced = match k {
                    "sslrootcert" => t.ca_pem.as_deref().map(|c| ("ca.crt", c)),
                    "sslcert" => t.client.as_ref().map(|(c, _)| ("tls.crt", c.as_slice())),
                    "sslkey" => t
                        .client
                        .as_ref()
                        .map(|(_, key)| ("tls.key", key.as_slice())),
                    _ => {
                        pairs.push(kv.to_string());
                        continue;
                    }
                };
                if let Some((name, pem)) = replaced {
                    pairs.push(format!("{k}={}", file(name, pem)?));
                }
            }
        }
        Engine::Mysql => {
            // PyMySQL's ssl_* keys mean nothing to sqlx: its own ssl-mode and files instead, with
            // the same verification (VERIFY_IDENTITY: chain and host name; VERIFY_CA: chain).
            for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                if !kv.starts_with("ssl_") {
                    pairs.push(kv.to_string());
                }
            }
            let mode = match t.verify {
                crate::api::TlsVerify::Required => "VERIFY_IDENTITY",
                crate::api::TlsVerify::Optional => "VERIFY_CA",
                crate::api::TlsVerify::None => "REQUIRED",
            };
            pairs.push(format!("ssl-mode={mode}"));
            if let (Some(c), false) = (&t.ca_pem, t.verify == crate::api::TlsVerify::None) {
                pairs.push(format!("ssl-ca={}", file("ca.crt", c)?));
            }
            if let Some((c, k)) = &t.client {
                pairs.push(format!("ssl-cert={}", file("tls.crt", c)?));
                pairs.push(format!("ssl-key={}", file("tls.key", k)?));
            }
        }
        Engine::Sqlite => return Ok((url.to_string(), files)),
    }
    Ok((format!("{base}?{}", pairs.join("&")), files))
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
            endpoint: match engine {
                Engine::Sqlite => tail.to_string(),
                _ => crate::stores::endpoint_of(&cfg.uri),
            },
            tls_hint: cfg.tls.as_ref().and_then(crate::stores::tls_hint),
            tls: cfg.tls.clone(),
            url,
            task_table: table(cfg, "task", "celery_taskmeta"),
            group_table: table(cfg, "group", "celery_tasksetmeta"),
            clock: CeleryClock::from_settings(cfg),
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
        let store = format!("{} at {}", self.engine(), self.endpoint);
        // The files live until the connection is made (sqlx reads them while connecting).
        let (url, _files) = match &self.tls {
            Some(t) => with_tls_material(self.engine, &self.url, t)
                .map_err(|e| StoreError::tls(&store, e, None))?,
            None => (self.url.clone(), Default::default()),
        };
        sqlx::AnyConnection::connect(&url)
            .await
            .map_err(|e| match &e {
                // SQLSTATE class 28: invalid authorization (PostgreSQL 28P01/28000, MySQL and
                // MariaDB 28000 for error 1045).
                sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("28")) => {
                    // PostgreSQL's clientcert: "connection requires a valid client certificate".
                    if d.message().contains("client certificate") {
                        StoreError::auth(
                            &store,
                            format!("{e} (set tls.clientCertificateSecretRef)"),
                        )
                    } else {
                        StoreError::auth(&store, &e)
                    }
                }
                sqlx::Error::Tls(_) => StoreError::tls(&store, &e, self.tls_hint.as_deref()),
                _ if crate::stores::tls_failure(&e.to_string()) => {
                    StoreError::tls(&store, &e, self.tls_hint.as_deref())
                }
                _ => StoreError::connect(&store, &e),
            })
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
        let count = format!("SELECT COUNT(*) FROM {t} WHERE date_done < {cutoff}");
        let bound = format!(
            "SELECT id FROM {t} WHERE id > {after} AND date_done < {cutoff} ORDER BY id LIMIT 1 OFFSET {}",
            batch.saturating_sub(1)
        );
        let delete = match (self.engine, upto) {
            (Engine::Mysql, _) => {
                format!("DELETE FROM {t} WHERE date_done < {cutoff} ORDER BY id LIMIT {batch}")
            }
            (_, Some(upto)) => format!(
                "DELETE FROM {t} WHERE id > {after} AND id <= {upto} AND date_done < {cutoff}"
            ),
            (_, None) => format!("DELETE FROM {t} WHERE id > {after} AND date_done < {cutoff}"),
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

    /// The zone Celery's PostgreSQL sessions get: role/database settings, else the server's
    /// configuration (readable only with `pg_read_all_settings`), else UTC, said so.
    async fn pg_session_zone(
        &self,
        c: &mut sqlx::AnyConnection,
    ) -> Result<(String, String), StoreError> {
        let err = |e: sqlx::Error| StoreError::protocol("postgresql", e);
        let q = |db: &str, role: &str| {
            format!(
                "SELECT array_to_string(setconfig, chr(1)) FROM pg_db_role_setting WHERE setdatabase = {db} AND setrole = {role}"
            )
        };
        let this_db = "(SELECT oid FROM pg_database WHERE datname = current_database())";
        let this_role = "(SELECT oid FROM pg_roles WHERE rolname = current_user)";
        let mut rows = vec![];
        for (db, role) in [(this_db, this_role), ("0", this_role), (this_db, "0")] {
            let v: Option<String> = sqlx::query_scalar(&q(db, role))
                .fetch_optional(&mut *c)
                .await
                .map_err(err)?;
            rows.push(
                v.map(|s| s.split('\u{1}').map(String::from).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        }
        if let Some(z) = pg_zone_from_settings(&rows[0], &rows[1], &rows[2]) {
            return Ok(z);
        }
        let file: Result<Option<String>, _> = sqlx::query_scalar(
            "SELECT setting FROM pg_file_settings WHERE lower(name) = 'timezone' AND error IS NULL ORDER BY seqno DESC LIMIT 1",
        )
        .fetch_optional(&mut *c)
        .await;
        Ok(match file {
            Ok(Some(z)) => (z, "the server's configuration".into()),
            Ok(None) => ("GMT".into(), "PostgreSQL's built-in default".into()),
            Err(_) => (
                "UTC".into(),
                "assumed: the server's configured timezone is not readable by this role (grant pg_read_all_settings, or set it per database)".into(),
            ),
        })
    }

    /// The timestamp rule for this store (PostgreSQL: also sets the session's time zone).
    async fn time_rule(&self, c: &mut sqlx::AnyConnection) -> Result<SqlTimeRule, StoreError> {
        match self.engine {
            Engine::Postgres => {
                let (zone, source) = self.pg_session_zone(c).await?;
                sqlx::query("SELECT set_config('TimeZone', $1, false)")
                    .bind(zone.clone())
                    .execute(&mut *c)
                    .await
                    .map_err(|e| StoreError::protocol("postgresql", e))?;
                Ok(SqlTimeRule::SessionZone { zone, source })
            }
            Engine::Mysql | Engine::Sqlite => {
                let (zone, tz) = self
                    .clock
                    .zone()
                    .map_err(|e| StoreError::Unsupported(format!("{}: {e}", self.engine())))?;
                Ok(SqlTimeRule::DroppedOffset { zone, tz })
            }
        }
    }

    /// Cleanup of the task and group tables by `date_done`, read by `SqlTimeRule`. Group rows
    /// carry their own `date_done` (written by Celery at `save()`), which is the group rule.
    /// Rows with `date_done` NULL (a task that reached only PENDING/STARTED/RETRY) are kept, as
    /// Celery's cleanup keeps them, and counted. Each table is deleted in batches of `batch` rows
    /// plus one remainder; a dry run counts the same batches.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let mut c = self.connect().await?;
        let rule = self.time_rule(&mut c).await?;
        let mut report = PurgeReport::new(&opts);
        report.time_rule = rule.describe(self.engine());
        report.group_rule =
            "group rows by their own date_done (Celery writes it when the group is saved)".into();
        let started = Instant::now();
        let batch = opts.batch.max(1);
        let err = |e: sqlx::Error| StoreError::protocol(self.engine(), e);
        for (is_group, table) in [(false, &self.task_table), (true, &self.group_table)] {
            if !self.table_exists(&mut c, table).await {
                continue; // Celery creates its tables lazily; no table, no results.
            }
            if !is_group {
                let q = format!(
                    "SELECT COUNT(*) FROM {} WHERE date_done IS NULL",
                    ident(self.engine, table)
                );
                let n: i64 = sqlx::query_scalar(&q)
                    .fetch_one(&mut c)
                    .await
                    .map_err(err)?;
                report.kept_without_date_done += n.max(0) as u64;
            }
            let cutoff = rule.cutoff_expr(opts.cutoff_unix, is_group);
            let (count, _, _) = self.statements(table, batch, &cutoff, 0, None);
            if opts.dry_run {
                let n: i64 = sqlx::query_scalar(&count)
                    .fetch_one(&mut c)
                    .await
                    .map_err(err)?;
                let n = n.max(0) as u64;
                report.batches += plan::batches(n, batch);
                if is_group {
                    report.groups += n;
                } else {
                    report.tasks += n;
                }
                continue;
            }
            let mut after = i64::MIN;
            loop {
                let t0 = Instant::now();
                let (done, last) = if self.engine == Engine::Mysql {
                    let (_, _, delete) = self.statements(table, batch, &cutoff, after, None);
                    let n = sqlx::query(&delete)
                        .execute(&mut c)
                        .await
                        .map_err(err)?
                        .rows_affected();
                    (n, n < u64::from(batch))
                } else {
                    let (_, bound, _) = self.statements(table, batch, &cutoff, after, None);
                    let upto: Option<i64> = sqlx::query_scalar(&bound)
                        .fetch_optional(&mut c)
                        .await
                        .map_err(err)?;
                    let (_, _, delete) = self.statements(table, batch, &cutoff, after, upto);
                    let n = sqlx::query(&delete)
                        .execute(&mut c)
                        .await
                        .map_err(err)?
                        .rows_affected();
                    if let Some(u) = upto {
                        after = u;
                    }
                    (n, upto.is_none())
                };
                // An empty last statement deleted nothing: not a batch (the dry run's count).
                if done > 0 {
                    report.record(is_group, done as usize, t0.elapsed());
                }
                if last {
                    break;
                }
                pace(opts.rate, report.tasks + report.groups, started).await;
                tokio::task::yield_now().await;
            }
        }
        let _ = c.close().await;
        Ok(report)
    }
}

impl crate::stores::StoreClient for SqlStore {
    fn kind(&self) -> String {
        self.engine().into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        crate::stores::Expiry::Purgeable
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(SqlStore::probe(self))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(SqlStore::purge(self, opts))
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
        let (count, bound, delete) = pg.statements(
            "celery_taskmeta",
            500,
            "'2026-01-01 00:00:00'",
            42,
            Some(900),
        );
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

    #[test]
    fn cutoff_expressions_per_rule() {
        // 2026-01-15T12:00:00Z
        let t = 1_768_478_400;
        let pg = SqlTimeRule::SessionZone {
            zone: "America/Los_Angeles".into(),
            source: "x".into(),
        };
        let cast = "CAST(CAST('2026-01-15 12:00:00.000000+00' AS TIMESTAMP WITH TIME ZONE) AS TIMESTAMP WITHOUT TIME ZONE)";
        assert_eq!(pg.cutoff_expr(t, false), cast);
        assert_eq!(pg.cutoff_expr(t, true), cast);
        let shanghai = SqlTimeRule::DroppedOffset {
            zone: "Asia/Shanghai".into(),
            tz: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
        };
        let table = [
            (false, "'2026-01-15 20:00:00.000000'"),
            (true, "'2026-01-15 12:00:00.000000'"),
        ];
        for (is_group, want) in table {
            assert_eq!(shanghai.cutoff_expr(t, is_group), want);
        }
        assert!(shanghai
            .describe("mysql")
            .contains("Celery's time zone Asia/Shanghai"));
    }

    #[test]
    fn postgres_session_zone_precedence() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let table = [
            (v(&[]), v(&[]), v(&[]), None),
            (
                v(&[]),
                v(&[]),
                v(&["search_path=x", "TimeZone=Asia/Shanghai"]),
                Some("Asia/Shanghai"),
            ),
            (
                v(&[]),
                v(&["timezone=America/Los_Angeles"]),
                v(&["TimeZone=Asia/Shanghai"]),
                Some("America/Los_Angeles"),
            ),
            (
                v(&["TimeZone=Europe/Berlin"]),
                v(&["timezone=America/Los_Angeles"]),
                v(&[]),
                Some("Europe/Berlin"),
            ),
        ];
        for (a, b, c, want) in table {
            assert_eq!(
                pg_zone_from_settings(&a, &b, &c).map(|z| z.0),
                want.map(String::from)
            );
        }
    }
}
