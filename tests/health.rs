//! Health checks in the controller against a real Redis that the test stops and restarts:
//! Healthy follows the store, a dead store names itself without the password, an unreachable
//! store times out without holding up another backend.

mod support;

use std::process::Command;
use std::time::Instant;

use support::cluster::{install_crds, kubectl_ok, TestNamespace};
use support::operator::{condition, get, wait_until, Operator};

const PW: &str = "h3alth p@ss:w/rd#?%";

struct Redis {
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let conf = dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\nsave \"\"\nappendonly no\ndaemonize yes\ndir {d}\npidfile {d}/redis.pid\nlogfile {d}/redis.log\nrequirepass \"{PW}\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let ok = Command::new("redis-server")
            .arg(&conf)
            .status()
            .expect("redis-server (hack/stores.sh installs it)");
        assert!(ok.success());
        wait_until("redis up", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Redis { port, dir }
    }
    fn stop(self) -> tempfile::TempDir {
        let _ = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
                "-a",
                PW,
                "shutdown",
                "nosave",
            ])
            .status();
        wait_until("redis down", 10, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .err()
                .map(|_| ())
        });
        self.dir
    }
}

#[test]
fn healthy_follows_a_real_store_and_a_dead_one_does_not_delay_others() {
    install_crds();
    support::stores::up(&["redis"]);
    let port = support::stores::free_port();
    let redis = Redis::start(port, tempfile::tempdir().unwrap());
    // A store that accepts connections and never answers (the kernel completes the handshake).
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let ns = TestNamespace::blocking("health");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::start(tmp.path(), &n);
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pw}}\nstringData: {{password: {pw}}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: live}}\nspec:\n  healthCheck: {{interval: 1s, timeout: 500ms}}\n  redis: {{external: {{host: 127.0.0.1, port: {port}, auth: {{passwordSecretRef: {{name: pw, key: password}}}}}}}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: blackhole}}\nspec:\n  healthCheck: {{interval: 30s, timeout: 20s}}\n  redis: {{external: {{host: 127.0.0.1, port: {hang_port}}}}}\n",
        pw = serde_json::to_string(PW).unwrap()
    );
    let f = tmp.path().join("b.yaml");
    std::fs::write(&f, yaml).unwrap();
    let t0 = Instant::now();
    kubectl_ok(&["apply", "-n", &n, "-f", f.to_str().unwrap()]);

    // The live store is healthy within a couple of intervals, while the other probe hangs for 20 s.
    wait_until("live Healthy=True", 10, || {
        condition(&n, "live", "Healthy")
            .starts_with("True|StoreAnswered|")
            .then_some(())
    });
    eprintln!(
        "MEASURE apply -> Healthy=True in {} ms",
        t0.elapsed().as_millis()
    );
    assert!(
        t0.elapsed().as_secs() < 10,
        "a hanging store must not delay another backend"
    );
    let latency = get(
        &n,
        &[
            "get",
            "crb",
            "live",
            "-o",
            "jsonpath={.status.lastHealthCheck.latencyMs}",
        ],
    );
    assert!(!latency.is_empty(), "lastHealthCheck carries the latency");

    // Stop the store: Healthy=False with a clear reason, an Event, no password anywhere.
    let dir = redis.stop();
    let msg = wait_until("live Healthy=False", 15, || {
        let c = condition(&n, "live", "Healthy");
        c.starts_with("False|StoreUnreachable|").then_some(c)
    });
    assert!(
        msg.contains("redis") && msg.contains("cannot connect"),
        "{msg}"
    );
    wait_until("an Event", 10, || {
        let e = get(
            &n,
            &[
                "get",
                "events",
                "--field-selector",
                "reason=StoreUnreachable",
                "-o",
                "name",
            ],
        );
        (!e.trim().is_empty()).then_some(())
    });
    // Back when it returns.
    let _redis = Redis::start(port, dir);
    wait_until("live Healthy=True again", 15, || {
        condition(&n, "live", "Healthy")
            .starts_with("True|")
            .then_some(())
    });
    // The silent one times out (in the Redis client's connect or in the probe's timeout) and says so.
    wait_until("blackhole Healthy=False", 40, || {
        let c = condition(&n, "blackhole", "Healthy");
        (c.starts_with("False|") && c.contains("timed out") || c.contains("within")).then_some(())
    });
    let everything = format!(
        "{}{}{}",
        get(&n, &["get", "crb", "-o", "yaml"]),
        get(&n, &["get", "events", "-o", "yaml"]),
        op.log()
    );
    for leak in [PW, "h3alth%20p%40ss"] {
        assert!(!everything.contains(leak), "password leaked: {leak}");
    }
    let _ = _redis.stop();
    drop(hang);
}

/// `check` and `cleanup` with `--backend`: the CLI reads the CeleryResultBackend and its Secrets
/// from the cluster (what an on-call engineer has), managed or external, and names what is missing.
#[test]
fn check_and_cleanup_read_a_backend_from_the_cluster() {
    install_crds();
    support::stores::up(&["redis"]);
    let ns = TestNamespace::blocking("cli-live");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    // The Redis of hack/stores.sh (port 16379) and its password; results without a TTL.
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: pw}\nstringData: {password: 'r3dis p@ss:w/rd#?%'}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: live}\nspec:\n  resultExpires: 0s\n  redis: {external: {host: 127.0.0.1, port: 16379, db: 9, auth: {passwordSecretRef: {name: pw, key: password}}}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: unresolved}\nspec:\n  redis: {external: {host: 127.0.0.1, port: 16379, auth: {passwordSecretRef: {name: absent, key: password}}}}\n";
    let f = tmp.path().join("b.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(&["apply", "-n", &n, "-f", f.to_str().unwrap()]);
    let (kubeconfig, _) = support::cluster::cluster();
    let seen = std::cell::RefCell::new(String::new());
    let cli = |args: &[&str]| {
        let o = Command::new(support::operator::BIN)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        seen.borrow_mut().push_str(&out);
        (o.status.success(), out)
    };
    let (ok, out) = cli(&["check", "--backend", "live", "-n", &n]);
    assert!(ok && out.starts_with("healthy: redis"), "{out}");
    assert!(out.contains("needs cleanup"), "{out}");
    let (ok, out) = cli(&[
        "cleanup",
        "--backend",
        "live",
        "-n",
        &n,
        "--older-than",
        "1h",
        "--dry-run",
    ]);
    assert!(ok && out.contains("redis: would delete"), "{out}");
    let (ok, out) = cli(&["check", "--backend", "unresolved", "-n", &n]);
    assert!(
        !ok && out.contains("absent"),
        "names the missing Secret: {out}"
    );
    let (ok, out) = cli(&["check", "--backend", "nope", "-n", &n]);
    assert!(!ok && out.contains(&format!("{n}/nope not found")), "{out}");
    let (ok, out) = cli(&["check", "-n", &n]);
    assert!(!ok && out.contains("--backend"), "{out}");
    assert!(
        !seen.borrow().contains("r3dis") && !seen.borrow().contains("p%40ss"),
        "no password in any output"
    );
}

/// A CA bundle from a ConfigMap (`tls.caConfigMapRef`) against the TLS-only Redis of
/// hack/stores.sh (client certificates required): the operator verifies the server with it,
/// follows the ConfigMap when it changes (a wrong CA: `StoreTlsFailed`, the message naming the
/// field, the ConfigMap and its key), and recovers when it is put back. No password or key in
/// the status.
#[test]
fn a_ca_from_a_config_map_is_followed_when_it_changes() {
    install_crds();
    support::stores::up(&["redis_tls"]);
    let pem = |f: &str| std::fs::read_to_string(format!("/var/tmp/cbo-stores/tls/{f}")).unwrap();
    let ns = TestNamespace::blocking("health-cm-ca");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::start(tmp.path(), &n);
    let bundle = |ca: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "trust-bundle"}, "data": {"ca.pem": pem(ca)}})
        .to_string()
    };
    let objects = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "client"},
         "type": "kubernetes.io/tls",
         "stringData": {"tls.crt": pem("client.crt"), "tls.key": pem("client.key")}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"},
         "stringData": {"password": "r3dis p@ss:w/rd#?%"}},
        {"apiVersion": "celery.dev/v1alpha1", "kind": "CeleryResultBackend",
         "metadata": {"name": "tls"},
         "spec": {"healthCheck": {"interval": "2s", "timeout": "1500ms"},
            "redis": {"external": {"host": "127.0.0.1", "port": 16380, "db": 3,
            "auth": {"passwordSecretRef": {"name": "pw", "key": "password"}},
            "tls": {"enabled": true,
                    "caConfigMapRef": {"name": "trust-bundle", "key": "ca.pem"},
                    "clientCertificateSecretRef": {"name": "client"}}}}}},
    ]})
    .to_string();
    let apply = |doc: &str| {
        let f = tmp.path().join("doc.json");
        std::fs::write(&f, doc).unwrap();
        kubectl_ok(&["apply", "-n", &n, "-f", f.to_str().unwrap()]);
    };
    // The ConfigMap comes after the backend: missing first, then followed.
    apply(&objects);
    wait_until("a missing ConfigMap is named", 60, || {
        let c = condition(&n, "tls", "Ready");
        c.contains("ConfigMapNotFound").then_some(c)
    });
    let c = condition(&n, "tls", "Ready");
    assert!(
        c.contains("spec.redis.external.tls.caConfigMapRef: ConfigMap \"trust-bundle\" not found"),
        "{c}"
    );
    apply(&bundle("ca.crt"));
    wait_until("Healthy=True with the CA from the ConfigMap", 60, || {
        condition(&n, "tls", "Healthy")
            .starts_with("True")
            .then_some(())
    });
    let status = get(&n, &["get", "crb", "tls", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let mounts = status["status"]["tlsMounts"].to_string();
    assert!(
        mounts.contains("configmap:trust-bundle/ca.pem") && mounts.contains("client/tls.key"),
        "{mounts}"
    );
    // Another CA in the ConfigMap: the watch brings the change in, verification fails, and the
    // message says which CA the operator used.
    apply(&bundle("other-ca.crt"));
    let c = wait_until("a wrong CA is StoreTlsFailed", 60, || {
        let c = condition(&n, "tls", "Healthy");
        c.starts_with("False|StoreTlsFailed").then_some(c)
    });
    assert!(
        c.contains("127.0.0.1:16380")
            && c.contains(
                "the CA of spec.redis.external.tls.caConfigMapRef (ConfigMap \"trust-bundle\" key \"ca.pem\")"
            ),
        "{c}"
    );
    assert!(
        !status.to_string().contains("r3dis") && !c.contains("r3dis"),
        "{c}"
    );
    apply(&bundle("ca.crt"));
    wait_until("Healthy again when the CA is put back", 60, || {
        condition(&n, "tls", "Healthy")
            .starts_with("True")
            .then_some(())
    });
    drop(op);
}
