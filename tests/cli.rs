//! The CLI contract: `crd` matches crds/, `uri` works for every example and fails clearly.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_celery-backend-operator");
/// The checkout under test, read at run time (see tests/support/cluster.rs).
fn root() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn crds_dir_matches_generated_crds() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(&root()).join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let checked_in: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let (ok, generated, err) = run(&["crd"]);
    assert!(ok, "{err}");
    assert_eq!(generated, cbo::api::crds_yaml().unwrap());
    assert!(
        checked_in == generated,
        "crds/ is out of date: run `cargo run -- crd --out crds/`"
    );
}

/// Every example (but ironCache, which Celery 5 cannot load) gives a URI; ironCache fails clearly.
#[test]
fn uri_prints_a_uri_for_every_example() {
    let mut seen = 0;
    for entry in std::fs::read_dir(Path::new(&root()).join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with("-secret.yaml")
            || name.starts_with("managed-")
            || !name.ends_with(".yaml")
            || !std::fs::read_to_string(&path)
                .unwrap()
                .contains("kind: CeleryResultBackend")
        {
            continue;
        }
        let secret = path.with_file_name(name.replace(".yaml", "-secret.yaml"));
        let mut args = vec!["uri".to_string(), "-f".into(), path.display().to_string()];
        if secret.exists() {
            args.extend(["-s".into(), secret.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(&args);
        if name == "ironcache.yaml" {
            assert!(
                !ok && err.contains("spec.ironCache") && err.contains("Celery 5"),
                "{err}"
            );
        } else {
            assert!(ok, "{name}: {err}");
            assert!(out.trim().contains("://"), "{name}: {out}");
        }
        seen += 1;
    }
    assert!(seen >= 18, "expected an example per backend, saw {seen}");
}

#[test]
fn uri_outputs_settings_and_config_module() {
    let (ok, out, err) = run(&[
        "uri",
        "-f",
        "examples/s3.yaml",
        "-s",
        "examples/s3-secret.yaml",
        "-o",
        "config",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("result_backend = 's3://'"), "{out}");
    assert!(out.contains("s3_bucket = 'celery-results'"), "{out}");
    let (ok, out, _) = run(&[
        "uri",
        "-f",
        "examples/s3.yaml",
        "-s",
        "examples/s3-secret.yaml",
        "-o",
        "settings",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["s3_base_path"], "results/");
}

#[test]
fn missing_secret_names_the_field_and_fails() {
    let (ok, out, err) = run(&["uri", "-f", "examples/redis.yaml"]);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("spec.redis.external.auth.passwordSecretRef") && err.contains("redis-auth"),
        "{err}"
    );
}

#[test]
fn missing_secret_key_names_the_key_without_leaking_values() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s.yaml");
    std::fs::write(
        &secret,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: postgres-auth}\nstringData: {username: celery, other: hunter2-secret}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "uri",
        "-f",
        "examples/postgresql.yaml",
        "-s",
        secret.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("spec.database.external.auth.passwordSecretRef"),
        "{err}"
    );
    assert!(err.contains("\"password\""), "{err}");
    assert!(!err.contains("hunter2"), "a secret value leaked: {err}");
}

#[test]
fn invalid_spec_is_a_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.yaml");
    std::fs::write(
        &f,
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: x}\nspec:\n  rpc: {external: {}}\n  cache: {external: {servers: [{host: a}]}}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["uri", "-f", f.to_str().unwrap()]);
    assert!(
        !ok && err.contains("several backends set (rpc, cache)"),
        "{err}"
    );
    std::fs::write(
        &f,
        "kind: CeleryResultBackend\nmetadata: {name: x}\nspec:\n  redis: {external: {host: 1}}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["uri", "-f", f.to_str().unwrap()]);
    assert!(!ok && err.contains("invalid CeleryResultBackend"), "{err}");
}

/// `check` prints the builder's warnings as `uri` does (here an unverified certificate, before
/// the probe fails on a closed port), and `uri` notes a client-library variable its URI output
/// leaves out, by name only.
#[test]
fn check_warns_like_uri_and_uri_notes_client_library_variables() {
    let dir = tempfile::tempdir().unwrap();
    let redis = dir.path().join("redis.yaml");
    std::fs::write(
        &redis,
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: r}\nspec:\n  redis: {external: {host: 127.0.0.1, port: 1, tls: {enabled: true, verify: None, caFile: /ca.pem}}}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "-f", redis.to_str().unwrap(), "--timeout", "2s"]);
    assert!(!ok);
    assert!(
        err.contains("warning: spec.redis.external.tls.verify is None"),
        "{err}"
    );
    let consul = dir.path().join("consul.yaml");
    std::fs::write(
        &consul,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\nstringData: {token: s3cr3t-acl}\n---\napiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: c}\nspec:\n  consul: {external: {host: c, tokenSecretRef: {name: t, key: token}}}\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["uri", "-f", consul.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("also reads CONSUL_HTTP_TOKEN")
            && err.contains("injection sets it from the URI Secret"),
        "{err}"
    );
    assert!(!out.contains("s3cr3t") && !err.contains("s3cr3t"));
}
