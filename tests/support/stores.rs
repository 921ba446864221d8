//! Real store servers for tests and benches (hack/stores.sh), and small helpers around them.

use std::process::Command;

/// Start (or reuse) the named servers; a server that cannot start fails the caller with the
/// script's message: these tests never skip.
pub fn up(names: &[&str]) {
    // Bounded: a server that never answers fails the test with the script's output instead of
    // hanging the suite (a cold `up` of every server takes a few minutes; tests start few).
    // --foreground: on expiry only the script is stopped, never the servers it started, which
    // other tests share.
    let out = Command::new("timeout")
        .args(["--foreground", "600", "bash"])
        .arg(format!("{}/hack/stores.sh", super::cluster::root()))
        .arg("up")
        .args(names)
        .output()
        .expect("run hack/stores.sh");
    assert!(
        out.status.success(),
        "hack/stores.sh up {names:?} failed or ran past 600 s (these tests need real servers; {}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run SQL as PostgreSQL's superuser on the test server (port 15432, through its unix socket:
/// TCP logins need the password).
pub fn pg_admin(sql: &str) {
    psql_admin("/var/tmp/cbo-stores/pg", 15432, sql);
}

/// Run SQL as PostgreSQL's superuser on the TLS-only test server (port 15433, through its unix
/// socket: TCP takes TLS and a password).
pub fn pg_tls_admin(sql: &str) {
    psql_admin("/var/tmp/cbo-stores/pg-tls", 15433, sql);
}

fn psql_admin(socket_dir: &str, port: u16, sql: &str) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-h", socket_dir, "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-qc"])
        .arg(sql)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database owned by `celery`, new for each caller (Celery's default index names collide
/// between table sets in one schema, so isolation is per database).
pub fn pg_database(prefix: &str) -> String {
    let db = format!("{prefix}_{:08x}", rand::random::<u32>());
    pg_admin(&format!("CREATE DATABASE {db} OWNER celery"));
    db
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}
