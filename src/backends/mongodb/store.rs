//! MongoDB (Celery's `mongodb://` backend): `ping` as the probe, and cleanup of task and group
//! documents by their BSON `date_done`, in `_id` batches (Celery's own cleanup is one delete_many).

use std::time::Instant;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{ClientOptions, Tls};
use mongodb::Client;

use crate::stores::{pace, PrivateFiles, PurgeOptions, PurgeReport, StoreError};
use crate::uri::{BackendConfig, TlsMaterial};

const STORE: &str = "mongodb";

/// How long the driver looks for a server before a call fails, unless the URI sets
/// `serverSelectionTimeoutMS`: shorter than the default health-check timeout (5 s), so a refused
/// connection or a failed TLS handshake is reported as what it is, not as a timeout (the
/// driver's own default is 30 s).
const SERVER_SELECTION: std::time::Duration = std::time::Duration::from_secs(3);

pub struct MongoStore {
    uri: String,
    /// `mongodb at h1:27017,h2:27017` (no credentials), for messages.
    at: String,
    database: String,
    tasks: String,
    groups: String,
    /// The CA from `tls.caSecretRef`, used in memory-backed files while connecting.
    tls: Option<TlsMaterial>,
    tls_hint: Option<String>,
}

/// A driver error as one sentence: a server-selection timeout carries each server's own error
/// inside a dump of the topology (`..., Error: Kind: I/O error: invalid peer certificate:
/// UnknownIssuer, labels: {...} ...`); that error is what happened, so it is what is said.
fn readable(e: &mongodb::error::Error) -> String {
    match &*e.kind {
        mongodb::error::ErrorKind::ServerSelection { message, .. } => selection_cause(message),
        _ => crate::stores::cause_chain(e),
    }
}

/// The servers' own error inside a server-selection message, or the message without its
/// topology dump.
fn selection_cause(message: &str) -> String {
    if let Some((_, rest)) = message.split_once("Error: Kind: ") {
        let cause = rest.split(", labels:").next().unwrap_or(rest).trim();
        return format!("no server answered: {cause}");
    }
    message
        .split(" Topology:")
        .next()
        .unwrap_or(message)
        .to_string()
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
            at: format!("{STORE} at {}", crate::stores::endpoint_of(&cfg.uri)),
            tls: cfg.tls.clone(),
            tls_hint: cfg.tls.as_ref().and_then(crate::stores::tls_hint),
            database: database_of(&cfg.uri),
            tasks: setting("taskmeta_collection", "celery_taskmeta"),
            groups: setting("groupmeta_collection", "celery_groupmeta"),
        }
    }

    /// A client with Celery's URI. The file paths its TLS options name (`tlsCAFile`,
    /// `tlsCertificateKeyFile`) live inside workers: the CA from `caSecretRef` replaces the first
    /// (written to a private file the driver reads while the client is made, then removed), and
    /// a worker-only file is dropped (the driver then verifies against the webpki roots and
    /// sends no client certificate; a failure says so). TLS itself and `tlsInsecure` /
    /// `tlsAllowInvalidCertificates` stay as the URI says: never plain text once asked for.
    async fn client(&self) -> Result<Client, StoreError> {
        let mut opts = ClientOptions::parse(&self.uri)
            .await
            .map_err(|e| StoreError::connect(&self.at, e))?;
        opts.app_name = Some("celery-backend-operator".into());
        if opts.server_selection_timeout.is_none() {
            opts.server_selection_timeout = Some(SERVER_SELECTION);
        }
        let mut files = PrivateFiles::default();
        if let Some(Tls::Enabled(o)) = opts.tls.as_mut() {
            o.cert_key_file_path = None;
            o.ca_file_path = match self.tls.as_ref().and_then(|t| t.ca_pem.as_deref()) {
                Some(ca) => Some(
                    files
                        .write("ca.crt", ca)
                        .map_err(|e| StoreError::tls(&self.at, e, None))?,
                ),
                None => None,
            };
        }
        // The driver reads the files here, while it builds its TLS configuration.
        let client = Client::with_options(opts).map_err(|e| self.error(e));
        drop(files);
        client
    }

    /// A driver error as the health reasons see it: refused credentials, a failed TLS
    /// handshake (with the hint when the CA was a worker-only file), or an unreachable server.
    fn error(&self, e: mongodb::error::Error) -> StoreError {
        let chain = readable(&e);
        if matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. }) {
            StoreError::auth(&self.at, chain)
        } else if crate::stores::tls_failure(&chain) {
            StoreError::tls(&self.at, chain, self.tls_hint.as_deref())
        } else {
            StoreError::connect(&self.at, chain)
        }
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let client = self.client().await?;
        let db = client.database(&self.database);
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(|e| self.error(e))?;
        let info = db
            .run_command(doc! {"buildInfo": 1})
            .await
            .map_err(|e| StoreError::protocol(&self.at, e))?;
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
        let err = |e: mongodb::error::Error| match *e.kind {
            mongodb::error::ErrorKind::Command(_) | mongodb::error::ErrorKind::Write(_) => {
                StoreError::protocol(&self.at, e)
            }
            _ => self.error(e),
        };
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
    fn server_selection_failures_say_the_servers_own_error() {
        let message = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:37018, Type: Unknown, Error: Kind: I/O error: invalid peer certificate: UnknownIssuer, labels: {\"RetryableError\"}, source: None } ] }";
        assert_eq!(
            selection_cause(message),
            "no server answered: I/O error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            selection_cause("Server selection timeout: None matched. Topology: { }"),
            "Server selection timeout: None matched."
        );
    }

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
