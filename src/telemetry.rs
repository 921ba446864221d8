//! Telemetry: logging set-up, Prometheus metrics, and the /metrics, /healthz, /readyz HTTP server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    pub condition: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyResultLabel {
    pub policy: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyKindLabel {
    pub policy: String,
    /// `task` or `group`.
    pub kind: String,
}

/// (condition type, status) pairs of one backend.
type Conditions = Vec<(String, String)>;

/// The operator's metrics. Cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub errors: Family<ReasonLabel, Counter>,
    backends: Family<ConditionLabel, Gauge>,
    /// Per backend (namespace/name): its condition statuses, to compute `backends` exactly.
    per_backend: Arc<Mutex<HashMap<String, Conditions>>>,
    pub leader: Gauge,
    pub ready: Arc<AtomicBool>,
    /// False while this replica's Pod webhook is enabled but not serving yet (no certificate, or
    /// its backend cache not listed): /readyz then keeps the replica out of the webhook Service,
    /// so the API server never calls a replica that would admit Pods without their URI.
    pub webhook_ready: Arc<AtomicBool>,
    pub admissions: Family<ResultLabel, Counter>,
    pub admission_duration: Histogram,
    pub injected_workloads: Family<ResultLabel, Counter>,
    pub health_checks: Family<ResultLabel, Counter>,
    pub probe_latency: Histogram,
    /// Cleanup runs by policy and result (succeeded, failed).
    pub cleanup_runs: Family<PolicyResultLabel, Counter>,
    /// Results deleted by cleanup, by policy and kind (dry runs count nothing).
    pub cleanup_deleted: Family<PolicyKindLabel, Counter>,
    /// Unix time of each policy's last fully successful run, for "cleanup is stuck" alerts.
    pub cleanup_last_success: Family<PolicyLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("celery_backend_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.002, 2.0, 14));
        let errors = Family::<ReasonLabel, Counter>::default();
        let backends = Family::<ConditionLabel, Gauge>::default();
        let leader = Gauge::default();
        let admissions = Family::<ResultLabel, Counter>::default();
        let admission_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        let injected_workloads = Family::<ResultLabel, Counter>::default();
        let health_checks = Family::<ResultLabel, Counter>::default();
        let probe_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let cleanup_runs = Family::<PolicyResultLabel, Counter>::default();
        let cleanup_deleted = Family::<PolicyKindLabel, Counter>::default();
        let cleanup_last_success = Family::<PolicyLabel, Gauge>::default();
        registry.register(
            "cleanup_runs",
            "Cleanup policy runs by policy and result (succeeded, failed)",
            cleanup_runs.clone(),
        );
        registry.register(
            "cleanup_deleted_results",
            "Results deleted by cleanup policies, by policy and kind (task, group)",
            cleanup_deleted.clone(),
        );
        registry.register(
            "cleanup_last_success_timestamp_seconds",
            "Unix time of each cleanup policy's last successful run",
            cleanup_last_success.clone(),
        );
        registry.register(
            "health_checks",
            "Store health checks by outcome reason",
            health_checks.clone(),
        );
        registry.register(
            "store_probe_latency_seconds",
            "Round-trip latency of successful store probes",
            probe_latency.clone(),
        );
        registry.register(
            "admissions",
            "Pod admissions by result (injected, unchanged)",
            admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time the webhook spends on one admission review",
            admission_duration.clone(),
        );
        registry.register(
            "workload_patches",
            "Workload pod-template patches by result (injected, released, conflict)",
            injected_workloads.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles of CeleryResultBackends by result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile failures and not-ready outcomes by reason",
            errors.clone(),
        );
        registry.register(
            "backends",
            "CeleryResultBackends by condition type and status",
            backends.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica holds the leader Lease (1) or stands by (0)",
            leader.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            reconcile_duration,
            errors,
            backends,
            per_backend: Arc::default(),
            leader,
            ready: Arc::new(AtomicBool::new(false)),
            webhook_ready: Arc::new(AtomicBool::new(true)),
            admissions,
            admission_duration,
            injected_workloads,
            health_checks,
            probe_latency,
            cleanup_runs,
            cleanup_deleted,
            cleanup_last_success,
        }
    }
}

impl Metrics {
    /// Record the conditions of one backend (None when it was deleted) and refresh the gauge.
    pub fn set_conditions(&self, key: &str, conditions: Option<Vec<(String, String)>>) {
        let Ok(mut map) = self.per_backend.lock() else {
            return;
        };
        match conditions {
            Some(c) => {
                map.insert(key.to_string(), c);
            }
            None => {
                map.remove(key);
            }
        }
        let mut counts: HashMap<ConditionLabel, i64> = HashMap::new();
        for conds in map.values() {
            for (condition, status) in conds {
                *counts
                    .entry(ConditionLabel {
                        condition: condition.clone(),
                        status: status.clone(),
                    })
                    .or_default() += 1;
            }
        }
        self.backends.clear();
        for (label, n) in counts {
            self.backends.get_or_create(&label).set(n);
        }
    }

    /// Forget backends that no longer exist.
    pub fn retain_backends(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = match self.per_backend.lock() {
            Ok(map) => map.keys().filter(|k| !keep(k)).cloned().collect(),
            Err(_) => return,
        };
        for k in gone {
            self.set_conditions(&k, None);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics(State(m): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(m): State<Metrics>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) && m.webhook_ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serve /metrics, /healthz and /readyz on a bound listener until the process ends.
pub async fn serve_on(listener: tokio::net::TcpListener, m: Metrics) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Initialise tracing: human-readable by default, JSON lines with `json`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn not_ready_until_the_webhook_serves() {
        let status = |m: &Metrics| {
            let m = m.clone();
            async move { readyz(State(m)).await.into_response().status() }
        };
        let m = Metrics::default();
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(status(&m).await, StatusCode::OK);
        m.webhook_ready.store(false, Ordering::Relaxed);
        assert_eq!(status(&m).await, StatusCode::SERVICE_UNAVAILABLE);
        m.webhook_ready.store(true, Ordering::Relaxed);
        m.ready.store(false, Ordering::Relaxed);
        assert_eq!(status(&m).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn backends_gauge_counts_each_backend_once() {
        let m = Metrics::default();
        let c = |s: &str| vec![("Ready".to_string(), s.to_string())];
        m.set_conditions("a/x", Some(c("True")));
        m.set_conditions("a/y", Some(c("True")));
        m.set_conditions("a/x", Some(c("False")));
        let text = m.render();
        assert!(
            text.contains(r#"celery_backend_operator_backends{condition="Ready",status="True"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"celery_backend_operator_backends{condition="Ready",status="False"} 1"#
            ),
            "{text}"
        );
        m.set_conditions("a/x", None);
        assert!(!m.render().contains(r#"status="False""#));
    }
}
