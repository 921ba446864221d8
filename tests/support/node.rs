//! Test support for the node: images built by hack/images.sh, Helm releases of the chart, Jobs
//! and Deployments that run on the node, and the Celery client those Jobs run.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{helm, kubectl, kubectl_ok, root};
use super::operator::get;

/// The client a Job runs in the worker image: `send N` sends N `cbo_tasks.add(i, i)` tasks by name
/// and reads every result back through Celery; `read ID,...` reads stored results. Prints one JSON
/// line. For the database backend it creates Celery's tables first, so that the worker's first
/// write and the client's first poll do not both create them.
pub const CLIENT: &str = r#"
import json, os, sys
from celery import Celery
app = Celery("client", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
if hasattr(app.backend, "ResultSession"):
    app.backend.ResultSession().close()
if sys.argv[1] == "send":
    n = int(sys.argv[2])
    rs = [app.send_task("cbo_tasks.add", args=[i, i]) for i in range(n)]
    vals = [r.get(timeout=150) for r in rs]
    print(json.dumps({"sent": n, "ok": sum(1 for i, v in enumerate(vals) if v == 2 * i), "ids": [r.id for r in rs]}))
else:
    rs = [app.AsyncResult(i) for i in sys.argv[2].split(",")]
    print(json.dumps({"states": [r.state for r in rs], "results": [r.result for r in rs]}))
"#;

/// `hack/images.sh env` as a map; fails the test with the script's message when the images are
/// not built (they are built by hack/test.sh before the tests run).
pub fn images() -> BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(format!("{}/hack/images.sh", root()))
        .arg("env")
        .output()
        .expect("run hack/images.sh env");
    assert!(
        out.status.success(),
        "hack/images.sh env failed (run hack/images.sh build first):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches('\'').trim_matches('"').to_string(),
            )
        })
        .collect()
}

pub fn image(images: &BTreeMap<String, String>, key: &str) -> String {
    images
        .get(key)
        .unwrap_or_else(|| panic!("hack/images.sh env does not export {key}: {images:?}"))
        .clone()
}

pub fn apply(ns: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(&["apply", "-n", ns, "-f", f.to_str().unwrap()]);
}

pub fn json(ns: &str, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&get(ns, &args)).unwrap_or(Value::Null)
}

pub fn rollout(ns: &str, what: &str, secs: u64) {
    let out = kubectl(&[
        "-n",
        ns,
        "rollout",
        "status",
        what,
        &format!("--timeout={secs}s"),
    ]);
    if !out.status.success() {
        let dump = kubectl(&["-n", ns, "get", "pods,events", "-o", "wide"]);
        panic!(
            "{what} did not roll out in {secs}s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&dump.stdout)
        );
    }
}

pub fn pod_names(ns: &str, selector: &str) -> Vec<String> {
    let mut v: Vec<String> = json(ns, &["pods", "-l", selector])["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait until no Pod matching `selector` is terminating: a Celery worker in warm shutdown can still
/// take a task from the broker, which then waits out the broker's visibility timeout.
pub fn wait_no_terminating(ns: &str, selector: &str, secs: u64) {
    super::operator::wait_until(&format!("terminating Pods ({selector}) gone"), secs, || {
        json(ns, &["pods", "-l", selector])["items"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .all(|p| p["metadata"]["deletionTimestamp"].is_null())
            })
            .then_some(())
    });
}

pub fn lease_holder(ns: &str) -> Option<String> {
    json(ns, &["leases"])["items"]
        .as_array()?
        .iter()
        .filter_map(|l| l["spec"]["holderIdentity"].as_str())
        .find(|h| h.starts_with("celery-backend-operator-"))
        .map(String::from)
}

/// Run [`CLIENT`] as a Job in `ns` in the worker image, labelled for `backend` so the webhook
/// injects its URI, sending to `broker`, with `args` (`["send", "5"]` or `["read", "id1,id2"]`); waits for it and
/// returns its last JSON line. A failed Job fails the test with its logs and the namespace's Pods.
pub fn client_job(
    ns: &str,
    name: &str,
    worker_image: &str,
    backend: &str,
    broker: &str,
    args: &[&str],
) -> Value {
    client_job_with(ns, name, worker_image, backend, broker, args, Value::Null)
}

/// [`client_job`] with a pod `securityContext` (`Value::Null`: none), e.g. an `fsGroup` that lets
/// the worker image's non-root user read a key mounted 0640.
pub fn client_job_with(
    ns: &str,
    name: &str,
    worker_image: &str,
    backend: &str,
    broker: &str,
    args: &[&str],
    pod_security: Value,
) -> Value {
    let mut command = vec!["python3", "-c", "$(CLIENT_SCRIPT)"];
    command.extend_from_slice(args);
    let mut job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0, "activeDeadlineSeconds": 240,
            "template": {
                "metadata": {"labels": {"celery.dev/result-backend": backend}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "client", "image": worker_image, "imagePullPolicy": "Never",
                        "command": command,
                        "env": [
                            {"name": "CELERY_BROKER_URL", "value": broker},
                            {"name": "CLIENT_SCRIPT", "value": CLIENT},
                        ],
                    }],
                },
            },
        },
    });
    if !pod_security.is_null() {
        job["spec"]["template"]["spec"]["securityContext"] = pod_security;
    }
    apply(ns, &job.to_string());
    let t0 = Instant::now();
    loop {
        let j = json(ns, &["job", name]);
        let conds = j["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done = |t: &str| {
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let logs = || {
            String::from_utf8_lossy(&kubectl(&["-n", ns, "logs", &format!("job/{name}")]).stdout)
                .into_owned()
        };
        if done("Complete") {
            let l = logs();
            return super::python::last_json_line(l.as_bytes());
        }
        if done("Failed") || t0.elapsed() > Duration::from_secs(260) {
            let pods = kubectl(&["-n", ns, "get", "pods,events", "-o", "wide"]);
            panic!(
                "client job {name} failed:\n{}\n{}\n{}",
                logs(),
                String::from_utf8_lossy(&pods.stdout),
                pod_logs(ns)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The last lines of every container's log in `ns`, for failure messages.
pub fn pod_logs(ns: &str) -> String {
    let mut out = String::new();
    for pod in pod_names(ns, "job-name notin (none)") {
        let l = kubectl(&["-n", ns, "logs", &pod, "--all-containers", "--tail=25"]);
        out.push_str(&format!(
            "---- logs of {pod}\n{}{}",
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&l.stderr)
        ));
    }
    out
}

pub fn assert_results(out: &Value, n: u64) {
    assert_eq!(out["sent"], n, "{out}");
    assert_eq!(
        out["ok"], n,
        "every task's result read back through Celery: {out}"
    );
}

/// Install the chart into `ns` with the operator image of `images` (never pulled) and `sets`;
/// waits for the rollout.
pub fn install_operator(ns: &str, images: &BTreeMap<String, String>, sets: &[&str]) -> Release {
    let operator_image = image(images, "CBO_OPERATOR_IMAGE");
    let (repo, tag) = operator_image
        .rsplit_once(':')
        .expect("CBO_OPERATOR_IMAGE is repository:tag");
    let mut all = vec![
        format!("image.repository={repo}"),
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".to_string(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let release = Release::install(ns, &refs);
    rollout(ns, &format!("deployment/{}", release.deployment()), 180);
    release
}

/// A Redis broker Deployment and Service named `broker` in `ns`, from the Redis image.
pub fn apply_broker(ns: &str, redis_image: &str) {
    apply(
        ns,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: broker}}\nspec:\n  selector: {{matchLabels: {{app: broker}}}}\n  template:\n    metadata: {{labels: {{app: broker}}}}\n    spec:\n      containers:\n      - name: redis\n        image: {redis_image}\n        imagePullPolicy: Never\n        command: [redis-server, --port, '6379', --protected-mode, 'no', --save, '', --appendonly, 'no']\n        ports: [{{containerPort: 6379}}]\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: broker}}\nspec:\n  selector: {{app: broker}}\n  ports: [{{port: 6379}}]\n"
        ),
    );
    rollout(ns, "deployment/broker", 120);
}

/// How many ReplicaSets match `selector` in `ns`.
pub fn replicasets(ns: &str, selector: &str) -> usize {
    json(ns, &["replicasets", "-l", selector])["items"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
}

/// Whether every state of a `read` client's output is `state`.
pub fn all_states(read: &Value, state: &str) -> bool {
    read["states"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s == state))
}

/// A Helm release of the chart; uninstalled (best effort) when dropped, with the webhook
/// configuration the operator maintained.
pub struct Release {
    pub name: String,
    ns: String,
    uninstalled: std::cell::Cell<bool>,
}

impl Release {
    pub fn install(ns: &str, sets: &[&str]) -> Self {
        let name = format!("cbo-{}", &ns[ns.len() - 8..]);
        let mut args = vec![
            "install",
            name.as_str(),
            "charts/celery-backend-operator",
            "-n",
            ns,
        ];
        for s in sets {
            args.extend_from_slice(&["--set", s]);
        }
        helm(&args);
        Release {
            name,
            ns: ns.to_string(),
            uninstalled: std::cell::Cell::new(false),
        }
    }

    pub fn deployment(&self) -> String {
        let out = kubectl_ok(&[
            "-n",
            &self.ns,
            "get",
            "deployments",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        assert!(!out.is_empty(), "the chart created a Deployment");
        out
    }

    /// `kubectl rollout restart` of the operator, waiting for the new replicas.
    pub fn restart(&self) {
        let deployment = format!("deployment/{}", self.deployment());
        kubectl_ok(&["-n", &self.ns, "rollout", "restart", &deployment]);
        rollout(&self.ns, &deployment, 180);
    }

    pub fn upgrade(&self, sets: &[&str]) {
        let mut args = vec![
            "upgrade",
            self.name.as_str(),
            "charts/celery-backend-operator",
            "-n",
            &self.ns,
            "--reuse-values",
        ];
        for s in sets {
            args.extend_from_slice(&["--set", s]);
        }
        helm(&args);
    }

    pub fn uninstall(&self) {
        helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.ns,
            "--wait",
            "--timeout",
            "120s",
        ]);
        self.uninstalled.set(true);
        // Leaving cleans up: the operator's record and webhook configuration, Lease and
        // certificate Secret belong to the release's ClusterRole, so the garbage collector
        // removes them with it.
        let installation = format!("{}.{}", self.ns, self.name);
        super::operator::wait_until("uninstall to remove the webhook configuration", 60, || {
            let left = kubectl_ok(&[
                "get",
                "mutatingwebhookconfigurations",
                "-o",
                "jsonpath={.items[*].metadata.annotations.celery\\.dev/installation}",
            ]);
            (!left.split_whitespace().any(|i| i == installation)).then_some(())
        });
        for kind in ["lease", "secret"] {
            super::operator::wait_until(
                &format!("uninstall to remove the operator's {kind}"),
                60,
                || {
                    let left = kubectl_ok(&[
                        "-n",
                        &self.ns,
                        "get",
                        kind,
                        "-o",
                        "jsonpath={.items[*].metadata.annotations.celery\\.dev/installation}",
                    ]);
                    (!left.split_whitespace().any(|i| i == installation)).then_some(())
                },
            );
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled.get() {
            let _ = Command::new(super::cluster::cluster().1.join("helm"))
                .args(["uninstall", &self.name, "-n", &self.ns])
                .env("KUBECONFIG", &super::cluster::cluster().0)
                .output();
            let _ = kubectl(&[
                "delete",
                "mutatingwebhookconfiguration",
                "celery-backend-operator",
                "--ignore-not-found",
            ]);
        }
    }
}
