//! The API against a real kube-apiserver: CRDs install, examples apply, invalid manifests are
//! rejected with a message naming the field, and kubectl shows descriptions and printer columns.

mod support;

use std::path::Path;

use support::cluster::{install_crds, kubectl, kubectl_ok, root, TestNamespace};

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(Path::new(root()).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn crds_install_and_become_established() {
    install_crds();
    let out = kubectl_ok(&[
        "get", "crd", "celeryresultbackends.celery.dev",
        "-o", "jsonpath={.status.conditions[?(@.type==\"Established\")].status} {.spec.names.shortNames} {.spec.names.categories}",
    ]);
    assert_eq!(out, "True [\"crb\"] [\"celery\"]");
}

#[test]
fn every_example_passes_server_dry_run_then_applies() {
    install_crds();
    let ns = TestNamespace::blocking("examples");
    let files = yaml_files("examples");
    assert!(files.len() >= 18);
    for f in &files {
        let f = f.to_str().unwrap();
        kubectl_ok(&["apply", "-n", &ns.name, "--dry-run=server", "-f", f]);
    }
    for f in &files {
        kubectl_ok(&["apply", "-n", &ns.name, "-f", f.to_str().unwrap()]);
    }
    let names = kubectl_ok(&["get", "crb", "-n", &ns.name, "-o", "name"]);
    let expected = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains("kind: CeleryResultBackend")
        })
        .count();
    assert_eq!(names.lines().count(), expected, "{names}");
    // Cluster-scoped examples outlive the namespace: remove them.
    let _ = kubectl(&[
        "delete",
        "-f",
        "examples/cleanup-policy.yaml",
        "--ignore-not-found",
    ]);
}

/// Each file in tests/invalid declares (`# expect: ...`) what the API server's error must contain.
#[test]
fn invalid_manifests_are_rejected_naming_the_field() {
    install_crds();
    let ns = TestNamespace::blocking("invalid");
    let files = yaml_files("tests/invalid");
    assert!(
        files.len() >= 20,
        "at least 20 invalid manifests, found {}",
        files.len()
    );
    let mut failures = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expects.is_empty(), "{}: no `# expect:` line", f.display());
        let out = kubectl(&["create", "-n", &ns.name, "-f", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted by the API server", f.display()));
            continue;
        }
        // `# absent: ...`: what the error must not print (a secret in a refused value).
        for a in text.lines().filter_map(|l| l.strip_prefix("# absent: ")) {
            if err.contains(a) {
                failures.push(format!(
                    "{}: error prints {a:?}:\n  {}",
                    f.display(),
                    err.trim()
                ));
            }
        }
        for e in expects {
            if !err.contains(e) {
                failures.push(format!(
                    "{}: error lacks {e:?}:\n  {}",
                    f.display(),
                    err.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let left = kubectl_ok(&["get", "crb", "-n", &ns.name, "-o", "name"]);
    assert!(
        left.trim().is_empty(),
        "invalid objects were stored: {left}"
    );
}

#[test]
fn kubectl_explain_shows_descriptions() {
    install_crds();
    let spec = kubectl_ok(&["explain", "crb.spec"]);
    assert!(
        spec.contains("Desired state of a Celery result backend"),
        "{spec}"
    );
    assert!(
        spec.contains("resultExpires") && spec.contains("How long results live"),
        "{spec}"
    );
    let nested = kubectl_ok(&["explain", "crb.spec.redis.external.auth.passwordSecretRef"]);
    assert!(
        nested.contains("Secret key holding the password"),
        "{nested}"
    );
    assert!(nested.contains("Key inside the Secret's data"), "{nested}");
}

#[test]
fn kubectl_get_shows_printer_columns() {
    install_crds();
    let ns = TestNamespace::blocking("columns");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "examples/rpc.yaml"]);
    let out = kubectl_ok(&["get", "crb", "-n", &ns.name]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "BACKEND", "MODE", "READY", "HEALTHY", "WORKERS", "AGE"],
        "{out}"
    );
    assert!(out.contains("results-rpc"), "{out}");
}

/// The one duration grammar (`api::DURATION_PATTERN`: Go durations with whole days in front) is
/// admitted everywhere, including by the CEL rules that compare durations (days become seconds).
#[test]
fn durations_with_days_are_admitted_and_compared() {
    install_crds();
    let ns = TestNamespace::blocking("durations");
    let manifests = r#"
apiVersion: celery.dev/v1alpha1
kind: CeleryResultBackend
metadata: {name: days-redis}
spec:
  redis: {external: {host: redis}}
  resultExpires: 7d
  healthCheck: {interval: 1d, timeout: 23h59m}
---
apiVersion: celery.dev/v1alpha1
kind: CeleryResultBackend
metadata: {name: days-consul}
spec:
  consul: {external: {host: consul}}
  resultExpires: 1d
---
apiVersion: celery.dev/v1alpha1
kind: CeleryResultBackend
metadata: {name: days-cache}
spec:
  cache: {external: {servers: [{host: memcached}]}}
  resultExpires: 29d24h
---
apiVersion: celery.dev/v1alpha1
kind: CeleryResultBackend
metadata: {name: zero-consul}
spec:
  consul: {external: {host: consul}}
  resultExpires: "0"
---
apiVersion: celery.dev/v1alpha1
kind: CeleryResultCleanupPolicy
metadata: {name: days-policy}
spec:
  retention: 7d
  schedule: "@daily"
  backendSelector:
    matchExpressions: [{key: celery.dev/team, operator: In, values: [a, b]}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("days.yaml");
    std::fs::write(&file, manifests).unwrap();
    kubectl_ok(&[
        "create",
        "-n",
        &ns.name,
        "--dry-run=server",
        "-f",
        file.to_str().unwrap(),
    ]);
}
