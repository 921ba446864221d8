//! Redis (Celery's `redis://`, `rediss://`, `sentinel://` backends): probe, and cleanup of results
//! stored without a TTL.

use std::collections::HashSet;
use std::time::Instant;

use crate::stores::plan::{self, CeleryClock, GroupVerdict, TaskVerdict};
use crate::stores::{pace, Expiry, PurgeOptions, PurgeReport, StoreError};
use crate::uri::BackendConfig;

pub struct RedisStore {
    uri: String,
    prefix: String,
    /// `result_expires` is a number (keys get a TTL) rather than None (keys live forever).
    ttl: bool,
    /// Celery's `timezone`/`enable_utc`, for naive `date_done` strings.
    clock: CeleryClock,
    /// TLS material from the backend's Secrets (`rediss://` and TLS Sentinel deployments).
    tls: Option<crate::uri::TlsMaterial>,
    /// For `sentinel://`: what Celery reads beside the URI.
    sentinel: Option<Sentinel>,
}

/// A Sentinel deployment as Celery's `SentinelBackend` reaches it: the master's name
/// (`result_backend_transport_options.master_name`), the Sentinels' own password and TLS
/// (`sentinel_kwargs`), and TLS to the master (`redis_backend_use_ssl`).
#[derive(Clone, Debug, Default)]
struct Sentinel {
    master_name: String,
    sentinel_password: Option<String>,
    sentinel_tls: bool,
    master_tls: bool,
}

impl Sentinel {
    fn from_settings(cfg: &BackendConfig) -> Option<Self> {
        if !cfg.uri.starts_with("sentinel://") {
            return None;
        }
        let transport = cfg.settings.get("result_backend_transport_options");
        let kwargs = transport.and_then(|t| t.get("sentinel_kwargs"));
        Some(Sentinel {
            master_name: transport
                .and_then(|t| t.get("master_name"))
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string(),
            sentinel_password: kwargs
                .and_then(|k| k.get("password"))
                .and_then(|p| p.as_str())
                .map(String::from),
            sentinel_tls: kwargs
                .and_then(|k| k.get("ssl"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            master_tls: cfg.settings.contains_key("redis_backend_use_ssl"),
        })
    }
}

/// One Sentinel of Celery's list, with the master's credentials and database it carries.
#[derive(Clone)]
struct SentinelNode {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: i64,
}

/// One `sentinel://[user:password@]host:port/db` of Celery's `;`-separated list: the address and
/// the (percent-decoded) master credentials and database.
fn sentinel_node(uri: &str) -> Option<SentinelNode> {
    let rest = uri.trim().strip_prefix("sentinel://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, "0"));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .to_string()
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(decode(n)).filter(|n| !n.is_empty()), Some(decode(p))),
            None => (Some(decode(u)).filter(|n| !n.is_empty()), None),
        },
        None => (None, None),
    };
    let (host, port) = hostport.rsplit_once(':')?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let db = path
        .split(['?', '/'])
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    Some(SentinelNode {
        host,
        port: port.parse().ok()?,
        user,
        password,
        db,
    })
}

use crate::stores::plan::{GROUP_KEY, TASK_KEY};

/// Suffixes of the chord bookkeeping keys Celery's Redis backend keeps beside a group key
/// (`RedisBackend.on_chord_part_return` and its Lua scripts): `.j` joined results (ZSET, or LIST
/// with `result_chord_ordered: False`), `.t` total counter, `.s` size, `.d` dedupe SET, `.c`
/// claim or "done" marker.
pub const CHORD_SUFFIXES: [&str; 5] = [".j", ".t", ".s", ".d", ".c"];

/// What a Redis key under the result key prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum RedisKey<'a> {
    /// `celery-task-meta-<task id>`.
    Task(&'a str),
    /// `celery-taskset-meta-<group id>`.
    Group(&'a str),
    /// `celery-taskset-meta-<group id>.<j|t|s|d|c>`: a chord's counters and joined results.
    ChordBookkeeping,
    /// Anything else.
    Other,
}

/// `s` as a literal in a Redis glob (SCAN MATCH): `*`, `?`, `[`, `]` and `\\` escaped with a
/// backslash (Redis `stringmatchlen`), so a key prefix such as `team[a]` matches only itself.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Classify a key whose `global_keyprefix` is already removed.
pub fn redis_key(key: &str) -> RedisKey<'_> {
    if let Some(id) = key.strip_prefix(TASK_KEY) {
        return RedisKey::Task(id);
    }
    if let Some(id) = key.strip_prefix(GROUP_KEY) {
        if CHORD_SUFFIXES.iter().any(|s| id.ends_with(s)) {
            return RedisKey::ChordBookkeeping;
        }
        return RedisKey::Group(id);
    }
    RedisKey::Other
}

/// A key as read for cleanup.
enum Read {
    Missing,
    /// Not a string (a list, set, …): not something the rule can read.
    WrongType,
    Value {
        bytes: Vec<u8>,
        /// The key carries a TTL: Redis expires it itself.
        expiring: bool,
    },
}

/// Said when Redis answers NOAUTH: no password was sent at all (a wrong one is WRONGPASS).
const NO_PASSWORD_HINT: &str = "the server requires a password and none is configured: set spec.redis.external.auth.passwordSecretRef";

/// Whether Redis asked for a password that was not sent: `NOAUTH` to a command, or, when the
/// connection selects a db other than 0, redis-rs's "refused to switch database" wrapping it.
fn no_password_sent(e: &redis::RedisError) -> bool {
    e.code() == Some("NOAUTH") || {
        let t = e.to_string();
        t.contains("NOAUTH") || t.contains("Authentication required")
    }
}

fn redis_err(e: redis::RedisError) -> StoreError {
    if no_password_sent(&e) {
        return StoreError::auth("redis", format!("{e} ({NO_PASSWORD_HINT})"));
    }
    if redis_auth_failed(&e) {
        return StoreError::auth("redis", e);
    }
    StoreError::protocol("redis", e)
}

/// Whether Redis refused the credentials (AUTH failed, `WRONGPASS`, `NOAUTH`, `NOPERM`).
fn redis_auth_failed(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// TYPE and TTL of every key, then GET of the strings: never a command that fails on a key of
/// another type, so an unexpected type is reported instead of aborting the run.
async fn read_keys(
    c: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Result<Vec<Read>, StoreError> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("TYPE").arg(k).cmd("TTL").arg(k);
    }
    let answers: Vec<redis::Value> = pipe.query_async(c).await.map_err(redis_err)?;
    let mut kinds = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let ty: String = answers
            .get(2 * i)
            .cloned()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let ttl: i64 = answers
            .get(2 * i + 1)
            .cloned()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(-2);
        kinds.push((ty, ttl));
    }
    let strings: Vec<&String> = keys
        .iter()
        .zip(&kinds)
        .filter(|(_, (ty, _))| ty == "string")
        .map(|(k, _)| k)
        .collect();
    let mut values: Vec<Option<Vec<u8>>> = vec![];
    if !strings.is_empty() {
        let mut pipe = redis::pipe();
        for k in &strings {
            pipe.cmd("GET").arg(*k);
        }
        match pipe.query_async(c).await {
            Ok(v) => values = v,
            // A key changed type since TYPE: read one by one so only that key is skipped.
            Err(_) => {
                for k in &strings {
                    let v: Result<Option<Vec<u8>>, _> =
                        redis::cmd("GET").arg(*k).query_async(c).await;
                    match v {
                        Ok(v) => values.push(v),
                        Err(e) if e.code() == Some("WRONGTYPE") => values.push(None),
                        Err(e) => return Err(redis_err(e)),
                    }
                }
            }
        }
    }
    let mut values = values.into_iter();
    Ok(kinds
        .into_iter()
        .map(|(ty, ttl)| match ty.as_str() {
            "none" => Read::Missing,
            "string" => match values.next().flatten() {
                Some(bytes) => Read::Value {
                    bytes,
                    expiring: ttl != -1,
                },
                None => Read::Missing,
            },
            _ => Read::WrongType,
        })
        .collect())
}

impl RedisStore {
    pub fn new(cfg: &BackendConfig, result_expires_set: bool) -> Self {
        let prefix = cfg
            .settings
            .get("result_backend_transport_options")
            .and_then(|t| t.get("global_keyprefix"))
            .and_then(|p| p.as_str())
            .map(super::celery_key_prefix)
            .unwrap_or_default();
        let ttl = result_expires_set
            && !matches!(
                cfg.settings.get("result_expires"),
                Some(serde_json::Value::Null)
            );
        // redis-rs reads `redis+unix://`; `sentinel://` goes through `sentinel_conn`.
        let uri = cfg.uri.replacen("redis+socket://", "redis+unix://", 1);
        RedisStore {
            uri,
            prefix,
            ttl,
            clock: CeleryClock::from_settings(cfg),
            tls: cfg.tls.clone(),
            sentinel: Sentinel::from_settings(cfg),
        }
    }

    pub fn expiry(&self) -> Expiry {
        if self.ttl {
            Expiry::Native("Redis keys carry result_expires as TTL".into())
        } else {
            Expiry::Purgeable
        }
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        if let Some(s) = &self.sentinel {
            return self.sentinel_conn(s).await;
        }
        let tls = self.uri.starts_with("rediss://");
        let store = format!("redis at {}", crate::stores::endpoint_of(&self.uri));
        let client = if tls {
            self.tls_client()?
        } else {
            redis::Client::open(self.uri.as_str()).map_err(|e| StoreError::connect(&store, e))?
        };
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| self.connect_error(&store, e, tls))
    }

    /// The Secret-held TLS material as redis-rs takes it; `None` when there is none (the
    /// system's trust store, no client certificate).
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        let t = self.tls.as_ref()?;
        if t.ca_pem.is_none() && t.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: t.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: t.ca_pem.clone(),
        })
    }

    /// A failed connection as the health reasons read it: refused credentials, a TLS failure
    /// (with a hint when the CA is a worker path; a TLS client that gets no handshake answer is
    /// one too), or an unreachable store.
    fn connect_error(&self, store: &str, e: redis::RedisError, tls: bool) -> StoreError {
        if no_password_sent(&e) {
            StoreError::auth(store, format!("{e} ({NO_PASSWORD_HINT})"))
        } else if redis_auth_failed(&e) {
            StoreError::auth(
                store,
                format!("{e} (the user name and password of spec.redis.external.auth)"),
            )
        } else if crate::stores::tls_failure(&e.to_string()) {
            let hint = self.tls.as_ref().and_then(crate::stores::tls_hint);
            StoreError::tls(store, e, hint.as_deref())
        } else if tls && e.is_timeout() {
            StoreError::tls(
                store,
                format!("{e} (no answer to the TLS handshake: does this port speak TLS?)"),
                None,
            )
        } else if !tls && e.to_string().contains("Connection reset by peer") {
            // A TLS-only server drops a plain-text client that way.
            StoreError::connect(
                store,
                format!("{e} (the server closed the connection: if it speaks TLS only, set tls.enabled: true)"),
            )
        } else {
            StoreError::connect(store, e)
        }
    }

    /// The master of a Sentinel deployment, found through the Sentinels as Celery's
    /// `SentinelBackend` finds it (`master_for(master_name)`): the Sentinels with their own
    /// password and TLS, the master with the URI's credentials and database and TLS when
    /// `redis_backend_use_ssl` is set, each with the Secret material.
    async fn sentinel_conn(
        &self,
        s: &Sentinel,
    ) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        use redis::IntoConnectionInfo;
        let nodes: Vec<_> = self.uri.split(';').filter_map(sentinel_node).collect();
        let endpoints = nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect::<Vec<_>>()
            .join(", ");
        let store = format!("redis master {:?} via Sentinel {endpoints}", s.master_name);
        let Some(SentinelNode {
            user, password, db, ..
        }) = nodes.first().cloned()
        else {
            return Err(StoreError::connect(
                &store,
                "no Sentinel address in the URI",
            ));
        };
        let insecure = self
            .tls
            .as_ref()
            .is_some_and(|t| t.verify == crate::api::TlsVerify::None);
        let addr = |h: &str, p: u16, tls: bool| {
            if tls {
                redis::ConnectionAddr::TcpTls {
                    host: h.to_string(),
                    port: p,
                    insecure,
                    tls_params: None,
                }
            } else {
                redis::ConnectionAddr::Tcp(h.to_string(), p)
            }
        };
        let mode = if insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        let mut b = SentinelClientBuilder::new(
            nodes.iter().map(|n| addr(&n.host, n.port, s.sentinel_tls)),
            &s.master_name,
            SentinelServerType::Master,
        )
        .map_err(|e| StoreError::connect(&store, e))?
        .set_client_to_redis_db(db);
        if let Some(u) = &user {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &password {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(p) = &s.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        let certs = self.certificates();
        if s.master_tls {
            b = b.set_client_to_redis_tls_mode(mode);
            if let Some(c) = certs.clone() {
                b = b.set_client_to_redis_certificates(c);
            }
        }
        if s.sentinel_tls {
            b = b.set_client_to_sentinel_tls_mode(mode);
            if let Some(c) = certs {
                b = b.set_client_to_sentinel_certificates(c);
            }
        }
        let mut client = b.build().map_err(|e| StoreError::connect(&store, e))?;
        match client.get_async_connection().await {
            Ok(c) => Ok(c),
            // redis-rs reports the Sentinel's refusal and the master's alike: ask the first
            // Sentinel alone, so the message names the password that was wrong.
            Err(e) if redis_auth_failed(&e) => {
                let n = &nodes[0];
                let sentinel_at = format!("Redis Sentinel at {}:{}", n.host, n.port);
                let mut info = redis::RedisConnectionInfo::default();
                if let Some(p) = &s.sentinel_password {
                    info = info.set_password(p);
                }
                let conn = addr(&n.host, n.port, s.sentinel_tls)
                    .into_connection_info()
                    .map(|i| i.set_redis_settings(info));
                let sentinel = match (conn, self.certificates().filter(|_| s.sentinel_tls)) {
                    (Ok(i), Some(c)) => redis::Client::build_with_tls(i, c),
                    (Ok(i), None) => redis::Client::open(i),
                    (Err(e), _) => Err(e),
                };
                let refused_by_sentinel = match sentinel {
                    Ok(c) => match c.get_multiplexed_async_connection().await {
                        Ok(mut conn) => redis::cmd("PING")
                            .query_async::<String>(&mut conn)
                            .await
                            .is_err_and(|e| redis_auth_failed(&e)),
                        Err(e) => redis_auth_failed(&e),
                    },
                    Err(_) => false,
                };
                Err(if refused_by_sentinel {
                    StoreError::auth(
                        &sentinel_at,
                        format!("{e} (the Sentinel's password: spec.redis.external.sentinel.sentinelPasswordSecretRef)"),
                    )
                } else {
                    StoreError::auth(
                        &store,
                        format!("{e} (the master's password: spec.redis.external.auth)"),
                    )
                })
            }
            Err(e) if e.to_string().contains("not found in sentinel") => Err(StoreError::connect(
                &store,
                format!("{e} (spec.redis.external.sentinel.masterName)"),
            )),
            // A TLS-only Sentinel drops a plain-text client that way.
            Err(e) if !s.sentinel_tls && e.to_string().contains("Connection reset by peer") => {
                let fix = if s.master_tls {
                    "drop spec.redis.external.sentinel.tls: false"
                } else {
                    "set tls.enabled: true"
                };
                Err(StoreError::connect(
                    &store,
                    format!("{e} (a Sentinel closed the connection: if the Sentinels speak TLS only, {fix})"),
                ))
            }
            Err(e) => Err(self.connect_error(&store, e, s.master_tls || s.sentinel_tls)),
        }
    }

    /// A client for `rediss://` with the semantics redis-py applies to Celery's `ssl_*`
    /// parameters: `ssl_cert_reqs=none` accepts any certificate (`#insecure`); `optional` and
    /// `required` verify the chain (Python's client-side `CERT_OPTIONAL` verifies too) against
    /// the CA from `caSecretRef`, or the system's trust store, and present the client
    /// certificate when one is given. The host name is verified whenever the chain is (stricter
    /// than redis-py without `ssl_check_hostname`; never weaker). Never falls back to plain text.
    fn tls_client(&self) -> Result<redis::Client, StoreError> {
        // redis-rs reads neither Celery's ssl_* query nor the file paths (worker-local).
        let base = self.uri.split('?').next().unwrap_or_default();
        let insecure = self
            .tls
            .as_ref()
            .map(|t| t.verify == crate::api::TlsVerify::None)
            .unwrap_or_else(|| self.uri.contains("ssl_cert_reqs=none"));
        let url = if insecure {
            format!("{base}#insecure")
        } else {
            base.to_string()
        };
        match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)
                .map_err(|e| StoreError::tls("redis", e, None)),
            None => redis::Client::open(url.as_str()).map_err(|e| StoreError::connect("redis", e)),
        }
    }

    pub async fn probe(&self) -> Result<String, StoreError> {
        let mut c = self.conn().await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(redis_err)?;
        Ok(format!("PING answered {pong}"))
    }

    /// One SCAN page of keys matching `<prefix><pattern>*`, without the ones already seen.
    async fn scan_page(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
        pattern: &str,
        cursor: u64,
        count: usize,
        seen: &mut HashSet<String>,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}{pattern}*", glob_escape(&self.prefix)))
            .arg("COUNT")
            .arg(count)
            .query_async(c)
            .await
            .map_err(redis_err)?;
        // SCAN may return a key twice; count it once.
        Ok((
            next,
            keys.into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect(),
        ))
    }

    /// UNLINK (or, in a dry run, only count) the pending keys as one batch.
    async fn flush(
        &self,
        c: &mut redis::aio::MultiplexedConnection,
        pending: &mut Vec<String>,
        is_group: bool,
        opts: &PurgeOptions,
        report: &mut PurgeReport,
        started: Instant,
    ) -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        if !opts.dry_run {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&*pending)
                .query_async(c)
                .await
                .map_err(redis_err)?;
        }
        report.record(is_group, pending.len(), t0.elapsed());
        pending.clear();
        if !opts.dry_run {
            pace(opts.rate, report.tasks + report.groups, started).await;
        }
        Ok(())
    }

    /// Cleanup of TTL-less result keys (keys with a TTL expire by themselves and are left alone).
    ///
    /// - Timestamp rule: a task meta's `date_done` is Celery's `app.now().isoformat()`, which
    ///   carries its UTC offset, so it is compared as an instant; naive strings are read in
    ///   Celery's zone (`CeleryClock`). Metas without `date_done` are kept and counted.
    /// - Group rule: Celery stores no timestamp with a group (`_save_group`), so a group is
    ///   deleted only when every member's task meta is present and expired (`plan::group_verdict`);
    ///   a group whose members are missing (not stored yet, or gone) is kept and counted. Groups
    ///   are decided and removed before the tasks, so an interrupted run cannot leave a group
    ///   whose expiry can no longer be shown.
    /// - Chord bookkeeping (`celery-taskset-meta-<id>.j/.t/.s/.d/.c`) is skipped and counted:
    ///   it has no timestamp, Celery removes it when the chord completes and otherwise expires it
    ///   only through `result_chord_expires`, and a chord still waiting for its header looks
    ///   exactly like an abandoned one. Keys of any other unexpected type or shape are skipped
    ///   and counted too; the run goes on.
    /// - Batches: each kind is deleted in UNLINKs of `batch` keys plus one remainder, in a dry run
    ///   counted the same way.
    pub async fn purge(&self, opts: PurgeOptions) -> Result<PurgeReport, StoreError> {
        let mut c = self.conn().await?;
        let zone = self.clock.zone();
        let naive = zone.as_ref().ok().map(|z| &z.1);
        let mut report = PurgeReport::new(&opts);
        report.time_rule = crate::stores::plan::iso_time_rule(&zone);
        report.group_rule = "a group is deleted only when every member result is present and expired (Celery stores no group timestamp in Redis)".into();
        let started = Instant::now();
        let batch = opts.batch.max(1) as usize;
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = vec![];

        // Groups first, while their members are still there.
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self
                .scan_page(&mut c, GROUP_KEY, cursor, batch, &mut seen)
                .await?;
            let mut groups = vec![];
            for k in keys {
                match redis_key(k.strip_prefix(&self.prefix).unwrap_or(&k)) {
                    RedisKey::Group(_) => groups.push(k),
                    RedisKey::ChordBookkeeping => report.skip("chord bookkeeping keys"),
                    _ => report.skip("unrecognised keys"),
                }
            }
            for (k, r) in groups.iter().zip(read_keys(&mut c, &groups).await?) {
                let bytes = match r {
                    Read::Missing | Read::Value { expiring: true, .. } => continue,
                    Read::WrongType => {
                        report.skip("keys of an unexpected type");
                        continue;
                    }
                    Read::Value { bytes, .. } => bytes,
                };
                let Some(members) = plan::group_members(&bytes) else {
                    report.skip("unreadable group results");
                    continue;
                };
                let member_keys: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}{TASK_KEY}{m}", self.prefix))
                    .collect();
                let verdicts: Vec<Option<TaskVerdict>> = read_keys(&mut c, &member_keys)
                    .await?
                    .into_iter()
                    .map(|r| match r {
                        Read::Missing => None,
                        Read::WrongType => Some(TaskVerdict::Unrecognised),
                        Read::Value { bytes, .. } => {
                            Some(plan::task_verdict(&bytes, opts.cutoff_unix, naive))
                        }
                    })
                    .collect();
                match plan::group_verdict(&verdicts) {
                    GroupVerdict::Expired => {
                        pending.push(k.clone());
                        if pending.len() >= batch {
                            self.flush(&mut c, &mut pending, true, &opts, &mut report, started)
                                .await?;
                        }
                    }
                    GroupVerdict::InUse => {}
                    GroupVerdict::Unproven => report.kept_groups_unproven += 1,
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.flush(&mut c, &mut pending, true, &opts, &mut report, started)
            .await?;

        // Then the tasks.
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self
                .scan_page(&mut c, TASK_KEY, cursor, batch, &mut seen)
                .await?;
            for (k, r) in keys.iter().zip(read_keys(&mut c, &keys).await?) {
                let bytes = match r {
                    Read::Missing | Read::Value { expiring: true, .. } => continue,
                    Read::WrongType => {
                        report.skip("keys of an unexpected type");
                        continue;
                    }
                    Read::Value { bytes, .. } => bytes,
                };
                match plan::task_verdict(&bytes, opts.cutoff_unix, naive) {
                    TaskVerdict::Expired => {
                        pending.push(k.clone());
                        if pending.len() >= batch {
                            self.flush(&mut c, &mut pending, false, &opts, &mut report, started)
                                .await?;
                        }
                    }
                    TaskVerdict::Fresh => {}
                    TaskVerdict::NoDateDone => report.kept_without_date_done += 1,
                    TaskVerdict::Unrecognised => report.skip("unreadable task results"),
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.flush(&mut c, &mut pending, false, &opts, &mut report, started)
            .await?;
        Ok(report)
    }
}

impl crate::stores::StoreClient for RedisStore {
    fn kind(&self) -> String {
        "redis".into()
    }
    fn expiry(&self) -> crate::stores::Expiry {
        RedisStore::expiry(self)
    }
    fn probe(&self) -> crate::stores::BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(RedisStore::probe(self))
    }
    fn purges_when_native(&self) -> bool {
        true
    }
    fn purge(
        &self,
        opts: PurgeOptions,
    ) -> crate::stores::BoxFuture<'_, Result<PurgeReport, StoreError>> {
        Box::pin(RedisStore::purge(self, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob_escape_keeps_prefixes_literal() {
        assert_eq!(glob_escape("team-a:"), "team-a:");
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    #[test]
    fn redis_store_uses_the_prefix_celery_writes() {
        let cfg = |p: &str| BackendConfig {
            uri: "redis://h:6379/0".into(),
            settings: [(
                "result_backend_transport_options".to_string(),
                serde_json::json!({ "global_keyprefix": p }),
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(RedisStore::new(&cfg("teama"), false).prefix, "teama_");
        assert_eq!(RedisStore::new(&cfg("team-a:"), false).prefix, "team-a:");
    }

    #[test]
    fn redis_keys_are_classified() {
        let table = [
            ("celery-task-meta-t1", RedisKey::Task("t1")),
            ("celery-taskset-meta-g1", RedisKey::Group("g1")),
            ("celery-taskset-meta-g1.j", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.t", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.s", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.d", RedisKey::ChordBookkeeping),
            ("celery-taskset-meta-g1.c", RedisKey::ChordBookkeeping),
            ("chord-unlock-g1", RedisKey::Other),
            ("unacked", RedisKey::Other),
        ];
        for (key, want) in table {
            assert_eq!(redis_key(key), want, "{key}");
        }
    }
}
