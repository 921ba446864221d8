//! Apache Cassandra (Celery's `cassandra://` backend, configured by settings): a `system.local`
//! read as the probe, and cleanup of tasks whose latest row is older than the cutoff (without
//! `cassandra_entry_ttl` Celery's rows never expire, and its own `cleanup()` does nothing).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use scylla::value::CqlTimestamp;

use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::{BackendConfig, TlsMaterial};

const STORE: &str = "cassandra";

pub struct CassandraStore {
    nodes: Vec<String>,
    /// `cassandra at h1:9042,h2:9042`, for messages.
    at: String,
    /// Client encryption: the CA and client certificate from Secrets, used in memory.
    tls: Option<TlsMaterial>,
    keyspace: String,
    table: String,
    username: Option<String>,
    password: Option<String>,
    read: Consistency,
    write: Consistency,
    ttl: bool,
}

/// Celery's consistency names (`cassandra.ConsistencyLevel` attributes); Celery falls back to
/// LOCAL_QUORUM for anything else, and so does this.
fn consistency(name: Option<&str>) -> Consistency {
    match name {
        Some("ANY") => Consistency::Any,
        Some("ONE") => Consistency::One,
        Some("TWO") => Consistency::Two,
        Some("THREE") => Consistency::Three,
        Some("QUORUM") => Consistency::Quorum,
        Some("ALL") => Consistency::All,
        Some("EACH_QUORUM") => Consistency::EachQuorum,
        Some("LOCAL_ONE") => Consistency::LocalOne,
        _ => Consistency::LocalQuorum,
    }
}

/// Keyspace and table are plain CQL identifiers (the CRD allows `[A-Za-z0-9_]` only); Celery
/// writes them unquoted, so the server folds them to lower case, and so do we.
fn identifier(s: &str) -> Option<String> {
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| s.to_ascii_lowercase())
}

impl CassandraStore {
    pub fn new(cfg: &BackendConfig) -> Self {
        let s = |k: &str| {
            cfg.settings
                .get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        let port = cfg
            .settings
            .get("cassandra_port")
            .and_then(|v| v.as_u64())
            .unwrap_or(9042);
        let nodes: Vec<String> = cfg
            .settings
            .get("cassandra_servers")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str())
                    .map(|h| {
                        if h.contains(':') {
                            format!("[{h}]:{port}")
                        } else {
                            format!("{h}:{port}")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let auth = cfg.settings.get("cassandra_auth_kwargs");
        let auth_field = |k: &str| {
            auth.and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        CassandraStore {
            at: format!("{STORE} at {}", nodes.join(",")),
            tls: cfg.tls.clone(),
            nodes,
            keyspace: s("cassandra_keyspace").unwrap_or_default(),
            table: s("cassandra_table").unwrap_or_default(),
            username: auth_field("username"),
            password: auth_field("password"),
            read: consistency(s("cassandra_read_consistency").as_deref()),
            write: consistency(s("cassandra_write_consistency").as_deref()),
            ttl: cfg.settings.contains_key("cassandra_entry_ttl"),
        }
    }

    /// Rows carry a TTL (`cassandra_entry_ttl`): Cassandra expires them itself.
    pub fn has_ttl(&self) -> bool {
        self.ttl
    }

    fn qualified(&self) -> Result<String, StoreError> {
        match (identifier(&self.keyspace), identifier(&self.table)) {
            (Some(k), Some(t)) => Ok(format!("{k}.{t}")),
            _ => Err(StoreError::Unsupported(
                "cassandra keyspace and table must be plain identifiers".into(),
            )),
        }
    }

    async fn session(&self) -> Result<Session, StoreError> {
        if self.nodes.is_empty() {
            return Err(StoreError::Unsupported("no cassandra_servers".into()));
        }
        let mut b = SessionBuilder::new()
            .known_nodes(&self.nodes)
            .connection_timeout(Duration::from_secs(5));
        if self.username.is_some() || self.password.is_some() {
            b = b.user(
                self.username.clone().unwrap_or_default(),
                self.password.clone().unwrap_or_default(),
            );
        }
        if let Some(t) = &self.tls {
            let config = crate::stores::tls::client_config(t)
                .map_err(|e| StoreError::tls(&self.at, e, None))?;
            b = b.tls_context(Some(std::sync::Arc::new(config)));
        }
        b.build().await.map_err(|e| {
            let chain = crate::stores::cause_chain(&e);
            if let Some(t) = self
                .tls
                .as_ref()
                .filter(|_| crate::stores::tls_failure(&chain))
            {
                StoreError::tls(&self.at, chain, crate::stores::tls_hint(t).as_deref())
            } else if chain.contains("Authentication failed")
                || chain.contains("AuthenticationError")
            {
                StoreError::auth(&self.at, chain)
            } else {
                StoreError::connect(&self.at, chain)
            }
        })
    }

    /// Whether Celery has created its table yet (it does so on the first write).
    async fn table_exists(&self, session: &Session) -> Result<bool, StoreError> {
        let (Some(k), Some(t)) = (identifier(&self.keyspace), identifier(&self.table)) else {
            return Err(StoreError::Unsupported(
                "cassandra keyspace and table must be plain identifiers".into(),
            ));
        };
        let rows = session
            .query_unpaged(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                (k, t),
            )
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?
            .into_rows_result()
            .map_err(|e| StoreError::protocol(STORE, e))?;
        Ok(rows.rows_num() > 0)
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let session = self.session().await?;
        let mut st = Statement::new("SELECT release_version FROM system.local");
        st.set_consistency(Consistency::One);
        let version = session
            .query_unpaged(st, ())
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?
            .into_rows_result()
            .map_err(|e| StoreError::protocol(STORE, e))?
            .maybe_first_row::<(String,)>()
            .map_err(|e| StoreError::protocol(STORE, e))?
            .map(|(v,)| v)
            .unwrap_or_else(|| "unknown version".into());
        let table = if self.table_exists(&session).await? {
            format!("table {}", self.qualified()?)
        } else {
            format!(
                "table {} does not exist yet (Celery creates it on the first result)",
                self.qualified()?
            )
        };
        Ok(format!("Cassandra {version} answered; {table}"))
    }

    /// Each task is one partition (rows per state, newest first). A task whose newest row is older
    /// than the cutoff is deleted whole, like Celery's `forget()`, but with the write timestamp
    /// of the cutoff: a row written after it (a task re-run since the scan) is kept.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let session = self.session().await?;
        let mut report = PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        if !self.table_exists(&session).await? {
            return Ok(report);
        }
        let table = self.qualified()?;
        let cutoff_ms = opts.cutoff_unix.saturating_mul(1000);
        let batch = opts.batch.max(1) as usize;
        let mut scan = Statement::new(format!(
            "SELECT task_id, date_done FROM {table} PER PARTITION LIMIT 1"
        ));
        scan.set_consistency(self.read);
        scan.set_page_size(i32::try_from(batch.clamp(100, 5000)).unwrap_or(1000));
        let mut delete = session
            .prepare(format!(
                "DELETE FROM {table} USING TIMESTAMP ? WHERE task_id IN ?"
            ))
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?;
        delete.set_consistency(self.write);
        let mut rows = session
            .query_iter(scan, ())
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?
            .rows_stream::<(String, Option<CqlTimestamp>)>()
            .map_err(|e| StoreError::protocol(STORE, e))?;
        let started = Instant::now();
        let mut pending: Vec<String> = Vec::with_capacity(batch);
        let flush = |ids: Vec<String>| {
            let delete = &delete;
            let session = &session;
            async move {
                let t = Instant::now();
                // Microseconds, like the write timestamps Cassandra drivers assign.
                session
                    .execute_unpaged(delete, (cutoff_ms.saturating_mul(1000), &ids))
                    .await
                    .map_err(|e| StoreError::protocol(STORE, e))?;
                Ok::<_, StoreError>((ids.len(), t.elapsed()))
            }
        };
        while let Some((task_id, date_done)) = rows
            .try_next()
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?
        {
            if date_done.is_none_or(|d| d.0 >= cutoff_ms) {
                continue;
            }
            if opts.dry_run {
                report.tasks += 1;
                continue;
            }
            pending.push(task_id);
            if pending.len() >= batch {
                let (n, took) = flush(std::mem::take(&mut pending)).await?;
                report.record(false, n, took);
                pace(opts.rate, report.tasks, started).await;
            }
        }
        if !pending.is_empty() {
            let (n, took) = flush(pending).await?;
            report.record(false, n, took);
        }
        if opts.dry_run {
            // The real run flushes full batches plus one remainder.
            report.batches = crate::stores::plan::batches(report.tasks, opts.batch);
        }
        report.time_rule = "cassandra: date_done is a CQL timestamp (UTC milliseconds; the driver converts Celery's aware app.now())".into();
        report.group_rule = "none: Celery's Cassandra backend cannot save groups".into();
        Ok(report)
    }
}

impl crate::stores::StoreClient for CassandraStore {
    fn kind(&self) -> String {
        "cassandra".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        if self.has_ttl() {
            crate::stores::Expiry::Native(
                "Cassandra row TTL (cassandra_entry_ttl) expires rows".into(),
            )
        } else {
            crate::stores::Expiry::Purgeable
        }
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(CassandraStore::probe(self))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(CassandraStore::purge(self, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_as_celery_reads_them() {
        let spec: crate::api::CeleryResultBackendSpec = serde_json::from_value(serde_json::json!({
            "cassandra": {"external": {"servers": ["db1", "fd00::1"], "port": 29042, "keyspace": "Celery",
              "table": "results", "readConsistency": "ONE",
              "auth": {"usernameSecretRef": {"name": "s", "key": "u"}, "passwordSecretRef": {"name": "s", "key": "p"}}}}
        }))
        .unwrap();
        let mut secrets = crate::uri::SecretValues::new();
        let s = secrets.entry("s".into()).or_default();
        s.insert("u".into(), "cel ery".into());
        s.insert("p".into(), "ca p@ss:w/rd#?% '".into());
        let cfg = crate::uri::build(&spec, &secrets).unwrap();
        let c = CassandraStore::new(&cfg);
        assert_eq!(c.nodes, vec!["db1:29042", "[fd00::1]:29042"]);
        assert_eq!(c.qualified().unwrap(), "celery.results");
        assert_eq!(c.username.as_deref(), Some("cel ery"));
        assert_eq!(c.password.as_deref(), Some("ca p@ss:w/rd#?% '"));
        assert_eq!(c.read, Consistency::One);
        assert_eq!(c.write, Consistency::LocalQuorum);
        assert!(!c.has_ttl());
        assert_eq!(identifier("a;DROP"), None);
    }
}
