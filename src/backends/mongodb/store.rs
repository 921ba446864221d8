//! MongoDB (Celery's `mongodb://` backend): `ping` as the probe, and cleanup of task and group
//! documents by their BSON `date_done`, in `_id` batches (Celery's own cleanup is one delete_many).

use std::time::Instant;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::ClientOptions;
use mongodb::Client;

use crate::stores::{pace, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

const STORE: &str = "mongodb";

pub struct MongoStore {
    uri: String,
    database: String,
    tasks: String,
    groups: String,
}

/// The database named in a MongoDB URI's path, or Celery's default `celery`.
pub fn database_of(uri: &str) -> String {
    let rest = uri.split_once("://").map(|x| x.1).unwrap_or(uri);
    let path = rest.split_once('/').map(|x| x.1).unwrap_or_default();
    let name = path.split('?').next().unwrap_or_default();
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    if name.is_empty() {
        "celery".into()
    } else {
        name.into_owned()
    }
}

impl MongoStore {
    pub fn new(cfg: &BackendConfig) -> Self {
        let setting = |k: &str, default: &str| {
            cfg.settings
                .get("mongodb_backend_settings")
                .and_then(|s| s.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        MongoStore {
            uri: cfg.uri.clone(),
            database: database_of(&cfg.uri),
            tasks: setting("taskmeta_collection", "celery_taskmeta"),
            groups: setting("groupmeta_collection", "celery_groupmeta"),
        }
    }

    async fn client(&self) -> Result<Client, StoreError> {
        let mut opts = ClientOptions::parse(&self.uri)
            .await
            .map_err(|e| StoreError::connect(STORE, e))?;
        opts.app_name = Some("celery-backend-operator".into());
        Client::with_options(opts).map_err(|e| StoreError::connect(STORE, e))
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let client = self.client().await?;
        let db = client.database(&self.database);
        db.run_command(doc! {"ping": 1}).await.map_err(|e| {
            if matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. }) {
                StoreError::auth(STORE, e)
            } else {
                StoreError::connect(STORE, e)
            }
        })?;
        let info = db
            .run_command(doc! {"buildInfo": 1})
            .await
            .map_err(|e| StoreError::protocol(STORE, e))?;
        let version = info.get_str("version").unwrap_or("unknown version");
        Ok(format!(
            "MongoDB ping ok (server {version}, database {})",
            self.database
        ))
    }

    /// Cleanup by Celery's own rule (`MongoBackend.cleanup`: `delete_many({"date_done": {"$lt":
    /// app.now() - result_expires}})` on the task and group collections).
    ///
    /// - Timestamp rule: `date_done` is a BSON Date, always UTC (pymongo converts Celery's aware
    ///   `app.now()`, and the group's `datetime.now(timezone.utc)`); the cutoff is a BSON Date, so
    ///   Celery's time zone does not matter. Documents whose `date_done` is a string (Celery before
    ///   5.3) never match Celery's query either: skipped and counted. `null` (not ready) is kept
    ///   and counted.
    /// - Group rule: the group document's own `date_done`, written at `save()`.
    /// - In `_id` batches of `batch` per collection; a dry run counts the same batches.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let client = self.client().await?;
        let db = client.database(&self.database);
        let cutoff = DateTime::from_millis(opts.cutoff_unix.saturating_mul(1000));
        let expired = doc! {"date_done": {"$lt": cutoff}};
        let mut report = PurgeReport::new(&opts);
        report.time_rule =
            "mongodb: date_done is a BSON Date (UTC), compared with the cutoff as Celery's cleanup() does".into();
        report.group_rule =
            "group documents by their own date_done (Celery writes it when the group is saved)"
                .into();
        let started = Instant::now();
        let err = |e: mongodb::error::Error| StoreError::protocol(STORE, e);
        for (name, is_group) in [(&self.tasks, false), (&self.groups, true)] {
            let coll = db.collection::<Document>(name);
            if !is_group {
                report.kept_without_date_done += coll
                    .count_documents(doc! {"date_done": null})
                    .await
                    .map_err(err)?;
            }
            let strings = coll
                .count_documents(doc! {"date_done": {"$type": "string"}})
                .await
                .map_err(err)?;
            report.skip_n("documents with a string date_done (Celery < 5.3)", strings);
            if opts.dry_run {
                let n = coll.count_documents(expired.clone()).await.map_err(err)?;
                report.batches += crate::stores::plan::batches(n, opts.batch);
                if is_group {
                    report.groups += n;
                } else {
                    report.tasks += n;
                }
                continue;
            }
            loop {
                // Only ids: one small read, then one delete bounded by the batch size.
                let ids: Vec<Bson> = coll
                    .find(expired.clone())
                    .projection(doc! {"_id": 1})
                    .limit(i64::from(opts.batch.max(1)))
                    .await
                    .map_err(err)?
                    .try_collect::<Vec<Document>>()
                    .await
                    .map_err(err)?
                    .into_iter()
                    .filter_map(|d| d.get("_id").cloned())
                    .collect();
                if ids.is_empty() {
                    break;
                }
                let t = Instant::now();
                // date_done is checked again, so a result rewritten since the read is kept.
                let res = coll
                    .delete_many(doc! {"_id": {"$in": ids}, "date_done": {"$lt": cutoff}})
                    .await
                    .map_err(err)?;
                if res.deleted_count > 0 {
                    report.record(is_group, res.deleted_count as usize, t.elapsed());
                }
                pace(opts.rate, report.tasks + report.groups, started).await;
            }
        }
        Ok(report)
    }
}

impl crate::stores::StoreClient for MongoStore {
    fn kind(&self) -> String {
        "mongodb".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        crate::stores::Expiry::Purgeable
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(MongoStore::probe(self))
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(MongoStore::purge(self, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_comes_from_the_uri_path() {
        assert_eq!(
            database_of("mongodb://u:p@h:27017/results?tls=true"),
            "results"
        );
        assert_eq!(database_of("mongodb://h:27017"), "celery");
        assert_eq!(database_of("mongodb://h:27017/?replicaSet=rs"), "celery");
        assert_eq!(
            database_of("mongodb+srv://u:p%2F@c.example.com/my%20db"),
            "my db"
        );
    }

    /// The test server cannot check passwords with this driver (see hack/stores.sh), so check
    /// here that the driver reads from the builder's URI exactly the password pymongo reads.
    #[tokio::test]
    async fn the_driver_reads_the_password_from_the_builders_uri() {
        let pw = "mg p@ss:w/rd#?% x";
        let spec: crate::api::CeleryResultBackendSpec = serde_json::from_value(serde_json::json!({
            "mongodb": {"external": {"hosts": [{"host": "127.0.0.1", "port": 37017}], "database": "results",
              "auth": {"usernameSecretRef": {"name": "s", "key": "u"}, "passwordSecretRef": {"name": "s", "key": "p"}}}}
        }))
        .unwrap();
        let mut secrets = crate::uri::SecretValues::new();
        let s = secrets.entry("s".into()).or_default();
        s.insert("u".into(), "cel ery@x".into());
        s.insert("p".into(), pw.into());
        let cfg = crate::uri::build(&spec, &secrets).unwrap();
        let o = ClientOptions::parse(&cfg.uri).await.unwrap();
        let c = o.credential.unwrap();
        assert_eq!(c.username.as_deref(), Some("cel ery@x"));
        assert_eq!(c.password.as_deref(), Some(pw));
        assert_eq!(database_of(&cfg.uri), "results");
    }
}
