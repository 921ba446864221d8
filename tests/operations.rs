//! Operating the operator: kill -9 mid-reconcile and restart converges without duplicates; a
//! steady state issues no writes for a minute (counted in the API server's audit log); two
//! replicas elect one leader through a Lease and hand over on SIGTERM; /metrics, /healthz, /readyz.

mod support;

use support::stores::free_port;

use std::io::{BufRead, Seek, SeekFrom};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{install_crds, kubectl_ok, TestNamespace};
use support::operator::{condition, get, http_get, secret_key, wait_until, Operator};

const AUDIT_LOG: &str = "cluster/logs/audit.log";

fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("CBO_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/celery-backend-operator")
        })
}

fn apply_many(ns: &str, count: usize) {
    let mut yaml = String::new();
    for i in 0..count {
        let spec = match i % 3 {
            0 => "redis: {managed: {}}".to_string(),
            1 => "database: {managed: {deletionPolicy: Delete}}".to_string(),
            _ => "redis: {external: {host: 10.0.0.1, auth: {passwordSecretRef: {name: pw, key: password}}}}".to_string(),
        };
        yaml.push_str(&format!(
            "---\napiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: b{i}}}\nspec:\n  {spec}\n"
        ));
    }
    yaml.push_str("---\napiVersion: v1\nkind: Secret\nmetadata: {name: pw}\nstringData: {password: 'p@ss w#rd'}\n");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("many.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(&["apply", "-n", ns, "-f", f.to_str().unwrap()]);
}

fn names(ns: &str, kind: &str) -> Vec<String> {
    let out = get(
        ns,
        &[
            "get",
            kind,
            "-l",
            "app.kubernetes.io/managed-by=celery-backend-operator",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let mut v: Vec<String> = out.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

fn all_converged(ns: &str, count: usize) -> bool {
    (0..count).all(|i| {
        let want = if i % 3 == 2 {
            "True|"
        } else {
            "False|Provisioning|"
        };
        condition(ns, &format!("b{i}"), "Ready").starts_with(want)
    })
}

/// Write requests in the audit log after `offset` that touch `ns` and come from the operator.
fn operator_writes_since(offset: u64, ns: &str) -> Vec<String> {
    let mut f = std::fs::File::open(cache_dir().join(AUDIT_LOG)).expect("audit log");
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = vec![];
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let ua = ev["userAgent"].as_str().unwrap_or_default();
        if ua.starts_with("celery-backend-operator/") && ev["objectRef"]["namespace"] == ns {
            out.push(format!(
                "{} {}",
                ev["verb"].as_str().unwrap_or_default(),
                ev["requestURI"].as_str().unwrap_or_default()
            ));
        }
    }
    out
}

fn audit_len() -> u64 {
    std::fs::metadata(cache_dir().join(AUDIT_LOG))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn kill_mid_reconcile_converges_and_steady_state_issues_no_writes() {
    install_crds();
    let ns = TestNamespace::blocking("ops");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    const COUNT: usize = 12;

    // Kill -9 while reconciles are in flight, three times, then restart for good. Leader
    // election is off for the killed rounds so each restart acts at once.
    apply_many(&n, COUNT);
    let mut passwords: Vec<(String, Option<String>)> = vec![];
    for (round, delay_ms) in [0u64, 20, 150].into_iter().enumerate() {
        let mut op = Operator::start_with(
            tmp.path(),
            &n,
            &format!("killed-{round}.log"),
            &["--metrics-addr", "off", "--leader-election=false"],
        );
        // Wait for the first reconcile to start (the debug log says so), then a little more.
        let t = Instant::now();
        while !op.log().contains("reconciling object") && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        op.kill();
        let converged = (0..COUNT)
            .filter(|i| !condition(&n, &format!("b{i}"), "Ready").starts_with('|'))
            .count();
        eprintln!("MEASURE kill -9 {delay_ms} ms after the first reconcile began: {converged}/{COUNT} backends had a status");
        // Credentials that exist now must survive every later restart unchanged.
        for s in names(&n, "secrets") {
            if s.ends_with("-credentials") && !passwords.iter().any(|(p, _)| p == &s) {
                let pw = secret_key(&n, &s, "password");
                passwords.push((s, pw));
            }
        }
    }
    let started = Instant::now();
    let second = Operator::start_with(tmp.path(), &n, "final.log", &["--metrics-addr", "off"]);
    wait_until("convergence after restart", 90, || {
        (second.log().contains("became leader") && all_converged(&n, COUNT)).then_some(())
    });
    eprintln!(
        "MEASURE final restart -> all {COUNT} backends converged in {} ms",
        started.elapsed().as_millis()
    );
    let managed = (0..COUNT).filter(|i| i % 3 != 2).count();
    assert_eq!(
        names(&n, "statefulsets").len(),
        managed,
        "one StatefulSet per managed backend"
    );
    assert_eq!(
        names(&n, "services").len(),
        2 * managed,
        "two Services per managed backend"
    );
    let secrets = names(&n, "secrets");
    assert_eq!(
        secrets
            .iter()
            .filter(|s| s.ends_with("-credentials"))
            .count(),
        managed
    );
    assert_eq!(
        secrets
            .iter()
            .filter(|s| s.ends_with("-celery-result-backend"))
            .count(),
        COUNT
    );
    for (s, pw) in passwords {
        assert_eq!(secret_key(&n, &s, "password"), pw, "{s} was regenerated");
    }

    // Steady state: a minute with nothing changing, no write from the operator in this namespace
    // except the leader Lease renewals (every 5 s), which are what leader election is.
    // Let the first health checks land (an unroutable store times out after 5 s).
    std::thread::sleep(Duration::from_secs(15));
    let offset = audit_len();
    std::thread::sleep(Duration::from_secs(61));
    let (leases, writes): (Vec<String>, Vec<String>) = operator_writes_since(offset, &n)
        .into_iter()
        .partition(|w| w.contains("/leases/"));
    assert!(writes.is_empty(), "writes in steady state: {writes:#?}");
    eprintln!(
        "MEASURE steady state over 61 s: 0 writes besides {} Lease renewals",
        leases.len()
    );
    assert!(
        !leases.is_empty(),
        "the audit filter must see the operator's Lease renewals"
    );
    // The check can fail: a change does produce writes that this filter sees.
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "secret",
        "pw",
        "-p",
        r#"{"stringData":{"password":"changed"}}"#,
    ]);
    wait_until("the operator's write after a change", 30, || {
        operator_writes_since(offset, &n)
            .iter()
            .any(|w| w.contains("/secrets/"))
            .then_some(())
    });
    eprintln!(
        "MEASURE operator resident memory with {COUNT} backends: {} KiB",
        second.rss_kib()
    );
}

#[test]
fn two_replicas_elect_one_leader_and_hand_over_on_sigterm() {
    install_crds();
    let ns = TestNamespace::blocking("leader");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let (aa, ab) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let mut a = Operator::start_with(tmp.path(), &n, "a.log", &["--metrics-addr", &aa]);
    wait_until("a leads", 30, || {
        let holder = get(
            &n,
            &[
                "get",
                "lease",
                "celery-backend-operator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        (!holder.is_empty()).then_some(holder)
    });
    let mut b = Operator::start_with(tmp.path(), &n, "b.log", &["--metrics-addr", &ab]);
    wait_until("b serves", 30, || {
        std::net::TcpStream::connect(&ab).ok().map(|_| ())
    });
    // Both are live and ready; exactly one leads.
    for addr in [&aa, &ab] {
        assert_eq!(http_get(addr, "/healthz").0, 200);
        wait_until("readyz", 10, || {
            (http_get(addr, "/readyz").0 == 200).then_some(())
        });
    }
    let leader_of = |addr: &str| {
        http_get(addr, "/metrics")
            .1
            .lines()
            .any(|l| l == "celery_backend_operator_leader 1")
    };
    assert!(
        leader_of(&aa) && !leader_of(&ab),
        "a leads, b stands by:\n{}\n{}\n{}",
        http_get(&aa, "/metrics").1,
        a.log(),
        b.log()
    );

    // Only the leader reconciles: the backend becomes Ready and the leader counts it.
    support::operator::apply_redis_example(&n, 30);
    wait_until("leader metrics", 10, || {
        let m = http_get(&aa, "/metrics").1;
        (m.contains(r#"celery_backend_operator_backends{condition="Ready",status="True"} 1"#)
            && m.contains(r#"celery_backend_operator_reconciles_total{result="ok"}"#))
        .then_some(())
    });
    assert!(
        !b.log().contains("reconciled"),
        "the standby must not reconcile"
    );

    // SIGTERM: a releases the Lease, b takes over well before the 15 s expiry would allow.
    let t0 = Instant::now();
    let status = a.terminate();
    assert!(status.success(), "graceful exit, got {status}");
    wait_until("b leads", 20, || leader_of(&ab).then_some(()));
    eprintln!(
        "MEASURE leader hand-over after SIGTERM: {} ms",
        t0.elapsed().as_millis()
    );
    assert!(a.log().contains("released the leader lease"));
    // b now reconciles: a change is picked up.
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "secret",
        "redis-auth",
        "-p",
        r#"{"stringData":{"password":"handed-over"}}"#,
    ]);
    wait_until("b reconciles", 20, || {
        support::operator::uri_of(&n, "orders-redis-celery-result-backend")
            .filter(|u| u.contains("handed-over"))
    });
    b.terminate();
}
