//! The Helm chart renders (default and single-namespace values), lints, ships the same CRDs as
//! crds/, and every rendered object passes the real API server's server-side dry run.

mod support;

use support::cluster::{helm, kubectl, root, TestNamespace};

#[test]
fn chart_renders_and_passes_server_side_dry_run() {
    support::cluster::install_crds();
    helm(&["lint", "charts/celery-backend-operator"]);
    let ns = TestNamespace::blocking("helm");
    // Its Roles go to the watched namespace, which must exist for the dry run: the test's own.
    let watch = format!("watchNamespace={}", ns.name);
    for extra in [
        vec![],
        vec!["--set", watch.as_str(), "--set", "webhook.enabled=false"],
        vec![
            "--set",
            "webhook.certificates=cert-manager",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "replicaCount=3",
        ],
        vec![
            "--set",
            "storeImages.registry=registry.corp/mirror",
            "--set",
            "storeImages.redis=cbo.local/redis:7.0-abc",
            "--set",
            "storeImages.s3=registry.corp/s3/minio:RELEASE.2025-09-07T16-13-09Z",
            "--set",
            "storeImagePullSecrets={corp-pull,mirror-pull}",
        ],
    ] {
        let mut args = vec![
            "template",
            "cbo",
            "charts/celery-backend-operator",
            "--namespace",
            ns.name.as_str(),
        ];
        args.extend(extra.iter().copied());
        let rendered = helm(&args);
        assert!(rendered.contains("kind: Deployment") && rendered.contains("kind: ClusterRole"));
        // cert-manager and prometheus-operator kinds have no CRDs on this control plane: they are
        // checked below, everything else goes through the API server.
        let foreign = ["Issuer", "Certificate", "ServiceMonitor", "PrometheusRule"];
        // The cluster-scoped configuration gets this test's name, so the dry run never merges with
        // one that a quick start or another test left on the shared control plane.
        let docs: Vec<String> = rendered
            .split("\n---")
            .filter(|d| {
                !foreign
                    .iter()
                    .any(|k| d.lines().any(|l| l == format!("kind: {k}")))
            })
            .map(|d| {
                if d.contains("kind: MutatingWebhookConfiguration") {
                    d.replacen(
                        "  name: celery-backend-operator\n",
                        &format!("  name: celery-backend-operator-{}\n", ns.name),
                        1,
                    )
                } else {
                    d.to_string()
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("chart.yaml");
        std::fs::write(&f, docs.join("\n---")).unwrap();
        let out = kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            f.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}\n{rendered}",
            String::from_utf8_lossy(&out.stderr)
        );
        let store_env = store_image_env(&rendered);
        if extra.iter().any(|a| a.starts_with("storeImage")) {
            assert_eq!(
                store_env,
                [
                    ("CBO_STORE_IMAGE_REDIS", "cbo.local/redis:7.0-abc"),
                    ("CBO_STORE_IMAGE_REGISTRY", "registry.corp/mirror"),
                    (
                        "CBO_STORE_IMAGE_S3",
                        "registry.corp/s3/minio:RELEASE.2025-09-07T16-13-09Z"
                    ),
                    ("CBO_STORE_IMAGE_PULL_SECRETS", "corp-pull,mirror-pull"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
            );
            // The operator reads exactly these variables and accepts their values.
            let images = operator_store_images(&store_env);
            assert_eq!(
                images,
                cbo::provision::StoreImages {
                    registry: Some("registry.corp/mirror".into()),
                    images: [
                        ("redis", "cbo.local/redis:7.0-abc"),
                        ("s3", "registry.corp/s3/minio:RELEASE.2025-09-07T16-13-09Z"),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                    pull_secrets: vec!["corp-pull".into(), "mirror-pull".into()],
                }
            );
            continue;
        }
        // Unset values render no variable (the operator's defaults apply).
        assert_eq!(store_env, vec![], "{rendered}");
        if extra.is_empty() {
            assert!(rendered.contains("--webhook-service=celery-backend-operator-webhook"));
            assert!(rendered.contains("kind: PodDisruptionBudget"));
            assert!(!rendered.contains("kind: MutatingWebhookConfiguration"));
        } else if extra.contains(&"webhook.certificates=cert-manager") {
            assert!(rendered.contains("--webhook-certificates=external"));
            for kind in foreign {
                assert!(rendered.contains(&format!("kind: {kind}")), "{kind}");
            }
            assert!(rendered.contains("cert-manager.io/inject-ca-from"));
            assert!(rendered.contains("secretName: celery-backend-operator-webhook-tls"));
            // The chart's configuration is the one the operator maintains in self-managed mode.
            let mwc: serde_json::Value = rendered
                .split("\n---")
                .find(|d| d.contains("kind: MutatingWebhookConfiguration"))
                .map(|d| serde_norway::from_str(d).unwrap())
                .unwrap();
            let opts = cbo::webhook::WebhookOptions {
                listen: "0.0.0.0:9443".parse().unwrap(),
                endpoint: cbo::webhook::Endpoint::Service {
                    namespace: ns.name.clone(),
                    name: "celery-backend-operator-webhook".into(),
                    port: 443,
                },
                config_name: "celery-backend-operator".into(),
                secret_namespace: ns.name.clone(),
                secret_name: "celery-backend-operator-webhook-tls".into(),
                failure_policy: "Ignore".into(),
                own_namespace: ns.name.clone(),
                only_namespace: None,
                self_managed: false,
            };
            let me = cbo::installation::Identity {
                id: format!("{}.cbo", ns.name),
                scope: cbo::installation::Scope::Cluster,
                record: "celery-backend-operator".into(),
            };
            let mut want = cbo::webhook::webhook_configuration(&opts, &me, "", &Default::default())
                ["webhooks"]
                .clone();
            assert_eq!(
                mwc["metadata"]["annotations"]["celery.dev/installation"], me.id,
                "the chart records the same installation the operator does"
            );
            assert!(rendered.contains(&format!("--installation={}", me.id)));
            want[0]["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
            assert_eq!(mwc["webhooks"], want, "chart and operator agree");
            let rules = rendered
                .split("\n---")
                .find(|d| d.contains("kind: PrometheusRule"))
                .unwrap();
            for alert in [
                "CeleryBackendOperatorNoLeader",
                "CeleryResultBackendNotReady",
                "CeleryResultBackendUnhealthy",
                "CeleryResultCleanupStale",
            ] {
                assert!(rules.contains(alert), "{alert}");
            }
            // Every metric an alert uses is one the operator exports.
            // Families appear once they have a series.
            let m = cbo::telemetry::Metrics::default();
            m.set_conditions("ns/b", Some(vec![("Ready".into(), "False".into())]));
            m.cleanup_last_success
                .get_or_create(&cbo::telemetry::PolicyLabel { policy: "p".into() })
                .set(1);
            let exported = m.render();
            for metric in [
                "celery_backend_operator_leader",
                "celery_backend_operator_backends",
                "celery_backend_operator_cleanup_last_success_timestamp_seconds",
            ] {
                assert!(rules.contains(metric));
                assert!(
                    exported.contains(&format!("# TYPE {metric} ")),
                    "{metric}:\n{exported}"
                );
            }
        } else {
            assert!(
                rendered.contains(&format!("--namespace={}", ns.name))
                    && rendered.contains("--webhook-addr=off")
            );
            assert!(rendered.contains("kind: Role\n") && rendered.contains("kind: RoleBinding"));
        }
    }
    // The chart's CRDs are the generated ones.
    let with_crds = helm(&[
        "template",
        "cbo",
        "charts/celery-backend-operator",
        "--include-crds",
    ]);
    for f in [
        "crds/celeryresultbackends.celery.dev.yaml",
        "crds/celeryresultcleanuppolicies.celery.dev.yaml",
    ] {
        let crd = std::fs::read_to_string(format!("{}/{f}", root())).unwrap();
        let first_line = crd
            .lines()
            .find(|l| l.contains("name: celeryresult"))
            .unwrap()
            .trim();
        assert!(with_crds.contains(first_line), "the chart ships {f}");
    }
}

/// The `CBO_STORE_IMAGE*` variables of the operator container in the rendered Deployment, in order.
fn store_image_env(rendered: &str) -> Vec<(String, String)> {
    let deployment: serde_json::Value = rendered
        .split("\n---")
        .find(|d| d.lines().any(|l| l == "kind: Deployment"))
        .map(|d| serde_norway::from_str(d).unwrap())
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str()?;
            name.starts_with("CBO_STORE_IMAGE")
                .then(|| (name.to_string(), e["value"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// What `run` makes of these variables, parsed and validated as the operator does at start-up:
/// the registry and pull secrets through the flags whose `env` they are, the per-store images
/// as `CBO_STORE_IMAGE_<STORE>` variables (a store the operator does not provision fails here).
fn operator_store_images(env: &[(String, String)]) -> cbo::provision::StoreImages {
    use clap::{CommandFactory, Parser};
    let cli = cbo::cli::Cli::command();
    let run = cli
        .get_subcommands()
        .find(|c| c.get_name() == "run")
        .unwrap();
    let mut argv = vec!["celery-backend-operator".to_string(), "run".to_string()];
    let mut per_store = vec![];
    for (name, value) in env {
        match run
            .get_arguments()
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(name.as_str()))
            .and_then(|a| a.get_long())
        {
            Some(flag) => argv.push(format!("--{flag}={value}")),
            None => per_store.push((name.clone(), value.clone())),
        }
    }
    let cbo::cli::Command::Run(args) = cbo::cli::Cli::try_parse_from(argv).unwrap().command else {
        panic!("run")
    };
    args.store_images_with_env(per_store).unwrap()
}
