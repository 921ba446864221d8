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
            let mut want = cbo::webhook::webhook_configuration(&opts, "")["webhooks"].clone();
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
