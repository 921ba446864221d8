//! The URI oracle: for every Celery backend, the builder's URI and settings (rendered as
//! celeryconfig.py) are loaded by a real Celery 5.7 and handed to Celery's own backend class; Celery
//! must end up with exactly the host, port, user, password, database/bucket/index/container/table
//! and options the spec asked for. Then random passwords, 1,000 per backend family, go the same way.

mod support;

use std::collections::BTreeMap;

/// A real self-signed certificate and its key, made once (the builder parses TLS material).
fn test_pem() -> &'static (String, String) {
    static PEM: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["test.invalid".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    });
    &PEM
}

use cbo::api::CeleryResultBackendSpec;
use cbo::uri::{build, config_module, SecretValues};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn oracle() -> String {
    format!("{}/tests/oracle/oracle.py", support::cluster::root())
}

/// Passwords that break naive URI building.
const NASTY: &[&str] = &[
    "p@ss:w/rd#?%",
    "a b+c&d=e",
    "q'u\"o`t\\e",
    "ünïcødé-密码-🔑",
    "%41%2F%",
    "semi;colon,comma",
    "[brackets]{}|^<>",
    " leading and trailing ",
    "plain",
];

struct Case {
    id: String,
    kind: &'static str,
    spec: Value,
    secrets: SecretValues,
    expect: Value,
}

fn secrets(pairs: &[(&str, &str, &str)]) -> SecretValues {
    let mut s = SecretValues::new();
    for (name, key, value) in pairs {
        s.entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
    }
    s
}

fn sref(key: &str) -> Value {
    json!({"name": "creds", "key": key})
}

/// Render every case and ask Celery; fail listing every case Celery disagrees with.
fn check(cases: Vec<Case>) {
    let n = cases.len();
    let mut input = vec![];
    let mut ids = BTreeMap::new();
    for c in cases {
        // Celery is handed the whole config module below, as a worker injected with
        // `configModule: true` gets it (which a backend whose TLS lives in settings requires).
        let mut v = c.spec.clone();
        if v.get("injection").is_none() {
            v["injection"] = json!({"configModule": true});
        }
        let spec: CeleryResultBackendSpec = serde_json::from_value(v)
            .unwrap_or_else(|e| panic!("{}: spec does not deserialize: {e}", c.id));
        let cfg =
            build(&spec, &c.secrets).unwrap_or_else(|e| panic!("{}: build failed: {e}", c.id));
        ids.insert(c.id.clone(), cfg.uri.clone());
        input.push(json!({
            "id": c.id, "kind": c.kind, "config_module": config_module(&cfg), "expect": c.expect,
        }));
    }
    // Two Python processes (one per core) share large batches.
    let chunk = input.len().div_ceil(if input.len() > 1000 { 2 } else { 1 });
    let handles: Vec<_> = input
        .chunks(chunk.max(1))
        .map(|c| {
            let c = Value::Array(c.to_vec());
            std::thread::spawn(move || support::python::run_json(&oracle(), &c))
        })
        .collect();
    let mut results = vec![];
    for h in handles {
        let out = h.join().expect("oracle thread");
        assert_eq!(
            out["celery"], "5.7.0",
            "the oracle must run the pinned Celery"
        );
        results.extend(out["results"].as_array().expect("results").iter().cloned());
    }
    assert_eq!(results.len(), n, "the oracle answered for every case");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r["ok"] != true)
        .map(|r| {
            let id = r["id"].as_str().unwrap_or("?");
            format!(
                "{id}\n  uri: {}\n  error: {}\n  mismatches: {}",
                ids.get(id).map(String::as_str).unwrap_or("?"),
                r["error"],
                r["mismatches"]
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {n} cases disagree with Celery:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ------------------------------------------------------------------ redis

fn redis_cases() -> Vec<Case> {
    let mut v = vec![];
    for (i, pw) in NASTY.iter().enumerate() {
        for (host, label) in [
            ("redis.prod.svc", "dns"),
            ("10.1.2.3", "ipv4"),
            ("fd00::1", "ipv6"),
        ] {
            v.push(Case {
                id: format!("redis/{label}/password-{i}"),
                kind: "redis",
                spec: json!({"redis": {"external": {"host": host, "port": 6380, "db": 3,
                    "auth": {"username": "worker", "passwordSecretRef": sref("pw")}}}}),
                secrets: secrets(&[("creds", "pw", pw)]),
                expect: json!({"class": "RedisBackend", "host": host, "port": 6380, "db": 3,
                    "username": "worker", "password": pw, "ssl": false}),
            });
        }
    }
    v.push(Case {
        id: "redis/defaults-left-out".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"host": "localhost"}}}),
        secrets: secrets(&[]),
        expect: json!({"host": "localhost", "port": 6379, "db": 0, "username": null, "password": null}),
    });
    for (verify, reqs) in [
        ("Required", "required"),
        ("Optional", "optional"),
        ("None", "none"),
    ] {
        v.push(Case {
            id: format!("redis/tls-verify-{verify}"),
            kind: "redis",
            spec: json!({"redis": {"external": {"host": "redis.tls", "port": 6380,
                "auth": {"passwordSecretRef": sref("pw")},
                "tls": {"enabled": true, "verify": verify, "caFile": "/etc/ssl/my ca+1.pem",
                        "certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"}}}}),
            secrets: secrets(&[("creds", "pw", "t#ls:pw")]),
            expect: json!({"host": "redis.tls", "port": 6380, "ssl": true, "ssl_cert_reqs": reqs,
                "ssl_ca_certs": "/etc/ssl/my ca+1.pem", "ssl_certfile": "/etc/ssl/c.pem",
                "ssl_keyfile": "/etc/ssl/k.pem", "password": "t#ls:pw"}),
        });
    }
    for (i, pw) in NASTY.iter().enumerate().take(4) {
        v.push(Case {
            id: format!("redis/tls-from-secrets-{i}"),
            kind: "redis",
            spec: json!({"redis": {"external": {"host": "redis.tls", "port": 6380,
                "auth": {"passwordSecretRef": sref("pw")},
                "tls": {"enabled": true, "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
                        "clientCertificateSecretRef": {"name": "redis-client"}}}}}),
            secrets: secrets(&[("creds", "pw", pw),
                ("redis-ca", "ca.crt", &test_pem().0),
                ("redis-client", "tls.crt", &test_pem().0),
                ("redis-client", "tls.key", &test_pem().1)]),
            expect: json!({"host": "redis.tls", "port": 6380, "ssl": true, "ssl_cert_reqs": "required",
                "ssl_ca_certs": "/etc/celery-backend/tls/redis-ca/ca.crt",
                "ssl_certfile": "/etc/celery-backend/tls/redis-client/tls.crt",
                "ssl_keyfile": "/etc/celery-backend/tls/redis-client/tls.key", "password": pw}),
        });
    }
    v.push(Case {
        id: "redis/options-and-key-prefix".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"host": "h", "options": {"socket_timeout": "5", "max_connections": "7"},
            "keyPrefix": "team-a:"}}, "resultExpires": "90m"}),
        secrets: secrets(&[]),
        expect: json!({"socket_timeout": 5.0, "max_connections": 7, "global_keyprefix": "team-a:",
            "result_expires": 5400.0}),
    });
    for (i, pw) in NASTY.iter().enumerate() {
        v.push(Case {
            id: format!("redis/sentinel/password-{i}"),
            kind: "redis",
            spec: json!({"redis": {"external": {"db": 2, "auth": {"passwordSecretRef": sref("pw")},
                "sentinel": {"masterName": "mymaster", "sentinelPasswordSecretRef": sref("spw"),
                    "hosts": [{"host": "s0.sentinel"}, {"host": "fd00::2", "port": 26380}]},
                "tls": {"enabled": true, "verify": "Required"}}}}),
            secrets: secrets(&[("creds", "pw", pw), ("creds", "spw", &format!("s-{pw}"))]),
            expect: json!({"class": "SentinelBackend", "db": 2, "password": pw,
                "hosts": [{"host": "s0.sentinel", "port": 26379}, {"host": "fd00::2", "port": 26380}],
                "master_name": "mymaster", "sentinel_password": format!("s-{pw}"), "ssl_cert_reqs": "required",
                "sentinel_connection": {"ssl": true, "ssl_cert_reqs": "required", "ssl_ca_certs": null,
                    "password": format!("s-{pw}")}}),
        });
    }
    // TLS to the Sentinels with the master's CA; and the explicit opt-out keeps them in clear.
    v.push(Case {
        id: "redis/sentinel/tls-ca".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"sentinel": {"masterName": "m",
                "hosts": [{"host": "s0.example.internal"}, {"host": "s1.example.internal"}]},
            "tls": {"enabled": true, "verify": "Required", "caFile": "/etc/ssl/redis/ca.crt"}}}}),
        secrets: secrets(&[]),
        expect: json!({"class": "SentinelBackend", "ssl_cert_reqs": "required",
            "sentinel_connection": {"ssl": true, "ssl_cert_reqs": "required",
                "ssl_ca_certs": "/etc/ssl/redis/ca.crt", "password": null}}),
    });
    v.push(Case {
        id: "redis/sentinel/tls-opt-out".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"sentinel": {"masterName": "m", "tls": false,
                "hosts": [{"host": "s0.example.internal"}]},
            "tls": {"enabled": true, "verify": "Required"}}}}),
        secrets: secrets(&[]),
        expect: json!({"class": "SentinelBackend", "ssl_cert_reqs": "required",
            "sentinel_connection": {"ssl": false, "ssl_cert_reqs": null, "ssl_ca_certs": null,
                "password": null}}),
    });
    v.push(Case {
        id: "redis/unix-socket".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"unixSocket": "/var/run/redis dir/redis.sock", "db": 4,
            "auth": {"passwordSecretRef": sref("pw")}}}}),
        secrets: secrets(&[("creds", "pw", "so@ck:pw")]),
        expect: json!({"path": "/var/run/redis dir/redis.sock", "db": 4, "password": "so@ck:pw", "host": null}),
    });
    v
}

#[test]
fn redis_uris_parse_back_in_celery() {
    check(redis_cases());
}

// ------------------------------------------------------------------ database

fn database_cases() -> Vec<Case> {
    let mut v = vec![];
    for (i, pw) in NASTY.iter().enumerate() {
        for (engine, driver, port, host) in [
            ("postgresql", "psycopg2", 5433, "pg.svc"),
            ("postgresql", "psycopg", 5432, "fd00::5"),
            ("mysql", "pymysql", 3307, "10.0.0.7"),
        ] {
            v.push(Case {
                id: format!("database/{engine}+{driver}/password-{i}"),
                kind: "database",
                spec: json!({"database": {"external": {"engine": engine, "driver": driver, "host": host,
                    "port": port, "database": "celery results", "options": {"sslmode": "require", "x": "a+b"},
                    "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                secrets: secrets(&[("creds", "user", "us@er"), ("creds", "pw", pw)]),
                expect: json!({"class": "DatabaseBackend", "drivername": format!("{engine}+{driver}"),
                    "host": host, "port": port, "username": "us@er", "password": pw,
                    "database": "celery results", "query": {"sslmode": "require", "x": "a+b"}}),
            });
        }
    }
    // TLS from Secrets: libpq's parameters name the mounted files (SQLAlchemy decodes the query
    // once and hands it to psycopg2/psycopg as connect arguments).
    let (cert_pem, key_pem) = (test_pem().0.as_str(), test_pem().1.as_str());
    for (i, pw) in NASTY.iter().enumerate().take(4) {
        for (driver, verify, mode) in [
            ("psycopg2", "Required", "verify-full"),
            ("psycopg", "Optional", "verify-ca"),
            ("psycopg2", "None", "require"),
        ] {
            let mut query = json!({"sslmode": mode,
                "sslrootcert": "/etc/celery-backend/tls/pg-ca/root.pem",
                "sslcert": "/etc/celery-backend/tls/pg-client/tls.crt",
                "sslkey": "/etc/celery-backend/tls/pg-client/tls.key"});
            // libpq would verify against an sslrootcert even under sslmode=require.
            if verify == "None" {
                query.as_object_mut().unwrap().remove("sslrootcert");
            }
            v.push(Case {
                id: format!("database/postgresql+{driver}/tls-{verify}-{i}"),
                kind: "database",
                spec: json!({"database": {"external": {"engine": "postgresql", "driver": driver,
                    "host": "pg.tls", "database": "celery",
                    "auth": {"username": "celery", "passwordSecretRef": sref("pw")},
                    "tls": {"enabled": true, "verify": verify,
                        "caSecretRef": {"name": "pg-ca", "key": "root.pem"},
                        "clientCertificateSecretRef": {"name": "pg-client"}}}}}),
                secrets: secrets(&[("creds", "pw", pw), ("pg-ca", "root.pem", cert_pem),
                    ("pg-client", "tls.crt", cert_pem), ("pg-client", "tls.key", key_pem)]),
                expect: json!({"class": "DatabaseBackend", "drivername": format!("postgresql+{driver}"),
                    "host": "pg.tls", "port": 5432, "username": "celery", "password": pw,
                    "database": "celery", "query": query}),
            });
        }
    }
    for (i, pw) in NASTY.iter().enumerate().take(4) {
        for (verify, query) in [
            (
                "Required",
                json!({"ssl_ca": "/etc/celery-backend/tls/my-ca/ca.pem", "ssl_check_hostname": "true"}),
            ),
            (
                "Optional",
                json!({"ssl_ca": "/etc/celery-backend/tls/my-ca/ca.pem", "ssl_check_hostname": "false"}),
            ),
            ("None", json!({"ssl_check_hostname": "false"})),
        ] {
            v.push(Case {
                id: format!("database/mysql+pymysql/tls-{verify}-{i}"),
                kind: "database",
                spec: json!({"database": {"external": {"engine": "mysql", "host": "my.tls", "database": "celery",
                    "auth": {"username": "celery", "passwordSecretRef": sref("pw")},
                    "tls": {"enabled": true, "verify": verify,
                        "caSecretRef": {"name": "my-ca", "key": "ca.pem"}}}}}),
                secrets: secrets(&[("creds", "pw", pw), ("my-ca", "ca.pem", cert_pem)]),
                expect: json!({"class": "DatabaseBackend", "drivername": "mysql+pymysql",
                    "host": "my.tls", "port": 3306, "username": "celery", "password": pw,
                    "database": "celery", "query": query}),
            });
        }
    }
    v.push(Case {
        id: "database/postgresql-defaults-left-out".into(),
        kind: "database",
        spec: json!({"database": {"external": {"engine": "postgresql", "host": "pg", "database": "celery"}}}),
        secrets: secrets(&[]),
        expect: json!({"drivername": "postgresql+psycopg2", "port": 5432, "username": null, "password": null,
            "task_table": "celery_taskmeta", "group_table": "celery_tasksetmeta"}),
    });
    v.push(Case {
        id: "database/mysql-default-driver-and-tables".into(),
        kind: "database",
        spec: json!({"database": {"external": {"engine": "mysql", "host": "db", "database": "c"},
            "tableNames": {"task": "results_task"}, "tableSchemas": {"task": "celery"}}}),
        secrets: secrets(&[]),
        expect: json!({"drivername": "mysql+pymysql", "port": 3306, "task_table": "results_task",
            "group_table": "celery_tasksetmeta", "task_schema": "celery"}),
    });
    v.push(Case {
        id: "database/sqlite-absolute-path".into(),
        kind: "database",
        spec: json!({"database": {"external": {"engine": "sqlite", "path": "/var/lib/celery/results.db"}}}),
        secrets: secrets(&[]),
        expect: json!({"drivername": "sqlite", "database": "/var/lib/celery/results.db", "host": null}),
    });
    v
}

#[test]
fn database_uris_parse_back_in_celery_and_sqlalchemy() {
    check(database_cases());
}

// ------------------------------------------------------------------ mongodb

fn mongodb_cases() -> Vec<Case> {
    let mut v = vec![];
    for (i, pw) in NASTY.iter().enumerate() {
        v.push(Case {
            id: format!("mongodb/replica-set/password-{i}"),
            kind: "mongodb",
            spec: json!({"mongodb": {"external": {"hosts": [{"host": "m0.svc"}, {"host": "fd00::3", "port": 27018}],
                "database": "results", "authSource": "admin", "replicaSet": "rs0",
                "auth": {"username": "cel+ery", "passwordSecretRef": sref("pw")}},
                "taskmetaCollection": "tasks", "groupmetaCollection": "groups"}}),
            secrets: secrets(&[("creds", "pw", pw)]),
            expect: json!({"class": "MongoBackend", "srv": false, "hosts": ["m0.svc:27017", "[fd00::3]:27018"],
                "client_seeds": [["fd00::3", 27018], ["m0.svc", 27017]],
                "username": "cel+ery", "password": pw, "database": "results", "authsource": "admin",
                "replicaset": "rs0", "taskmeta_collection": "tasks", "groupmeta_collection": "groups"}),
        });
    }
    v.push(Case {
        id: "mongodb/defaults-left-out".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "mongo"}]}}}),
        secrets: secrets(&[]),
        expect: json!({"hosts": ["mongo:27017"], "database": "celery", "username": null,
            "taskmeta_collection": "celery_taskmeta", "groupmeta_collection": "celery_groupmeta"}),
    });
    v.push(Case {
        id: "mongodb/tls-insecure-with-ca".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "mongo", "port": 27017}],
            "tls": {"enabled": true, "verify": "None", "caFile": "/etc/ssl/certs/ca-certificates.crt"}}}}),
        secrets: secrets(&[]),
        expect: json!({"tls": true, "tlsinsecure": true, "tlscafile": "/etc/ssl/certs/ca-certificates.crt"}),
    });
    v.push(Case {
        id: "mongodb/tls-ca-from-secret".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "mongo", "port": 27017}],
            "tls": {"enabled": true, "caSecretRef": {"name": "mongo-ca", "key": "ca-bundle.pem"}}}}}),
        secrets: secrets(&[("mongo-ca", "ca-bundle.pem", &test_pem().0)]),
        expect: json!({"tls": true, "tlsinsecure": null,
            "tlscafile": "/etc/celery-backend/tls/mongo-ca/ca-bundle.pem"}),
    });
    v.push(Case {
        id: "mongodb/srv-seed-list (pymongo parses; DNS lookup replaced: no DNS here)".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "cluster0.example.net"}], "srv": true,
            "database": "celery", "auth": {"username": "u", "passwordSecretRef": sref("pw")}}}}),
        secrets: secrets(&[("creds", "pw", "a+b@c")]),
        expect: json!({"srv": true, "hosts": ["cluster0.example.net:27017"], "password": "a+b@c", "username": "u"}),
    });
    v
}

#[test]
fn mongodb_uris_parse_back_in_celery_and_pymongo() {
    // pymongo loads tlsCAFile when the client is made: put a CA bundle where injection mounts
    // the Secret of `mongodb/tls-ca-from-secret` (the kubelet's part), and take it away after.
    let dir = std::path::Path::new("/etc/celery-backend/tls/mongo-ca");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        dir.join("ca-bundle.pem"),
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| check(mongodb_cases()));
    let _ = std::fs::remove_dir_all(dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

// ------------------------------------------------------------------ the HTTP/document stores

fn document_store_cases() -> Vec<Case> {
    let mut v = vec![];
    for (i, pw) in NASTY.iter().enumerate() {
        // Non-ASCII Basic credentials are refused by the builder (see
        // elasticsearch_refusals_match_what_the_client_cannot_do).
        if pw.is_ascii() {
            v.push(Case {
                id: format!("elasticsearch/https/password-{i}"),
            kind: "elasticsearch",
            spec: json!({"elasticsearch": {"external": {"host": "es.svc", "port": 9243, "scheme": "https",
                "auth": {"username": "elastic", "passwordSecretRef": sref("pw")}, "timeoutSeconds": 30, "maxRetries": 5},
                "index": "celery-results"}}),
            secrets: secrets(&[("creds", "pw", pw)]),
            expect: json!({"class": "ElasticsearchBackend", "scheme": "https", "host": "es.svc", "port": 9243,
                "username": "elastic", "password": pw, "index": "celery-results", "timeout": 30, "max_retries": 5,
                "client_hosts": [["https", "es.svc", 9243]]}),
            });
        }
        v.push(Case {
            id: format!("couchdb/password-{i} (double-encoded: pycouchdb decodes again)"),
            kind: "couchdb",
            spec: json!({"couchdb": {"external": {"host": "couch.svc", "port": 5985, "database": "results",
                "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
            secrets: secrets(&[("creds", "user", "ad@min"), ("creds", "pw", pw)]),
            expect: json!({"class": "CouchBackend", "host": "couch.svc", "port": 5985, "database": "results",
                "username": "ad@min", "password": pw, "server_url": "http://couch.svc:5985"}),
        });
        v.push(Case {
            id: format!("couchbase/password-{i}"),
            kind: "couchbase",
            spec: json!({"couchbase": {"external": {"host": "cb.svc", "port": 8091, "bucket": "celery",
                "auth": {"username": "celery", "passwordSecretRef": sref("pw")}}}}),
            secrets: secrets(&[("creds", "pw", pw)]),
            expect: json!({"class": "CouchbaseBackend", "host": "cb.svc", "port": 8091, "bucket": "celery",
                "username": "celery", "password": pw}),
        });
        // pyArango sends Basic auth through requests (Latin-1): ASCII only (uri::check).
        if pw.is_ascii() {
            v.push(Case {
            id: format!("arangodb/password-{i}"),
            kind: "arangodb",
            spec: json!({"arangodb": {"external": {"host": "10.0.0.9", "port": 8530, "scheme": "https",
                "database": "db1", "collection": "results",
                "auth": {"username": "root", "passwordSecretRef": sref("pw")}}}}),
            secrets: secrets(&[("creds", "pw", pw)]),
            expect: json!({"class": "ArangoDbBackend", "host": "10.0.0.9", "port": 8530, "database": "db1",
                "collection": "results", "username": "root", "password": pw, "http_protocol": "https",
                "verify": true, "client_error": null}),
            });
        }
        // Cosmos DB account keys are base64 (pydocumentdb decodes them): every NASTY string as one.
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pw.as_bytes());
        v.push(Case {
            id: format!("cosmosdbsql/key-{i}"),
            kind: "cosmosDbSql",
            spec: json!({"cosmosDbSql": {"external": {"host": "acct.documents.azure.com",
                "accountKeySecretRef": sref("key"), "database": "db", "collection": "col",
                "consistencyLevel": "Strong"}}}),
            secrets: secrets(&[("creds", "key", &key)]),
            expect: json!({"class": "CosmosDBSQLBackend", "endpoint": "https://acct.documents.azure.com:443",
                "key": key, "database": "db", "collection": "col", "client_error": null}),
        });
    }
    v.push(Case {
        id: "elasticsearch/defaults-left-out".into(),
        kind: "elasticsearch",
        spec: json!({"elasticsearch": {"external": {"host": "es"}}}),
        secrets: secrets(&[]),
        expect: json!({"scheme": "http", "host": "es", "port": 9200, "index": "celery", "username": null}),
    });
    v.push(Case {
        id: "couchdb/defaults-left-out".into(),
        kind: "couchdb",
        spec: json!({"couchdb": {"external": {"host": "couch"}}}),
        secrets: secrets(&[]),
        expect: json!({"host": "couch", "port": 5984, "database": "default", "username": null}),
    });
    v.push(Case {
        id: "arangodb/defaults-left-out".into(),
        kind: "arangodb",
        spec: json!({"arangodb": {"external": {"host": "arango"}}}),
        secrets: secrets(&[]),
        expect: json!({"host": "arango", "port": 8529, "database": "celery", "collection": "celery", "http_protocol": "http", "verify": false}),
    });
    // https with a private CA: pyArango gets the mounted CA as requests' `verify`; None is false.
    for (tls, verify) in [
        (
            json!({"enabled": true, "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"}}),
            json!("/etc/celery-backend/tls-configmaps/trust-bundle/ca.pem"),
        ),
        (
            json!({"enabled": true, "caSecretRef": {"name": "arango-ca", "key": "ca.crt"}}),
            json!("/etc/celery-backend/tls/arango-ca/ca.crt"),
        ),
        (json!({"enabled": true, "verify": "None"}), json!(false)),
        (json!({"enabled": true}), json!(true)),
    ] {
        v.push(Case {
            id: format!("arangodb/tls-verify-{verify}"),
            kind: "arangodb",
            spec: json!({"arangodb": {"external": {"host": "arango", "tls": tls}}}),
            secrets: secrets(&[
                ("configmap:trust-bundle", "ca.pem", &test_pem().0),
                ("arango-ca", "ca.crt", &test_pem().0),
            ]),
            expect: json!({"host": "arango", "port": 8529, "http_protocol": "https", "verify": verify}),
        });
    }
    v.push(Case {
        id: "cosmosdbsql/non-443-port-is-http".into(),
        kind: "cosmosDbSql",
        spec: json!({"cosmosDbSql": {"external": {"host": "127.0.0.1", "port": 8081, "accountKeySecretRef": sref("key")}}}),
        secrets: secrets(&[("creds", "key", "a/b+c/==")]),
        expect: json!({"endpoint": "http://127.0.0.1:8081", "key": "a/b+c/==", "database": "celerydb", "collection": "celerycol"}),
    });
    v
}

#[test]
fn document_store_uris_parse_back_in_celery() {
    check(document_store_cases());
}

// ------------------------------------------------------------------ object storage and settings-only backends

fn object_and_settings_cases() -> Vec<Case> {
    let mut v = vec![Case {
        id: "redis/resultSettings".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"host": "r"}}, "injection": {"configModule": true},
            "resultSettings": {"extended": true, "serializer": "json", "compression": "gzip",
                "acceptContent": ["json", "application/x-python-serialize"],
                "chordJoinTimeout": "3s", "chordRetryInterval": "1500ms", "backendAlwaysRetry": true,
                "backendMaxRetries": 5, "backendBaseSleepBetweenRetries": "20ms",
                "backendMaxSleepBetweenRetries": "10s", "cacheMax": 100}}),
        secrets: SecretValues::new(),
        expect: json!({"conf.result_extended": true, "conf.result_serializer": "json",
            "conf.result_compression": "gzip",
            "conf.result_accept_content": ["json", "application/x-python-serialize"],
            "conf.result_chord_join_timeout": 3.0, "conf.result_chord_retry_interval": 1.5,
            "conf.result_cache_max": 100,
            "backend.serializer": "json", "backend.always_retry": true, "backend.max_retries": 5,
            "backend.base_sleep_between_retries_ms": 20,
            "backend.max_sleep_between_retries_ms": 10000}),
    }];
    for (i, pw) in NASTY.iter().enumerate() {
        v.push(Case {
            id: format!("s3/settings/secret-{i}"),
            kind: "s3",
            spec: json!({"s3": {"external": {"bucket": "celery-results", "region": "eu-west-1",
                "endpointUrl": "http://minio.storage:9000", "accessKeyIdSecretRef": sref("ak"),
                "secretAccessKeySecretRef": sref("sk")}, "basePath": "results/"}}),
            secrets: secrets(&[("creds", "ak", "AKIA123"), ("creds", "sk", pw)]),
            expect: json!({"class": "S3Backend", "bucket": "celery-results", "base_path": "results/",
                "endpoint_url": "http://minio.storage:9000", "region": "eu-west-1",
                "access_key_id": "AKIA123", "secret_access_key": pw}),
        });
        v.push(Case {
            id: format!("cassandra/settings/password-{i}"),
            kind: "cassandra",
            spec: json!({"cassandra": {"external": {"servers": ["c0.svc", "10.0.0.9"], "port": 9043,
                "keyspace": "celery", "table": "results", "entryTtlSeconds": 3600,
                "readConsistency": "ONE", "writeConsistency": "LOCAL_QUORUM",
                "auth": {"username": "cassandra", "passwordSecretRef": sref("pw")}}}}),
            secrets: secrets(&[("creds", "pw", pw)]),
            expect: json!({"class": "CassandraBackend", "servers": ["c0.svc", "10.0.0.9"], "port": 9043,
                "keyspace": "celery", "table": "results", "entry_ttl": 3600, "read_consistency": 1,
                "write_consistency": 6, "username": "cassandra", "password": pw}),
        });
        // Cassandra TLS: Celery hands cassandra_options to Cluster(**options) as written, and
        // cassandra-driver builds its SSLContext from ssl_options (ca_certs, check_hostname,
        // certfile/keyfile): the mounted Secret files.
        v.push(Case {
            id: format!("cassandra/tls-from-secrets-{i}"),
            kind: "cassandra",
            spec: json!({"cassandra": {"external": {"servers": ["10.0.0.9"], "keyspace": "celery", "table": "results",
                "auth": {"username": "cassandra", "passwordSecretRef": sref("pw")},
                "tls": {"enabled": true, "verify": "Optional", "caSecretRef": {"name": "c-ca", "key": "ca.crt"},
                    "clientCertificateSecretRef": {"name": "c-client"}}}}}),
            secrets: secrets(&[("creds", "pw", pw), ("c-ca", "ca.crt", &test_pem().0),
                ("c-client", "tls.crt", &test_pem().0), ("c-client", "tls.key", &test_pem().1)]),
            expect: json!({"class": "CassandraBackend", "servers": ["10.0.0.9"], "password": pw,
                "backend.cassandra_options": {"ssl_options": {
                    "ca_certs": "/etc/celery-backend/tls/c-ca/ca.crt", "check_hostname": false,
                    "certfile": "/etc/celery-backend/tls/c-client/tls.crt",
                    "keyfile": "/etc/celery-backend/tls/c-client/tls.key"}}}),
        });
        v.push(Case {
            id: format!("dynamodb/region/secret-{i}"),
            kind: "dynamodb",
            spec: json!({"dynamodb": {"external": {"region": "eu-west-1", "table": "results",
                "readCapacity": 5, "writeCapacity": 6, "ttlSeconds": 86400,
                "accessKeyIdSecretRef": sref("ak"), "secretAccessKeySecretRef": sref("sk")}}}),
            secrets: secrets(&[("creds", "ak", "AKIA456"), ("creds", "sk", pw)]),
            expect: json!({"class": "DynamoDBBackend", "region": "eu-west-1", "endpoint_url": null,
                "table": "results", "read": 5, "write": 6, "ttl_seconds": 86400,
                "access_key_id": "AKIA456", "secret_access_key": pw}),
        });
        v.push(Case {
            id: format!("azureblockblob/connection-string-{i}"),
            kind: "azureBlockBlob",
            spec: json!({"azureBlockBlob": {"external": {"connectionStringSecretRef": sref("cs"),
                "container": "results", "basePath": "celery/", "connectionTimeoutSeconds": 7, "readTimeoutSeconds": 9}}}),
            secrets: secrets(&[("creds", "cs", &format!("DefaultEndpointsProtocol=http;AccountName=dev;AccountKey={pw};BlobEndpoint=http://127.0.0.1:10000/dev;"))]),
            expect: json!({"class": "AzureBlockBlobBackend",
                "connection_string": format!("DefaultEndpointsProtocol=http;AccountName=dev;AccountKey={pw};BlobEndpoint=http://127.0.0.1:10000/dev;"),
                "container": "results", "base_path": "celery/", "connection_timeout": 7, "read_timeout": 9}),
        });
    }
    v.push(Case {
        id: "dynamodb/local-endpoint-localhost".into(),
        kind: "dynamodb",
        spec: json!({"dynamodb": {"external": {"localEndpoint": {"host": "localhost", "port": 8001}}}}),
        secrets: secrets(&[]),
        expect: json!({"region": "us-east-1", "endpoint_url": "http://localhost:8001", "table": "celery",
            "access_key_id": null, "read": 1, "write": 1}),
    });
    v.push(Case {
        id: "dynamodb/local-endpoint-dns-name-goes-to-endpoint-url".into(),
        kind: "dynamodb",
        spec: json!({"dynamodb": {"external": {"localEndpoint": {"host": "dynamodb-local.test", "port": 8000}}}}),
        secrets: secrets(&[]),
        expect: json!({"region": "us-east-1", "endpoint_url": "http://dynamodb-local.test:8000"}),
    });
    v.push(Case {
        id: "azureblockblob/default-azure-credential".into(),
        kind: "azureBlockBlob",
        spec: json!({"azureBlockBlob": {"external": {"accountUrl": "https://acct.blob.core.windows.net",
            "credential": "DefaultAzureCredential"}}}),
        secrets: secrets(&[]),
        // Celery keeps "<credential>@<account url>" and splits it when it builds the client.
        expect: json!({"connection_string": "DefaultAzureCredential@https://acct.blob.core.windows.net", "container": "celery"}),
    });
    v.push(Case {
        id: "gcs/gs-scheme (parsed by GCSBackendBase: Firestore cannot be emulated)".into(),
        kind: "gcs",
        spec: json!({"gcs": {"external": {"bucket": "celery-results", "project": "my-project",
            "basePath": "/a/b c/", "ttlSeconds": 86400, "threadpoolMaxsize": 4, "firestoreProject": "fs-project"}}}),
        secrets: secrets(&[]),
        expect: json!({"class": "GCSBackend", "bucket": "celery-results", "project": "my-project",
            "base_path": "a/b c", "ttl": 86400.0, "threadpool_maxsize": 4, "firestore_project": "fs-project"}),
    });
    v.push(Case {
        id: "gcs/base-path-with-every-uri-delimiter".into(),
        kind: "gcs",
        spec: json!({"gcs": {"external": {"bucket": "celery-results", "project": "my-project",
            "basePath": "/a b/%41?x=1&y=2#z+w/é/"}}}),
        secrets: secrets(&[]),
        expect: json!({"base_path": "a b/%41?x=1&y=2#z+w/é", "project": "my-project"}),
    });
    v.push(Case {
        id: "gcs/defaults-left-out".into(),
        kind: "gcs",
        spec: json!({"gcs": {"external": {"bucket": "b-1", "project": "p"}}}),
        secrets: secrets(&[]),
        expect: json!({"bucket": "b-1", "project": "p", "base_path": "", "ttl": 0.0, "threadpool_maxsize": 10}),
    });
    for persistent in [true, false] {
        v.push(Case {
            id: format!("rpc/persistent-{persistent}"),
            kind: "rpc",
            spec: json!({"rpc": {"external": {"persistent": persistent}}}),
            secrets: secrets(&[]),
            expect: json!({"class": "RPCBackend", "persistent": persistent}),
        });
    }
    v.push(Case {
        id: "cache/two-servers-default-port".into(),
        kind: "cache",
        spec: json!({"cache": {"external": {"servers": [{"host": "mc0.svc"}, {"host": "10.0.0.4", "port": 11212}]}},
            "resultExpires": "1h"}),
        secrets: secrets(&[]),
        expect: json!({"class": "CacheBackend", "servers": ["mc0.svc:11211", "10.0.0.4:11212"], "expires": 3600}),
    });
    v.push(Case {
        id: "consul/key-prefix-with-uri-delimiters".into(),
        kind: "consul",
        spec: json!({"consul": {"external": {"host": "consul.svc", "keyPrefix": "celery results/100%/a?b#c+d/ä"}},
            "resultExpires": "1h"}),
        secrets: secrets(&[]),
        expect: json!({"path": "celery results/100%/a?b#c+d/ä"}),
    });
    v.push(Case {
        id: "consul/token-prefix-one-client".into(),
        kind: "consul",
        spec: json!({"consul": {"external": {"host": "consul.svc", "keyPrefix": "celery/results",
            "oneClient": true, "tokenSecretRef": sref("token")}}, "resultExpires": "1h"}),
        secrets: secrets(&[("creds", "token", "t0k:en/")]),
        expect: json!({"class": "ConsulBackend", "host": "consul.svc", "port": 8500, "path": "celery/results",
            "one_client": true, "token": "t0k:en/", "result_expires": 3600.0, "token_error": null}),
    });
    v
}

#[test]
fn object_storage_and_settings_only_backends_parse_back_in_celery() {
    check(object_and_settings_cases());
}

#[test]
fn filesystem_path_is_used_verbatim() {
    let dir = tempfile::Builder::new()
        .prefix("celery results ")
        .tempdir()
        .unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    check(vec![Case {
        id: "filesystem/path-with-space".into(),
        kind: "filesystem",
        spec: json!({"filesystem": {"external": {"path": path}}}),
        secrets: secrets(&[]),
        expect: json!({"class": "FilesystemBackend", "path": path}),
    }]);
}

/// The operator refuses ironCache; Celery 5.7 must indeed be unable to load the scheme the docs give.
#[test]
fn ironcache_is_refused_because_celery_cannot_load_it() {
    let spec: CeleryResultBackendSpec = serde_json::from_value(json!({"ironCache": {"external":
        {"projectId": "p1", "tokenSecretRef": sref("t")}}}))
    .unwrap();
    let err = build(&spec, &secrets(&[("creds", "t", "x")])).unwrap_err();
    assert_eq!(err.reason(), "Unsupported");
    assert!(err.to_string().contains("spec.ironCache"), "{err}");
    let out = support::python::run_json(
        &oracle(),
        &json!([{"id": "ironcache", "kind": "ironCache",
            "config_module": "result_backend = 'ironcache://p1:x@/cache'\n", "expect": {"loadable": false}}]),
    );
    assert_eq!(
        out["results"][0]["ok"], true,
        "Celery loaded ironcache://: {}",
        out["results"][0]
    );
}

// ------------------------------------------------------------------ class A: what each backend can carry

/// One case per rule of `cbo::uri::check` and per encoding the builder chose from Celery's code:
/// addresses (IPv6 where Celery keeps it), percent signs in paths, and the key prefix Celery writes.
#[test]
fn addresses_paths_and_prefixes_reach_the_client_as_written() {
    let mut v = vec![];
    // Redis decodes ssl_* query values twice (parse_qsl, then unquote in _params_from_url).
    v.push(Case {
        id: "redis/tls-paths-with-percent-signs".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"host": "redis.tls", "tls": {"enabled": true,
            "caFile": "/etc/certs/ca%20bundle.pem", "certFile": "/etc/c%2F+ %.pem", "keyFile": "/etc/k%25.pem"}}}}),
        secrets: secrets(&[]),
        expect: json!({"ssl_ca_certs": "/etc/certs/ca%20bundle.pem", "ssl_certfile": "/etc/c%2F+ %.pem",
            "ssl_keyfile": "/etc/k%25.pem", "ssl": true}),
    });
    // The key prefix: the Rust rule (used by cleanup) must be Celery's.
    for p in ["teama", "team-a:", "t.", "t-", "t_", "t/", "t*[x]"] {
        let eff = cbo::backends::redis::celery_key_prefix(p);
        v.push(Case {
            id: format!("redis/key-prefix {p:?}"),
            kind: "redis",
            spec: json!({"redis": {"external": {"host": "h", "keyPrefix": p}}}),
            secrets: secrets(&[]),
            expect: json!({"global_keyprefix": p, "task_keyprefix": format!("{eff}celery-task-meta-"),
                "group_keyprefix": format!("{eff}celery-taskset-meta-")}),
        });
    }
    v.push(Case {
        id: "redis/unix-socket-with-percent".into(),
        kind: "redis",
        spec: json!({"redis": {"external": {"unixSocket": "/run/re%20dis/r.sock"}}}),
        secrets: secrets(&[]),
        expect: json!({"path": "/run/re%20dis/r.sock"}),
    });
    // pymemcache reads '[fd00::11]:11211' (Client and HashClient).
    v.push(Case {
        id: "cache/ipv6-one-server".into(),
        kind: "cache",
        spec: json!({"cache": {"external": {"servers": [{"host": "fd00::11"}]}}}),
        secrets: secrets(&[]),
        expect: json!({"servers": ["[fd00::11]:11211"], "client_servers": [["fd00::11", 11211]]}),
    });
    v.push(Case {
        id: "cache/ipv6-and-name".into(),
        kind: "cache",
        spec: json!({"cache": {"external": {"servers": [{"host": "fd00::12", "port": 11212}, {"host": "mc.svc"}]}}}),
        secrets: secrets(&[]),
        expect: json!({"client_servers": [["fd00::12", 11212], ["mc.svc", 11211]]}),
    });
    v.push(Case {
        id: "mongodb/ipv6-only (mongo_host carries the brackets)".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "fd00::3"}]}}}),
        secrets: secrets(&[]),
        expect: json!({"client_seeds": [["fd00::3", 27017]], "client_error": null}),
    });
    v.push(Case {
        id: "elasticsearch/ipv4-client".into(),
        kind: "elasticsearch",
        spec: json!({"elasticsearch": {"external": {"host": "10.0.0.92", "port": 9243, "scheme": "https",
            "auth": {"username": "elastic", "passwordSecretRef": sref("pw")}}}}),
        secrets: secrets(&[("creds", "pw", "p@ss:w/rd#?% ;")]),
        expect: json!({"client_hosts": [["https", "10.0.0.92", 9243]], "password": "p@ss:w/rd#?% ;"}),
    });
    v.push(Case {
        id: "dynamodb/local-endpoint-ipv6".into(),
        kind: "dynamodb",
        spec: json!({"dynamodb": {"external": {"localEndpoint": {"host": "fd00::7", "port": 8001}}}}),
        secrets: secrets(&[]),
        expect: json!({"endpoint_url": "http://[fd00::7]:8001", "region": "us-east-1"}),
    });
    v.push(Case {
        id: "database/sqlite-path-with-percent".into(),
        kind: "database",
        spec: json!({"database": {"external": {"engine": "sqlite", "path": "/var/lib/celery/re%20s?u#lts +.db"}}}),
        secrets: secrets(&[]),
        expect: json!({"database": "/var/lib/celery/re%20s?u#lts +.db"}),
    });
    // Celery's filesystem backend checks that the directory exists: make one with '%20' in its name.
    let fs_dir = tempfile::Builder::new()
        .prefix("re%20sults ")
        .tempdir()
        .unwrap();
    let fs_path = fs_dir.path().to_str().unwrap().to_string();
    v.push(Case {
        id: "filesystem/path-with-percent".into(),
        kind: "filesystem",
        spec: json!({"filesystem": {"external": {"path": fs_path}}}),
        secrets: secrets(&[]),
        expect: json!({"path": fs_path}),
    });
    // pymongo opens tlsCAFile while parsing: use a real file whose name holds '%20'.
    let dir = tempfile::Builder::new().prefix("ca%20").tempdir().unwrap();
    let ca = dir.path().join("ca%25 bundle.pem");
    std::fs::write(&ca, "").unwrap();
    let ca = ca.to_str().unwrap().to_string();
    v.push(Case {
        id: "mongodb/tls-ca-file-with-percent".into(),
        kind: "mongodb",
        spec: json!({"mongodb": {"external": {"hosts": [{"host": "mongo"}], "tls": {"enabled": true, "caFile": ca}}}}),
        secrets: secrets(&[]),
        expect: json!({"tlscafile": ca}),
    });
    check(v);
}

/// Every refusal of `cbo::uri::check`: the builder refuses naming the field (never the value), and
/// Celery or its client indeed fails on the URI a naive builder would have written.
#[test]
fn refused_inputs_are_refused_by_name_and_really_fail_in_celery() {
    /// A spec, the Secret values it reads, and the field the refusal must name.
    type Refusal<'a> = (Value, &'a [(&'a str, &'a str, &'a str)], &'a str);
    let refusals: &[Refusal] = &[
        (
            json!({"elasticsearch": {"external": {"host": "fd00::92"}}}),
            &[],
            "spec.elasticsearch.external.host",
        ),
        (
            json!({"elasticsearch": {"external": {"host": "es", "auth": {"username": "elastic", "passwordSecretRef": sref("pw")}}}}),
            &[("creds", "pw", "pässwörd-€")],
            "spec.elasticsearch.external.auth.passwordSecretRef",
        ),
        (
            json!({"elasticsearch": {"external": {"host": "es", "auth": {"username": "a:b", "passwordSecretRef": sref("pw")}}}}),
            &[("creds", "pw", "secret-42")],
            "spec.elasticsearch.external.auth.username",
        ),
        (
            json!({"elasticsearch": {"external": {"host": "es", "auth": {"username": "elastic"}}}}),
            &[],
            "spec.elasticsearch.external.auth",
        ),
        (
            json!({"redis": {"external": {"host": "10.0.0.5:6379"}}}),
            &[],
            "spec.redis.external.host",
        ),
        (
            json!({"database": {"external": {"engine": "postgresql", "host": "db:5432", "database": "d"}}}),
            &[],
            "spec.database.external.host",
        ),
        (
            json!({"mongodb": {"external": {"hosts": [{"host": "m"}, {"host": "db:27017"}]}}}),
            &[],
            "spec.mongodb.external.hosts[1].host",
        ),
        (
            json!({"mongodb": {"external": {"hosts": [{"host": "10.0.0.3"}], "srv": true}}}),
            &[],
            "spec.mongodb.external.hosts[0].host",
        ),
        (
            json!({"couchdb": {"external": {"host": "fd00::1"}}}),
            &[],
            "spec.couchdb.external.host",
        ),
        (
            json!({"couchbase": {"external": {"host": "fd00::1"}}}),
            &[],
            "spec.couchbase.external.host",
        ),
        (
            json!({"arangodb": {"external": {"host": "fd00::1"}}}),
            &[],
            "spec.arangodb.external.host",
        ),
        (
            json!({"consul": {"external": {"host": "fd00::1"}}}),
            &[],
            "spec.consul.external.host",
        ),
        (
            json!({"cosmosDbSql": {"external": {"host": "fd00::1", "accountKeySecretRef": sref("k")}}}),
            &[("creds", "k", "c2VjcmV0LTQz")],
            "spec.cosmosDbSql.external.host",
        ),
        (
            json!({"cache": {"external": {"servers": [{"host": "mc:11211"}]}}}),
            &[],
            "spec.cache.external.servers[0].host",
        ),
        (
            json!({"cassandra": {"external": {"servers": ["c0", "c1:9042"], "keyspace": "k", "table": "t"}}}),
            &[],
            "spec.cassandra.external.servers[1]",
        ),
        (
            json!({"arangodb": {"external": {"host": "arango", "auth": {"username": "root", "passwordSecretRef": sref("pw")}}}}),
            &[("creds", "pw", "密码-secret-45")],
            "spec.arangodb.external.auth.passwordSecretRef",
        ),
        (
            json!({"cosmosDbSql": {"external": {"host": "acct.documents.azure.com", "accountKeySecretRef": sref("k")}}}),
            &[("creds", "k", "not base64: secret-46")],
            "spec.cosmosDbSql.external.accountKeySecretRef",
        ),
        (
            json!({"redis": {"external": {"host": "r", "options": {"ssl_ca_certs": "/etc/ca.pem"}}}}),
            &[],
            "spec.redis.external.options.ssl_ca_certs",
        ),
        (
            json!({"consul": {"external": {"host": "consul", "tokenSecretRef": sref("t")}}}),
            &[("creds", "t", "secret-47-token\n")],
            "spec.consul.external.tokenSecretRef",
        ),
        (
            json!({"s3": {"external": {"bucket": "bkt", "endpointUrl": "https://AKIA1:secret-44@minio.example.internal"}}}),
            &[],
            "spec.s3.external.endpointUrl",
        ),
        (
            json!({"redis": {"external": {"host": "r", "tls": {"enabled": true, "caFile": "/etc/../root/ca.pem"}}}}),
            &[],
            "spec.redis.external.tls.caFile",
        ),
        (
            json!({"filesystem": {"external": {"path": "/srv/results/../../etc"}}}),
            &[],
            "spec.filesystem.external.path",
        ),
    ];
    for (spec, secret_values, field) in refusals {
        let parsed: CeleryResultBackendSpec = serde_json::from_value(spec.clone()).unwrap();
        let err = build(&parsed, &secrets(secret_values)).expect_err(&spec.to_string());
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{field}: ")), "{spec}: {msg}");
        for (_, _, value) in secret_values.iter() {
            assert!(!msg.contains(value), "{msg}");
        }
    }
    // What Celery does with the URIs a naive builder writes for those inputs.
    let raw = |id: &str, kind: &str, uri: &str, extra: &str, expect: Value| {
        json!({"id": id, "kind": kind, "expect": expect,
            "config_module": format!("result_backend = {}\n{extra}", cbo::uri::encode::python_str(uri))})
    };
    let cases = json!([
        raw(
            "es-ipv6",
            "elasticsearch",
            "elasticsearch+http://[fd00::92]:9243/celery",
            "",
            json!({"host": "fd00::92", "client_error": "ValueError"})
        ),
        raw(
            "es-non-ascii-password",
            "elasticsearch",
            "elasticsearch+http://u:p%C3%A4ss-%E2%82%AC@es:9200/celery",
            "",
            json!({"password": "päss-€", "client_error": "UnicodeEncodeError"})
        ),
        raw(
            "mongodb-ipv6-without-mongo_host",
            "mongodb",
            "mongodb://[fd00::3]:27018/x",
            "",
            json!({"hosts": ["fd00::3:27018"], "client_error": "ValueError"})
        ),
        raw(
            "consul-ipv6",
            "consul",
            "consul://[fd00::1]:8500/x",
            "",
            json!({"base_uri": "http://fd00::1:8500", "client_error": "InvalidURL"})
        ),
        raw(
            "arangodb-non-latin1-password",
            "arangodb",
            "arangodb://root:%E5%AF%86@arango:8529/celery/celery",
            "",
            json!({"password": "密", "client_error": "UnicodeEncodeError"})
        ),
        raw(
            "cosmosdbsql-key-not-base64",
            "cosmosDbSql",
            "cosmosdbsql://:p%40ss%3Awd@acct.documents.azure.com:443",
            "",
            json!({"key": "p@ss:wd", "client_error": "Error"})
        ),
        raw(
            "redis-ssl-option-without-tls",
            "redis",
            "redis://r:6379/0?ssl_ca_certs=%2Fetc%2Fca.pem",
            "",
            json!({"construct_error": "ValueError"})
        ),
        raw(
            "consul-token-with-trailing-newline",
            "consul",
            "consul://consul:8500/x",
            "import os\nos.environ['CONSUL_HTTP_TOKEN'] = 'tok\\n'\n",
            json!({"token": "tok\n", "token_error": "InvalidHeader"})
        ),
        raw(
            "redis-host-with-port-in-brackets",
            "redis",
            "redis://[10.0.0.5:6379]:6379/0",
            "",
            json!({"construct_error": "ValueError"})
        ),
        raw(
            "redis-tls-path-encoded-once",
            "redis",
            "rediss://h:6379/0?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fca%2520b.pem",
            "",
            json!({"ssl_ca_certs": "/etc/ca b.pem"})
        ),
    ]);
    let out = support::python::run_json(&oracle(), &cases);
    let bad: Vec<&Value> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["ok"] != true)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

// ------------------------------------------------------------------ property test

/// A random password: printable ASCII with every URI delimiter, spaces, quotes and non-ASCII.
fn random_password(rng: &mut impl Rng) -> String {
    const SPECIAL: &[char] = &[
        '@', ':', '/', '#', '?', '%', '+', '&', '=', ';', ',', ' ', '\'', '"', '\\', '[', ']', '~',
        '`', '$', '!', '*', '(', ')', '{', '}', '|', '^', '<', '>',
    ];
    const UNICODE: &[char] = &['é', 'ß', 'ü', '密', '码', 'Ж', '€', '🔑', '😀', 'ﬃ'];
    let len = rng.random_range(1..=40);
    (0..len)
        .map(|_| match rng.random_range(0..10) {
            0..=3 => SPECIAL[rng.random_range(0..SPECIAL.len())],
            4 => UNICODE[rng.random_range(0..UNICODE.len())],
            _ => rng.random_range(b'!'..=b'~') as char,
        })
        .collect()
}

#[test]
fn a_thousand_random_passwords_per_backend_family_survive_celery() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x0CE1E4);
    // One template per parser family: kombu (redis, sentinel, elasticsearch, arangodb, couchbase,
    // dynamodb, cosmosdbsql), SQLAlchemy, pymongo, pycouchdb's double decoding, and the settings
    // written as Python literals (s3, cassandra).
    type Template = (&'static str, &'static str, fn(&str) -> (Value, Value));
    let templates: Vec<Template> = vec![
        ("redis", "redis", |_| {
            (
                json!({"redis": {"external": {"host": "h", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("sentinel", "redis", |_| {
            (
                json!({"redis": {"external": {"sentinel": {"masterName": "m", "hosts": [{"host": "a"}, {"host": "b"}]}, "auth": {"passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("postgresql", "database", |_| {
            (
                json!({"database": {"external": {"engine": "postgresql", "host": "h", "database": "d", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("mongodb", "mongodb", |_| {
            (
                json!({"mongodb": {"external": {"hosts": [{"host": "h"}], "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("couchdb", "couchdb", |_| {
            (
                json!({"couchdb": {"external": {"host": "h", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("elasticsearch", "elasticsearch", |_| {
            (
                json!({"elasticsearch": {"external": {"host": "h", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("arangodb", "arangodb", |_| {
            (
                json!({"arangodb": {"external": {"host": "h", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("couchbase", "couchbase", |_| {
            (
                json!({"couchbase": {"external": {"host": "h", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
        ("dynamodb", "dynamodb", |_| {
            (
                json!({"dynamodb": {"external": {"region": "eu-west-1", "accessKeyIdSecretRef": sref("user"), "secretAccessKeySecretRef": sref("pw")}}}),
                json!({}),
            )
        }),
        ("cosmosdbsql", "cosmosDbSql", |_| {
            (
                json!({"cosmosDbSql": {"external": {"host": "h", "accountKeySecretRef": sref("pw")}}}),
                json!({}),
            )
        }),
        ("s3", "s3", |_| {
            (
                json!({"s3": {"external": {"bucket": "bkt", "accessKeyIdSecretRef": sref("user"), "secretAccessKeySecretRef": sref("pw")}}}),
                json!({}),
            )
        }),
        ("cassandra", "cassandra", |_| {
            (
                json!({"cassandra": {"external": {"servers": ["h"], "keyspace": "k", "table": "t", "auth": {"usernameSecretRef": sref("user"), "passwordSecretRef": sref("pw")}}}}),
                json!({}),
            )
        }),
    ];
    let mut cases = vec![];
    for (family, kind, template) in &templates {
        for i in 0..1000 {
            let mut user = random_password(&mut rng);
            let mut pw = random_password(&mut rng);
            if *family == "elasticsearch" || *family == "arangodb" {
                // What the Elasticsearch and pyArango clients can send (uri::check::basic_auth_part).
                user.retain(|c| c.is_ascii() && c != ':');
                pw.retain(|c| c.is_ascii());
                user.push('u');
                pw.push('p');
            }
            if *family == "cosmosdbsql" {
                // Account keys are base64 (backends::cosmosdb::base64_key): random bytes, encoded.
                pw = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    pw.as_bytes(),
                );
            }
            let (spec, _) = template(&pw);
            let expect = match *family {
                "redis" | "postgresql" | "mongodb" | "couchdb" | "elasticsearch" | "arangodb"
                | "couchbase" | "cassandra" => json!({"username": user, "password": pw}),
                "sentinel" => json!({"password": pw}),
                "dynamodb" | "s3" => json!({"access_key_id": user, "secret_access_key": pw}),
                "cosmosdbsql" => json!({"key": pw}),
                _ => unreachable!(),
            };
            cases.push(Case {
                id: format!("random/{family}/{i}"),
                kind,
                spec,
                secrets: secrets(&[("creds", "user", &user), ("creds", "pw", &pw)]),
                expect,
            });
        }
    }
    assert!(cases.len() >= 12_000);
    check(cases);
}
