//! The operator as a child process scoped to one test namespace, plus small kubectl helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{cluster, kubectl};

pub const BIN: &str = env!("CARGO_BIN_EXE_celery-backend-operator");

pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// An operator watching only `ns` (so concurrent tests do not share one), without the HTTP
    /// server; leader election uses a Lease in `ns`.
    pub fn start(dir: &Path, ns: &str) -> Self {
        Self::start_with(dir, ns, "operator.log", &[])
    }

    /// `extra` flags come after the defaults (metrics and webhook off), so they can override them.
    pub fn start_with(dir: &Path, ns: &str, log_name: &str, extra: &[&str]) -> Self {
        Self::start_env(dir, ns, log_name, extra, &[])
    }

    /// Like `start_with`, with environment overrides (e.g. a KUBECONFIG with another identity).
    pub fn start_env(
        dir: &Path,
        ns: &str,
        log_name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let (kubeconfig, _) = cluster();
        let log = dir.join(log_name);
        let child = Command::new(BIN)
            .args([
                "run",
                "--namespace",
                ns,
                "--metrics-addr",
                "off",
                "--webhook-addr",
                "off",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create operator log"))
            .spawn()
            .expect("start operator");
        Operator { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for operator")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kubectl -n ns ARGS, stdout (empty on failure).
pub fn get(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    String::from_utf8_lossy(&kubectl(&a).stdout).into_owned()
}

/// One key of a Secret, decoded.
pub fn secret_key(ns: &str, secret: &str, key: &str) -> Option<String> {
    let path = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    let b64 = get(ns, &["get", "secret", secret, "-o", &path]);
    if b64.is_empty() {
        return None;
    }
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(b64.as_bytes()).ok()?;
    let o = child.wait_with_output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    (!s.is_empty()).then_some(s)
}

/// The URI in a published Secret.
pub fn uri_of(ns: &str, secret: &str) -> Option<String> {
    secret_key(ns, secret, "CELERY_RESULT_BACKEND")
}

/// A condition's `status|reason|message` of a backend.
pub fn condition(ns: &str, backend: &str, type_: &str) -> String {
    get(
        ns,
        &[
            "get",
            "crb",
            backend,
            "-o",
            &format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}|{{.status.conditions[?(@.type==\"{type_}\")].reason}}|{{.status.conditions[?(@.type==\"{type_}\")].message}}"),
        ],
    )
}

/// Apply the Redis example (Secret + backend) into `ns` and wait until it is Ready.
pub fn apply_redis_example(ns: &str, secs: u64) {
    super::cluster::kubectl_ok(&[
        "apply",
        "-n",
        ns,
        "-f",
        "examples/redis-secret.yaml",
        "-f",
        "examples/redis.yaml",
    ]);
    wait_until("orders-redis Ready", secs, || {
        condition(ns, "orders-redis", "Ready")
            .starts_with("True|")
            .then_some(())
    });
}

/// A plain HTTP/1.1 GET (status code, whole response), for /metrics, /healthz and /readyz.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let code = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body)
}

/// A MutatingWebhookConfiguration a test's local operator registers, deleted when dropped.
pub struct WebhookConfigGuard(pub String);

impl Drop for WebhookConfigGuard {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.0,
            "--ignore-not-found",
        ]);
    }
}

/// Flags for a local operator serving its own Pod webhook on a free port of 127.0.0.1,
/// registered as `cbo-test-<ns>` (deleted when the guard drops), and the guard.
pub fn local_webhook(ns: &str) -> (Vec<String>, WebhookConfigGuard) {
    let port = super::stores::free_port();
    let config_name = format!("cbo-test-{ns}");
    let flags = vec![
        "--webhook-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--webhook-url".into(),
        format!("https://127.0.0.1:{port}"),
        "--webhook-config-name".into(),
        config_name.clone(),
    ];
    (flags, WebhookConfigGuard(config_name))
}
