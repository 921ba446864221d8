//! The store toolkit: the `StoreClient` trait every backend's client implements (in
//! `backends/<family>/store.rs`), the one dispatch from a backend kind to its client, and what the
//! clients share (errors and their reasons, cause chains, endpoints, pacing, planning).

pub mod http;
pub mod plan;
pub mod tls;
pub use tls::PrivateFiles;

use std::time::{Duration, Instant};

use crate::api::BackendKind;
use crate::uri::BackendConfig;

/// How results of a backend expire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The store expires results itself (TTL); nothing to clean.
    Native(String),
    /// The operator can purge expired results.
    Purgeable,
    /// Neither: results stay until someone deletes them, and this operator cannot (yet).
    Unsupported(String),
}

/// Result of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub latency: Duration,
    pub detail: String,
}

/// What a purge did (or, in a dry run, would do). A dry run and the real run that follows on the
/// same data report the same numbers, batches included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Task results deleted (or that would be).
    pub tasks: u64,
    /// Group results deleted (or that would be).
    pub groups: u64,
    /// Delete batches (statements, UNLINKs, bulk requests): per kind, full batches of `--batch`
    /// plus one remainder (`plan::batches`).
    pub batches: u64,
    /// Longest single delete statement or batch, for lock-time visibility.
    pub longest_batch: Duration,
    pub dry_run: bool,
    /// Task results kept because they have no `date_done` (PENDING, STARTED, RETRY: Celery
    /// writes it only for ready states), so no age can be shown.
    pub kept_without_date_done: u64,
    /// Group results kept because nothing shows they expired (a member missing or unreadable).
    pub kept_groups_unproven: u64,
    /// Keys, rows or objects skipped because they are not what the rule reads (what -> count),
    /// e.g. "chord bookkeeping keys"; the run goes on past them.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// Which timestamp rule applied, in words (e.g. the PostgreSQL session time zone).
    pub time_rule: String,
    /// Which group rule applied, in words.
    pub group_rule: String,
}

impl PurgeReport {
    /// An empty report for a run with `opts`.
    pub fn new(opts: &PurgeOptions) -> Self {
        PurgeReport {
            dry_run: opts.dry_run,
            ..Default::default()
        }
    }

    /// Account for one deletion batch.
    pub fn record(&mut self, is_group: bool, deleted: usize, took: Duration) {
        if is_group {
            self.record_mixed(0, deleted, took);
        } else {
            self.record_mixed(deleted, 0, took);
        }
    }

    /// Account for one deletion batch holding both task and group results.
    pub fn record_mixed(&mut self, tasks: usize, groups: usize, took: Duration) {
        self.batches += 1;
        self.longest_batch = self.longest_batch.max(took);
        self.tasks += tasks as u64;
        self.groups += groups as u64;
    }

    /// Count one skipped item of kind `what`.
    pub fn skip(&mut self, what: &str) {
        self.skip_n(what, 1);
    }

    /// Count `n` skipped items of kind `what` (nothing when `n` is 0).
    pub fn skip_n(&mut self, what: &str, n: u64) {
        if n > 0 {
            *self.skipped.entry(what.to_string()).or_default() += n;
        }
    }

    /// What was kept and skipped, in words ("" when nothing), e.g. "kept 2 task results without
    /// date_done; skipped 2 chord bookkeeping keys".
    pub fn notes(&self) -> String {
        let mut parts = vec![];
        if self.kept_without_date_done > 0 {
            parts.push(format!(
                "kept {} task results without date_done",
                self.kept_without_date_done
            ));
        }
        if self.kept_groups_unproven > 0 {
            parts.push(format!(
                "kept {} group results not shown to be expired",
                self.kept_groups_unproven
            ));
        }
        if !self.skipped.is_empty() {
            let s: Vec<String> = self
                .skipped
                .iter()
                .map(|(what, n)| format!("{n} {what}"))
                .collect();
            parts.push(format!("skipped {}", s.join(", ")));
        }
        parts.join("; ")
    }

    /// The rules that applied, in one line ("" when the store states none).
    pub fn rules(&self) -> String {
        [&self.time_rule, &self.group_rule]
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Limits of a purge.
#[derive(Clone, Copy, Debug)]
pub struct PurgeOptions {
    /// Results whose completion time is before this are expired (Unix seconds, UTC).
    pub cutoff_unix: i64,
    pub batch: u32,
    /// Maximum deletions per second (0: unlimited).
    pub rate: u32,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to {store}: {message}")]
    Connect { store: String, message: String },
    /// The store refused the credentials (a wrong password, an unknown user, no permission):
    /// reachable, but the configuration is wrong, not the network.
    #[error("{store} refused the credentials: {message}")]
    Auth { store: String, message: String },
    #[error("{store} answered with an error: {message}")]
    Protocol { store: String, message: String },
    /// The TLS handshake failed: the server certificate did not verify (unknown CA, wrong host
    /// name, expired), the client certificate was refused, or the server does not speak TLS.
    #[error("TLS with {store} failed: {message}")]
    Tls { store: String, message: String },
    /// No cloud credentials were found (none in the backend, none in the operator's environment,
    /// no instance metadata service): the store was never asked.
    #[error("no credentials for {store}: {message}")]
    NoCredentials { store: String, message: String },
    #[error("no answer from {store} within {timeout:?}")]
    Timeout { store: String, timeout: Duration },
    #[error("{0}")]
    Unsupported(String),
}

impl StoreError {
    /// The `Healthy=False` reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Connect { .. } => "StoreUnreachable",
            StoreError::Auth { .. } => "StoreAuthFailed",
            StoreError::Tls { .. } => "StoreTlsFailed",
            StoreError::NoCredentials { .. } => "StoreCredentialsMissing",
            StoreError::Timeout { .. } => "StoreTimeout",
            StoreError::Protocol { .. } | StoreError::Unsupported(_) => "StoreError",
        }
    }
    pub fn connect(store: &str, e: impl std::fmt::Display) -> Self {
        StoreError::Connect {
            store: store.into(),
            message: scrub(&e.to_string()),
        }
    }
    pub fn auth(store: &str, e: impl std::fmt::Display) -> Self {
        StoreError::Auth {
            store: store.into(),
            message: scrub(&e.to_string()),
        }
    }
    /// A TLS failure, with an optional hint for the user (see [`tls_hint`]), added only when the
    /// server's certificate was the problem (not, say, a server that does not speak TLS).
    pub fn tls(store: &str, e: impl std::fmt::Display, hint: Option<&str>) -> Self {
        let mut message = scrub(&e.to_string());
        if message.to_ascii_lowercase().contains("certificaterequired") {
            message.push_str(
                " (the server requires a client certificate: set tls.clientCertificateSecretRef)",
            );
        } else if let Some(h) = hint.filter(|_| verification_failure(&message)) {
            message.push_str(&format!(" ({h})"));
        }
        StoreError::Tls {
            store: store.into(),
            message,
        }
    }
    pub fn protocol(store: &str, e: impl std::fmt::Display) -> Self {
        StoreError::Protocol {
            store: store.into(),
            message: scrub(&e.to_string()),
        }
    }
}

/// Whether a driver's error message reports a TLS failure (rustls: `invalid peer certificate`,
/// alerts, a peer that is not speaking TLS).
pub fn tls_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "invalid peer certificate",
        "certificate",
        "received corrupt message",
        "tls handshake",
        "alert",
        "unknownissuer",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// Whether a TLS failure is about the server's certificate (its chain or name did not verify).
pub fn verification_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "invalid peer certificate",
        "unknownissuer",
        "notvalidforname",
        "certificate verify failed",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// What to tell a user whose TLS connection failed: which CA the operator verified the server
/// with, and so which field to look at: the CA of `caSecretRef`/`caConfigMapRef` (named with its
/// Secret or ConfigMap and key), or the system trust store (a CA given only as a worker-local
/// `caFile` is not one the operator can read).
pub fn tls_hint(t: &crate::uri::TlsMaterial) -> Option<String> {
    Some(match (&t.ca_source, &t.worker_ca_file) {
        (Some(source), _) => format!(
            "the operator verified the server with the CA of {source}: is it the CA that issued the server's certificate?"
        ),
        (None, Some(f)) => format!(
            "the operator verified against the system trust store: caFile {f} is a path inside workers it cannot read; set caSecretRef or caConfigMapRef so both use the same CA"
        ),
        (None, None) => "the operator verified against the system trust store: for a private CA set tls.caSecretRef or tls.caConfigMapRef".into(),
    })
}

/// One readable sentence from an error and its sources (`std::error::Error::source`): each
/// level's message joined by ": ", a level whose text an earlier one already contains left out,
/// so a client's "error sending request" is followed by its real cause ("tcp connect error:
/// Connection refused (os error 111)"). Scrubbed of URI credentials.
pub fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    scrub(&parts.join(": "))
}

/// Why the operator does not check or clean a worker-local backend it cannot see (Celery's
/// `file://` directory, a `db+sqlite://` file; the family says which directory must exist):
/// `Some` when that directory does not exist in the operator's own filesystem. Any other error
/// (permission denied, I/O) is left to the probe, which reports it as a failure.
pub fn not_visible(cfg: &BackendConfig) -> Option<String> {
    let scheme = cfg.uri.split("://").next().unwrap_or_default();
    let kind = cfg.kind.or_else(|| BackendKind::of_scheme(scheme))?;
    let (path, dir) = crate::backends::worker_local(kind, cfg)?;
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "{path} is inside the workers' filesystem and not visible to the operator: mount the same volume into the operator's Pod to have it checked and cleaned"
        )),
        _ => None,
    }
}

/// `host:port` of a URI's first authority, without credentials (for messages): the text after
/// the last `@` and before the path (`redis://:pw@10.0.0.5:6379/0` -> `10.0.0.5:6379`).
pub fn endpoint_of(uri: &str) -> String {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    let authority = rest.split(['/', '?', '#', ';']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority)
        .to_string()
}

/// Remove anything that looks like URI credentials from a driver's error message.
pub fn scrub(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// What every store client provides; each client implements it in its own file, and
/// its family's `Family::store_client` makes it for [`Store::from_config`].
pub trait StoreClient: Send + Sync {
    /// Name of the store family, for messages (`redis`, `postgresql`, `dynamodb`, ...).
    fn kind(&self) -> String;
    /// How results leave this store: by the store itself, by the operator's cleanup, or not yet.
    fn expiry(&self) -> Expiry;
    /// One real protocol round trip; `Ok` says what answered.
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>>;
    /// Delete (or count, in a dry run) the results Celery stored that completed before the
    /// cutoff. Called only when [`StoreClient::expiry`] is [`Expiry::Purgeable`].
    /// Whether an explicit cleanup still runs when the store expires results itself (Redis:
    /// keys written without a TTL are skipped by expiry, not by the client).
    fn purges_when_native(&self) -> bool {
        false
    }
    fn purge(&self, _opts: PurgeOptions) -> BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(async {
            Err(StoreError::Unsupported(
                "cleanup is not implemented for this store".into(),
            ))
        })
    }
}

/// A boxed future of a store call.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A backend the operator has no client for (yet): no health check, no cleanup, and why.
struct NoClient {
    kind: String,
    why: String,
}

impl StoreClient for NoClient {
    fn kind(&self) -> String {
        self.kind.clone()
    }
    fn expiry(&self) -> Expiry {
        Expiry::Unsupported(self.why.clone())
    }
    fn probe(&self) -> BoxFuture<'_, Result<String, StoreError>> {
        let kind = self.kind.clone();
        Box::pin(async move {
            Err(StoreError::Unsupported(format!(
                "no health check for {kind} yet"
            )))
        })
    }
}

/// The store client of one backend.
pub struct Store {
    client: Box<dyn StoreClient>,
    /// False for [`NoClient`]: health reports `NotSupported`, never `False`.
    supported: bool,
}

impl Store {
    /// Choose the client for a built configuration: by its backend kind (set by the builder),
    /// or, for a configuration written by hand, by the kind its URI scheme names.
    pub fn from_config(cfg: &BackendConfig, result_expires_set: bool) -> Self {
        let uri = cfg.uri.as_str();
        let scheme = uri.split("://").next().unwrap_or_default();
        match cfg.kind.or_else(|| BackendKind::of_scheme(scheme)) {
            Some(kind) => Self::for_kind(kind, cfg, result_expires_set),
            None => Self::none(
                scheme,
                format!("the operator has no {scheme} client yet: no health check or cleanup"),
            ),
        }
    }

    fn none(kind: &str, why: String) -> Self {
        Store {
            client: Box::new(NoClient {
                kind: kind.into(),
                why,
            }),
            supported: false,
        }
    }

    /// The client of backend `kind` for `cfg`, as its family makes it
    /// (`crate::backends::store_client`).
    fn for_kind(kind: BackendKind, cfg: &BackendConfig, result_expires_set: bool) -> Self {
        match crate::backends::store_client(kind, cfg, result_expires_set) {
            Some(Ok(client)) => Store {
                client,
                supported: true,
            },
            Some(Err(why)) => Self::none(kind.field(), why),
            None => Self::none(
                kind.field(),
                format!(
                    "the operator has no {} client yet: no health check or cleanup",
                    kind.field()
                ),
            ),
        }
    }

    /// Whether the operator has a client for this backend at all.
    pub fn is_supported(&self) -> bool {
        self.supported
    }

    /// Name of the store family, for messages.
    pub fn kind(&self) -> String {
        self.client.kind()
    }

    /// How results leave this store.
    pub fn expiry(&self) -> Expiry {
        self.client.expiry()
    }

    /// A real round trip, bounded by `timeout`.
    pub async fn probe(&self, timeout: Duration) -> Result<Probe, StoreError> {
        let started = Instant::now();
        let detail = tokio::time::timeout(timeout, self.client.probe())
            .await
            .map_err(|_| StoreError::Timeout {
                store: self.kind(),
                timeout,
            })??;
        Ok(Probe {
            latency: started.elapsed(),
            detail,
        })
    }

    /// Delete (or count, in a dry run) the results Celery stored that completed before the
    /// cutoff; a store that expires results itself, or that the operator cannot clean yet, says
    /// why instead.
    pub async fn purge_expired(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        match self.expiry() {
            Expiry::Purgeable => self.client.purge(opts).await,
            // Redis with a TTL: keys written before result_expires was set have none and stay
            // forever; the client skips the expiring ones, so an explicit cleanup still helps.
            Expiry::Native(_) if self.client.purges_when_native() => self.client.purge(opts).await,
            Expiry::Native(why) => Err(StoreError::Unsupported(format!("nothing to purge: {why}"))),
            Expiry::Unsupported(why) => Err(StoreError::Unsupported(why)),
        }
    }
}

/// Sleep long enough that `done` deletions since `started` stay under `rate` per second.
pub async fn pace(rate: u32, done: u64, started: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / f64::from(rate));
    let elapsed = started.elapsed();
    if due > elapsed {
        tokio::time::sleep(due - elapsed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA hint goes with a certificate that did not verify, never with a server that wants
    /// a client certificate (the CA was fine then).
    #[test]
    fn tls_hints_follow_what_failed() {
        let hint = Some("the operator verified the server with the CA of X");
        let msg = |e: &str| StoreError::tls("redis at h:1", e, hint).to_string();
        assert!(msg("invalid peer certificate: UnknownIssuer").contains("the CA of X"));
        let m = msg("received fatal alert: CertificateRequired");
        assert!(
            !m.contains("the CA of X") && m.contains("set tls.clientCertificateSecretRef"),
            "{m}"
        );
        assert!(!msg("connection reset by peer").contains("the CA of X"));
    }

    #[test]
    fn cause_chains_read_as_one_sentence() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "client error (Connect)",
                Some(Box::new(E("tcp connect error: Connection refused", None))),
            ))),
        );
        assert_eq!(
            cause_chain(&e),
            "error sending request: client error (Connect): tcp connect error: Connection refused"
        );
    }

    #[tokio::test]
    async fn an_explicit_redis_cleanup_runs_even_with_a_ttl() {
        // Keys written before result_expires was set carry no TTL: with a TTL configured the
        // expiry is native, yet an explicit cleanup still reaches the store (here: a closed port)
        // instead of being refused as "nothing to purge".
        let cfg = BackendConfig {
            uri: "redis://127.0.0.1:1/0".into(),
            ..Default::default()
        };
        let store = Store::from_config(&cfg, true);
        assert!(matches!(store.expiry(), Expiry::Native(_)));
        let opts = PurgeOptions {
            cutoff_unix: 0,
            batch: 10,
            rate: 0,
            dry_run: true,
        };
        let e = store.purge_expired(opts).await.err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| !m.contains("nothing to purge")),
            "{e:?}"
        );
    }

    #[test]
    fn worker_local_backends_are_named() {
        let c = |uri: &str| BackendConfig {
            uri: uri.into(),
            ..Default::default()
        };
        let local = |uri: &str| {
            crate::backends::worker_local(
                BackendKind::of_scheme(uri.split("://").next()?)?,
                &c(uri),
            )
            .map(|(p, _)| p)
        };
        assert_eq!(
            local("file:///var/lib/celery/results").as_deref(),
            Some("/var/lib/celery/results")
        );
        assert_eq!(
            local("db+sqlite:////var/lib/my%20results.db").as_deref(),
            Some("/var/lib/my results.db")
        );
        assert_eq!(local("redis://h:6379/0"), None);
        assert_eq!(local("db+postgresql://u@h/db"), None);
        assert!(not_visible(&c("db+sqlite:////no/such/dir/my%20r.db"))
            .is_some_and(|m| m.starts_with("/no/such/dir/my r.db is inside")));
        assert!(not_visible(&c("file:///no/such/dir/cbo")).is_some());
        assert!(not_visible(&c("file:///tmp")).is_none());
        // SQLite creates its file on first use: the directory is what must be visible.
        assert!(not_visible(&c("db+sqlite:////tmp/not-yet-created-cbo.db")).is_none());
        assert!(not_visible(&c("db+sqlite:////no/such/dir/r.db")).is_some());
    }

    #[test]
    fn endpoints_never_carry_credentials() {
        for (uri, want) in [
            ("redis://:p%40ss@10.0.0.5:6379/0", "10.0.0.5:6379"),
            (
                "rediss://u:p@[fd00::1]:6380/1?ssl_cert_reqs=required",
                "[fd00::1]:6380",
            ),
            ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
        ] {
            assert_eq!(endpoint_of(uri), want);
        }
    }

    #[test]
    fn scrub_removes_credentials() {
        assert_eq!(
            scrub("error connecting to redis://:p%40ss@host:6379/0 (refused)"),
            "error connecting to redis://***@host:6379/0 (refused)"
        );
        assert_eq!(scrub("postgres://u:pw@h/db"), "postgres://***@h/db");
        assert_eq!(scrub("plain message"), "plain message");
    }

    #[test]
    fn stores_are_chosen_from_the_uri() {
        let c = |uri: &str| BackendConfig {
            uri: uri.into(),
            ..Default::default()
        };
        assert_eq!(
            Store::from_config(&c("redis://h:6379/0"), true).kind(),
            "redis"
        );
        assert_eq!(
            Store::from_config(&c("db+postgresql+psycopg2://u:p@h/db"), true).kind(),
            "postgresql"
        );
        assert_eq!(
            Store::from_config(&c("db+mysql+pymysql://u:p@h/db"), true).kind(),
            "mysql"
        );
        assert_eq!(
            Store::from_config(&c("db+sqlite:////tmp/x.db"), true).kind(),
            "sqlite"
        );
        assert!(matches!(
            Store::from_config(&c("cache+memcached://h:1;h:2/"), true).expiry(),
            Expiry::Native(_)
        ));
        assert!(matches!(
            Store::from_config(&c("s3://"), true).expiry(),
            Expiry::Purgeable
        ));
        assert!(matches!(
            Store::from_config(&c("consul://h:8500/p"), true).expiry(),
            Expiry::Native(_)
        ));
        // resultExpires: 0s -> Celery's Consul sessions get no TTL: nothing expires them.
        let mut never = c("consul://h:8500/p");
        never
            .settings
            .insert("result_expires".into(), serde_json::Value::Null);
        assert!(matches!(
            Store::from_config(&never, true).expiry(),
            Expiry::Unsupported(_)
        ));
        assert_eq!(
            Store::from_config(&c("gs://bucket/base?gcs_project=p"), true).kind(),
            "gcs"
        );
        assert_eq!(
            Store::from_config(&c("gs://bucket/base?gcs_project=p"), true).expiry(),
            Expiry::Purgeable
        );
        assert!(matches!(
            Store::from_config(&c("gs://bucket/base?gcs_project=p&gcs_ttl=86400"), true).expiry(),
            Expiry::Native(why) if why.contains("lifecycle")
        ));
        assert!(matches!(
            Store::from_config(&c("cosmosdbsql://:k@h:443"), true).expiry(),
            Expiry::Unsupported(_)
        ));
        assert!(matches!(
            Store::from_config(&c("dynamodb://k:s@us-east-1/t"), true).expiry(),
            Expiry::Purgeable
        ));
        assert!(matches!(
            Store::from_config(&c("dynamodb://k:s@us-east-1/t?ttl_seconds=60"), true).expiry(),
            Expiry::Native(_)
        ));
        assert_eq!(
            Store::from_config(&c("mongodb://h:27017/db"), true).expiry(),
            Expiry::Purgeable
        );
    }
}
