//! The operator as users run it, on the real node: the image built from the project's Dockerfile
//! (hack/images.sh), installed by the Helm chart; two replicas and a Lease; the webhook reached
//! through its Service; /metrics through the metrics Service; Celery workers in Pods that read the
//! injected URI and store results in Redis; password rotation, leader hand-over, webhook outage,
//! upgrade and uninstall.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::{install_crds, kubectl, kubectl_ok, TestNamespace};
use support::node::{
    apply, apply_broker, assert_results, client_job, client_job_with, image, images,
    install_operator, json, lease_holder, pod_names, replicasets, rollout, wait_no_terminating,
};
use support::operator::{condition, wait_until};

/// The Redis of hack/stores.sh, as Pods reach it (the node's bridge address).
const REDIS_HOST: &str = "10.244.0.1";
const REDIS_PORT: &str = "16379";
/// The in-cluster broker the workers consume from.
const BROKER: &str = "redis://broker:6379/0";
const REDIS_ADMIN_PW: &str = "r3dis p@ss:w/rd#?%";

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            REDIS_PORT,
            "--no-auth-warning",
            "-a",
            REDIS_ADMIN_PW,
        ])
        .args(args)
        .output()
        .expect("redis-cli (hack/stores.sh installs redis-tools)");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !s.starts_with("ERR"),
        "redis-cli {args:?}: {s}"
    );
    s
}

#[test]
fn operator_from_the_chart_runs_on_the_node_and_workers_use_what_it_publishes() {
    let images = images();
    let worker_image = image(&images, "CBO_WORKER_IMAGE");
    let redis_image = image(&images, "CBO_STORE_IMAGE_REDIS");
    install_crds();
    support::stores::up(&["redis"]);

    let system = TestNamespace::blocking_on_node("cbo-system");
    let sys = system.name.clone();
    let apps = TestNamespace::blocking_on_node("apps");
    let n = apps.name.clone();
    let release = install_operator(&sys, &images, &[]);

    // 1. Both replicas Running and Ready, exactly one holds the Lease.
    let operators = pod_names(&sys, "app.kubernetes.io/name=celery-backend-operator");
    assert_eq!(operators.len(), 2, "{operators:?}");
    let leader = wait_until("a Lease holder", 60, || {
        lease_holder(&sys).filter(|h| operators.contains(h))
    });
    eprintln!("operator Pods {operators:?}, leader {leader}");

    // 2. An external Redis backend (an ACL user of the stores' Redis, so its password can rotate).
    let user = format!("worker-{}", &n[n.len() - 8..]);
    let (pw1, pw2) = ("first p@ss:w/rd#?%", "second p@ss:w/rd#?%");
    redis_cli(&[
        "ACL",
        "SETUSER",
        &user,
        "reset",
        "on",
        &format!(">{pw1}"),
        "~*",
        "&*",
        "+@all",
    ]);
    apply(&n, &format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: redis-auth}}\nstringData: {{password: '{pw1}'}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: orders}}\nspec:\n  redis:\n    external:\n      host: {REDIS_HOST}\n      port: {REDIS_PORT}\n      db: 6\n      auth: {{username: {user}, passwordSecretRef: {{name: redis-auth, key: password}}}}\n"
    ));
    wait_until(
        "orders Ready=True and Healthy=True (probed from the in-cluster operator)",
        90,
        || {
            (condition(&n, "orders", "Ready").starts_with("True")
                && condition(&n, "orders", "Healthy").starts_with("True"))
            .then_some(())
        },
    );

    // 3. The webhook, through its Service, injects a labelled bare Pod in the application namespace.
    wait_until(
        "the webhook configuration names this release's Service",
        60,
        || {
            (kubectl_ok(&[
                "get",
                "mutatingwebhookconfiguration",
                "celery-backend-operator",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.service.namespace}",
            ]) == sys)
                .then_some(())
        },
    );
    // kube-proxy programs a new Service's endpoints a moment after they exist; until then the
    // API server's call is refused and the Pod is admitted without the URI (failurePolicy Ignore,
    // reported as missed). A server-side dry run goes through the same admission path.
    let dry = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: probe, labels: {{celery.dev/result-backend: orders}}}}\nspec:\n  containers:\n  - {{name: w, image: {worker_image}}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("probe.yaml");
    std::fs::write(&f, &dry).unwrap();
    wait_until("the webhook answers through its Service", 60, || {
        let out = kubectl(&[
            "-n",
            &n,
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            f.to_str().unwrap(),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .contains("CELERY_RESULT_BACKEND")
            .then_some(())
    });
    apply(&n, &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bare, labels: {{celery.dev/result-backend: orders}}}}\nspec:\n  containers:\n  - {{name: w, image: {worker_image}, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
    ));
    let env = json(&n, &["pod", "bare"])["spec"]["containers"][0]["env"].clone();
    assert!(
        env.to_string()
            .contains("\"name\":\"CELERY_RESULT_BACKEND\"")
            && env.to_string().contains("secretKeyRef"),
        "the bare Pod was admitted with the URI by reference: {env}"
    );

    // 4. /metrics through the metrics Service (the API server's service proxy).
    let metrics = kubectl_ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/{sys}/services/http:{}-metrics:8080/proxy/metrics",
            release.deployment()
        ),
    ]);
    assert!(
        metrics.contains("celery_backend_operator_"),
        "{}",
        &metrics[..metrics.len().min(500)]
    );
    assert!(!metrics.contains(pw1), "no password in metrics");

    // 5. A broker and a worker Deployment in Pods; a client Job sends tasks, reads results back.
    apply_broker(&n, &redis_image);
    apply(&n, &format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: worker, labels: {{celery.dev/result-backend: orders}}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: worker}}}}\n  template:\n    metadata: {{labels: {{app: worker}}}}\n    spec:\n      containers:\n      - name: worker\n        image: {worker_image}\n        imagePullPolicy: Never\n        env:\n        - {{name: CELERY_BROKER_URL, value: 'redis://broker:6379/0'}}\n"
    ));
    wait_until("the worker template carries the URI reference", 60, || {
        json(&n, &["deployment", "worker"])["spec"]["template"]["metadata"]["annotations"]
            .to_string()
            .contains("checksum.celery.dev/")
            .then_some(())
    });
    rollout(&n, "deployment/worker", 180);
    wait_no_terminating(&n, "app=worker", 90);
    let workers = pod_names(&n, "app=worker");
    let uri = support::operator::uri_of(&n, "orders-celery-result-backend").expect("URI Secret");
    let inside = kubectl_ok(&[
        "-n",
        &n,
        "exec",
        &workers[0],
        "--",
        "printenv",
        "CELERY_RESULT_BACKEND",
    ]);
    assert_eq!(
        inside.trim_end(),
        uri,
        "the worker reads the published URI inside its container"
    );
    let out = client_job(
        &n,
        "client-1",
        &worker_image,
        "orders",
        BROKER,
        &["send", "5"],
    );
    assert_results(&out, 5);

    // 5b. A TLS-only Redis (hack/stores.sh: no plain-text port, client certificates required),
    // TLS material by reference: the CA from a ConfigMap, the client certificate from a Secret.
    // The in-cluster operator (whose image carries no CA for it; the chart's RBAC reads
    // ConfigMaps) probes it with both in memory, and the webhook mounts them (a ConfigMap and a
    // Secret volume) into a worker and a client that store and read results over TLS through the
    // paths the URI names.
    support::stores::up(&["redis_tls"]);
    let pem = |f: &str| std::fs::read_to_string(format!("/var/tmp/cbo-stores/tls/{f}")).unwrap();
    apply(
        &n,
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "redis-ca"},
             "data": {"ca.crt": pem("ca.crt")}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-client"},
             "type": "kubernetes.io/tls",
             "stringData": {"tls.crt": pem("client.crt"), "tls.key": pem("client.key")}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-tls-auth"},
             "stringData": {"password": REDIS_ADMIN_PW}},
            {"apiVersion": "celery.dev/v1alpha1", "kind": "CeleryResultBackend",
             "metadata": {"name": "orders-tls"},
             "spec": {"redis": {"external": {"host": REDIS_HOST, "port": 16380, "db": 7,
                "auth": {"passwordSecretRef": {"name": "redis-tls-auth", "key": "password"}},
                "tls": {"enabled": true, "caConfigMapRef": {"name": "redis-ca", "key": "ca.crt"},
                        "clientCertificateSecretRef": {"name": "redis-client"}}}}}},
        ]})
        .to_string(),
    );
    wait_until(
        "orders-tls Healthy=True (probed over TLS by the in-cluster operator)",
        90,
        || {
            condition(&n, "orders-tls", "Healthy")
                .starts_with("True")
                .then_some(())
        },
    );
    let tls_broker = "redis://broker:6379/1";
    apply(&n, &format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: worker-tls}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: worker-tls}}}}\n  template:\n    metadata: {{labels: {{app: worker-tls, celery.dev/result-backend: orders-tls}}}}\n    spec:\n      containers:\n      - name: worker\n        image: {worker_image}\n        imagePullPolicy: Never\n        env:\n        - {{name: CELERY_BROKER_URL, value: '{tls_broker}'}}\n"
    ));
    rollout(&n, "deployment/worker-tls", 180);
    let tls_worker = pod_names(&n, "app=worker-tls");
    let mounts =
        json(&n, &["pod", &tls_worker[0]])["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/etc/celery-backend/tls-configmaps/redis-ca")
            && mounts.contains("/etc/celery-backend/tls/redis-client")
            && mounts.contains("\"readOnly\":true"),
        "the worker mounts the CA ConfigMap and the client certificate Secret read-only: {mounts}"
    );
    let out = client_job(
        &n,
        "client-tls",
        &worker_image,
        "orders-tls",
        tls_broker,
        &["send", "4"],
    );
    assert_results(&out, 4);

    // 5c. PostgreSQL with a client certificate from Pods: the TLS-only PostgreSQL of
    // hack/stores.sh requires role cbo_mtls to present a certificate of the test CA. The webhook
    // mounts the key root-owned 0640 (libpq refuses a root-owned key others can read); a worker
    // and a client in Pods (psycopg2, as the image's non-root user celery, uid 1000, with the
    // fsGroup the README asks for) store and read results through it; the in-cluster operator
    // probes with the same certificate in memory.
    support::stores::up(&["postgresql_tls"]);
    let mtls_db = format!("celery_mtls_{}", std::process::id());
    support::stores::pg_tls_admin(&format!("DROP DATABASE IF EXISTS {mtls_db}"));
    support::stores::pg_tls_admin(&format!("CREATE DATABASE {mtls_db} OWNER cbo_mtls"));
    apply(
        &n,
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-mtls-auth"},
             "stringData": {"password": "pg p@ss:w/rd#?%"}},
            {"apiVersion": "celery.dev/v1alpha1", "kind": "CeleryResultBackend",
             "metadata": {"name": "orders-pg-mtls"},
             "spec": {"database": {"external": {"engine": "postgresql", "host": REDIS_HOST,
                "port": 15433, "database": mtls_db,
                "auth": {"username": "cbo_mtls",
                         "passwordSecretRef": {"name": "pg-mtls-auth", "key": "password"}},
                "tls": {"enabled": true, "caConfigMapRef": {"name": "redis-ca", "key": "ca.crt"},
                        "clientCertificateSecretRef": {"name": "redis-client"}}}}}},
        ]})
        .to_string(),
    );
    wait_until(
        "orders-pg-mtls Healthy=True (the in-cluster operator presents the client certificate)",
        90,
        || {
            condition(&n, "orders-pg-mtls", "Healthy")
                .starts_with("True")
                .then_some(())
        },
    );
    let mtls_broker = "redis://broker:6379/2";
    apply(&n, &format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: worker-pg-mtls}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: worker-pg-mtls}}}}\n  template:\n    metadata: {{labels: {{app: worker-pg-mtls, celery.dev/result-backend: orders-pg-mtls}}}}\n    spec:\n      securityContext: {{fsGroup: 1000}}\n      containers:\n      - name: worker\n        image: {worker_image}\n        imagePullPolicy: Never\n        env:\n        - {{name: CELERY_BROKER_URL, value: '{mtls_broker}'}}\n"
    ));
    rollout(&n, "deployment/worker-pg-mtls", 180);
    let pg_worker = pod_names(&n, "app=worker-pg-mtls");
    let volumes = json(&n, &["pod", &pg_worker[0]])["spec"]["volumes"].clone();
    let key_modes: Vec<_> = volumes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["secret"]["items"].as_array())
        .flatten()
        .filter(|i| i["key"] == "tls.key")
        .map(|i| i["mode"].as_i64())
        .collect();
    assert_eq!(
        key_modes,
        [Some(0o640)],
        "the client key is mounted 0640 for libpq: {volumes}"
    );
    let out = client_job_with(
        &n,
        "client-pg-mtls",
        &worker_image,
        "orders-pg-mtls",
        mtls_broker,
        &["send", "3"],
        serde_json::json!({"fsGroup": 1000}),
    );
    assert_results(&out, 3);

    // 6. Rotating the password rolls the workers once; the new Pods work with the new password.
    redis_cli(&["ACL", "SETUSER", &user, &format!(">{pw2}")]);
    let before = json(&n, &["deployment", "worker"])["metadata"]["generation"].as_i64();
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "secret",
        "redis-auth",
        "--type=merge",
        "-p",
        &serde_json::json!({"stringData": {"password": pw2}}).to_string(),
    ]);
    wait_until("the worker Deployment rolls after the rotation", 60, || {
        (json(&n, &["deployment", "worker"])["metadata"]["generation"].as_i64() > before)
            .then_some(())
    });
    rollout(&n, "deployment/worker", 180);
    wait_no_terminating(&n, "app=worker", 90);
    redis_cli(&["ACL", "SETUSER", &user, &format!("<{pw1}")]);
    let rolled = pod_names(&n, "app=worker");
    assert!(
        rolled.iter().all(|p| !workers.contains(p)),
        "new worker Pods: {workers:?} -> {rolled:?}"
    );
    let out = client_job(
        &n,
        "client-2",
        &worker_image,
        "orders",
        BROKER,
        &["send", "3"],
    );
    assert_results(&out, 3);

    // 7. Restarting the operator rolls nothing.
    let generation = json(&n, &["deployment", "worker"])["metadata"]["generation"].clone();
    release.restart();
    wait_until("orders Ready after the operator restart", 60, || {
        condition(&n, "orders", "Ready")
            .starts_with("True")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        json(&n, &["deployment", "worker"])["metadata"]["generation"],
        generation
    );
    assert_eq!(
        pod_names(&n, "app=worker"),
        rolled,
        "no worker Pod replaced"
    );

    // 8. Killing the leader's Pod hands the Lease over within the lease duration (15 s).
    let operators = pod_names(&sys, "app.kubernetes.io/name=celery-backend-operator");
    let leader = wait_until("a Lease holder after the restart", 60, || {
        lease_holder(&sys).filter(|h| operators.contains(h))
    });
    let t0 = Instant::now();
    kubectl_ok(&[
        "-n",
        &sys,
        "delete",
        "pod",
        &leader,
        "--grace-period=0",
        "--force",
    ]);
    let next = wait_until("a new Lease holder", 40, || {
        lease_holder(&sys).filter(|h| *h != leader)
    });
    let took = t0.elapsed();
    eprintln!("lease handed over from {leader} to {next} in {took:?}");
    assert!(took <= Duration::from_secs(25), "hand-over took {took:?}");

    // 9. Both operator Pods stopped: a labelled Pod is still admitted (fail open), and reported
    //    once the operator is back.
    kubectl_ok(&[
        "-n",
        &sys,
        "scale",
        &format!("deployment/{}", release.deployment()),
        "--replicas=0",
    ]);
    // Gone, not only terminating: a terminating replica keeps serving through its shutdown drain.
    wait_until("no operator Pod", 90, || {
        json(
            &sys,
            &[
                "pods",
                "-l",
                "app.kubernetes.io/name=celery-backend-operator",
            ],
        )["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    apply(&n, &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: missed, labels: {{celery.dev/result-backend: orders}}}}\nspec:\n  containers:\n  - {{name: w, image: {worker_image}, imagePullPolicy: Never, command: [sleep, '3600']}}\n"
    ));
    assert!(
        !json(&n, &["pod", "missed"])["spec"]["containers"][0]["env"]
            .to_string()
            .contains("CELERY_RESULT_BACKEND")
    );
    kubectl_ok(&[
        "-n",
        &sys,
        "scale",
        &format!("deployment/{}", release.deployment()),
        "--replicas=2",
    ]);
    let msg = wait_until("PodsMissed", 120, || {
        let c = condition(&n, "orders", "Injected");
        c.starts_with("False|PodsMissed|").then_some(c)
    });
    assert!(msg.contains("missed"), "{msg}");
    kubectl_ok(&["-n", &n, "delete", "pod", "missed", "bare", "--wait=false"]);

    // 10. helm upgrade with a changed value rolls the operator; the backend stays Ready.
    let rs_before = replicasets(&sys, "app.kubernetes.io/name=celery-backend-operator");
    release.upgrade(&["podAnnotations.upgraded=yes"]);
    rollout(&sys, &format!("deployment/{}", release.deployment()), 180);
    let rs_after = replicasets(&sys, "app.kubernetes.io/name=celery-backend-operator");
    assert!(
        rs_after > rs_before,
        "helm upgrade rolled the Deployment ({rs_before} -> {rs_after} ReplicaSets)"
    );
    assert!(condition(&n, "orders", "Ready").starts_with("True"));
    let out = client_job(
        &n,
        "client-3",
        &worker_image,
        "orders",
        BROKER,
        &["send", "2"],
    );
    assert_results(&out, 2);

    // 11. Uninstall as the README says: backends first, then the release; what is left is what
    //     the README lists.
    kubectl_ok(&["-n", &n, "delete", "crb", "orders", "--timeout=120s"]);
    release.uninstall();
    wait_until("the operator Pods are gone", 90, || {
        json(&sys, &["pods"])["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    let left = kubectl_ok(&[
        "-n",
        &sys,
        "get",
        "all,serviceaccounts,roles,rolebindings,secrets,leases,poddisruptionbudgets",
        "-o",
        "name",
    ]);
    let left: Vec<&str> = left
        .lines()
        .filter(|l| !l.ends_with("/default") && !l.starts_with("configmap/kube-root-ca.crt"))
        .collect();
    assert!(
        left.iter().all(|l| l.starts_with("secret/") && l.contains("webhook")
            || l.starts_with("lease.coordination.k8s.io/")),
        "after helm uninstall only the webhook certificate Secret and the Lease stay in the release namespace: {left:?}"
    );
    let cluster_left = kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
        "-o",
        "name",
    ]);
    assert!(
        !cluster_left
            .lines()
            .any(|l| l.contains("clusterrole") && l.ends_with("/celery-backend-operator")),
        "the chart's ClusterRoles are gone: {cluster_left}"
    );
    redis_cli(&["ACL", "DELUSER", &user]);
}
