//! Health checks in the controller: one task per backend probes its store on the backend's
//! interval, bounded by its timeout, so a slow or dead store never delays another backend or the
//! apply path. A transition (healthy <-> not, or a new reason) wakes the backend's reconcile,
//! which turns the latest result into the Healthy condition: status is written on transitions only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use super::status::{Outcome, State};
use crate::api::{parse_duration, CeleryResultBackend, HealthCheckStatus};
use crate::stores::{Expiry, Store};
use crate::telemetry::Metrics;
use crate::uri::BackendConfig;

type Guarded = DeserializeGuard<CeleryResultBackend>;

/// The latest result of a backend's checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Latest {
    pub outcome: Outcome,
    pub check: HealthCheckStatus,
}

struct Entry {
    fingerprint: String,
    handle: tokio::task::JoinHandle<()>,
    latest: Option<Latest>,
}

/// All health tasks of this replica.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<(String, String), Entry>>>,
}

/// What a running check depends on, digested (SHA-256, hex): the URI, settings and environment,
/// the TLS material (a CA or client certificate rotated in its Secret or ConfigMap changes no
/// URI, yet a check must start over with it), interval and timeout. A digest, so no credential
/// is kept beside the check in clear.
fn fingerprint(cfg: &BackendConfig, interval: Duration, timeout: Duration) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(cfg.uri.as_bytes());
    part(format!("{:?}|{:?}|{interval:?}|{timeout:?}", cfg.settings, cfg.env).as_bytes());
    if let Some(t) = &cfg.tls {
        part(format!("{:?}", t.verify).as_bytes());
        part(t.ca_pem.as_deref().unwrap_or_default());
        if let Some((cert, key)) = &t.client {
            part(cert);
            part(key);
        }
        part(t.worker_ca_file.as_deref().unwrap_or_default().as_bytes());
        part(t.ca_source.as_deref().unwrap_or_default().as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Delay before the next check: the interval after a success; after `failures` failed checks in a
/// row, 2 s, 4 s, 8 s, … capped at the interval. A store that just started (a managed Pod Ready a
/// moment before its Service's endpoints are programmed) is seen healthy within seconds, not one
/// whole interval later.
pub fn next_check(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let backoff = Duration::from_secs(2u64.saturating_mul(1u64 << (failures - 1).min(20)));
    backoff.min(interval)
}

/// Schedule of a backend's checks: (enabled, interval, timeout).
pub fn schedule(obj: &CeleryResultBackend) -> (bool, Duration, Duration) {
    let h = obj.spec.health_check.clone().unwrap_or_default();
    let secs = |v: Option<String>, d: f64| {
        v.and_then(|s| parse_duration(&s).ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(d)
    };
    (
        h.enabled.unwrap_or(true),
        Duration::from_secs_f64(secs(h.interval, 30.0)),
        Duration::from_secs_f64(secs(h.timeout, 5.0)),
    )
}

fn outcome_of(
    store: &Store,
    res: &Result<crate::stores::Probe, crate::stores::StoreError>,
) -> Outcome {
    match res {
        // The message is stable (no latency), so repeated successes write nothing.
        Ok(_) => Outcome {
            state: State::Ready,
            reason: "StoreAnswered".into(),
            message: format!("{} answered a round trip", store.kind()),
        },
        Err(e) => Outcome::failed(e.reason(), e.to_string()),
    }
}

impl Registry {
    /// Make sure a task checks this backend with this configuration; return what the latest check
    /// found (None: no check has finished yet, or checks do not apply).
    pub fn ensure(
        &self,
        obj: &CeleryResultBackend,
        key: (String, String),
        cfg: Option<&BackendConfig>,
        wake: UnboundedSender<ObjectRef<Guarded>>,
        metrics: Metrics,
    ) -> Option<Outcome> {
        let (enabled, interval, timeout) = schedule(obj);
        // Checked before taking the registry's lock: a stat of a worker-local path must not hold
        // up every other backend's reconcile.
        let hidden = cfg.filter(|_| enabled).and_then(crate::stores::not_visible);
        let Ok(mut map) = self.inner.lock() else {
            return None;
        };
        let Some(cfg) = cfg.filter(|_| enabled) else {
            if let Some(e) = map.remove(&key) {
                e.handle.abort();
            }
            return Some(if enabled {
                Outcome {
                    state: State::Unknown,
                    reason: "NotChecked".into(),
                    message: "no URI to check yet".into(),
                }
            } else {
                Outcome {
                    state: State::Unknown,
                    reason: "HealthCheckDisabled".into(),
                    message: "spec.healthCheck.enabled is false".into(),
                }
            });
        };
        if let Some(why) = hidden {
            if let Some(e) = map.remove(&key) {
                e.handle.abort();
            }
            return Some(Outcome {
                state: State::Unknown,
                reason: "NotProbeable".into(),
                message: why,
            });
        }
        let store = Store::from_config(cfg, obj.spec.result_expires.is_some());
        if let (false, Expiry::Unsupported(why)) = (store.is_supported(), store.expiry()) {
            if let Some(e) = map.remove(&key) {
                e.handle.abort();
            }
            return Some(Outcome {
                state: State::Unknown,
                reason: "NotSupported".into(),
                message: why,
            });
        }
        let fingerprint = fingerprint(cfg, interval, timeout);
        if let Some(e) = map.get(&key) {
            if e.fingerprint == fingerprint && !e.handle.is_finished() {
                return e.latest.as_ref().map(|l| l.outcome.clone());
            }
            e.handle.abort();
        }
        let inner = self.inner.clone();
        let k = key.clone();
        let fp = fingerprint.clone();
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(next_check(interval, failures)).await;
                }
                first = false;
                let res = store.probe(timeout).await;
                let outcome = outcome_of(&store, &res);
                failures = if outcome.is_ready() {
                    0
                } else {
                    failures.saturating_add(1)
                };
                metrics
                    .health_checks
                    .get_or_create(&crate::telemetry::ResultLabel {
                        result: outcome.reason.clone(),
                    })
                    .inc();
                if let Ok(p) = &res {
                    metrics.probe_latency.observe(p.latency.as_secs_f64());
                }
                let latest = Latest {
                    outcome: outcome.clone(),
                    check: HealthCheckStatus {
                        time: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
                        latency_ms: res.as_ref().ok().map(|p| p.latency.as_millis() as u64),
                        message: Some(match &res {
                            Ok(p) => p.detail.clone(),
                            Err(e) => e.to_string(),
                        }),
                    },
                };
                let changed = {
                    let Ok(mut map) = inner.lock() else { return };
                    let Some(e) = map.get_mut(&k).filter(|e| e.fingerprint == fp) else {
                        return; // replaced or removed: stop
                    };
                    let changed = e
                        .latest
                        .as_ref()
                        .map(|l| (l.outcome.state, &l.outcome.reason))
                        != Some((outcome.state, &outcome.reason));
                    e.latest = Some(latest);
                    changed
                };
                if changed {
                    tracing::info!(namespace = %k.0, backend = %k.1, healthy = outcome.is_ready(), reason = %outcome.reason, "health changed");
                    if wake
                        .unbounded_send(ObjectRef::new(&k.1).within(&k.0))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        map.insert(
            key,
            Entry {
                fingerprint,
                handle,
                latest: None,
            },
        );
        None
    }

    /// The check behind the latest outcome (for status.lastHealthCheck).
    pub fn latest_check(&self, key: &(String, String)) -> Option<HealthCheckStatus> {
        self.inner
            .lock()
            .ok()?
            .get(key)?
            .latest
            .as_ref()
            .map(|l| l.check.clone())
    }

    /// Stop the tasks of backends that no longer exist.
    pub fn retain(&self, keep: impl Fn(&(String, String)) -> bool) {
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|k, e| {
                let k2 = keep(k);
                if !k2 {
                    e.handle.abort();
                }
                k2
            });
        }
    }

    /// Stop everything (losing leadership, shutdown).
    pub fn stop_all(&self) {
        self.retain(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::{fingerprint, BackendConfig, Duration};

    #[test]
    fn a_rotated_ca_restarts_the_check_and_no_credential_is_kept() {
        let cfg = |ca: &str| BackendConfig {
            uri: "rediss://:hunter2@r:6379/0".into(),
            tls: Some(crate::uri::TlsMaterial {
                ca_pem: Some(ca.as_bytes().to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = Duration::from_secs(1);
        let a = fingerprint(&cfg("ca-1"), s, s);
        assert_eq!(a, fingerprint(&cfg("ca-1"), s, s));
        assert_ne!(a, fingerprint(&cfg("ca-2"), s, s));
        assert!(!a.contains("hunter2") && a.len() == 64);
    }

    #[test]
    fn each_failure_has_its_own_reason() {
        use crate::stores::{Store, StoreError};
        let store = Store::from_config(
            &crate::uri::BackendConfig {
                uri: "redis://h:6379/0".into(),
                ..Default::default()
            },
            true,
        );
        let reason = |e: StoreError| super::outcome_of(&store, &Err(e)).reason;
        assert_eq!(
            reason(StoreError::auth("redis", "WRONGPASS")),
            "StoreAuthFailed"
        );
        assert_eq!(
            reason(StoreError::connect("redis", "refused")),
            "StoreUnreachable"
        );
        assert_eq!(
            reason(StoreError::Timeout {
                store: "redis".into(),
                timeout: std::time::Duration::from_secs(1)
            }),
            "StoreTimeout"
        );
        assert_eq!(reason(StoreError::protocol("redis", "ERR")), "StoreError");
    }

    #[test]
    fn failed_checks_are_retried_sooner_up_to_the_interval() {
        use super::next_check;
        use std::time::Duration;
        let i = Duration::from_secs(30);
        let got: Vec<u64> = (0..6).map(|f| next_check(i, f).as_secs()).collect();
        assert_eq!(got, vec![30, 2, 4, 8, 16, 30]);
        assert_eq!(
            next_check(Duration::from_secs(1), 3),
            Duration::from_secs(1)
        );
        assert_eq!(next_check(i, u32::MAX), i);
    }
}
