//! SQL databases through SQLAlchemy (`db+postgresql://`, `db+mysql://`, `db+sqlite://`): URI and settings.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::provision::{ContainerParts, Managed, Profile, Render};

/// Which engines and drivers take `tls`.
const TLS_SUPPORT: &str = "tls is supported for postgresql with psycopg2 or psycopg (libpq's sslmode) and mysql with pymysql; pg8000 takes an ssl_context a URI cannot carry, sqlite is a file";

pub(crate) fn database(cx: &mut Ctx, d: &DatabaseBackend) -> Result<(), BuildError> {
    let b = d.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.database",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.database.external";
    let (user, pw) = cx.auth(&format!("{f}.auth"), &b.auth)?;
    let mut opts: Vec<(&str, String)> = b
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    if let Some(t) = b.tls.as_ref().filter(|t| t.enabled) {
        let fld = format!("{f}.tls");
        let supported = match b.engine {
            DatabaseEngine::Postgresql => b.driver != Some(DatabaseDriver::Pg8000),
            DatabaseEngine::Mysql => {
                b.driver.unwrap_or(DatabaseDriver::Pymysql) == DatabaseDriver::Pymysql
            }
            DatabaseEngine::Sqlite => false,
        };
        if !supported {
            return Err(invalid(&fld, TLS_SUPPORT));
        }
        if let Some(k) = b
            .options
            .keys()
            // Every ssl* option: the typed fields set TLS, and any other (PyMySQL's ssl_disabled
            // or ssl_verify_identity, libpq's sslnegotiation, ...) could turn it off or drop the
            // CA behind the operator's back.
            .find(|k| k.to_ascii_lowercase().starts_with("ssl"))
        {
            return Err(invalid(
                &format!("{f}.options.{k}"),
                "set by tls: remove it from options",
            ));
        }
        cx.tls(&fld, t)?;
        let verify = t.verify.unwrap_or_default();
        let (cert, key) = t.client_paths();
        if b.engine == DatabaseEngine::Mysql {
            // SQLAlchemy's MySQLdb/PyMySQL dialect gathers the ssl_* query keys into PyMySQL's
            // `ssl` dict (sqlalchemy/dialects/mysql/mysqldb.py); PyMySQL verifies nothing when it
            // has no CA (`Connection._create_ssl_ctx`: CERT_NONE, no host name check), so
            // Required and Optional need one, and None leaves it out.
            let ca = t.ca_path();
            if verify != TlsVerify::None {
                let ca = ca.ok_or_else(|| {
                    invalid(
                        &fld,
                        "PyMySQL verifies nothing without a CA: set tls.caSecretRef, tls.caConfigMapRef or tls.caFile, or tls.verify: None",
                    )
                })?;
                opts.push(("ssl_ca", ca));
            }
            opts.push((
                "ssl_check_hostname",
                (verify == TlsVerify::Required).to_string(),
            ));
            for (k, v) in [("ssl_cert", cert), ("ssl_key", key)] {
                if let Some(v) = v {
                    opts.push((k, v));
                }
            }
        } else {
            // libpq: verify-full checks the chain and the host name, verify-ca the chain only,
            // require encrypts without checking (https://www.postgresql.org/docs/current/libpq-ssl.html).
            opts.push((
                "sslmode",
                match verify {
                    TlsVerify::Required => "verify-full",
                    TlsVerify::Optional => "verify-ca",
                    TlsVerify::None => "require",
                }
                .into(),
            ));
            if t.client_certificate_secret_ref.is_some() {
                cx.warn("database tls: libpq reads a client key only when root owns it with mode 0640 or less, so the webhook mounts tls.key 0640 (Secret volume files are root-owned); a worker that does not run as root needs a pod securityContext.fsGroup to read it");
            }
            // With `require` and an sslrootcert libpq still verifies the chain (as verify-ca):
            // verify None leaves the CA out, as the operator's own client does.
            let ca = t.ca_path().filter(|_| verify != TlsVerify::None);
            for (k, v) in [("sslrootcert", ca), ("sslcert", cert), ("sslkey", key)] {
                if let Some(v) = v {
                    opts.push((k, v));
                }
            }
        }
    }
    let q = query(opts);
    match b.engine {
        DatabaseEngine::Sqlite => {
            let path = b
                .path
                .as_deref()
                .ok_or_else(|| invalid(&format!("{f}.path"), "sqlite needs path"))?;
            if !path.starts_with('/') {
                return Err(invalid(&format!("{f}.path"), "must be an absolute path"));
            }
            checked_path(&format!("{f}.path"), Some(&path.to_string()))?;
            if b.host.is_some() || b.database.is_some() || b.auth.is_some() {
                return Err(invalid(
                    f,
                    "sqlite takes path only (no host, database or auth)",
                ));
            }
            // SQLAlchemy's make_url (and sqlx, for cleanup) percent-decode the database path once:
            // encode it so '%', '?', '#' and spaces arrive as written.
            cx.out.uri = format!("db+sqlite:///{}{q}", encode::path(path));
            cx.bind("type", "sqlite");
            cx.bind("database", path);
            cx.warn("SQLite results live in one file: every worker must share it (one node only)");
        }
        engine => {
            let (name, default_port, default_driver, drivers): (
                &str,
                u16,
                DatabaseDriver,
                &[DatabaseDriver],
            ) = match engine {
                DatabaseEngine::Postgresql => (
                    "postgresql",
                    5432,
                    DatabaseDriver::Psycopg2,
                    &[
                        DatabaseDriver::Psycopg2,
                        DatabaseDriver::Psycopg,
                        DatabaseDriver::Pg8000,
                    ],
                ),
                _ => (
                    "mysql",
                    3306,
                    DatabaseDriver::Pymysql,
                    &[
                        DatabaseDriver::Pymysql,
                        DatabaseDriver::Mysqldb,
                        DatabaseDriver::Mysqlconnector,
                    ],
                ),
            };
            let driver = b.driver.unwrap_or(default_driver);
            if !drivers.contains(&driver) {
                return Err(invalid(
                    &format!("{f}.driver"),
                    format!("{driver:?} is not a {name} driver").to_lowercase(),
                ));
            }
            let host = b
                .host
                .as_deref()
                .ok_or_else(|| invalid(&format!("{f}.host"), format!("{name} needs host")))?;
            let db = b.database.as_deref().ok_or_else(|| {
                invalid(&format!("{f}.database"), format!("{name} needs database"))
            })?;
            // SQLAlchemy keeps the URL (brackets included) and hands the bare address to the DBAPI.
            let uri_host = checked_host(&format!("{f}.host"), host, Ipv6Rule::Bracketed)?;
            let port = b.port.unwrap_or(default_port);
            let driver_name = format!("{driver:?}").to_lowercase();
            cx.out.uri = format!(
                "db+{name}+{driver_name}://{}{uri_host}:{port}/{}{q}",
                userinfo(user.as_deref(), pw.as_deref(), component),
                component(db)
            );
            cx.bind("type", name);
            cx.bind_endpoint(host, port, &user, &pw);
            cx.bind("database", db);
        }
    }
    let tables =
        |t: &Option<DatabaseTables>, task_default: Option<&str>, group_default: Option<&str>| {
            t.as_ref().map(|t| {
                json!({
                    "task": t.task.as_deref().or(task_default),
                    "group": t.group.as_deref().or(group_default),
                })
            })
        };
    let names = tables(
        &d.table_names,
        Some("celery_taskmeta"),
        Some("celery_tasksetmeta"),
    );
    cx.set_opt("database_table_names", names);
    let schemas = tables(&d.table_schemas, None, None);
    cx.set_opt("database_table_schemas", schemas);
    Ok(())
}

impl Family for DatabaseBackend {
    /// SQLite: the file's directory must exist (the file itself is created on first use).
    fn worker_local(cfg: &crate::uri::BackendConfig) -> Option<(String, std::path::PathBuf)> {
        let p = cfg.uri.strip_prefix("db+sqlite:///")?;
        let p = p.split('?').next().unwrap_or_default();
        let p = percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .to_string();
        let dir = std::path::Path::new(&p)
            .parent()
            .map(|d| d.to_path_buf())
            .unwrap_or_default();
        Some((p, dir))
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.auth("spec.database.external.auth", &e.auth);
            refs.tls("spec.database.external.tls", &e.tls);
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        database(cx, self)
    }

    fn tls(&self) -> Option<&TlsConfig> {
        self.external.as_ref()?.tls.as_ref()
    }

    /// libpq's rule on key files: 0640, root-owned (as Secret volume files are).
    fn private_key_mode(&self) -> Option<i32> {
        let e = self.external.as_ref()?;
        (e.engine == DatabaseEngine::Postgresql).then_some(0o640)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::SqlStore::new(cfg))))
    }
}

/// Default name of the database a managed PostgreSQL creates.
pub const DEFAULT_DATABASE: &str = "celery";

/// The store this family provisions in managed mode.
pub(crate) const MANAGED: Profile = crate::provision::Profile {
    store: "postgresql",
    component: "postgresql",
    default_image: "docker.io/library/postgres",
    default_version: "17",
    port: 5432,
    port_name: "postgresql",
    uid: 999,
    data_path: "/var/lib/postgresql/data",
    username: "celery",
    memory: "256Mi",
    read_only_root: true,
};

impl crate::provision::ManagedProfile for DatabaseBackend {
    const PROFILE: &'static Profile = &MANAGED;
}

impl Managed for DatabaseBackend {
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)> {
        self.managed
            .as_ref()
            .map(|m| (&m.common, m.database.clone()))
    }
    fn container(&self, r: &Render) -> ContainerParts {
        let database = r
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        ContainerParts {
            command: Value::Null,
            env: vec![
                r.username_env("POSTGRES_USER"),
                r.password_env("POSTGRES_PASSWORD"),
                json!({"name": "POSTGRES_DB", "value": database}),
                json!({"name": "PGDATA", "value": format!("{}/pgdata", r.profile.data_path)}),
            ],
            readiness: json!({"exec": {"command": ["sh", "-c", "pg_isready -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""]}}),
            post_start: None,
            scratch: vec![("run", "/var/run/postgresql")],
        }
    }
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec) {
        out.database = Some(DatabaseBackend {
            external: Some(DatabaseExternal {
                engine: DatabaseEngine::Postgresql,
                driver: None,
                host: Some(r.host.clone()),
                port: Some(r.profile.port),
                database: Some(
                    r.name
                        .clone()
                        .unwrap_or_else(|| DEFAULT_DATABASE.to_string()),
                ),
                path: None,
                auth: Some(r.auth(true)),
                options: Default::default(),
                tls: None,
            }),
            managed: None,
            table_names: self.table_names.clone(),
            table_schemas: self.table_schemas.clone(),
        });
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[
            ("mysql", "db+mysql+pymysql://celery:maria%3Adb%40pw@127.0.0.1:3306/celery"),
            ("postgresql", "db+postgresql+psycopg2://celery:p%40ss%3Aw%2Frd%23%3F%25%20%2B%26@127.0.0.1:5432/celery_results?sslmode=prefer"),
            ("sqlite", "db+sqlite:////var/lib/celery/results.db"),
        ]);
    }
}
