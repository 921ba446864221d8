//! Managed stores that really run on the node: the in-cluster operator (the chart, with the store
//! images built here through `storeImages`) provisions Redis and PostgreSQL from the examples,
//! unchanged; their Pods run as the operator's non-root user on bound claims, pass their probes and
//! are probed by the operator through the Service's DNS name; Celery workers in Pods store results
//! there; credentials survive restarts; drift is put back; Retain keeps data and password.

mod support;

use std::time::Duration;

use support::cluster::{install_crds, kubectl_ok, root, TestNamespace};
use support::node::{
    all_states, apply_broker, assert_results, client_job, image, images, install_operator, json,
    pod_names, rollout, wait_no_terminating,
};
use support::operator::{condition, get, secret_key, wait_until};

/// The broker URL of one worker Deployment: its own database of the in-cluster broker.
fn broker(worker: &str) -> String {
    let db = if worker == "worker-redis" { 1 } else { 2 };
    format!("redis://broker:6379/{db}")
}

fn ids_of(out: &serde_json::Value) -> String {
    out["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn rand_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xffffff)
}

fn all_true(ns: &str, backend: &str) -> Option<()> {
    ["Provisioned", "Ready", "Healthy"]
        .iter()
        .all(|c| condition(ns, backend, c).starts_with("True"))
        .then_some(())
}

fn wait_ready(ns: &str, backend: &str, secs: u64) {
    wait_until(
        &format!("{backend}: Provisioned, Ready and Healthy"),
        secs,
        || all_true(ns, backend),
    );
}

/// The StatefulSet, its Pod and claim, checked as a platform engineer would.
fn check_store_pod(ns: &str, backend: &str) -> String {
    let sts = json(
        ns,
        &[
            "statefulsets",
            "-l",
            &format!("celery.dev/backend={backend}"),
        ],
    );
    let sts = &sts["items"][0];
    let name = sts["metadata"]["name"]
        .as_str()
        .expect("a StatefulSet")
        .to_string();
    let pod = format!("{name}-0");
    let uid = sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser set by the operator");
    assert_ne!(uid, 0);
    let inside = kubectl_ok(&["-n", ns, "exec", &pod, "--", "id", "-u"]);
    assert_eq!(
        inside.trim(),
        uid.to_string(),
        "{pod} runs as the operator's user"
    );
    let p = json(ns, &["pod", &pod]);
    let ready = p["status"]["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .unwrap_or(false);
    assert!(ready, "{pod} passed its readiness probe");
    let claim = p["spec"]["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        })
        .expect("a claim")
        .to_string();
    assert_eq!(
        get(
            ns,
            &["get", "pvc", &claim, "-o", "jsonpath={.status.phase}"]
        ),
        "Bound"
    );
    claim
}

#[test]
fn managed_redis_and_postgresql_run_and_serve_celery_workers() {
    let images = images();
    let worker_image = image(&images, "CBO_WORKER_IMAGE");
    let redis_image = image(&images, "CBO_STORE_IMAGE_REDIS");
    let pg_image = image(&images, "CBO_STORE_IMAGE_POSTGRESQL");
    install_crds();
    let system = TestNamespace::blocking_on_node("cbo-managed");
    let sys = system.name.clone();
    let apps = TestNamespace::blocking_on_node("stores");
    let n = apps.name.clone();
    let release = install_operator(
        &sys,
        &images,
        &[
            &format!("storeImages.redis={redis_image}"),
            &format!("storeImages.postgresql={pg_image}"),
        ],
    );

    // A client Job on each store's worker (its own broker database).
    let job = |name: &str, backend: &str, worker: &str, args: &[&str]| {
        client_job(&n, name, &worker_image, backend, &broker(worker), args)
    };
    let redis_job = |name: &str, args: &[&str]| job(name, "managed-redis", "worker-redis", args);
    let pg_job = |name: &str, args: &[&str]| job(name, "managed-postgresql", "worker-pg", args);

    // 1. The examples, unchanged.
    for ex in ["managed-redis", "managed-postgresql"] {
        kubectl_ok(&[
            "apply",
            "-n",
            &n,
            "-f",
            &format!("{}/examples/{ex}.yaml", root()),
        ]);
    }
    wait_ready(&n, "managed-redis", 240);
    wait_ready(&n, "managed-postgresql", 300);
    let redis_claim = check_store_pod(&n, "managed-redis");
    check_store_pod(&n, "managed-postgresql");

    // 2. Workers on each store; a client Job per store.
    apply_broker(&n, &redis_image);
    // Each worker has its own broker database, so a task is executed by the worker of its store.
    for (w, backend) in [
        ("worker-redis", "managed-redis"),
        ("worker-pg", "managed-postgresql"),
    ] {
        support::node::apply(
            &n,
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {w}, labels: {{celery.dev/result-backend: {backend}}}}}\nspec:\n  selector: {{matchLabels: {{app: {w}}}}}\n  template:\n    metadata: {{labels: {{app: {w}}}}}\n    spec:\n      containers:\n      - name: worker\n        image: {worker_image}\n        imagePullPolicy: Never\n        env:\n        - {{name: CELERY_BROKER_URL, value: '{}'}}\n", broker(w)
            ),
        );
    }
    for w in ["worker-redis", "worker-pg"] {
        wait_until(&format!("{w} carries the URI reference"), 60, || {
            json(&n, &["deployment", w])["spec"]["template"]["metadata"]["annotations"]
                .to_string()
                .contains("checksum.celery.dev/")
                .then_some(())
        });
        rollout(&n, &format!("deployment/{w}"), 180);
        wait_no_terminating(&n, &format!("app={w}"), 90);
    }
    let first = redis_job("redis-1", &["send", "4"]);
    assert_results(&first, 4);
    let out = pg_job("pg-1", &["send", "4"]);
    assert_results(&out, 4);

    // 3. Credentials survive a restart of the store Pod and of the operator.
    let pw = secret_key(&n, "managed-redis-credentials", "password");
    let sts = pod_names(&n, "app.kubernetes.io/instance=managed-redis");
    kubectl_ok(&["-n", &n, "delete", "pod", &sts[0], "--wait=true"]);
    release.restart();
    wait_ready(&n, "managed-redis", 180);
    assert_eq!(secret_key(&n, "managed-redis-credentials", "password"), pw);
    let ids = ids_of(&first);
    let read = redis_job("redis-read-1", &["read", &ids]);
    assert!(
        all_states(&read, "SUCCESS"),
        "results survive the store Pod's restart (appendonly): {read}"
    );

    // 4. Drift: the StatefulSet scaled to 0 is put back, and the backend returns to Ready.
    let pg_sts = json(
        &n,
        &[
            "statefulsets",
            "-l",
            "celery.dev/backend=managed-postgresql",
        ],
    )["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    kubectl_ok(&["-n", &n, "scale", "statefulset", &pg_sts, "--replicas=0"]);
    wait_until("the operator puts the replicas back", 60, || {
        (json(&n, &["statefulset", &pg_sts])["spec"]["replicas"] == 1).then_some(())
    });
    wait_ready(&n, "managed-postgresql", 240);
    let out = pg_job("pg-2", &["send", "2"]);
    assert_results(&out, 2);

    // 5. A cleanup policy removes expired results from the managed PostgreSQL while a client
    //    keeps writing fresh ones: every expired result gone, every fresh one readable.
    let old = pg_job("pg-old", &["send", "4"]);
    assert_results(&old, 4);
    let old_ids = ids_of(&old);
    std::thread::sleep(Duration::from_secs(45));
    support::node::apply(
        &n,
        &format!(
            "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {n}}}\nspec:\n  schedule: '*/5 * * * * *'\n  retention: 40s\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}\n"
        ),
    );
    let fresh = pg_job("pg-fresh", &["send", "6"]);
    assert_results(&fresh, 6);
    wait_until("the policy deleted the expired results", 90, || {
        let read = pg_job(&format!("pg-read-{}", rand_suffix()), &["read", &old_ids]);
        all_states(&read, "PENDING").then_some(())
    });
    let read = pg_job("pg-read-fresh", &["read", &ids_of(&fresh)]);
    assert!(
        all_states(&read, "SUCCESS"),
        "fresh results stay readable: {read}"
    );
    kubectl_ok(&["delete", "celeryresultcleanuppolicy", &n]);

    // 6. Deleting a backend first rolls its workers to a template without the variable, then its
    //    Secret goes; with deletionPolicy Delete the claim goes too.
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "crb",
        "managed-postgresql",
        "--type=merge",
        "-p",
        r#"{"spec": {"database": {"managed": {"deletionPolicy": "Delete"}}}}"#,
    ]);
    wait_ready(&n, "managed-postgresql", 120);
    let pg_claim = check_store_pod(&n, "managed-postgresql");
    kubectl_ok(&[
        "-n",
        &n,
        "delete",
        "crb",
        "managed-postgresql",
        "--timeout=120s",
    ]);
    assert!(
        !json(&n, &["deployment", "worker-pg"])["spec"]["template"]["metadata"]["annotations"]
            .to_string()
            .contains("checksum.celery.dev/"),
        "the worker template was released before the backend went"
    );
    wait_until("the URI Secret and the claim are gone", 120, || {
        (get(
            &n,
            &[
                "get",
                "secret",
                "managed-postgresql-celery-result-backend",
                "--ignore-not-found",
                "-o",
                "name",
            ],
        )
        .is_empty()
            && get(
                &n,
                &["get", "pvc", &pg_claim, "--ignore-not-found", "-o", "name"],
            )
            .is_empty())
        .then_some(())
    });

    // 7. Retain: deleting the backend keeps the claim and the credentials; re-created, it finds
    //    its data and password again.
    kubectl_ok(&["-n", &n, "delete", "crb", "managed-redis", "--timeout=120s"]);
    wait_until("the Redis StatefulSet is gone", 120, || {
        pod_names(&n, "app.kubernetes.io/instance=managed-redis")
            .is_empty()
            .then_some(())
    });
    assert_eq!(
        get(
            &n,
            &["get", "pvc", &redis_claim, "-o", "jsonpath={.status.phase}"]
        ),
        "Bound"
    );
    kubectl_ok(&[
        "apply",
        "-n",
        &n,
        "-f",
        &format!("{}/examples/managed-redis.yaml", root()),
    ]);
    wait_ready(&n, "managed-redis", 240);
    assert_eq!(secret_key(&n, "managed-redis-credentials", "password"), pw);
    let read = redis_job("redis-read-2", &["read", &ids]);
    assert!(
        all_states(&read, "SUCCESS"),
        "Retain keeps the data: {read}"
    );

    std::thread::sleep(Duration::from_millis(10));
    release.uninstall();
}
