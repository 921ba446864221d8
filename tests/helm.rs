//! The Helm chart renders (default and single-namespace values), lints, ships the same CRDs as
//! crds/, and every rendered object passes the real API server's server-side dry run.

mod support;

use std::process::Command;

use support::cluster::{cluster, kubectl, root, TestNamespace};

fn helm(args: &[&str]) -> String {
    let (kubeconfig, bin) = cluster();
    let out = Command::new(bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(root())
        .output()
        .expect("helm (hack/build-k8s.sh builds it)");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chart_renders_and_passes_server_side_dry_run() {
    support::cluster::install_crds();
    helm(&["lint", "charts/celery-backend-operator"]);
    let ns = TestNamespace::blocking("helm");
    for extra in [
        vec![],
        vec![
            "--set",
            "watchNamespace=team-a",
            "--set",
            "webhook.enabled=false",
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
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("chart.yaml");
        std::fs::write(&f, &rendered).unwrap();
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
        } else {
            assert!(
                rendered.contains("--namespace=team-a") && rendered.contains("--webhook-addr=off")
            );
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
