//! The quick start's installation and the tests' side by side on the node: a Helm release serving
//! one namespace (as `hack/quickstart.sh` installs it) keeps that namespace, its managed store and
//! its workers untouched while a cluster-wide release (as the node tests install it) comes, runs
//! and goes; uninstalling either release leaves no webhook configuration, Lease or certificate
//! Secret behind.

mod support;

use std::time::Duration;

use support::cluster::{install_crds, kubectl, kubectl_ok, root, TestNamespace};
use support::node::{apply, image, images, install_operator, json, rollout};
use support::operator::{condition, wait_until};

fn all_true(ns: &str, backend: &str) -> Option<()> {
    ["Provisioned", "Ready", "Healthy"]
        .iter()
        .all(|c| condition(ns, backend, c).starts_with("True"))
        .then_some(())
}

/// What a cluster-wide operator acting on the namespace would change: the store's StatefulSet
/// (generation, image) and the worker's Deployment (generation, ReplicaSets).
fn footprint(ns: &str) -> String {
    let sts = json(ns, &["statefulsets"]);
    let deploy = json(ns, &["deployment", "worker"]);
    let rs = json(ns, &["replicasets", "-l", "app=worker"]);
    format!(
        "sts {} {} / worker generation {} / {} ReplicaSets",
        sts["items"][0]["metadata"]["generation"],
        sts["items"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
        deploy["metadata"]["generation"],
        rs["items"].as_array().map(Vec::len).unwrap_or(0)
    )
}

fn record_selector() -> Option<String> {
    let out = kubectl(&[
        "get",
        "mutatingwebhookconfigurations",
        "celery-backend-operator",
        "-o",
        "jsonpath={.webhooks[0].namespaceSelector}",
        "--ignore-not-found",
    ]);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    (!out.is_empty()).then_some(out)
}

#[test]
fn a_scoped_release_keeps_its_namespace_beside_a_cluster_wide_release() {
    let images = images();
    let redis_image = image(&images, "CBO_STORE_IMAGE_REDIS");
    install_crds();

    // The quick start's shape: a release serving one namespace, a managed Redis and a worker.
    let qs_system = TestNamespace::blocking_on_node("qs-system");
    let demo = TestNamespace::blocking_on_node("qs-demo");
    let d = demo.name.clone();
    let scoped = install_operator(
        &qs_system.name,
        &images,
        &[
            &format!("storeImages.redis={redis_image}"),
            &format!("watchNamespace={d}"),
        ],
    );
    kubectl_ok(&[
        "apply",
        "-n",
        &d,
        "-f",
        &format!("{}/examples/managed-redis.yaml", root()),
    ]);
    wait_until("managed-redis Provisioned, Ready, Healthy", 240, || {
        all_true(&d, "managed-redis")
    });
    apply(
        &d,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: worker, labels: {{celery.dev/result-backend: managed-redis}}}}\nspec:\n  selector: {{matchLabels: {{app: worker}}}}\n  template:\n    metadata: {{labels: {{app: worker}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: worker\n        image: {redis_image}\n        imagePullPolicy: Never\n        command: [sleep, infinity]\n"
        ),
    );
    wait_until("the worker carries the URI reference", 60, || {
        json(&d, &["deployment", "worker"])["spec"]["template"]["metadata"]["annotations"]
            .to_string()
            .contains("checksum.celery.dev/")
            .then_some(())
    });
    rollout(&d, "deployment/worker", 120);
    std::thread::sleep(Duration::from_secs(3));
    let before = footprint(&d);
    eprintln!("before: {before}");

    // The tests' shape: a cluster-wide release with default store images (which, acting on the
    // demo's backend, would swap its Redis image for one that cannot be pulled here).
    let wide_system = TestNamespace::blocking_on_node("wide-system");
    let wide = install_operator(&wide_system.name, &images, &[]);
    wait_until(
        "the cluster-wide webhook to leave the demo namespace out",
        60,
        || record_selector().filter(|s| s.contains(&format!("\"{d}\""))),
    );
    // A while for it to act, if it were going to.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        footprint(&d),
        before,
        "the cluster-wide release left the demo alone"
    );
    assert!(all_true(&d, "managed-redis").is_some());
    // A new worker Pod in the demo namespace is still injected (by the scoped release).
    kubectl_ok(&["-n", &d, "rollout", "restart", "deployment/worker"]);
    rollout(&d, "deployment/worker", 120);
    let pods = json(&d, &["pods", "-l", "app=worker"]);
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .all(|p| p["spec"]["containers"][0]["env"]
                .to_string()
                .contains("managed-redis-celery-result-backend")),
        "{}",
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!(
                "{} {}",
                p["metadata"]["name"], p["spec"]["containers"][0]["env"]
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Leaving cleans up (Release::uninstall waits for the garbage collector and checks).
    wide.uninstall();
    assert!(record_selector().is_none(), "no cluster-wide record left");
    assert!(all_true(&d, "managed-redis").is_some());
    scoped.uninstall();
    let left = kubectl_ok(&["get", "mutatingwebhookconfigurations", "-o", "name"]);
    assert!(
        !left.contains(&format!("celery-backend-operator.{d}")),
        "{left}"
    );
}
