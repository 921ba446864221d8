//! The operator runs with exactly the chart's RBAC: the chart's ServiceAccount, (Cluster)Roles and
//! bindings are applied, the operator authenticates with a token of that ServiceAccount, and every
//! path it has (URI Secret, status, Events, injection, webhook certificates and configuration,
//! finalizer, cleanup policy) must work without a single `forbidden`. Both RBAC layouts: cluster-wide
//! (default) and `watchNamespace` (Roles in the watched and the operator's own namespace).

mod support;

use std::process::Command;

use serde_json::Value;
use support::cluster::{cluster, helm, install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{condition, get, wait_until, Operator};
use support::stores::free_port;

fn helm_template(release_ns: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "cbo",
        "charts/celery-backend-operator",
        "--namespace",
        release_ns,
    ];
    args.extend_from_slice(extra);
    helm(&args)
        .split("\n---")
        .filter_map(|d| serde_norway::from_str::<Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn apply_json(dir: &std::path::Path, name: &str, v: &Value) {
    let f = dir.join(name);
    std::fs::write(&f, v.to_string()).unwrap();
    kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
}

/// Deletes this test's cluster-scoped objects even when the test fails.
struct ClusterScoped(Vec<String>);
impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = kubectl(&["delete", c, "--ignore-not-found", "--wait=false"]);
        }
    }
}

fn run_under_chart_rbac(watch_namespace: bool) {
    install_crds();
    let sys = TestNamespace::blocking("rbac-sys");
    let w = TestNamespace::blocking("rbac");
    let (sys_ns, n) = (sys.name.clone(), w.name.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut extra = vec![];
    let watch_flag = format!("watchNamespace={n}");
    if watch_namespace {
        extra.extend(["--set", watch_flag.as_str()]);
    }
    // The chart's RBAC, with this test's names for the cluster-scoped objects.
    let unique = format!("celery-backend-operator-{n}");
    let mut cluster_scoped = ClusterScoped(vec![]);
    for (i, mut doc) in helm_template(&sys_ns, &extra).into_iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "ClusterRole" | "ClusterRoleBinding" => {
                doc["metadata"]["name"] = unique.clone().into();
                if kind == "ClusterRoleBinding" {
                    doc["roleRef"]["name"] = unique.clone().into();
                }
                cluster_scoped
                    .0
                    .push(format!("{}/{unique}", kind.to_lowercase()));
            }
            "ServiceAccount" | "Role" | "RoleBinding" => {}
            _ => continue,
        }
        apply_json(tmp.path(), &format!("rbac-{i}.json"), &doc);
    }
    if watch_namespace {
        assert!(
            get(
                &n,
                &["get", "role", "celery-backend-operator", "-o", "name"]
            )
            .contains("role"),
            "watchNamespace renders a Role in the watched namespace"
        );
    }
    // A kubeconfig that authenticates as the chart's ServiceAccount.
    let token = kubectl_ok(&[
        "create",
        "token",
        "celery-backend-operator",
        "-n",
        &sys_ns,
        "--duration=1h",
    ]);
    let raw = kubectl_ok(&["config", "view", "--raw", "--minify", "-o", "json"]);
    let mut kc: Value = serde_json::from_str(&raw).unwrap();
    kc["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    let kc_path = tmp.path().join("sa.kubeconfig");
    std::fs::write(&kc_path, kc.to_string()).unwrap();
    let whoami = Command::new(cluster().1.join("kubectl"))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .env("KUBECONFIG", &kc_path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{sys_ns}:celery-backend-operator")
    );

    // A checksum-key Secret left without a usable key (edited by hand): the operator repairs it
    // with the verbs the chart grants (a patch; no update).
    kubectl_ok(&[
        "-n",
        &sys_ns,
        "create",
        "secret",
        "generic",
        "celery-backend-operator-checksum-key",
        "--from-literal=checksum-key=short",
    ]);
    // The operator, as the chart runs it, but out of cluster.
    let port = free_port();
    let (addr, url) = (
        format!("127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let config_name = unique.clone();
    cluster_scoped
        .0
        .push(format!("mutatingwebhookconfiguration/{config_name}"));
    let op = Operator::start_env(
        tmp.path(),
        &n,
        "operator.log",
        &[
            "--lease-namespace",
            &sys_ns,
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-config-name",
            &config_name,
        ],
        &[("KUBECONFIG", kc_path.to_str().unwrap())],
    );
    // URI Secret, status, Events.
    support::operator::apply_redis_example(&n, 60);
    let key = kubectl_ok(&[
        "-n",
        &sys_ns,
        "get",
        "secret",
        "celery-backend-operator-checksum-key",
        "-o",
        "jsonpath={.data.checksum-key}",
    ]);
    assert_eq!(
        key.trim().len(),
        44,
        "a 32-byte key (base64) replaced the unusable one: {key}"
    );
    // Workload injection, and the finalizer it brings.
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\n  namespace: {n}\n  labels: {{celery.dev/result-backend: orders-redis}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: worker}}}}\n  template:\n    metadata: {{labels: {{app: worker}}}}\n    spec:\n      containers: [{{name: worker, image: registry.invalid/celery-worker:1}}]\n"
    );
    let f = tmp.path().join("worker.yaml");
    std::fs::write(&f, deployment).unwrap();
    kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_until("Injected=True", 30, || {
        condition(&n, "orders-redis", "Injected")
            .starts_with("True|")
            .then_some(())
    });
    // Webhook: certificate Secret in the operator's namespace, configuration, a Pod injected.
    wait_until("default ServiceAccount", 30, || {
        kubectl(&["-n", &n, "get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    });
    let mut tries = 0;
    wait_until("a Pod injected by the webhook", 30, || {
        tries += 1;
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare-{tries}\n  namespace: {n}\n  labels: {{celery.dev/result-backend: orders-redis}}\nspec:\n  containers: [{{name: w, image: registry.invalid/w:1}}]\n"
        );
        let f = tmp.path().join("pod.yaml");
        std::fs::write(&f, pod).unwrap();
        kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
        let out = get(&n, &["get", "pod", &format!("bare-{tries}"), "-o", "json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        v["metadata"]["annotations"]["injected.celery.dev/orders-redis"]
            .is_string()
            .then_some(())
    });
    // A cluster-scoped cleanup policy runs and reports.
    let policy = format!("rbac-{n}");
    cluster_scoped
        .0
        .push(format!("celeryresultcleanuppolicy/{policy}"));
    let pf = tmp.path().join("policy.yaml");
    std::fs::write(
        &pf,
        format!("apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {policy}}}\nspec:\n  schedule: '* * * * * *'\n  retention: 1h\n  dryRun: true\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}\n"),
    )
    .unwrap();
    kubectl_ok(&["apply", "-f", pf.to_str().unwrap()]);
    wait_until("the policy ran", 30, || {
        let s = kubectl_ok(&[
            "get",
            "celeryresultcleanuppolicy",
            &policy,
            "-o",
            "jsonpath={.status.lastRunTime}",
        ]);
        (!s.is_empty()).then_some(())
    });
    // Deleting the backend releases the workload (finalizer) and completes.
    kubectl_ok(&["-n", &n, "delete", "crb", "orders-redis", "--wait=false"]);
    wait_until("backend deleted", 30, || {
        (!kubectl(&["-n", &n, "get", "crb", "orders-redis"])
            .status
            .success())
        .then_some(())
    });
    let log = op.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the chart's RBAC is missing a permission:\n{}",
        log.lines()
            .filter(|l| l.contains("orbidden"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_operator_runs_with_the_charts_cluster_rbac() {
    run_under_chart_rbac(false);
}

#[test]
fn the_operator_runs_with_the_charts_namespaced_rbac() {
    run_under_chart_rbac(true);
}
