//! Pure status computation: conditions whose lastTransitionTime moves only on a real transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::{uri_secret_ref, Status};

/// What one reconcile concluded.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl Outcome {
    pub fn ready(secret: &str) -> Self {
        Outcome {
            ready: true,
            reason: "UriPublished".into(),
            message: format!("result_backend URI published in Secret {secret}"),
        }
    }
    pub fn failed(reason: &str, message: String) -> Self {
        Outcome {
            ready: false,
            reason: reason.into(),
            message,
        }
    }
}

fn condition(
    old: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let prev = old.iter().find(|c| c.type_ == type_);
    let last = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The next status, given the previous one and this reconcile's outcome.
pub fn next(
    old: &Status,
    generation: Option<i64>,
    kind: Option<String>,
    mode: &str,
    o: &Outcome,
    secret: &str,
) -> Status {
    let c = &old.conditions;
    let ready = if o.ready { "True" } else { "False" };
    let mut conditions = vec![
        condition(c, "Ready", ready, &o.reason, &o.message, generation),
        if mode == "external" {
            condition(
                c,
                "Provisioned",
                "True",
                "External",
                "external store: nothing to provision",
                generation,
            )
        } else {
            condition(
                c,
                "Provisioned",
                "False",
                "ManagedNotImplemented",
                "managed mode is not implemented in this version",
                generation,
            )
        },
        condition(
            c,
            "Healthy",
            "Unknown",
            "HealthChecksNotImplemented",
            "health checks are not implemented in this version",
            generation,
        ),
        condition(
            c,
            "Injected",
            "Unknown",
            "InjectionNotImplemented",
            "injection is not implemented in this version",
            generation,
        ),
    ];
    // Keep conditions of types this version does not manage.
    conditions.extend(
        c.iter()
            .filter(|x| {
                !["Ready", "Provisioned", "Healthy", "Injected"].contains(&x.type_.as_str())
            })
            .cloned(),
    );
    let (uri_ref, binding) = uri_secret_ref(secret);
    Status {
        observed_generation: generation,
        backend: kind,
        mode: Some(mode.into()),
        conditions,
        uri_secret_ref: o
            .ready
            .then_some(uri_ref)
            .or_else(|| old.uri_secret_ref.clone()),
        binding: o.ready.then_some(binding).or_else(|| old.binding.clone()),
        last_health_check: old.last_health_check.clone(),
        injected_workloads: old.injected_workloads,
    }
}

/// Whether the Ready condition changed status (an Event is due).
pub fn ready_changed(old: &Status, new: &Status) -> bool {
    let get = |s: &Status| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    get(old) != get(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_transition() {
        let first = next(
            &Status::default(),
            Some(1),
            Some("redis".into()),
            "external",
            &Outcome::ready("s"),
            "s",
        );
        let ready = |s: &Status| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = next(
            &first,
            Some(2),
            Some("redis".into()),
            "external",
            &Outcome::ready("s"),
            "s",
        );
        assert_eq!(
            ready(&first).last_transition_time,
            ready(&again).last_transition_time
        );
        assert_eq!(ready(&again).observed_generation, Some(2));
        assert!(!ready_changed(&first, &again));
        let failed = next(
            &again,
            Some(2),
            Some("redis".into()),
            "external",
            &Outcome::failed("SecretNotFound", "x".into()),
            "s",
        );
        assert_ne!(
            ready(&failed).last_transition_time,
            ready(&again).last_transition_time
        );
        assert!(ready_changed(&again, &failed));
        assert_eq!(
            failed.uri_secret_ref, first.uri_secret_ref,
            "the last good Secret stays referenced"
        );
    }
}
