//! The store layer against real servers (hack/stores.sh: Debian's Redis, PostgreSQL, MariaDB,
//! memcached, RabbitMQ; SQLite files): `check` is a real round trip and fails on a stopped store;
//! `cleanup` deletes exactly the results a real Celery worker stored before the cutoff, and the
//! fresh ones stay readable through Celery.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::operator::BIN;
use support::python::python;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:25672//";
const GAP_SECONDS: &str = "5";

use support::stores::up as stores_up;

/// Each run uses its own key prefix or tables, so results of earlier runs never count.
fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn cli(args: &[&str]) -> (bool, String, String) {
    cli_env(args, &[])
}

/// `env` is added to the process's environment; an empty value removes the variable.
fn with_env<'a>(cmd: &'a mut Command, env: &[(&str, &str)]) -> &'a mut Command {
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let o = with_env(Command::new(BIN).args(args), env)
        .output()
        .expect("run the CLI");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Write a backend manifest + Secret, render celeryconfig.py into `dir`.
fn backend(dir: &Path, spec: &str, password: Option<&str>) -> (String, Option<String>) {
    let f = write(
        dir,
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{spec}"),
    );
    let s = password.map(|pw| {
        write(
            dir,
            "secret.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: store-auth}}\nstringData:\n  password: {}\n",
                serde_json::to_string(pw).unwrap()
            ),
        )
    });
    let mut args = vec!["uri", "-f", f.as_str(), "-o", "config"];
    if let Some(s) = &s {
        args.extend(["-s", s.as_str()]);
    }
    let (ok, out, err) = cli(&args);
    assert!(ok, "uri: {err}");
    std::fs::write(dir.join("celeryconfig.py"), out).unwrap();
    (f, s)
}

fn target_args<'a>(f: &'a str, s: &'a Option<String>) -> Vec<&'a str> {
    let mut v = vec!["-f", f];
    if let Some(s) = s {
        v.extend(["-s", s.as_str()]);
    }
    v
}

/// `cleanup` refuses a store that expires results itself, and says why.
fn cleanup_refused_as_native(f: &str, s: &Option<String>, why: &str) {
    let (ok, _, err) = cli(&[
        &["cleanup"],
        target_args(f, s).as_slice(),
        &["--older-than", "1h"],
    ]
    .concat());
    assert!(
        !ok && err.contains("nothing to purge") && err.contains(why),
        "{err}"
    );
}

/// Like `cleanup_round_trip`, with a Secret manifest given verbatim.
fn cleanup_round_trip_with_secret(label: &str, spec: &str, dir: &Path, secret: &str) {
    cleanup_round_trip_env(label, spec, dir, Some(secret), &[]);
}

/// The round trip with a Secret manifest (or none) and environment for both the CLI and Celery.
fn cleanup_round_trip_env(
    label: &str,
    spec: &str,
    dir: &Path,
    secret: Option<&str>,
    env: &[(&str, &str)],
) {
    let secret = secret.unwrap_or("apiVersion: v1\nkind: Secret\nmetadata: {name: unused}\n");
    let s = write(dir, "secret.yaml", secret);
    let f = write(
        dir,
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{spec}"),
    );
    let (ok, out, err) = cli(&["uri", "-f", &f, "-s", &s, "-o", "config"]);
    assert!(ok, "uri: {err}");
    std::fs::write(dir.join("celeryconfig.py"), out).unwrap();
    round_trip(label, dir, &f, &Some(s), env);
}

/// Real worker writes old and fresh results; dry run counts; cleanup deletes exactly the old ones.
fn cleanup_round_trip(label: &str, spec: &str, password: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(dir.path(), spec, password);
    round_trip(label, dir.path(), &f, &s, &[]);
}

fn round_trip(label: &str, dir: &Path, f: &str, s: &Option<String>, env: &[(&str, &str)]) {
    let cli = |args: &[&str]| cli_env(args, env);
    let target = target_args(f, s);
    let (ok, out, err) = cli(&[&["check"], target.as_slice()].concat());
    assert!(ok, "{label}: check failed: {err}");
    assert!(out.starts_with("healthy:"), "{out}");

    let py = python();
    let d = dir.to_str().unwrap();
    let script = format!(
        "{}/tests/stores/celery_results.py",
        support::cluster::root()
    );
    let w = with_env(
        Command::new(&py).args([script.as_str(), "write", d, BROKER, GAP_SECONDS]),
        env,
    )
    .output()
    .unwrap();
    assert!(
        w.status.success(),
        "{label}: Celery worker run failed:\n{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let ids: Value = support::python::last_json_line(&w.stdout);
    let old = ids["old_tasks"].as_array().unwrap().len() as u64;
    // Backends that cannot save groups (Cassandra) run the same tasks without a saved group.
    let groups = u64::from(!env.iter().any(|(k, _)| *k == "CELERY_NO_GROUPS"));

    // The cutoff is the mark the script took half-way between the batches (2.5 s from each).
    let mark = ids["mark"].as_f64().unwrap();
    let older_than = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        format!("{}s", (now - mark).round() as u64)
    };
    let (ok, out, err) = cli(&[
        &["cleanup"],
        target.as_slice(),
        &["--older-than", &older_than(), "--dry-run", "--batch", "2"],
    ]
    .concat());
    assert!(ok, "{label}: dry run: {err}");
    assert!(
        out.contains(&format!(
            "would delete {old} task results and {groups} group results"
        )),
        "{label}: {out}"
    );
    let (ok, out, err) = cli(&[
        &["cleanup"],
        target.as_slice(),
        &[
            "--older-than",
            &older_than(),
            "--batch",
            "2",
            "--rate",
            "1000",
        ],
    ]
    .concat());
    assert!(ok, "{label}: cleanup: {err}");
    assert!(
        out.contains(&format!(
            "deleted {old} task results and {groups} group results"
        )),
        "{label}: {out}"
    );
    eprintln!("{label}: {}", out.trim());

    let r = with_env(
        Command::new(&py).args([script.as_str(), "read", d, BROKER, &ids.to_string()]),
        env,
    )
    .output()
    .unwrap();
    assert!(
        r.status.success(),
        "{label}: read back failed:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let got: Value = support::python::last_json_line(&r.stdout);
    for id in ids["old_tasks"].as_array().unwrap() {
        assert_eq!(
            got["tasks"][id.as_str().unwrap()][0],
            "PENDING",
            "{label}: old result {id} survived"
        );
    }
    for id in ids["fresh_tasks"].as_array().unwrap() {
        assert_eq!(
            got["tasks"][id.as_str().unwrap()][0],
            "SUCCESS",
            "{label}: fresh result {id} lost"
        );
    }
    if groups == 1 {
        assert!(
            got["groups"][ids["old_group"].as_str().unwrap()].is_null(),
            "{label}: old group survived"
        );
        assert!(
            got["groups"][ids["fresh_group"].as_str().unwrap()].is_array(),
            "{label}: fresh group lost"
        );
    }

    // A second run finds nothing.
    let (ok, out, _) = cli(&[
        &["cleanup"],
        target.as_slice(),
        &["--older-than", &older_than()],
    ]
    .concat());
    assert!(
        ok && out.contains("deleted 0 task results and 0 group results"),
        "{label}: {out}"
    );
}

#[test]
fn redis_without_ttl_is_cleaned_by_celery_timestamps() {
    stores_up(&["redis", "rabbitmq"]);
    cleanup_round_trip(
        "redis",
        &format!("  resultExpires: 0s\n  redis:\n    external:\n      host: 127.0.0.1\n      port: 16379\n      db: 3\n      keyPrefix: 'run-{}'\n      auth: {{passwordSecretRef: {{name: store-auth, key: password}}}}\n", run_id()),
        Some("r3dis p@ss:w/rd#?%"),
    );
}

#[test]
fn postgresql_is_cleaned_in_batches() {
    stores_up(&["postgresql", "rabbitmq"]);
    // A database per run: Celery names its date_done indexes after the default tables whatever
    // database_table_names says, so two table sets in one PostgreSQL schema collide.
    let db = support::stores::pg_database("celery");
    cleanup_round_trip(
        "postgresql",
        &format!("  database:\n    tableNames: {{task: tasks, group: groups}}\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: 15432\n      database: {db}\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n"),
        Some("pg p@ss:w/rd#?%"),
    );
}

#[test]
fn mariadb_is_cleaned_in_batches() {
    stores_up(&["mariadb", "rabbitmq"]);
    cleanup_round_trip(
        "mariadb",
        &format!("  database:\n    tableNames: {{task: tasks_{id}, group: groups_{id}}}\n    external:\n      engine: mysql\n      host: 127.0.0.1\n      port: 13306\n      database: celery\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n", id = run_id()),
        Some("my p@ss:w/rd#?%"),
    );
}

#[test]
fn couchdb_compatible_server_is_cleaned_by_celery_timestamps() {
    stores_up(&["couchdb", "rabbitmq"]);
    // A database per run, created up front (pycouchdb would create it lazily, racing under load).
    let db = format!("celery_{}", run_id());
    let put = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("http://127.0.0.1:25984/{db}")])
        .output()
        .expect("curl");
    assert!(put.status.success(), "cannot create CouchDB database {db}");
    cleanup_round_trip(
        "couchdb",
        &format!("  couchdb:\n    external:\n      host: 127.0.0.1\n      port: 25984\n      database: {db}\n"),
        None,
    );
}

#[test]
fn s3_emulator_is_cleaned_by_celery_timestamps() {
    stores_up(&["s3", "rabbitmq"]);
    // Celery's S3 backend needs the bucket to exist: create a fresh one per run with boto3.
    let bucket = format!("celery-{}", run_id());
    let mk = Command::new(python())
        .args(["-c", "import boto3, sys; boto3.client('s3', endpoint_url='http://127.0.0.1:25000', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[1])", &bucket])
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let spec = format!(
        "  s3:\n    basePath: results/\n    external:\n      bucket: {bucket}\n      region: us-east-1\n      endpointUrl: http://127.0.0.1:25000\n      accessKeyIdSecretRef: {{name: store-auth, key: id}}\n      secretAccessKeySecretRef: {{name: store-auth, key: password}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: store-auth}\nstringData:\n  id: test\n  password: test\n";
    cleanup_round_trip_with_secret("s3", &spec, dir.path(), secret);
}

/// An S3-compatible endpoint over https with a private CA (moto serving the test PKI's
/// certificate): the CA from a Secret reaches Celery's S3 backend as botocore's `AWS_CA_BUNDLE`
/// (set by the config module; the mounted file) and the operator's client in memory; both
/// verify the endpoint. A wrong CA fails the check naming TLS.
#[test]
fn s3_over_https_with_a_private_ca_is_checked_and_cleaned() {
    stores_up(&["s3_tls", "rabbitmq"]);
    let id = run_id();
    let bucket = format!("celery-tls-{id}");
    let mk = Command::new(python())
        .args(["-c", "import boto3, sys; boto3.client('s3', endpoint_url='https://127.0.0.1:25001', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test', verify='/var/tmp/cbo-stores/tls/ca.crt').create_bucket(Bucket=sys.argv[1])", &bucket])
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let (tls, ca, client) = tls_secrets(&id, "unused", "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let keys = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s3-keys}\nstringData:\n  id: test\n  password: test\n";
    let spec = format!(
        "  injection: {{configModule: true}}\n  s3:\n    basePath: results/\n    external:\n      bucket: {bucket}\n      region: us-east-1\n      endpointUrl: https://127.0.0.1:25001\n      accessKeyIdSecretRef: {{name: s3-keys, key: id}}\n      secretAccessKeySecretRef: {{name: s3-keys, key: password}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    // A worker Pod has no AWS_CA_BUNDLE of its own; this machine's environment sets one (to the
    // system bundle), which the config module's setdefault would rightly leave alone.
    cleanup_round_trip_env(
        "s3-tls",
        &spec,
        dir.path(),
        Some(&format!("{tls}{keys}")),
        &[("AWS_CA_BUNDLE", "")],
    );
    check_fails(
        "wrong CA",
        &spec,
        &format!("{}{keys}", tls_secrets(&id, "unused", "other-ca.crt").0),
        &[
            "TLS with s3 at 127.0.0.1:25001 failed: invalid peer certificate",
            "verified the server with the CA of spec.s3.external.tls.caSecretRef (Secret",
        ],
        &["retries"],
    );
    // No tls block: the system trust store was used, and the message says where a CA goes.
    let no_tls = spec.replace(
        &format!(
            "      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
        ),
        "",
    );
    assert!(!no_tls.contains("tls:"));
    check_fails(
        "https with the system trust store",
        &no_tls,
        keys,
        &[
            "invalid peer certificate",
            "system trust store: for a private CA set spec.s3.external.tls",
        ],
        &["retries"],
    );
    // Plain http to the https-only port: told to use https.
    check_fails(
        "http to an https endpoint",
        &no_tls.replace("https://", "http://"),
        keys,
        &["use https:// in spec.s3.external.endpointUrl"],
        &["retries"],
    );
    // The handshake passes, the bucket is not there: said so, naming the field, not as an
    // unreachable store.
    check_fails(
        "no such bucket",
        &spec.replace(&bucket, &format!("no-such-{bucket}")),
        &format!("{tls}{keys}"),
        &[
            "s3 at 127.0.0.1:25001 answered with an error",
            "the bucket does not exist (spec.s3.external.bucket)",
        ],
        &["NoSuchBucket", "<?xml"],
    );
    // Cleanup's listing meets the same and says it the same way.
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{}", spec.replace(&bucket, &format!("no-such-{bucket}"))),
    );
    let sf = write(d.path(), "secret.yaml", &format!("{tls}{keys}"));
    let (ok, _, err) = cli(&[
        "cleanup",
        "-f",
        &f,
        "-s",
        &sf,
        "--older-than",
        "1h",
        "--dry-run",
    ]);
    assert!(
        !ok && err.contains("the bucket does not exist (spec.s3.external.bucket)")
            && !err.contains("<?xml"),
        "{err}"
    );
}

#[test]
fn azure_blob_emulator_is_cleaned_by_celery_timestamps() {
    stores_up(&["azure", "rabbitmq"]);
    // Azurite's documented development account; Celery creates the container.
    let conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
    let spec = format!(
        "  azureBlockBlob:\n    external:\n      connectionStringSecretRef: {{name: store-auth, key: conn}}\n      container: celery-{}\n      basePath: run/\n",
        run_id()
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: store-auth}}\nstringData:\n  conn: '{conn}'\n");
    cleanup_round_trip_with_secret("azureBlockBlob", &spec, dir.path(), &secret);
}

#[test]
fn mongodb_wire_server_is_cleaned_in_batches() {
    stores_up(&["mongodb", "rabbitmq"]);
    // FerretDB (MongoDB wire protocol), without authentication: its SCRAM does not work with the
    // Rust driver (see hack/stores.sh). Own database and collections per run.
    let id = run_id();
    let spec = format!(
        "  mongodb:\n    taskmetaCollection: tasks_{id}\n    groupmetaCollection: groups_{id}\n    external:\n      hosts: [{{host: 127.0.0.1, port: 37017}}]\n      database: celery_{id}\n"
    );
    cleanup_round_trip("mongodb", &spec, None);
}

#[test]
fn dynamodb_local_without_ttl_is_cleaned_by_celery_timestamps() {
    stores_up(&["dynamodb", "rabbitmq"]);
    // DynamoDB Local; Celery creates its table. Keys with the characters URIs get wrong.
    let spec = format!(
        "  dynamodb:\n    external:\n      localEndpoint: {{host: localhost, port: 28000}}\n      table: celery-{}\n      accessKeyIdSecretRef: {{name: store-auth, key: id}}\n      secretAccessKeySecretRef: {{name: store-auth, key: secret}}\n",
        run_id()
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: store-auth}\nstringData:\n  id: AKIDLOCAL\n  secret: 'dd b/s@cr:t#?%'\n";
    cleanup_round_trip_with_secret("dynamodb", &spec, dir.path(), secret);
}

#[test]
fn dynamodb_with_ttl_reports_native_expiry() {
    stores_up(&["dynamodb"]);
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(
        dir.path(),
        "  dynamodb:\n    external:\n      localEndpoint: {host: localhost, port: 28000}\n      table: absent\n      ttlSeconds: 60\n      accessKeyIdSecretRef: {name: store-auth, key: password}\n      secretAccessKeySecretRef: {name: store-auth, key: password}\n",
        Some("x"),
    );
    cleanup_refused_as_native(&f, &s, "DynamoDB TTL");
    // The table does not exist yet: the probe is a real DescribeTable and says so.
    let (ok, out, err) = cli(&[&["check"], target_args(&f, &s).as_slice()].concat());
    assert!(
        ok && out.contains("table absent does not exist yet"),
        "{out}{err}"
    );
}

/// Keyspace `celery` and a login role `celery` with `password` on the test Cassandra (which
/// checks passwords: PasswordAuthenticator), through the DataStax Python driver Celery uses.
fn cassandra_setup(password: &str) {
    cassandra_setup_at(29042, password);
}

/// [`cassandra_setup`] on the Cassandra at `port` (29043: the TLS-only one, reached with the
/// test CA).
fn cassandra_setup_at(port: u16, password: &str) {
    let script = r#"
import sys, time
from cassandra.cluster import Cluster
from cassandra.auth import PlainTextAuthProvider
port = int(sys.argv[2])
ssl = {"ca_certs": "/var/tmp/cbo-stores/tls/ca.crt", "check_hostname": True} if port == 29043 else None
for attempt in range(60):
    try:
        session = Cluster(["127.0.0.1"], port=port, ssl_options=ssl,
                          auth_provider=PlainTextAuthProvider("cassandra", "cassandra")).connect()
        break
    except Exception as e:  # the default superuser appears shortly after start-up
        err = e
        time.sleep(1)
else:
    sys.exit("cannot log in to the test Cassandra as its default superuser: %s" % err)
session.execute("CREATE KEYSPACE IF NOT EXISTS celery WITH replication = "
                "{'class': 'SimpleStrategy', 'replication_factor': 1}")
session.execute("CREATE ROLE IF NOT EXISTS celery WITH LOGIN = true AND PASSWORD = %s", (sys.argv[1],))
session.execute("ALTER ROLE celery WITH PASSWORD = %s", (sys.argv[1],))
"#;
    let o = Command::new(python())
        .args(["-c", script, password, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Cassandra setup failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn cassandra_without_ttl_is_cleaned_by_celery_timestamps() {
    stores_up(&["cassandra", "rabbitmq"]);
    // Apache Cassandra 5.0.6 with password authentication; a role whose password has the
    // characters URIs get wrong. Celery creates its table; it cannot save groups.
    let password = "ca p@ss:w/rd#?% '";
    cassandra_setup(password);
    let spec = format!(
        "  cassandra:\n    external:\n      servers: [127.0.0.1]\n      port: 29042\n      keyspace: celery\n      table: results_{}\n      readConsistency: ONE\n      writeConsistency: ONE\n      auth:\n        usernameSecretRef: {{name: store-auth, key: username}}\n        passwordSecretRef: {{name: store-auth, key: password}}\n",
        run_id()
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: store-auth}}\nstringData:\n  username: celery\n  password: {}\n",
        serde_json::to_string(password).unwrap()
    );
    let (f, s) = (
        write(
            dir.path(),
            "absent.yaml",
            &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{spec}"),
        ),
        write(dir.path(), "secret.yaml", &secret),
    );
    // Before Celery's first write the table does not exist: healthy, and said so.
    let (ok, out, err) = cli(&["check", "-f", &f, "-s", &s]);
    assert!(ok && out.contains("does not exist yet"), "{out}{err}");
    // A wrong password is refused by the server: the probe is a real authenticated login.
    let wrong = write(
        dir.path(),
        "wrong.yaml",
        &secret.replace(&serde_json::to_string(password).unwrap(), "not-it"),
    );
    let (ok, out, err) = cli(&["check", "-f", &f, "-s", &wrong]);
    assert!(!ok, "a wrong password must fail the check: {out}");
    assert!(!err.contains("not-it"), "the password leaked: {err}");
    cleanup_round_trip_env(
        "cassandra",
        &spec,
        dir.path(),
        Some(&secret),
        &[("CELERY_NO_GROUPS", "1")],
    );
}

/// Cassandra with client encryption only (a second node whose native port speaks TLS alone):
/// Celery's worker reaches it through cassandra-driver's `ssl_options` (in `cassandra_options`,
/// from the config module) with the CA mounted from a Secret, the operator's driver (scylla on
/// rustls) with the same CA in memory; both check the node's address against its certificate.
/// Password authentication runs inside TLS, so the password never crosses the wire in clear. A
/// wrong CA fails naming TLS and the endpoint.
#[test]
fn cassandra_over_tls_with_secret_material_is_checked_and_cleaned() {
    stores_up(&["cassandra_tls", "rabbitmq"]);
    let password = "ca p@ss:w/rd#?% '";
    cassandra_setup_at(29043, password);
    let id = run_id();
    let (tls, ca, client) = tls_secrets(&id, "unused", "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let login = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cassandra-auth}}\nstringData:\n  username: celery\n  password: {}\n",
        serde_json::to_string(password).unwrap()
    );
    let spec = format!(
        "  injection: {{configModule: true}}\n  cassandra:\n    external:\n      servers: [127.0.0.1]\n      port: 29043\n      keyspace: celery\n      table: tls_results_{id}\n      readConsistency: ONE\n      writeConsistency: ONE\n      auth:\n        usernameSecretRef: {{name: cassandra-auth, key: username}}\n        passwordSecretRef: {{name: cassandra-auth, key: password}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_env(
        "cassandra-tls",
        &spec,
        dir.path(),
        Some(&format!("{tls}{login}")),
        &[("CELERY_NO_GROUPS", "1")],
    );
    check_fails(
        "wrong CA",
        &spec,
        &format!("{}{login}", tls_secrets(&id, "unused", "other-ca.crt").0),
        &[
            "TLS with cassandra at 127.0.0.1:29043 failed",
            "verified the server with the CA of spec.cassandra.external.tls.caSecretRef (Secret",
        ],
        &["ca p@ss"],
    );
}

#[test]
fn cassandra_with_ttl_reports_native_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(
        dir.path(),
        "  cassandra:\n    external:\n      servers: [127.0.0.1]\n      keyspace: celery\n      table: results\n      entryTtlSeconds: 3600\n",
        None,
    );
    cleanup_refused_as_native(&f, &s, "Cassandra row TTL");
}

#[test]
fn gcs_emulator_is_cleaned_by_celery_timestamps() {
    stores_up(&["gcs", "rabbitmq"]);
    // fake-gcs-server; the bucket is created through its JSON API. Celery's gs:// backend needs
    // Firestore at start-up, so the worker uses GCSBackendBase (the whole object part) with the
    // operator's URI.
    let bucket = format!("celery-{}", run_id());
    let mk = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(format!("{{\"name\": \"{bucket}\"}}"))
        .arg("http://127.0.0.1:24443/storage/v1/b?project=test")
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "create bucket: {}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let spec = format!(
        "  gcs:\n    external:\n      bucket: {bucket}\n      project: test\n      basePath: /run/results/\n"
    );
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_env(
        "gcs",
        &spec,
        dir.path(),
        None,
        &[
            ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:24443"),
            ("CELERY_BACKEND_CLASS", "celery.backends.gcs:GCSBackendBase"),
        ],
    );
}

#[test]
fn consul_results_expire_natively_through_session_ttls() {
    stores_up(&["consul", "rabbitmq"]);
    // Real Consul (dev agent). Celery ties each key to a session whose TTL is result_expires.
    let prefix = format!("celery/{}", run_id());
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(
        dir.path(),
        &format!("  consul:\n    external:\n      host: 127.0.0.1\n      port: 28500\n      keyPrefix: {prefix}\n  resultExpires: 10s\n"),
        None,
    );
    let (ok, out, err) = cli(&[&["check"], target_args(&f, &s).as_slice()].concat());
    assert!(
        ok && out.contains("healthy") && out.contains("native"),
        "{out}{err}"
    );
    cleanup_refused_as_native(&f, &s, "Consul sessions");

    let script = format!(
        "{}/tests/stores/celery_results.py",
        support::cluster::root()
    );
    let w = Command::new(python())
        .args([
            script.as_str(),
            "write",
            dir.path().to_str().unwrap(),
            BROKER,
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        w.status.success(),
        "Celery worker run failed:\n{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let keys = || {
        let o = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:28500/v1/kv/{prefix}?recurse&keys"),
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<Vec<String>>(&o.stdout)
            .map(|v| v.len())
            .unwrap_or(0)
    };
    let written = keys();
    assert!(
        written >= 16,
        "expected the worker's results under {prefix}, found {written}"
    );
    // Consul deletes a session (and with behavior=delete its keys) between TTL and 2x TTL.
    let started = std::time::Instant::now();
    while keys() > 0 {
        assert!(
            started.elapsed().as_secs() < 90,
            "results still in Consul after 90 s"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    eprintln!(
        "consul: {written} keys expired natively {:?} after the last write",
        started.elapsed()
    );
}

#[test]
fn opensearch_is_cleaned_by_celery_timestamps() {
    stores_up(&["elasticsearch", "rabbitmq"]);
    // A real OpenSearch 2.19 node behind hack/es_compat_proxy.py (headers only), because Celery's
    // elasticsearch-py 8 refuses OpenSearch otherwise. Own index per run; no security plugin, so
    // no password (the oracle covers credential encoding).
    let index = format!("celery-{}", run_id());
    // The index exists before workers start, as in production: an index Celery's first write
    // creates has a moment in which its shard is recovering, and elasticsearch-py's get then
    // raises a 503 that Celery does not retry (seen on a loaded node).
    for (method, path) in [
        ("PUT", index.clone()),
        (
            "GET",
            format!("_cluster/health/{index}?wait_for_status=yellow&timeout=60s"),
        ),
    ] {
        let out = Command::new("curl")
            .args(["-sf", "-X", method])
            .arg(format!("http://127.0.0.1:29200/{path}"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let spec = format!(
        "  elasticsearch:\n    index: {index}\n    external:\n      host: 127.0.0.1\n      port: 29201\n      scheme: http\n"
    );
    cleanup_round_trip("elasticsearch", &spec, None);
}

#[test]
fn filesystem_is_cleaned_by_celery_timestamps() {
    stores_up(&["rabbitmq"]);
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip(
        "filesystem",
        &format!(
            "  filesystem:\n    external:\n      path: {}\n",
            dir.path().display()
        ),
        None,
    );
}

#[test]
fn sqlite_is_cleaned_in_batches() {
    stores_up(&["rabbitmq"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    cleanup_round_trip(
        "sqlite",
        &format!(
            "  database:\n    external:\n      engine: sqlite\n      path: {}\n",
            db.display()
        ),
        None,
    );
}

#[test]
fn check_probes_native_expiry_stores_and_fails_on_a_stopped_one() {
    stores_up(&["memcached", "rabbitmq", "redis"]);
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(
        dir.path(),
        "  cache:\n    external:\n      servers: [{host: 127.0.0.1, port: 21211}]\n",
        None,
    );
    let (ok, out, err) = cli(&[&["check"], target_args(&f, &s).as_slice()].concat());
    assert!(
        ok && out.contains("memcached 1.") && out.contains("native"),
        "{out}{err}"
    );
    cleanup_refused_as_native(&f, &s, "memcached");

    let (f, _) = backend(dir.path(), "  rpc:\n    external: {}\n", None);
    let o = Command::new(BIN)
        .args(["check", "-f", &f])
        .env("CELERY_BROKER_URL", BROKER)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("Connection.Start"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Nothing listens on this port: a clear failure, no password in the message.
    let (f, s) = backend(
        dir.path(),
        "  redis:\n    external:\n      host: 127.0.0.1\n      port: 1\n      auth: {passwordSecretRef: {name: store-auth, key: password}}\n",
        Some("s3cret-value"),
    );
    let (ok, out, err) = cli(&[
        &["check"],
        target_args(&f, &s).as_slice(),
        &["--timeout", "3s"],
    ]
    .concat());
    assert!(!ok, "{out}");
    assert!(err.contains("unhealthy") && err.contains("redis"), "{err}");
    assert!(!err.contains("s3cret-value"), "password leaked: {err}");
}

// ---- Celery as the oracle for what cleanup deletes (issue 17) ----------------------------------

/// The cutoff of the oracle runs: results older than one hour are expired.
const ORACLE_EXPIRES: u64 = 3600;

/// Which rule decides a group's expiry in a store.
#[derive(Clone, Copy, PartialEq)]
enum GroupRule {
    /// The group's own date_done (database, MongoDB).
    OwnTimestamp,
    /// Every member present and expired (Redis, object stores, CouchDB).
    AllMembersExpired,
    /// Celery's filesystem rule: each file by its modification time, whatever its state.
    Mtime,
}

/// A backend manifest with its rendered celeryconfig.py in a directory of its own.
struct Target {
    dir: tempfile::TempDir,
    f: String,
    s: Option<String>,
}

fn target(spec: &str, password: Option<&str>) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let (f, s) = backend(dir.path(), spec, password);
    Target { dir, f, s }
}

/// Run tests/stores/celery_oracle.py; its last stdout line is JSON.
fn oracle(cmd: &str, t: &Target, arg: &str, env: &[(&str, &str)]) -> Value {
    let script = format!("{}/tests/stores/celery_oracle.py", support::cluster::root());
    let o = Command::new(python())
        .args([script.as_str(), cmd, t.dir.path().to_str().unwrap(), arg])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "celery_oracle.py {cmd} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    support::python::last_json_line(&o.stdout)
}

/// What must survive a cleanup of results older than `expires` seconds under `rule`.
fn expected_survivors(plan: &Value, expires: u64, rule: GroupRule) -> Value {
    let mut tasks: Vec<String> = vec![];
    for (id, t) in plan["tasks"].as_object().unwrap() {
        let old = t["age"].as_u64().unwrap() > expires;
        let finished = matches!(t["state"].as_str(), Some("SUCCESS" | "FAILURE"));
        let deleted = match rule {
            GroupRule::Mtime => old,
            _ => old && finished,
        };
        if t["stored"] == true && !deleted {
            tasks.push(id.clone());
        }
    }
    let mut groups: Vec<String> = vec![];
    for (id, g) in plan["groups"].as_object().unwrap() {
        let deleted = match rule {
            GroupRule::AllMembersExpired => g["kind"] == "expired",
            _ => g["age"].as_u64().unwrap() > expires,
        };
        if !deleted {
            groups.push(id.clone());
        }
    }
    tasks.sort();
    groups.sort();
    serde_json::json!({"tasks": tasks, "groups": groups})
}

fn sorted(v: &Value) -> Value {
    let mut out = v.clone();
    for k in ["tasks", "groups"] {
        let mut a: Vec<String> = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        a.sort();
        out[k] = serde_json::json!(a);
    }
    out
}

/// The first line of a cleanup output without the verb and the timing, for comparing a dry run
/// with the real run.
fn counts_of(out: &str) -> String {
    let line = out
        .lines()
        .next()
        .unwrap_or_default()
        .replace("would delete", "deleted");
    match (line.find(", longest "), line.find(" ms)")) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &line[..a], &line[b + 3..]),
        _ => line,
    }
}

/// Write the same seeded mix into `celery` (if any) and `op`; run Celery's cleanup() on the first
/// and the operator's (dry run, then real, `--batch 2`) on the second; the operator must leave
/// exactly the expected survivors, and the same ones as Celery when `celery_agrees`. Returns the
/// real run's output.
fn oracle_case(
    label: &str,
    celery: Option<(&Target, bool)>,
    op: &Target,
    seed: u64,
    rule: GroupRule,
    env: &[(&str, &str)],
) -> String {
    let plan = oracle("write", op, &seed.to_string(), env);
    let plan_file = op.dir.path().join("plan.json");
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    if let Some((c, _)) = celery {
        let twin = oracle("write", c, &seed.to_string(), env);
        assert_eq!(
            twin["tasks"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            plan["tasks"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            "{label}: the twins hold the same results"
        );
        oracle("cleanup", c, &ORACLE_EXPIRES.to_string(), env);
    }
    let older = format!("{ORACLE_EXPIRES}s");
    let run = |dry: bool| {
        let mut args = vec!["cleanup"];
        args.extend(target_args(&op.f, &op.s));
        args.extend(["--older-than", &older, "--batch", "2", "--rate", "1000"]);
        if dry {
            args.push("--dry-run");
        }
        let (ok, out, err) = cli_env(&args, env);
        assert!(ok, "{label}: cleanup (dry run: {dry}) failed: {err}");
        out
    };
    let dry = run(true);
    let real = run(false);
    eprintln!("{label}: dry run: {dry}{label}: real: {real}");
    assert_eq!(
        counts_of(&dry),
        counts_of(&real),
        "{label}: the dry run and the real run disagree"
    );
    let got = sorted(&oracle("survivors", op, plan_file.to_str().unwrap(), env));
    let want = expected_survivors(&plan, ORACLE_EXPIRES, rule);
    assert_eq!(
        got, want,
        "{label}: the operator must keep exactly the unexpired and unfinished results"
    );
    if let Some((c, agrees)) = celery {
        let by_celery = sorted(&oracle("survivors", c, plan_file.to_str().unwrap(), env));
        if agrees {
            assert_eq!(
                by_celery, got,
                "{label}: Celery's cleanup() and the operator kept different results"
            );
        } else {
            eprintln!("{label}: Celery's own cleanup() kept {by_celery} (the operator: {got})");
        }
    }
    real
}

/// The issue's PostgreSQL case: database time zone America/Los_Angeles or Asia/Shanghai, Celery
/// with enable_utc=False and the same timezone. date_done holds local wall time; Celery's
/// cleanup() and the operator delete the same rows: exactly the finished ones older than 1 h.
#[test]
fn postgresql_in_a_non_utc_database_time_zone_matches_celerys_cleanup() {
    stores_up(&["postgresql"]);
    for (i, tz) in ["America/Los_Angeles", "Asia/Shanghai"].iter().enumerate() {
        let spec = |db: &str| {
            format!("  timezone: {tz}\n  enableUtc: false\n  database:\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: 15432\n      database: {db}\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n")
        };
        let (a, b) = (
            support::stores::pg_database("oracle"),
            support::stores::pg_database("oracle"),
        );
        for db in [&a, &b] {
            support::stores::pg_admin(&format!("ALTER DATABASE {db} SET timezone = '{tz}'"));
        }
        let pw = Some("pg p@ss:w/rd#?%");
        let (celery, op) = (target(&spec(&a), pw), target(&spec(&b), pw));
        let out = oracle_case(
            &format!("postgresql {tz}"),
            Some((&celery, true)),
            &op,
            17 + i as u64,
            GroupRule::OwnTimestamp,
            &[],
        );
        assert!(
            out.contains(&format!("session time zone {tz} (ALTER DATABASE"))
                && out.contains("without date_done"),
            "{out}"
        );
        for db in [&a, &b] {
            support::stores::pg_admin(&format!("DROP DATABASE {db}"));
        }
    }
}

/// MariaDB: with UTC (Celery's default) Celery's cleanup() and the operator agree. With a zone
/// east or west of UTC Celery compares local task times with a UTC cutoff; the operator reads task
/// rows in Celery's zone and still deletes exactly the finished results older than 1 h.
#[test]
fn mariadb_matches_celerys_cleanup_and_reads_task_rows_in_celerys_zone() {
    stores_up(&["mariadb"]);
    for (i, clock) in [
        "",
        "  timezone: Asia/Shanghai\n  enableUtc: false\n",
        "  timezone: America/Los_Angeles\n",
    ]
    .iter()
    .enumerate()
    {
        let spec = || {
            format!("{clock}  database:\n    tableNames: {{task: tasks_{id}, group: groups_{id}}}\n    external:\n      engine: mysql\n      host: 127.0.0.1\n      port: 13306\n      database: celery\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n", id = run_id())
        };
        let pw = Some("my p@ss:w/rd#?%");
        let (celery, op) = (target(&spec(), pw), target(&spec(), pw));
        oracle_case(
            &format!("mariadb {}", clock.trim()),
            Some((&celery, i == 0)),
            &op,
            30 + i as u64,
            GroupRule::OwnTimestamp,
            &[],
        );
    }
}

/// SQLite keeps the wall time of Celery's zone for task rows, UTC for group rows.
#[test]
fn sqlite_matches_celerys_cleanup() {
    for (i, clock) in ["", "  timezone: America/Los_Angeles\n"].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |name: &str| {
            format!(
                "{clock}  database:\n    external:\n      engine: sqlite\n      path: {}\n",
                dir.path().join(name).display()
            )
        };
        let (celery, op) = (target(&spec("a.db"), None), target(&spec("b.db"), None));
        oracle_case(
            &format!("sqlite {}", clock.trim()),
            Some((&celery, i == 0)),
            &op,
            40 + i as u64,
            GroupRule::OwnTimestamp,
            &[],
        );
    }
}

/// MongoDB stores BSON dates (UTC): Celery's zone does not matter, and Celery agrees.
#[test]
fn mongodb_matches_celerys_cleanup() {
    stores_up(&["mongodb"]);
    let spec = || {
        let id = run_id();
        format!("  timezone: America/Los_Angeles\n  enableUtc: false\n  mongodb:\n    taskmetaCollection: tasks_{id}\n    groupmetaCollection: groups_{id}\n    external:\n      hosts: [{{host: 127.0.0.1, port: 37017}}]\n      database: oracle_{id}\n")
    };
    let (celery, op) = (target(&spec(), None), target(&spec(), None));
    oracle_case(
        "mongodb",
        Some((&celery, true)),
        &op,
        50,
        GroupRule::OwnTimestamp,
        &[],
    );
}

/// Filesystem: Celery's own rule (name prefix and modification time); with UTC Celery agrees.
/// In another zone Celery's cutoff moves by that zone's 1970 offset; the operator's does not.
#[test]
fn filesystem_matches_celerys_cleanup() {
    for (i, clock) in ["", "  timezone: Asia/Shanghai\n"].iter().enumerate() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spec = |d: &Path| {
            format!(
                "{clock}  filesystem:\n    external:\n      path: {}\n",
                d.display()
            )
        };
        let (celery, op) = (
            target(&spec(da.path()), None),
            target(&spec(db.path()), None),
        );
        oracle_case(
            &format!("filesystem {}", clock.trim()),
            Some((&celery, i == 0)),
            &op,
            60 + i as u64,
            GroupRule::Mtime,
            &[],
        );
    }
}

/// Redis without TTLs (Celery has no cleanup of its own here): random mixes written through
/// Celery, a group whose members are not stored yet, an unfinished chord's `.j` list and `.t`
/// counter. Exactly the finished results older than 1 h go, and groups only when every member
/// did; the chord keys are skipped and reported, and the run goes on.
#[test]
fn redis_random_mixes_lose_exactly_the_expired_finished_results() {
    stores_up(&["redis"]);
    for seed in [1u64, 2, 3] {
        let t = target(
            &format!("  timezone: Asia/Shanghai\n  enableUtc: false\n  resultExpires: 0s\n  redis:\n    external:\n      host: 127.0.0.1\n      port: 16379\n      db: 4\n      keyPrefix: 'oracle-{}:'\n      auth: {{passwordSecretRef: {{name: store-auth, key: password}}}}\n", run_id()),
            Some("r3dis p@ss:w/rd#?%"),
        );
        let out = oracle_case(
            &format!("redis seed {seed}"),
            None,
            &t,
            seed,
            GroupRule::AllMembersExpired,
            &[],
        );
        assert!(
            out.contains("skipped 2 chord bookkeeping keys")
                && out.contains("group results not shown to be expired")
                && out.contains("without date_done"),
            "{out}"
        );
    }
}

/// S3 (moto): the same property, through Celery's S3 backend.
#[test]
fn s3_random_mix_loses_exactly_the_expired_finished_results() {
    stores_up(&["s3"]);
    let bucket = format!("oracle-{}", run_id());
    let mk = Command::new(python())
        .args(["-c", "import boto3, sys; boto3.client('s3', endpoint_url='http://127.0.0.1:25000', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[1])", &bucket])
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "{}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n  timezone: America/Los_Angeles\n  s3:\n    basePath: results/\n    external:\n      bucket: {bucket}\n      region: us-east-1\n      endpointUrl: http://127.0.0.1:25000\n      accessKeyIdSecretRef: {{name: store-auth, key: id}}\n      secretAccessKeySecretRef: {{name: store-auth, key: password}}\n"),
    );
    let s = write(
        dir.path(),
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: store-auth}\nstringData:\n  id: test\n  password: test\n",
    );
    let (ok, out, err) = cli(&["uri", "-f", &f, "-s", &s, "-o", "config"]);
    assert!(ok, "uri: {err}");
    std::fs::write(dir.path().join("celeryconfig.py"), out).unwrap();
    let t = Target { dir, f, s: Some(s) };
    oracle_case("s3", None, &t, 70, GroupRule::AllMembersExpired, &[]);
}

/// A wrong password is reported as refused credentials (health reason `StoreAuthFailed`), not as
/// an unreachable store, by Redis, PostgreSQL (scram-sha-256 on every TCP login) and MariaDB
/// themselves; the password never shows.
#[test]
fn a_wrong_password_is_refused_credentials_not_an_unreachable_store() {
    stores_up(&["redis", "postgresql", "mariadb"]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-4711";
    for (label, spec) in [
        ("redis", "  redis:\n    external:\n      host: 127.0.0.1\n      port: 16379\n      auth: {passwordSecretRef: {name: store-auth, key: password}}\n"),
        ("postgresql", "  database:\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: 15432\n      database: celery\n      auth: {username: celery, passwordSecretRef: {name: store-auth, key: password}}\n"),
        ("mysql", "  database:\n    external:\n      engine: mysql\n      host: 127.0.0.1\n      port: 13306\n      database: celery\n      auth: {username: celery, passwordSecretRef: {name: store-auth, key: password}}\n"),
    ] {
        let (f, s) = backend(dir.path(), spec, Some(wrong));
        let (ok, out, err) = cli(&[
            &["check"],
            target_args(&f, &s).as_slice(),
            &["--timeout", "10s"],
        ]
        .concat());
        assert!(!ok, "{label}: {out}");
        assert!(
            err.contains("refused the credentials"),
            "{label}: expected an authentication failure, got: {err}"
        );
        assert!(!err.contains(wrong), "{label}: password leaked: {err}");
        if label == "redis" {
            assert!(err.contains("spec.redis.external.auth"), "{err}");
        }
    }
    // No password at all against a Redis that requires one: the message says which field (at
    // db 0 the first command gets NOAUTH; at another db the connection's SELECT is refused).
    for db in [0, 3] {
        let f = dir.path().join("nopw.yaml");
        std::fs::write(
            &f,
            format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: nopw}}\nspec:\n  redis: {{external: {{host: 127.0.0.1, port: 16379, db: {db}}}}}\n"),
        )
        .unwrap();
        let (ok, _, err) = cli(&["check", "-f", f.to_str().unwrap(), "--timeout", "10s"]);
        assert!(!ok);
        assert!(
            err.contains("refused the credentials")
                && err
                    .contains("none is configured: set spec.redis.external.auth.passwordSecretRef"),
            "db {db}: {err}"
        );
    }
    // A port that accepts connections but never speaks the protocol (PostgreSQL pointed at the
    // Redis port): cleanup gives up after --timeout instead of hanging.
    let f = dir.path().join("wrong-port.yaml");
    std::fs::write(
        &f,
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: wp}\nspec:\n  database: {external: {engine: postgresql, host: 127.0.0.1, port: 16379, database: celery}}\n",
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let (ok, _, err) = cli(&[
        "cleanup",
        "-f",
        f.to_str().unwrap(),
        "--older-than",
        "7d",
        "--dry-run",
        "--timeout",
        "2s",
    ]);
    assert!(!ok && err.contains("cleanup not started"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "bounded");
}

/// The TLS test PKI `hack/stores.sh` makes (CA, client certificate, a CA that signed nothing).
const TLS_DIR: &str = "/var/tmp/cbo-stores/tls";

/// A Secret manifest entry (`stringData` value) as a YAML block scalar.
fn block(text: &str) -> String {
    let mut s = String::from("|\n");
    for l in text.trim_end().lines() {
        s.push_str("    ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// TLS material of one test run as Secrets (`store-auth` with `password`, `tls-ca-<id>` with the
/// CA from `ca_file`, `tls-client-<id>` of type kubernetes.io/tls), and the names of the last two.
fn tls_secrets(id: &str, password: &str, ca_file: &str) -> (String, String, String) {
    let (ca, client) = (format!("tls-ca-{id}"), format!("tls-client-{id}"));
    let read = |f: &str| std::fs::read_to_string(format!("{TLS_DIR}/{f}")).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: store-auth}}\nstringData:\n  password: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {ca}}}\nstringData:\n  ca.crt: {}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {client}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {}  tls.key: {}",
        serde_json::to_string(password).unwrap(),
        block(&read(ca_file)),
        block(&read("client.crt")),
        block(&read("client.key")),
    );
    (yaml, ca, client)
}

/// What the webhook's Secret volumes put in a worker (`/etc/celery-backend/tls/<secret>/<key>`),
/// written on this host for the Celery of these tests; removed when the guard drops.
struct Mounted(Vec<String>);

impl Mounted {
    fn new(ca: &str, client: &str) -> Self {
        let read = |f: &str| std::fs::read_to_string(format!("{TLS_DIR}/{f}")).unwrap();
        for (path, text) in [
            (format!("{ca}/ca.crt"), read("ca.crt")),
            (format!("{client}/tls.crt"), read("client.crt")),
            (format!("{client}/tls.key"), read("client.key")),
        ] {
            let p = Path::new("/etc/celery-backend/tls").join(&path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            // As the webhook's volume for a PostgreSQL backend: root-owned (these tests run as
            // root, as kubelet writes volume files), the key 0640 (libpq's limit for a root-owned
            // key), the rest 0644.
            use std::os::unix::fs::PermissionsExt;
            let mode = if path.ends_with("/tls.key") {
                0o640
            } else {
                0o644
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Mounted(vec![ca.to_string(), client.to_string()])
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(format!("/etc/celery-backend/tls/{d}"));
        }
    }
}

/// `check` fails for `spec` with every string of `want` in its message, and no secret in it.
fn check_fails(label: &str, spec: &str, secret: &str, want: &[&str], secrets: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let s = write(d.path(), "secret.yaml", secret);
    let f = write(
        d.path(),
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{spec}"),
    );
    let (ok, out, err) = cli(&["check", "-f", &f, "-s", &s, "--timeout", "5s"]);
    assert!(!ok, "{label}: {out}");
    for w in want {
        assert!(err.contains(w), "{label}: expected {w:?} in: {err}");
    }
    for x in secrets.iter().chain(&["BEGIN"]) {
        assert!(!err.contains(x), "{label}: secret leaked: {err}");
    }
}

/// Redis over TLS only (the test server has no plain-text port and requires a client
/// certificate): TLS material comes from Secrets (`caSecretRef`, `clientCertificateSecretRef`).
/// The operator's probe and cleanup use it in memory; a real Celery worker reads it from
/// `/etc/celery-backend/tls/<secret>/<key>`, the paths the URI names, where injection mounts the
/// Secrets (here the test writes the files there itself, playing the kubelet's part; the webhook
/// mount is tested in `inject`). Both succeed against a server that refuses plain text, so the
/// password never crossed the wire in clear. A wrong CA, a missing client certificate and a
/// TLS client on a plain port each fail the check naming TLS and the endpoint, never the password.
#[test]
fn redis_over_tls_with_secret_material_is_checked_and_cleaned() {
    stores_up(&["redis_tls", "rabbitmq"]);
    let id = run_id();
    let pw = "r3dis p@ss:w/rd#?%";
    let (secrets, ca, client) = tls_secrets(&id, pw, "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let spec = |port: u16, client_cert: bool| {
        format!(
            "  resultExpires: 0s\n  redis:\n    external:\n      host: 127.0.0.1\n      port: {port}\n      db: 6\n      keyPrefix: 'tls-{id}'\n      auth: {{passwordSecretRef: {{name: store-auth, key: password}}}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n{}",
            if client_cert { format!("        clientCertificateSecretRef: {{name: {client}}}\n") } else { String::new() }
        )
    };
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret("redis-tls", &spec(16380, true), dir.path(), &secrets);
    let wrong_ca = tls_secrets(&id, pw, "other-ca.crt").0;
    check_fails(
        "wrong CA",
        &spec(16380, true),
        &wrong_ca,
        &[
            "TLS with redis at 127.0.0.1:16380 failed",
            "invalid peer certificate",
            "verified the server with the CA of spec.redis.external.tls.caSecretRef (Secret",
        ],
        &["r3dis"],
    );
    check_fails(
        "no client certificate",
        &spec(16380, false),
        &secrets,
        &[
            "TLS with redis at 127.0.0.1:16380 failed",
            "CertificateRequired",
            "the server requires a client certificate: set tls.clientCertificateSecretRef",
        ],
        &["r3dis"],
    );
    check_fails(
        "TLS client on the plain-text port",
        &spec(16379, true),
        &secrets,
        &["redis at 127.0.0.1:16379"],
        &["r3dis"],
    );
    // And the server refuses a plain-text client: nothing, password included, goes in clear.
    check_fails(
        "plain text on the TLS port",
        "  redis:\n    external:\n      host: 127.0.0.1\n      port: 16380\n      auth: {passwordSecretRef: {name: store-auth, key: password}}\n",
        &secrets,
        &[
            "redis at 127.0.0.1:16380",
            "if it speaks TLS only, set tls.enabled: true",
        ],
        &["r3dis"],
    );
}

/// PostgreSQL over TLS only (`hostssl` with scram-sha-256, plain text rejected): the CA from a
/// Secret (`caSecretRef`) is used by the operator's check and cleanup (sqlx, from a private
/// temporary file) and, mounted, by a real Celery worker through psycopg2 with
/// `sslmode=verify-full`. A wrong CA fails naming TLS; a wrong password is refused credentials
/// (the server really checks it); plain text is rejected by the server.
#[test]
fn postgresql_over_tls_with_secret_material_is_checked_and_cleaned() {
    stores_up(&["postgresql_tls", "rabbitmq"]);
    let id = run_id();
    let pw = "pg p@ss:w/rd#?%";
    let (secrets, ca, client) = tls_secrets(&id, pw, "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    // A database per run: Celery names its date_done indexes after the default tables whatever
    // database_table_names says, so two runs in one schema collide.
    let db = format!("celery_tls_{id}");
    support::stores::pg_tls_admin(&format!("CREATE DATABASE {db} OWNER celery"));
    let spec = |port: u16, verify: &str| {
        format!(
            "  resultExpires: 0s\n  database:\n    tableNames: {{task: tls_task_{id}, group: tls_group_{id}}}\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: {port}\n      database: {db}\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n      tls:\n        enabled: true\n        verify: {verify}\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret(
        "postgresql-tls",
        &spec(15433, "Required"),
        dir.path(),
        &secrets,
    );
    check_fails(
        "wrong CA",
        &spec(15433, "Required"),
        &tls_secrets(&id, pw, "other-ca.crt").0,
        &[
            "TLS with postgresql at 127.0.0.1:15433 failed",
            "invalid peer certificate",
            "verified the server with the CA of spec.database.external.tls.caSecretRef (Secret",
        ],
        &["pg p@ss"],
    );
    check_fails(
        "wrong password",
        &spec(15433, "Required"),
        &tls_secrets(&id, "not-the-password-4711", "ca.crt").0,
        &["postgresql at 127.0.0.1:15433 refused the credentials"],
        &["not-the-password-4711"],
    );
    check_fails(
        "plain text",
        "  database:\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: 15433\n      database: celery\n      options: {sslmode: disable}\n      auth: {username: celery, passwordSecretRef: {name: store-auth, key: password}}\n",
        &secrets,
        &["no encryption"],
        &["pg p@ss"],
    );
}

/// PostgreSQL with a client certificate (mutual TLS): the TLS server of hack/stores.sh requires
/// role `cbo_mtls` to present a certificate of the test CA besides its password
/// (`clientcert=verify-ca`). The certificate and key from a `kubernetes.io/tls` Secret reach a
/// real Celery worker through psycopg2 (`sslcert`/`sslkey`, the key mounted root-owned 0640 as
/// the webhook mounts it, which libpq accepts) and the operator's check and cleanup (sqlx). Without
/// the certificate the server refuses the login.
#[test]
fn postgresql_with_a_client_certificate_is_checked_and_cleaned() {
    stores_up(&["postgresql_tls", "rabbitmq"]);
    let id = run_id();
    let pw = "pg p@ss:w/rd#?%";
    let (secrets, ca, client) = tls_secrets(&id, pw, "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let db = format!("celery_mtls_{id}");
    support::stores::pg_tls_admin(&format!("CREATE DATABASE {db} OWNER cbo_mtls"));
    let spec = |client_cert: bool| {
        format!(
            "  resultExpires: 0s\n  database:\n    external:\n      engine: postgresql\n      host: 127.0.0.1\n      port: 15433\n      database: {db}\n      auth: {{username: cbo_mtls, passwordSecretRef: {{name: store-auth, key: password}}}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n{}",
            if client_cert {
                format!("        clientCertificateSecretRef: {{name: {client}}}\n")
            } else {
                String::new()
            }
        )
    };
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret("postgresql-mtls", &spec(true), dir.path(), &secrets);
    check_fails(
        "no client certificate",
        &spec(false),
        &secrets,
        &[
            "postgresql at 127.0.0.1:15433 refused the credentials",
            "requires a valid client certificate (set tls.clientCertificateSecretRef)",
        ],
        &["pg p@ss"],
    );
    support::stores::pg_tls_admin(&format!("DROP DATABASE IF EXISTS {db}"));
}

/// MongoDB over TLS only (a FerretDB with no plain-text listener): the CA from a Secret
/// (`caSecretRef`) is used by the operator's check and cleanup (the MongoDB driver on rustls,
/// from a private temporary file) and, mounted, by a real Celery worker through pymongo
/// (`tls=true&tlsCAFile=/etc/celery-backend/tls/<secret>/ca.crt`). A wrong CA fails naming TLS
/// and the endpoint; a plain-text client cannot talk to the server at all.
#[test]
fn mongodb_over_tls_with_secret_material_is_checked_and_cleaned() {
    stores_up(&["mongodb_tls", "rabbitmq"]);
    let id = run_id();
    let (secrets, ca, client) = tls_secrets(&id, "unused", "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let spec = |verify: &str| {
        format!(
            "  resultExpires: 0s\n  mongodb:\n    taskmetaCollection: tls_tasks_{id}\n    groupmetaCollection: tls_groups_{id}\n    external:\n      hosts: [{{host: 127.0.0.1, port: 37018}}]\n      database: celery\n      tls:\n        enabled: true\n        verify: {verify}\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret("mongodb-tls", &spec("Required"), dir.path(), &secrets);
    check_fails(
        "wrong CA",
        &spec("Required"),
        &tls_secrets(&id, "unused", "other-ca.crt").0,
        &[
            "TLS with mongodb at 127.0.0.1:37018 failed",
            "invalid peer certificate",
            "verified the server with the CA of spec.mongodb.external.tls.caSecretRef (Secret",
        ],
        &[],
    );
    check_fails(
        "plain text on the TLS port",
        "  mongodb:\n    external:\n      hosts: [{host: 127.0.0.1, port: 37018}]\n",
        &secrets,
        &["mongodb at 127.0.0.1:37018"],
        &[],
    );
}

/// A Sentinel deployment (hack/stores.sh: a real Redis Sentinel with its own password in front of
/// the test Redis): Celery's `SentinelBackend` writes through it with the operator's URI and
/// transport options, and the operator finds the master the same way to check and clean it. A
/// wrong Sentinel password is refused credentials; an unknown master name says so.
#[test]
fn redis_sentinel_is_checked_and_cleaned_through_the_sentinels() {
    stores_up(&["redis_sentinel", "rabbitmq"]);
    let id = run_id();
    let secret_with = |master_pw: &str, sentinel_pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: store-auth}}\nstringData:\n  password: {}\n  sentinel: {}\n",
            serde_json::to_string(master_pw).unwrap(),
            serde_json::to_string(sentinel_pw).unwrap()
        )
    };
    let secret = |sentinel_pw: &str| secret_with("r3dis p@ss:w/rd#?%", sentinel_pw);
    let spec = |master: &str| {
        format!(
            "  resultExpires: 0s\n  injection: {{configModule: true}}\n  redis:\n    external:\n      db: 9\n      keyPrefix: 'sentinel-{id}'\n      auth: {{passwordSecretRef: {{name: store-auth, key: password}}}}\n      sentinel:\n        masterName: {master}\n        hosts: [{{host: 127.0.0.1, port: 26380}}]\n        sentinelPasswordSecretRef: {{name: store-auth, key: sentinel}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret(
        "redis-sentinel",
        &spec("cbo-master"),
        dir.path(),
        &secret("sentinel p@ss:w/rd#?%"),
    );
    check_fails(
        "wrong Sentinel password",
        &spec("cbo-master"),
        &secret("not-the-sentinel-password"),
        &[
            "Redis Sentinel at 127.0.0.1:26380 refused the credentials",
            "spec.redis.external.sentinel.sentinelPasswordSecretRef",
        ],
        &["r3dis", "not-the-sentinel-password"],
    );
    // The same refusal from the master names the master's password instead.
    check_fails(
        "wrong master password",
        &spec("cbo-master"),
        &secret_with("not-the-master-password", "sentinel p@ss:w/rd#?%"),
        &[
            "redis master \"cbo-master\" via Sentinel 127.0.0.1:26380 refused the credentials",
            "the master's password: spec.redis.external.auth",
        ],
        &["not-the-master-password", "sentinel p@ss"],
    );
    check_fails(
        "unknown master",
        &spec("no-such-master"),
        &secret("sentinel p@ss:w/rd#?%"),
        &[
            "\"no-such-master\" via Sentinel 127.0.0.1:26380",
            "not found",
            "(spec.redis.external.sentinel.masterName)",
        ],
        &["r3dis", "sentinel p@ss"],
    );
}

/// A Sentinel deployment over TLS end to end (hack/stores.sh: a TLS-only Redis Sentinel that
/// requires client certificates, in front of the TLS-only Redis): Celery reaches the Sentinel
/// through `sentinel_kwargs` (the TLS settings the operator writes there) and the master through
/// the URI's TLS options, with the CA and client certificate mounted from Secrets; the operator's
/// Sentinel client does the same in memory to check and clean. Neither Sentinel nor master has a
/// plain-text port, so no password crosses the wire in clear. A wrong CA fails naming TLS.
#[test]
fn redis_sentinel_over_tls_is_checked_and_cleaned_through_the_sentinels() {
    stores_up(&["redis_sentinel_tls", "rabbitmq"]);
    let id = run_id();
    let (tls, ca, client) = tls_secrets(&id, "r3dis p@ss:w/rd#?%", "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let sentinel_pw = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: sentinel-auth}}\nstringData:\n  sentinel: {}\n",
        serde_json::to_string("sentinel p@ss:w/rd#?%").unwrap()
    );
    let spec = format!(
        "  resultExpires: 0s\n  injection: {{configModule: true}}\n  redis:\n    external:\n      db: 10\n      keyPrefix: 'sentinel-tls-{id}'\n      auth: {{passwordSecretRef: {{name: store-auth, key: password}}}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n        clientCertificateSecretRef: {{name: {client}}}\n      sentinel:\n        masterName: cbo-tls-master\n        hosts: [{{host: 127.0.0.1, port: 26381}}]\n        sentinelPasswordSecretRef: {{name: sentinel-auth, key: sentinel}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret(
        "redis-sentinel-tls",
        &spec,
        dir.path(),
        &format!("{tls}{sentinel_pw}"),
    );
    let wrong_ca = tls_secrets(&id, "r3dis p@ss:w/rd#?%", "other-ca.crt").0;
    check_fails(
        "wrong CA",
        &spec,
        &format!("{wrong_ca}{sentinel_pw}"),
        &[
            "TLS with",
            "127.0.0.1:26381",
            "invalid peer certificate",
            "the CA of spec.redis.external.tls.caSecretRef (Secret",
        ],
        &["r3dis", "sentinel p@ss"],
    );
    // A plain-text client to the TLS-only Sentinel is dropped: the message says what to change.
    check_fails(
        "plain text to a TLS-only Sentinel",
        &spec.replace(
            "masterName: cbo-tls-master\n",
            "masterName: cbo-tls-master\n        tls: false\n",
        ),
        &format!("{tls}{sentinel_pw}"),
        &["drop spec.redis.external.sentinel.tls: false"],
        &["r3dis", "sentinel p@ss"],
    );
}

/// MariaDB that requires TLS (`require_secure_transport`): the CA from a Secret is used by the
/// operator (sqlx `VERIFY_IDENTITY`, from a private temporary file) and, mounted, by a real Celery
/// worker through PyMySQL (`ssl_ca`, `ssl_check_hostname`). A wrong CA fails naming TLS, a wrong
/// password is refused credentials, and the server refuses a client without TLS.
#[test]
fn mariadb_over_tls_with_secret_material_is_checked_and_cleaned() {
    stores_up(&["mariadb_tls", "rabbitmq"]);
    let id = run_id();
    let pw = "my p@ss:w/rd#?%";
    let (secrets, ca, client) = tls_secrets(&id, pw, "ca.crt");
    let _mounted = Mounted::new(&ca, &client);
    let spec = format!(
        "  resultExpires: 0s\n  database:\n    tableNames: {{task: tls_task_{id}, group: tls_group_{id}}}\n    external:\n      engine: mysql\n      host: 127.0.0.1\n      port: 13307\n      database: celery\n      auth: {{username: celery, passwordSecretRef: {{name: store-auth, key: password}}}}\n      tls:\n        enabled: true\n        caSecretRef: {{name: {ca}, key: ca.crt}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    cleanup_round_trip_with_secret("mariadb-tls", &spec, dir.path(), &secrets);
    check_fails(
        "wrong CA",
        &spec,
        &tls_secrets(&id, pw, "other-ca.crt").0,
        &[
            "TLS with mysql at 127.0.0.1:13307 failed",
            "invalid peer certificate",
            "verified the server with the CA of spec.database.external.tls.caSecretRef (Secret",
        ],
        &["my p@ss"],
    );
    check_fails(
        "wrong password",
        &spec,
        &tls_secrets(&id, "not-the-password-4711", "ca.crt").0,
        &["mysql at 127.0.0.1:13307 refused the credentials"],
        &["not-the-password-4711"],
    );
    // The server refuses plain text with the right password (MariaDB 10.11 answers "Access denied"
    // to an insecure transport; the same password works over TLS above): nothing travels in clear.
    let plain = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "13307",
            "-u",
            "celery",
            "--skip-ssl",
        ])
        .arg(format!("-p{pw}"))
        .args(["-e", "SELECT 1"])
        .output()
        .expect("mariadb client (hack/stores.sh installs it)");
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success()
            && (err.contains("Access denied") || err.contains("secure transport")),
        "plain text must be refused: {err}"
    );
}

/// Health messages name the endpoint and the real cause: a closed port of an HTTP store gives the
/// whole cause chain (not a bare "error sending request"), and cloud stores without any
/// credentials say so (not a failed request to the metadata address, not an SDK debug dump).
/// No server is needed: the ports are closed and this machine has no cloud identity.
#[test]
fn failures_name_the_endpoint_and_the_cause() {
    let none = "apiVersion: v1\nkind: Secret\nmetadata: {name: unused}\n";
    check_fails(
        "consul on a closed port",
        "  consul: {external: {host: 127.0.0.1, port: 1}}\n",
        none,
        &[
            "cannot connect to consul at 127.0.0.1:1",
            "Connection refused",
        ],
        &[],
    );
    check_fails(
        "gcs without credentials",
        "  gcs: {external: {bucket: b, project: p}}\n",
        none,
        &["no credentials for gcs", "Application Default Credentials"],
        &[],
    );
    check_fails(
        "dynamodb without credentials",
        "  dynamodb: {external: {table: celery, region: us-east-1, endpointUrl: 'http://127.0.0.1:1'}}\n",
        none,
        &["no credentials for dynamodb at http://127.0.0.1:1"],
        &["Unhandled", "DispatchFailure"],
    );
}

/// The operator's https client for ArangoDB (no ArangoDB server can run here, see the README's
/// support table): pointed at another https server of the test PKI (moto's), it verifies the
/// server with the CA from a ConfigMap (the HTTP exchange happens: the TLS handshake passed), and a
/// wrong CA fails as `StoreTlsFailed`, naming the ConfigMap the CA came from.
#[test]
fn arangodb_https_client_verifies_with_the_ca_from_a_config_map() {
    stores_up(&["s3_tls"]);
    let pem = |f: &str| std::fs::read_to_string(format!("/var/tmp/cbo-stores/tls/{f}")).unwrap();
    let bundle = |ca: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "trust-bundle"}, "data": {"ca.pem": pem(ca)}})
        .to_string()
    };
    let spec = "  injection: {configModule: true}\n  arangodb:\n    external:\n      host: 127.0.0.1\n      port: 25001\n      tls:\n        enabled: true\n        caConfigMapRef: {name: trust-bundle, key: ca.pem}\n";
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "backend.yaml",
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results}}\nspec:\n{spec}"),
    );
    let s = write(d.path(), "bundle.json", &bundle("ca.crt"));
    let (_, out, err) = cli(&["check", "-f", &f, "-s", &s, "--timeout", "5s"]);
    assert!(
        format!("{out}{err}").contains("GET /_api/version answered") && !err.contains("TLS"),
        "the handshake passes with the right CA: {out}{err}"
    );
    check_fails(
        "wrong CA",
        spec,
        &bundle("other-ca.crt"),
        &[
            "TLS with arangodb at 127.0.0.1:25001 failed",
            "the CA of spec.arangodb.external.tls.caConfigMapRef (ConfigMap \"trust-bundle\" key \"ca.pem\")",
        ],
        &[],
    );
}
