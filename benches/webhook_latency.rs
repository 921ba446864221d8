//! Benchmark: Pod admission latency through the operator's mutating webhook, against a baseline of
//! Pods the webhook never sees (no opt-in label or template mark, so the API server's matchConditions skip the
//! call), measured in the same run on the local control plane. Prints a table.
//!
//! Run: `cargo bench --bench webhook_latency` (starts the local control plane if needed).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use support::cluster::{client, install_crds, kubectl, TestNamespace};
use support::operator::{wait_until, Operator};

const N: usize = 300;

fn pod(name: &str, opt_in: bool) -> Pod {
    let labels = if opt_in {
        serde_json::json!({"celery.dev/result-backend": "orders-redis"})
    } else {
        serde_json::json!({"app": "baseline"})
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "worker", "image": "registry.invalid/celery-worker:1"}]},
    }))
    .expect("pod")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    install_crds();
    let ns = TestNamespace::blocking("bench-webhook");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let port = support::stores::free_port();
    let config = format!("cbo-bench-{n}");
    let (addr, url) = (
        format!("127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let _op = Operator::start_with(
        tmp.path(),
        &n,
        "op.log",
        &[
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-config-name",
            &config,
        ],
    );
    support::operator::apply_redis_example(&n, 60);
    wait_until("default ServiceAccount", 60, || {
        kubectl(&["-n", &n, "get", "serviceaccount", "default"])
            .status
            .success()
            .then_some(())
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (with, without) = rt.block_on(async {
        let api: Api<Pod> = Api::namespaced(client().await, &n);
        // Wait until the webhook injects (certificate issued, configuration registered).
        let mut i = 0;
        loop {
            let p = api
                .create(&PostParams::default(), &pod(&format!("warm-{i}"), true))
                .await
                .expect("create");
            if p.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("injected.celery.dev/orders-redis")
            {
                break;
            }
            i += 1;
            assert!(i < 100, "the webhook never injected");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (mut with, mut without) = (vec![], vec![]);
        for k in 0..N {
            // Interleaved, so both series see the same API-server conditions.
            for opt_in in [true, false] {
                let name = format!("{}-{k}", if opt_in { "in" } else { "base" });
                let t = Instant::now();
                let p = api
                    .create(&PostParams::default(), &pod(&name, opt_in))
                    .await
                    .expect("create");
                let d = t.elapsed();
                if opt_in {
                    assert!(
                        p.metadata
                            .annotations
                            .unwrap_or_default()
                            .contains_key("injected.celery.dev/orders-redis"),
                        "{name} not injected"
                    );
                    with.push(d);
                } else {
                    without.push(d);
                }
            }
        }
        with.sort();
        without.sort();
        (with, without)
    });
    println!("Pod create latency, {N} Pods each, client-side (kube-rs -> kube-apiserver -> webhook), same run");
    println!("| series | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, s) in [
        ("baseline: no opt-in label (webhook skipped)", &without),
        ("opted in: mutated by the webhook", &with),
    ] {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(s, 0.5),
            pct(s, 0.9),
            pct(s, 0.99),
            pct(s, 1.0)
        );
    }
    println!(
        "| ratio opted-in / baseline | {:.2}x | {:.2}x | {:.2}x | |",
        pct(&with, 0.5) / pct(&without, 0.5),
        pct(&with, 0.9) / pct(&without, 0.9),
        pct(&with, 0.99) / pct(&without, 0.99)
    );
    println!(
        "webhook added latency: p50 +{:.2} ms, p99 +{:.2} ms",
        pct(&with, 0.5) - pct(&without, 0.5),
        pct(&with, 0.99) - pct(&without, 0.99)
    );
    let _ = kubectl(&[
        "delete",
        "mutatingwebhookconfiguration",
        &config,
        "--ignore-not-found",
    ]);
}
