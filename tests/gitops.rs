//! Injection beside GitOps owners, one test per scenario of the field-ownership design (README
//! "Who owns which field"): two backends on one workload, a deleted URI Secret, a backend deleted
//! right after it was created, `overrideExisting` with the owner re-applying (client-side,
//! server-side and Helm), container removal and rename by a server-side-apply owner, the
//! namespace opt-out, `resultExpires` changes, and a fight with another writer. Each counts
//! ReplicaSets and template generations over a window, so a loop or a needless rollout fails.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cluster::{install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{condition, get, wait_until, Operator, WebhookConfigGuard};

/// A local operator for `ns` with its own Pod webhook (the webhook injects the Pods).
struct Env {
    ns: TestNamespace,
    _op: Operator,
    _guard: WebhookConfigGuard,
    _tmp: tempfile::TempDir,
}

fn env(prefix: &str) -> Env {
    install_crds();
    let ns = TestNamespace::blocking(prefix);
    let tmp = tempfile::tempdir().unwrap();
    let (flags, guard) = support::operator::local_webhook(&ns.name);
    let config_name = guard.0.clone();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let op = Operator::start_with(tmp.path(), &ns.name, "op.log", &flags);
    wait_until("the webhook configuration", 30, || {
        kubectl(&["get", "mutatingwebhookconfiguration", &config_name])
            .status
            .success()
            .then_some(())
    });
    Env {
        ns,
        _op: op,
        _guard: guard,
        _tmp: tmp,
    }
}

fn apply(ns: &str, yaml: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, yaml).unwrap();
    let mut args = vec!["apply", "-n", ns, "-f", f.to_str().unwrap()];
    args.extend_from_slice(extra);
    kubectl(&args)
}

fn apply_ok(ns: &str, yaml: &str, extra: &[&str]) {
    let o = apply(ns, yaml, extra);
    assert!(
        o.status.success(),
        "kubectl apply {extra:?} refused:\n{}\n{yaml}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(ns: &str, what: &[&str]) -> Option<Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&get(ns, &args)).ok()
}

/// The Redis example's Secret and a backend named `name` on it (`extra` goes under `spec`).
fn backend(ns: &str, name: &str, extra: &str) {
    kubectl_ok(&["apply", "-n", ns, "-f", "examples/redis-secret.yaml"]);
    apply_ok(
        ns,
        &format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: {name}}}\nspec:\n  redis: {{external: {{host: 127.0.0.1, port: 6379, db: 2, auth: {{passwordSecretRef: {{name: redis-auth, key: password}}}}}}}}\n{extra}"),
        &[],
    );
    wait_until(&format!("{name} Ready"), 30, || {
        condition(ns, name, "Ready")
            .starts_with("True|")
            .then_some(())
    });
}

/// A worker Deployment opted in to `backend` by label, with the owner's `env` (YAML flow list).
fn worker(name: &str, backend: &str, env: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{celery.dev/result-backend: {backend}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: worker, image: registry.invalid/celery-worker:1, env: {env}}}\n")
}

/// `(generation, ReplicaSets)` of a Deployment.
fn footprint(ns: &str, name: &str) -> (i64, usize) {
    let d = json(ns, &["deployment", name]).unwrap_or_default();
    let rs = json(ns, &["replicasets", "-l", &format!("app={name}")])
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or(0);
    (d["metadata"]["generation"].as_i64().unwrap_or(0), rs)
}

/// Assert the footprint stays `want` for `secs` (sampled every second).
fn steady(ns: &str, name: &str, want: (i64, usize), secs: u64, why: &str) {
    for _ in 0..secs {
        assert_eq!(footprint(ns, name), want, "{why}: {ns}/{name}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn template_annotation(ns: &str, name: &str, key: &str) -> Option<String> {
    json(ns, &["deployment", name])?["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(String::from)
}

/// Wait for the backend's checksum on the template, then for the footprint to settle.
fn injected(ns: &str, name: &str, backend: &str) -> (i64, usize) {
    wait_until(&format!("{name} marked by {backend}"), 30, || {
        template_annotation(ns, name, &format!("checksum.celery.dev/{backend}"))
    });
    std::thread::sleep(Duration::from_secs(3));
    footprint(ns, name)
}

/// The first container's env of a Pod of a Deployment that the webhook injected for `backend`
/// (stamped `injected.celery.dev/<backend>`) and whose first container is named `container`.
fn injected_pod_env(ns: &str, app: &str, backend: &str, container: &str) -> Option<Vec<Value>> {
    let pods = json(ns, &["pods", "-l", &format!("app={app}")])?;
    pods["items"].as_array()?.iter().find_map(|p| {
        let stamped =
            p["metadata"]["annotations"][format!("injected.celery.dev/{backend}")].is_string();
        let c = &p["spec"]["containers"][0];
        (stamped && c["name"] == container && p["metadata"]["deletionTimestamp"].is_null())
            .then(|| c["env"].as_array().cloned().unwrap_or_default())
    })
}

fn from_secret(env: &[Value], var: &str) -> Option<String> {
    env.iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
        .map(String::from)
}

#[test]
fn two_backends_on_one_workload_have_one_winner_and_never_loop() {
    let e = env("gitops-two");
    let n = e.ns.name.clone();
    backend(&n, "first", "");
    // A second, younger backend selecting the same Deployment by label selector.
    std::thread::sleep(Duration::from_millis(1100));
    backend(
        &n,
        "second",
        "  injection: {workloadSelector: {matchLabels: {tier: celery}}}\n",
    );
    apply_ok(
        &n,
        &worker("w", "first", "[]").replace(
            "labels: {celery.dev/result-backend: first}",
            "labels: {celery.dev/result-backend: first, tier: celery}",
        ),
        &[],
    );
    let settled = injected(&n, "w", "first");
    let msg = wait_until("second reports the conflict", 30, || {
        let c = condition(&n, "second", "Injected");
        c.starts_with("False|BackendConflict|").then_some(c)
    });
    assert!(msg.contains("first (older)"), "{msg}");
    steady(&n, "w", settled, 15, "the loser writes nothing");
    assert!(template_annotation(&n, "w", "checksum.celery.dev/second").is_none());
    let events = get(
        &n,
        &["get", "events", "-o", "custom-columns=R:.reason,M:.message"],
    );
    assert!(
        events.contains("BackendConflict") && events.contains("first (older)"),
        "{events}"
    );

    // Another variable: both inject side by side, one more rollout, then nothing.
    apply_ok(
        &n,
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: second}\nspec:\n  redis: {external: {host: 127.0.0.1, port: 6379, db: 2, auth: {passwordSecretRef: {name: redis-auth, key: password}}}}\n  injection: {envVar: CELERY_RESULT_BACKEND_B, workloadSelector: {matchLabels: {tier: celery}}}\n",
        &[],
    );
    let both = injected(&n, "w", "second");
    assert!(template_annotation(&n, "w", "checksum.celery.dev/first").is_some());
    assert_eq!(both.0, settled.0 + 1, "one write for the second backend");
    steady(&n, "w", both, 15, "two backends, two variables: no loop");
    let env = wait_until("a Pod with both variables", 30, || {
        let env = injected_pod_env(&n, "w", "second", "worker")?;
        from_secret(&env, "CELERY_RESULT_BACKEND_B").map(|_| env)
    });
    assert_eq!(
        from_secret(&env, "CELERY_RESULT_BACKEND").as_deref(),
        Some("first-celery-result-backend")
    );
    assert_eq!(
        from_secret(&env, "CELERY_RESULT_BACKEND_B").as_deref(),
        Some("second-celery-result-backend")
    );
    assert!(condition(&n, "second", "Injected").starts_with("True|"));
}

#[test]
fn deleting_the_uri_secret_rolls_no_worker() {
    let e = env("gitops-secret");
    let n = e.ns.name.clone();
    backend(&n, "orders", "");
    apply_ok(&n, &worker("w", "orders", "[]"), &[]);
    let settled = injected(&n, "w", "orders");
    let sum = template_annotation(&n, "w", "checksum.celery.dev/orders");
    let uid = |n: &str| {
        get(
            n,
            &[
                "get",
                "secret",
                "orders-celery-result-backend",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
    };
    let before = uid(&n);
    kubectl_ok(&["-n", &n, "delete", "secret", "orders-celery-result-backend"]);
    wait_until("the URI Secret re-created", 30, || {
        let now = uid(&n);
        (!now.is_empty() && now != before).then_some(())
    });
    steady(&n, "w", settled, 10, "same content, same checksum");
    assert_eq!(
        template_annotation(&n, "w", "checksum.celery.dev/orders"),
        sum
    );
}

#[test]
fn a_backend_deleted_right_after_creation_strands_no_workload() {
    let e = env("gitops-flash");
    let n = e.ns.name.clone();
    kubectl_ok(&["apply", "-n", &n, "-f", "examples/redis-secret.yaml"]);
    apply_ok(&n, &worker("w", "flash", "[]"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.yaml");
    std::fs::write(&f, "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: flash}\nspec:\n  redis: {external: {host: 127.0.0.1, port: 6379, db: 2, auth: {passwordSecretRef: {name: redis-auth, key: password}}}}\n").unwrap();
    for round in 0..15 {
        kubectl_ok(&["apply", "-n", &n, "-f", f.to_str().unwrap()]);
        // A few milliseconds to a few hundred: the operator may be anywhere in its reconcile.
        std::thread::sleep(Duration::from_millis(round * 20));
        kubectl_ok(&["-n", &n, "delete", "crb", "flash", "--wait=false"]);
        wait_until("the backend gone", 30, || {
            json(&n, &["crb", "flash"]).is_none().then_some(())
        });
        let d = json(&n, &["deployment", "w"]).unwrap();
        assert!(
            d["metadata"]["annotations"]["injected.celery.dev/flash"].is_null()
                && d["spec"]["template"]["metadata"]["annotations"]["checksum.celery.dev/flash"]
                    .is_null(),
            "round {round}: the workload still names the deleted backend: {}",
            d["metadata"]
        );
    }
}

#[test]
fn owners_keep_shipping_after_override_existing_client_side_server_side_and_helm() {
    let e = env("gitops-owner");
    let n = e.ns.name.clone();
    backend(&n, "orders", "  injection: {overrideExisting: true}\n");
    let own = "[{name: CELERY_RESULT_BACKEND, value: 'redis://mine:6379/0'}]";
    // Client-side apply owner.
    apply_ok(&n, &worker("cs", "orders", own), &[]);
    // Server-side apply owner.
    apply_ok(
        &n,
        &worker("ss", "orders", own),
        &["--server-side", "--field-manager=owner"],
    );
    for w in ["cs", "ss"] {
        let settled = injected(&n, w, "orders");
        assert_eq!(settled.0, 2, "{w}: exactly one rollout for the injection");
        let env = wait_until("a Pod with the reference", 30, || {
            let env = injected_pod_env(&n, w, "orders", "worker")?;
            from_secret(&env, "CELERY_RESULT_BACKEND").map(|_| env)
        });
        assert_eq!(
            env.iter()
                .filter(|e| e["name"] == "CELERY_RESULT_BACKEND")
                .count(),
            1,
            "{env:?}"
        );
    }
    // The owners re-apply unchanged, then with a change: accepted, and the injection stays.
    apply_ok(&n, &worker("cs", "orders", own), &[]);
    apply_ok(
        &n,
        &worker("ss", "orders", own),
        &[
            "--server-side",
            "--field-manager=owner",
            "--force-conflicts",
        ],
    );
    let changed = "[{name: CELERY_RESULT_BACKEND, value: 'redis://mine:6379/0'}, {name: LOG_LEVEL, value: debug}]";
    apply_ok(&n, &worker("cs", "orders", changed), &[]);
    apply_ok(
        &n,
        &worker("ss", "orders", changed),
        &["--server-side", "--field-manager=owner"],
    );
    for w in ["cs", "ss"] {
        let now = footprint(&n, w);
        assert_eq!(now.0, 3, "{w}: the owner's change is one more rollout");
        steady(&n, w, now, 8, "no fight after the owner's change");
        assert!(template_annotation(&n, w, "checksum.celery.dev/orders").is_some());
    }

    // A Helm owner: install, then upgrade with a change.
    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: worker\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.path().join("templates/worker.yaml"),
        worker(
            "hw",
            "orders",
            "[{name: CELERY_RESULT_BACKEND, value: 'redis://mine:6379/0'}, {name: LOG_LEVEL, value: {{ .Values.level | quote }}}]",
        ),
    )
    .unwrap();
    let c = chart.path().to_str().unwrap();
    support::cluster::helm(&[
        "upgrade",
        "--install",
        "hw",
        c,
        "-n",
        &n,
        "--set",
        "level=info",
    ]);
    let settled = injected(&n, "hw", "orders");
    assert_eq!(settled.0, 2);
    support::cluster::helm(&[
        "upgrade",
        "--install",
        "hw",
        c,
        "-n",
        &n,
        "--set",
        "level=info",
    ]);
    steady(
        &n,
        "hw",
        settled,
        5,
        "an unchanged helm upgrade rolls nothing",
    );
    support::cluster::helm(&[
        "upgrade",
        "--install",
        "hw",
        c,
        "-n",
        &n,
        "--set",
        "level=debug",
    ]);
    wait_until("helm's change applied", 30, || {
        (footprint(&n, "hw").0 == 3).then_some(())
    });
    assert!(template_annotation(&n, "hw", "checksum.celery.dev/orders").is_some());
}

#[test]
fn a_server_side_apply_owner_removes_and_renames_containers() {
    let e = env("gitops-containers");
    let n = e.ns.name.clone();
    backend(&n, "orders", "");
    let two = worker("w", "orders", "[]").replace(
        "      - {name: worker,",
        "      - {name: sidecar, image: registry.invalid/sidecar:1}\n      - {name: worker,",
    );
    apply_ok(&n, &two, &["--server-side", "--field-manager=owner"]);
    injected(&n, "w", "orders");
    wait_until("both containers injected in the Pod", 30, || {
        let pods = json(&n, &["pods", "-l", "app=w"])?;
        pods["items"]
            .as_array()?
            .iter()
            .any(|p| {
                p["spec"]["containers"].as_array().is_some_and(|c| {
                    c.len() == 2
                        && c.iter().all(|c| {
                            c["env"]
                                .to_string()
                                .contains("orders-celery-result-backend")
                        })
                })
            })
            .then_some(())
    });
    // Remove the sidecar, then rename the worker container.
    apply_ok(
        &n,
        &worker("w", "orders", "[]"),
        &["--server-side", "--field-manager=owner"],
    );
    let names = || -> Vec<String> {
        json(&n, &["deployment", "w"]).unwrap()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(), ["worker"]);
    apply_ok(
        &n,
        &worker("w", "orders", "[]").replace("{name: worker,", "{name: celery,"),
        &["--server-side", "--field-manager=owner"],
    );
    assert_eq!(names(), ["celery"]);
    let now = footprint(&n, "w");
    steady(&n, "w", now, 8, "no write back after the owner's change");
    wait_until("the renamed container injected in a new Pod", 30, || {
        from_secret(
            &injected_pod_env(&n, "w", "orders", "celery")?,
            "CELERY_RESULT_BACKEND",
        )
        .map(|_| ())
    });
}

#[test]
fn a_namespace_opted_out_is_left_alone_on_every_path() {
    let e = env("gitops-optout");
    let n = e.ns.name.clone();
    kubectl_ok(&["label", "namespace", &n, "celery.dev/injection=disabled"]);
    backend(&n, "orders", "");
    apply_ok(&n, &worker("w", "orders", "[]"), &[]);
    let msg = wait_until("NamespaceOptedOut", 30, || {
        let c = condition(&n, "orders", "Injected");
        c.starts_with("False|NamespaceOptedOut|").then_some(c)
    });
    assert!(msg.contains("celery.dev/injection=disabled"), "{msg}");
    // A labelled bare Pod is not sent to the (namespace-scoped) webhook either.
    apply_ok(&n, "apiVersion: v1\nkind: Pod\nmetadata: {name: bare, labels: {celery.dev/result-backend: orders}}\nspec:\n  containers: [{name: w, image: registry.invalid/w:1}]\n", &[]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(footprint(&n, "w").0, 1, "the Deployment is not patched");
    assert!(template_annotation(&n, "w", "checksum.celery.dev/orders").is_none());
    let bare = json(&n, &["pod", "bare"]).unwrap();
    assert!(!bare["spec"]
        .to_string()
        .contains("orders-celery-result-backend"));
    assert_eq!(
        get(
            &n,
            &[
                "get",
                "crb",
                "orders",
                "-o",
                "jsonpath={.status.missedPods}"
            ]
        ),
        "",
        "Pods the user opted out are not 'missed'"
    );
    // Opting back in injects at once (the Namespace's label change is watched).
    kubectl_ok(&["label", "namespace", &n, "celery.dev/injection-"]);
    injected(&n, "w", "orders");
}

#[test]
fn result_expires_rolls_only_workers_that_read_the_config_module() {
    let e = env("gitops-expires");
    let n = e.ns.name.clone();
    backend(&n, "plain", "  resultExpires: 1h\n");
    backend(
        &n,
        "module",
        "  resultExpires: 1h\n  injection: {configModule: true, envVar: CELERY_RESULT_BACKEND_M}\n",
    );
    apply_ok(&n, &worker("reads-uri", "plain", "[]"), &[]);
    apply_ok(&n, &worker("reads-module", "module", "[]"), &[]);
    let uri_only = injected(&n, "reads-uri", "plain");
    let module = injected(&n, "reads-module", "module");
    for b in ["plain", "module"] {
        kubectl_ok(&[
            "-n",
            &n,
            "patch",
            "crb",
            b,
            "--type=merge",
            "-p",
            r#"{"spec":{"resultExpires":"10m"}}"#,
        ]);
    }
    wait_until("reads-module rolled", 30, || {
        (footprint(&n, "reads-module").0 == module.0 + 1).then_some(())
    });
    steady(&n, "reads-uri", uri_only, 8, "the URI did not change");
}

#[test]
fn a_fight_with_another_writer_is_bounded_and_reported() {
    let e = env("gitops-fight");
    let n = e.ns.name.clone();
    backend(&n, "orders", "");
    apply_ok(&n, &worker("w", "orders", "[]"), &[]);
    injected(&n, "w", "orders");
    let audit = std::env::var_os("CBO_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/celery-backend-operator")
        })
        .join("cluster/logs/audit.log");
    let offset = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    // Another controller keeps removing the checksum: 20 times in about 40 s.
    for _ in 0..20 {
        kubectl_ok(&[
            "-n",
            &n,
            "annotate",
            "deployment",
            "w",
            "injected.celery.dev/orders-",
        ]);
        std::thread::sleep(Duration::from_secs(2));
    }
    let msg = condition(&n, "orders", "Injected");
    assert!(msg.starts_with("False|InjectionThrottled|"), "{msg}");
    let text = std::fs::read(&audit).unwrap();
    let writes = String::from_utf8_lossy(&text[offset as usize..])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|ev| {
            ev["userAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("celery-backend-operator/"))
                && ev["objectRef"]["resource"] == "deployments"
                && ev["objectRef"]["namespace"] == n.as_str()
                && ev["verb"] == "patch"
        })
        .count();
    eprintln!("MEASURE operator writes to the Deployment during a 40 s fight: {writes}");
    assert!(
        (1..=cbo::controller::workloads::BUDGET_WRITES).contains(&writes),
        "at most {} writes per minute, found {writes}",
        cbo::controller::workloads::BUDGET_WRITES
    );
}
