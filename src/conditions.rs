//! What both controllers report with: status conditions whose `lastTransitionTime` moves only on
//! a real transition, and the Event recorder.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::api::footprint::FIELD_MANAGER;

/// A condition of `type_`, keeping `lastTransitionTime` while the status does not change
/// (Kubernetes API conventions), with `observedGeneration`.
pub(crate) fn condition(
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

/// The Event recorder of this operator (reporting controller: the field manager; instance: the
/// Pod name when the chart sets `POD_NAME`).
pub(crate) fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}
