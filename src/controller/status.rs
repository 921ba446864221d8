//! Pure status computation: conditions whose lastTransitionTime moves only on a real transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::condition;

use super::{uri_secret_ref, Status};

/// What one reconcile concluded.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub state: State,
    pub reason: String,
    pub message: String,
}

/// Where a step stands: done, still converging (no failure: a requeue will see it through),
/// failed with a reason the user can act on, or not evaluated (a check that cannot or may not
/// run: its condition is `Unknown`, never `False`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Pending,
    Failed,
    Unknown,
}

impl Outcome {
    /// Whether the step is done.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }
    /// Still converging (e.g. a StatefulSet rolling out): not a failure.
    pub fn pending(reason: &str, message: String) -> Self {
        Outcome {
            state: State::Pending,
            reason: reason.into(),
            message,
        }
    }
    /// Published, with the builder's warnings (what a user should know) in the message.
    pub fn ready(secret: &str, warnings: &[String]) -> Self {
        let mut message = format!("result_backend URI published in Secret {secret}");
        for w in warnings {
            message.push_str("; warning: ");
            message.push_str(w);
        }
        Outcome {
            state: State::Ready,
            reason: "UriPublished".into(),
            message,
        }
    }
    pub fn failed(reason: &str, message: String) -> Self {
        Outcome {
            state: State::Failed,
            reason: reason.into(),
            message,
        }
    }
}

/// The `ConfigDelivered` condition: whether what the builder computed reaches injected workers.
/// The URI travels as `CELERY_RESULT_BACKEND`; every other setting only through the mounted
/// `celeryconfig.py` (`injection.configModule`). Celery applies that module when the app calls
/// `config_from_envvar("CELERY_CONFIG_MODULE")` (an app made with `Celery()` uses the AppLoader,
/// which does not read the variable by itself: celery/loaders/app.py) with the mount directory on
/// `PYTHONPATH`. Pure.
pub fn config_delivered(
    spec: &crate::api::CeleryResultBackendSpec,
    cfg: &crate::uri::BackendConfig,
) -> Outcome {
    let mut keys = crate::uri::module_only(cfg);
    let module = spec.config_module();
    let variable = spec
        .injection
        .as_ref()
        .and_then(|i| i.env_var.as_deref())
        .unwrap_or(crate::api::footprint::URI_KEY);
    // The client-library variables: set by the module when it is mounted, injected from the
    // URI Secret otherwise (`inject::client_env`).
    let by_reference = crate::inject::client_env(spec, cfg);
    if module {
        keys.extend(cfg.env.keys().map(|k| format!("environment variable {k}")));
    }
    if keys.is_empty() {
        return Outcome {
            state: State::Ready,
            reason: "UriCarriesAll".into(),
            message: if by_reference.is_empty() {
                format!("everything workers need is in the URI ({variable})")
            } else {
                format!(
                    "everything workers need is in the URI ({variable}) and {}, injected from the URI Secret",
                    by_reference.join(", ")
                )
            },
        };
    }
    if module {
        return Outcome {
            state: State::Ready,
            reason: "ConfigModuleMounted".into(),
            message: format!(
                "celeryconfig.py ({}) is mounted at {} and named by CELERY_CONFIG_MODULE; Celery applies it when the app calls config_from_envvar('CELERY_CONFIG_MODULE') with that directory on PYTHONPATH",
                keys.join(", "),
                crate::api::footprint::CONFIG_MOUNT
            ),
        };
    }
    Outcome::failed(
        "SettingsNotDelivered",
        format!(
            "injected workers get only the URI; these settings do not reach them: {}. Set spec.injection.configModule: true, or set them in the workers' own configuration",
            keys.join(", ")
        ),
    )
}

/// `ConfigDelivered` given the `Injected` outcome: settings that reach no injected worker because
/// no workload opts in are not news (`Unknown/NoOptIn`, no Event): such users read the published
/// Secret (celeryconfig.py, Service Binding). Pure.
pub fn unless_no_opt_in(delivered: Outcome, injected: Option<&Outcome>) -> Outcome {
    match injected {
        Some(i) if delivered.state == State::Failed && i.reason == "NoOptIn" => Outcome {
            state: State::Unknown,
            reason: "NoOptIn".into(),
            message: format!("no workload opts in to injection; {}", delivered.message),
        },
        _ => delivered,
    }
}

/// What a reconcile concluded about each condition it owns. `None` keeps the previous condition
/// (or Unknown with `fallback` when there is none), so loops that own other conditions do not fight.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub generation: Option<i64>,
    pub kind: Option<String>,
    pub mode: &'static str,
    pub ready: Outcome,
    pub provisioned: Outcome,
    pub healthy: Option<Outcome>,
    pub injected: Option<Outcome>,
    /// Whether the settings reach workers (None keeps the previous condition).
    pub config_delivered: Option<Outcome>,
    /// Name of the published URI Secret.
    pub secret: String,
    /// Checksum of the published URI Secret (None keeps the previous one).
    pub uri_checksum: Option<String>,
    /// TLS Secret keys the just-published URI names (None keeps the previous ones).
    pub tls_mounts: Option<Vec<String>>,
    /// Client-library variables the just-published Secret carries (None keeps the previous ones).
    pub client_env: Option<Vec<String>>,
    /// Injected workload count and missed Pods (None keeps the previous values).
    pub injection: Option<(i32, Vec<String>)>,
    /// The check behind the Healthy condition (None keeps the previous one).
    pub last_health_check: Option<crate::api::HealthCheckStatus>,
}

fn to_condition(old: &[Condition], type_: &str, o: &Outcome, generation: Option<i64>) -> Condition {
    let status = match o.state {
        State::Ready => "True",
        State::Unknown => "Unknown",
        State::Pending | State::Failed => "False",
    };
    condition(old, type_, status, &o.reason, &o.message, generation)
}

fn keep_or_unknown(
    old: &[Condition],
    type_: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    match old.iter().find(|c| c.type_ == type_) {
        Some(c) => Condition {
            observed_generation: generation,
            ..c.clone()
        },
        None => condition(old, type_, "Unknown", reason, message, generation),
    }
}

/// The next status, given the previous one and this reconcile's report.
pub fn next(old: &Status, r: &Report) -> Status {
    let c = &old.conditions;
    let g = r.generation;
    let healthy = match &r.healthy {
        // Checks that cannot run say so without claiming the store is down (State::Unknown).
        Some(o) => to_condition(c, "Healthy", o, g),
        None => keep_or_unknown(c, "Healthy", "NotChecked", "no health check has run yet", g),
    };
    let injected = match &r.injected {
        Some(o) => to_condition(c, "Injected", o, g),
        None => keep_or_unknown(
            c,
            "Injected",
            "NotEvaluated",
            "injection has not been evaluated yet",
            g,
        ),
    };
    let delivered = match &r.config_delivered {
        Some(o) => to_condition(c, "ConfigDelivered", o, g),
        None => keep_or_unknown(
            c,
            "ConfigDelivered",
            "NotEvaluated",
            "no configuration has been built yet",
            g,
        ),
    };
    let mut conditions = vec![
        to_condition(c, "Ready", &r.ready, g),
        to_condition(c, "Provisioned", &r.provisioned, g),
        healthy,
        injected,
        delivered,
    ];
    // Keep conditions of types this version does not manage.
    conditions.extend(
        c.iter()
            .filter(|x| {
                ![
                    "Ready",
                    "Provisioned",
                    "Healthy",
                    "Injected",
                    "ConfigDelivered",
                ]
                .contains(&x.type_.as_str())
            })
            .cloned(),
    );
    let published = r.ready.state != State::Failed;
    let (uri_ref, binding) = uri_secret_ref(&r.secret);
    Status {
        observed_generation: g,
        backend: r.kind.clone(),
        mode: Some(r.mode.into()),
        conditions,
        uri_secret_ref: published
            .then_some(uri_ref)
            .or_else(|| old.uri_secret_ref.clone()),
        binding: published.then_some(binding).or_else(|| old.binding.clone()),
        last_health_check: r
            .last_health_check
            .clone()
            .or_else(|| old.last_health_check.clone()),
        injected_workloads: r
            .injection
            .as_ref()
            .map(|(n, _)| *n)
            .or(old.injected_workloads),
        uri_checksum: r.uri_checksum.clone().or_else(|| old.uri_checksum.clone()),
        tls_mounts: r
            .tls_mounts
            .clone()
            .unwrap_or_else(|| old.tls_mounts.clone()),
        client_env: r
            .client_env
            .clone()
            .unwrap_or_else(|| old.client_env.clone()),
        missed_pods: r
            .injection
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| old.missed_pods.clone()),
    }
}

/// Whether a condition changed status or reason (an Event is due).
pub fn condition_changed(old: &Status, new: &Status, type_: &str) -> bool {
    let get = |s: &Status| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    get(old) != get(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ready: Outcome, generation: i64) -> Report {
        Report {
            generation: Some(generation),
            kind: Some("redis".into()),
            mode: "external",
            ready,
            provisioned: Outcome {
                state: State::Ready,
                reason: "External".into(),
                message: "x".into(),
            },
            healthy: None,
            injected: None,
            config_delivered: None,
            secret: "s".into(),
            uri_checksum: None,
            tls_mounts: None,
            client_env: None,
            injection: None,
            last_health_check: None,
        }
    }

    #[test]
    fn config_delivered_says_whether_settings_reach_workers() {
        let spec = |v: serde_json::Value| -> crate::api::CeleryResultBackendSpec {
            serde_json::from_value(v).unwrap()
        };
        let build = |s: &crate::api::CeleryResultBackendSpec| {
            crate::uri::build(s, &Default::default()).unwrap()
        };
        let plain = spec(serde_json::json!({"redis": {"external": {"host": "r"}}}));
        assert_eq!(
            config_delivered(&plain, &build(&plain)).reason,
            "UriCarriesAll"
        );
        // The issue's input: result_expires computed, but only the URI is injected.
        let expires = spec(
            serde_json::json!({"redis": {"external": {"host": "redis.example.internal", "db": 2}},
            "resultExpires": "10m", "injection": {"workloadSelector": {"matchLabels": {"app": "game-worker"}}}}),
        );
        let o = config_delivered(&expires, &build(&expires));
        assert_eq!(
            (o.state, o.reason.as_str()),
            (State::Failed, "SettingsNotDelivered")
        );
        assert!(o.message.contains("result_expires"), "{}", o.message);
        let module = spec(serde_json::json!({"redis": {"external": {"host": "r"}},
            "resultExpires": "10m", "injection": {"configModule": true}}));
        assert_eq!(
            config_delivered(&module, &build(&module)).reason,
            "ConfigModuleMounted"
        );
        // A client-library variable (python-consul's CONSUL_HTTP_TOKEN) is injected from the URI
        // Secret by reference: with nothing else outside the URI, everything is delivered.
        let consul = spec(serde_json::json!({"consul": {"external": {"host": "c",
            "tokenSecretRef": {"name": "t", "key": "token"}}},
            "injection": {"workloadSelector": {"matchLabels": {"app": "w"}}}}));
        let mut secrets = crate::uri::SecretValues::new();
        secrets
            .entry("t".into())
            .or_default()
            .insert("token".into(), "s3cr3t-token".into());
        let cfg = crate::uri::build(&consul, &secrets).unwrap();
        let c = config_delivered(&consul, &cfg);
        assert_eq!(c.reason, "UriCarriesAll", "{}", c.message);
        assert!(
            c.message.contains("CONSUL_HTTP_TOKEN") && !c.message.contains("s3cr3t"),
            "{}",
            c.message
        );
        assert!(
            !cfg.warnings.iter().any(|w| w.contains("CONSUL_HTTP_TOKEN")),
            "{:?}",
            cfg.warnings
        );
        assert_eq!(
            crate::inject::client_env(&consul, &cfg),
            ["CONSUL_HTTP_TOKEN"]
        );
        // With the config module the module sets it (a worker's own value wins): not injected.
        let moduled = spec(serde_json::json!({"consul": {"external": {"host": "c",
            "tokenSecretRef": {"name": "t", "key": "token"}}},
            "injection": {"configModule": true}}));
        let cfg = crate::uri::build(&moduled, &secrets).unwrap();
        assert!(crate::inject::client_env(&moduled, &cfg).is_empty());
        let m = config_delivered(&moduled, &cfg);
        assert_eq!(m.reason, "ConfigModuleMounted");
        assert!(
            m.message.contains("environment variable CONSUL_HTTP_TOKEN"),
            "{}",
            m.message
        );
        // Nothing opts in: not a warning.
        let no_opt_in = Outcome::failed("NoOptIn", "x".into());
        let quiet = unless_no_opt_in(o.clone(), Some(&no_opt_in));
        assert_eq!(
            (quiet.state, quiet.reason.as_str()),
            (State::Unknown, "NoOptIn")
        );
        let injected = Outcome::ready("s", &[]);
        assert_eq!(unless_no_opt_in(o.clone(), Some(&injected)), o);
    }

    #[test]
    fn transition_time_moves_only_on_transition() {
        let first = next(&Status::default(), &report(Outcome::ready("s", &[]), 1));
        let ready = |s: &Status| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = next(&first, &report(Outcome::ready("s", &[]), 2));
        assert_eq!(
            ready(&first).last_transition_time,
            ready(&again).last_transition_time
        );
        assert_eq!(ready(&again).observed_generation, Some(2));
        assert!(!condition_changed(&first, &again, "Ready"));
        let failed = next(
            &again,
            &report(Outcome::failed("SecretNotFound", "x".into()), 2),
        );
        assert_ne!(
            ready(&failed).last_transition_time,
            ready(&again).last_transition_time
        );
        assert!(condition_changed(&again, &failed, "Ready"));
        assert_eq!(
            failed.uri_secret_ref, first.uri_secret_ref,
            "the last good Secret stays referenced"
        );
    }

    #[test]
    fn unowned_conditions_are_kept_and_unknown_only_at_first() {
        let mut first = next(&Status::default(), &report(Outcome::ready("s", &[]), 1));
        let healthy = first
            .conditions
            .iter()
            .find(|c| c.type_ == "Healthy")
            .unwrap();
        assert_eq!(healthy.status, "Unknown");
        first.conditions.retain(|c| c.type_ != "Healthy");
        first.conditions.push(Condition {
            type_: "Healthy".into(),
            status: "True".into(),
            reason: "Ping".into(),
            message: "ok".into(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        });
        let again = next(&first, &report(Outcome::ready("s", &[]), 2));
        let healthy = again
            .conditions
            .iter()
            .find(|c| c.type_ == "Healthy")
            .unwrap();
        assert_eq!(
            (healthy.status.as_str(), healthy.observed_generation),
            ("True", Some(2))
        );
    }
}
