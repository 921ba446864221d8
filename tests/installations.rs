//! Two installations never fight (on the real control plane): a second cluster-wide operator
//! with default flags refuses to take over the first one's webhook configuration; a
//! namespace-scoped installation beside a cluster-wide one gets its namespace to itself, and a
//! `--dev` run gives it back when it leaves; two namespace-scoped installations run side by side,
//! each injecting only its own namespace.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{cluster, install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{apply_redis_example, condition, get, wait_until, Operator, BIN};
use support::stores::free_port;

const SECRET: &str = "orders-redis-celery-result-backend";

/// The tests here change who serves which namespace: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mwc(name: &str) -> Option<Value> {
    let out = kubectl(&["get", "mutatingwebhookconfiguration", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn installation_of(v: &Value) -> String {
    v["metadata"]["annotations"]["celery.dev/installation"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod(ns: &str, name: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pod.yaml");
    std::fs::write(
        &f,
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{celery.dev/result-backend: orders-redis}}\nspec:\n  containers:\n  - {{name: worker, image: registry.invalid/celery-worker:1}}\n"),
    )
    .unwrap();
    kubectl_ok(&["apply", "-n", ns, "-f", f.to_str().unwrap()]);
    serde_json::from_str(&get(ns, &["get", "pod", name, "-o", "json"])).unwrap()
}

fn injected(pod: &Value) -> bool {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .is_some_and(|env| {
            env.iter()
                .any(|e| e["valueFrom"]["secretKeyRef"]["name"] == SECRET)
        })
}

/// A Pod created in `ns` gets the URI by reference (the webhook may need a moment after start).
fn wait_injected(ns: &str, prefix: &str) {
    let mut tries = 0;
    wait_until(&format!("a Pod in {ns} injected"), 30, || {
        tries += 1;
        injected(&pod(ns, &format!("{prefix}-{tries}"))).then_some(())
    });
}

/// An operator as `run ARGS` (no implied --namespace), its stderr in `dir/log`.
fn spawn(dir: &std::path::Path, log: &str, args: &[&str]) -> Operator {
    let path = dir.join(log);
    let child = Command::new(BIN)
        .arg("run")
        .args(args)
        .env("KUBECONFIG", &cluster().0)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&path).unwrap())
        .spawn()
        .unwrap();
    Operator { child, log: path }
}

/// Removes a cluster-wide record this test made, even when it fails.
struct RecordGuard(&'static str, String);
impl Drop for RecordGuard {
    fn drop(&mut self) {
        if mwc(self.0).is_some_and(|m| installation_of(&m) == self.1) {
            let _ = kubectl(&["delete", "mutatingwebhookconfiguration", self.0]);
        }
    }
}

#[test]
fn cluster_wide_installation_is_never_taken_over_and_steps_aside() {
    let _serial = serial();
    install_crds();
    let tmp = tempfile::tempdir().unwrap();
    // Test runs on a shared control plane: one cluster-wide installation at a time (hack/test.sh
    // stops when another one is installed).
    if let Some(m) = mwc("celery-backend-operator") {
        panic!(
            "another cluster-wide installation ({:?}) is running on this control plane; stop it first",
            installation_of(&m)
        );
    }
    let id = format!("test-a-{}", std::process::id());
    let _guard = RecordGuard("celery-backend-operator", id.clone());
    let port = free_port();
    let (addr, url) = (
        format!("127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let lease_ns = TestNamespace::blocking("inst-lease");
    let mut a = spawn(
        tmp.path(),
        "a.log",
        &[
            "--installation",
            &id,
            "--lease-namespace",
            &lease_ns.name,
            "--metrics-addr",
            "off",
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
        ],
    );
    let before = wait_until("A's webhook configuration", 60, || {
        mwc("celery-backend-operator")
            .filter(|m| installation_of(m) == id && m["webhooks"][0]["name"].is_string())
    });

    // A second operator with default flags: refuses, names the owner, changes nothing.
    let started = Instant::now();
    let b = Command::new(BIN)
        .arg("run")
        .env("KUBECONFIG", &cluster().0)
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = b.id();
    std::thread::spawn(move || {
        let _ = tx.send(b.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("a second cluster-wide operator kept running for 30 s instead of refusing");
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains(&format!("belongs to installation \"{id}\"")),
        "the refusal names the owner: {err}"
    );
    assert!(err.contains("--take-over"), "and says what to do: {err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let after = mwc("celery-backend-operator").unwrap();
    assert_eq!(installation_of(&after), id);
    let client_config = |m: &Value| m["webhooks"][0]["clientConfig"].clone();
    assert_eq!(
        client_config(&after),
        client_config(&before),
        "the webhook still points at A, with A's CA"
    );
    // Another cluster-wide installation under another configuration name is refused too.
    let other = Command::new(BIN)
        .args([
            "run",
            "--installation",
            "test-c",
            "--webhook-config-name",
            "cbo-test-other",
            "--metrics-addr",
            "off",
        ])
        .env("KUBECONFIG", &cluster().0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && err.contains("already serves the whole cluster"),
        "{err}"
    );
    assert!(mwc("cbo-test-other").is_none(), "no record was written");

    // A --dev run in one namespace: the cluster-wide installation leaves that namespace alone
    // (its webhook skips it, its controller does not reconcile there) until the run leaves.
    let dev_ns = TestNamespace::blocking("inst-dev");
    let n = dev_ns.name.clone();
    let dev_port = free_port();
    let mut dev = spawn(
        tmp.path(),
        "dev.log",
        &[
            "--dev",
            "--namespace",
            &n,
            "--metrics-addr",
            "off",
            "--webhook-addr",
            &format!("127.0.0.1:{dev_port}"),
            "--webhook-url",
            &format!("https://127.0.0.1:{dev_port}"),
        ],
    );
    let record = format!("celery-backend-operator.{n}");
    wait_until("the dev run's record", 60, || {
        mwc(&record).filter(|m| installation_of(m).starts_with("dev."))
    });
    let excluded = |present: bool| {
        let n = n.clone();
        move || {
            let m = mwc("celery-backend-operator")?;
            let values =
                m["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"].to_string();
            (values.contains(&format!("\"{n}\"")) == present).then_some(())
        }
    };
    wait_until(
        "A's webhook to leave the dev namespace out",
        30,
        excluded(true),
    );
    apply_redis_example(&n, 60);
    wait_injected(&n, "dev");
    wait_until("A to leave the dev namespace's backend alone", 30, || {
        a.log()
            .lines()
            .any(|l| l.contains("left alone") && l.contains(&n))
            .then_some(())
    });
    // API requests A made into the namespace (its HTTP spans name the URL).
    let reconciled_by_a = |a: &Operator| {
        a.log()
            .lines()
            .filter(|l| l.contains(&format!("/namespaces/{n}/")) && l.contains("http.method="))
            .count()
    };
    assert_eq!(
        reconciled_by_a(&a),
        0,
        "A made no API request into the dev namespace"
    );
    // The dev run leaves (SIGTERM): its record goes, A serves the namespace again.
    assert!(dev.terminate().success(), "{}", dev.log());
    wait_until("the dev run's record to go", 30, || {
        mwc(&record).is_none().then_some(())
    });
    wait_until(
        "A's webhook to serve the namespace again",
        30,
        excluded(false),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while reconciled_by_a(&a) == 0 {
        if Instant::now() > deadline {
            let log = a.log();
            let mine: Vec<&str> = log.lines().filter(|l| l.contains(&n)).collect();
            panic!(
                "A did not reconcile the backend again within 20 s:\n{}",
                mine.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(condition(&n, "orders-redis", "Ready").starts_with("True|"));
    wait_injected(&n, "after-dev");
    a.terminate();
}

#[test]
fn namespace_scoped_installations_run_side_by_side() {
    let _serial = serial();
    install_crds();
    let tmp = tempfile::tempdir().unwrap();
    let one = TestNamespace::blocking("inst-one");
    let two = TestNamespace::blocking("inst-two");
    let none = TestNamespace::blocking("inst-none");
    let start = |ns: &str, log: &str| {
        let port = free_port();
        Operator::start_with(
            tmp.path(),
            ns,
            log,
            &[
                "--webhook-addr",
                &format!("127.0.0.1:{port}"),
                "--webhook-url",
                &format!("https://127.0.0.1:{port}"),
            ],
        )
    };
    let a = start(&one.name, "one.log");
    let b = start(&two.name, "two.log");
    for ns in [&one.name, &two.name] {
        let m = wait_until("a record per namespace", 60, || {
            mwc(&format!("celery-backend-operator.{ns}"))
                .filter(|m| m["webhooks"][0]["name"].is_string())
        });
        assert_eq!(installation_of(&m), format!("{ns}.celery-backend-operator"));
        let selector = m["webhooks"][0]["namespaceSelector"].to_string();
        assert!(
            selector.contains(&format!("\"In\",\"values\":[\"{ns}\"]")),
            "each webhook selects only its namespace: {selector}"
        );
        assert_eq!(
            m["metadata"]["ownerReferences"][0]["kind"], "Namespace",
            "and goes with it"
        );
        apply_redis_example(ns, 60);
        wait_injected(ns, "w");
    }
    // A namespace no installation serves: its backend is not reconciled, its Pods not injected.
    kubectl_ok(&[
        "apply",
        "-n",
        &none.name,
        "-f",
        "examples/redis-secret.yaml",
        "-f",
        "examples/redis.yaml",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!injected(&pod(&none.name, "unserved")));
    assert_eq!(
        get(
            &none.name,
            &["get", "crb", "orders-redis", "-o", "jsonpath={.status}"]
        ),
        "",
        "nobody reconciled the unserved backend"
    );
    // A cleanup policy over both namespaces (cluster-scoped, seen by both): one installation
    // writes its status, the one it names, run after run; the other reports on its backends.
    let policy = format!("inst-policy-{}", std::process::id());
    let manifest = tmp.path().join("policy.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {policy}}}\nspec:\n  schedule: '*/2 * * * * *'\n  retention: 1h\n  dryRun: true\n  namespaceSelector:\n    matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{}, {}]}}]\n",
            one.name, two.name
        ),
    )
    .unwrap();
    kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let mut writers = std::collections::BTreeSet::new();
    let mut reported = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let out = kubectl(&["get", "celeryresultcleanuppolicy", &policy, "-o", "json"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            if let Some(w) = v["status"]["installation"].as_str() {
                writers.insert(w.to_string());
            }
            for b in v["status"]["backends"].as_array().into_iter().flatten() {
                reported.insert(b["namespace"].as_str().unwrap_or_default().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = kubectl(&["delete", "celeryresultcleanuppolicy", &policy]);
    assert_eq!(
        writers.len(),
        1,
        "one writer of the policy status: {writers:?}"
    );
    assert_eq!(
        reported.len(),
        1,
        "the status reports the writer's namespace only, never flips: {reported:?}"
    );
    // Neither installation saw the other's namespace (the policy's writer, named in a log line,
    // is the other installation's identity: not a namespace it acted in).
    let acted_in = |log: String, ns: &str| {
        log.lines()
            .filter(|l| !l.contains("another installation writes this policy's status"))
            .find(|l| l.contains(ns))
            .map(str::to_string)
    };
    assert_eq!(
        acted_in(a.log(), &two.name),
        None,
        "one stays in its namespace"
    );
    assert_eq!(
        acted_in(b.log(), &one.name),
        None,
        "two stays in its namespace"
    );
    // A third installation for a namespace already served refuses.
    let third = Command::new(BIN)
        .args([
            "run",
            "--namespace",
            &one.name,
            "--installation",
            "test-third",
            "--webhook-config-name",
            &format!("cbo-third-{}", one.name),
            "--metrics-addr",
            "off",
        ])
        .env("KUBECONFIG", &cluster().0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        !third.status.success()
            && err.contains(&format!("namespace {} is already served", one.name)),
        "{err}"
    );
}
