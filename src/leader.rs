//! Leader election with a coordination.k8s.io Lease, so two or more replicas can run safely.
//!
//! The holder renews every `renew` period; a candidate takes over only after the holder's
//! `renewTime + leaseDurationSeconds` has passed. Updates use the Lease's resourceVersion, so two
//! candidates racing for an expired lease cannot both win (one gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
    /// The installation the Lease belongs to (`crate::installation::INSTALLATION` annotation).
    pub installation: String,
    /// What owns the Lease (the installation's ClusterRole), so uninstalling removes it.
    pub owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

/// What one attempt concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    Following,
}

/// Whether a lease held by someone else has expired at `now` (pure, for tests).
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
        return true;
    }
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renew.0.as_second() + secs < now.as_second()
}

fn spec_for(cfg: &LeaseConfig, prev: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let same_holder = prev.and_then(|p| p.holder_identity.as_deref()) == Some(&cfg.identity);
    let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: if same_holder {
            prev.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same_holder || prev.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One acquire-or-renew round trip.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    annotations: Some(
                        [(
                            crate::installation::INSTALLATION.to_string(),
                            cfg.installation.clone(),
                        )]
                        .into(),
                    ),
                    owner_references: cfg.owner.clone().map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(spec_for(cfg, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let mine = spec.holder_identity.as_deref() == Some(&cfg.identity);
            if !mine && !expired(&spec, now) {
                return Ok(Attempt::Following);
            }
            lease.spec = Some(spec_for(cfg, Some(&spec), now));
            // A Lease from before installation identities becomes this installation's.
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .entry(crate::installation::INSTALLATION.to_string())
                .or_insert_with(|| cfg.installation.clone());
            // replace() sends the resourceVersion we read: a concurrent writer makes this 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following),
                Err(e) => Err(e),
            }
        }
    }
}

/// Give the lease up (on shutdown) so a standby takes over at once.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await {
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() == Some(&cfg.identity) {
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                renew_time: None,
                acquire_time: None,
                ..spec
            });
            if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
                tracing::warn!(error = %e, "cannot release the leader lease");
            } else {
                tracing::info!(lease = %cfg.name, "released the leader lease");
            }
        }
    }
}

/// Keep trying to lead; publish the state on the channel. Once leading, a failure to renew within
/// the lease duration flips the state to false (the caller then stops: it may no longer act).
pub async fn run(api: Api<Lease>, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let leading = match try_acquire(&api, &cfg).await {
            Ok(Attempt::Leading) => {
                last_renewed = Some(tokio::time::Instant::now());
                true
            }
            Ok(Attempt::Following) => false,
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "leader lease round trip failed");
                // Keep leading only while the last renewal is still within the lease duration.
                last_renewed.is_some_and(|t| t.elapsed() < cfg.duration)
            }
        };
        if *tx.borrow() != leading {
            tracing::info!(identity = %cfg.identity, leading, "leadership changed");
            if tx.send(leading).is_err() {
                return;
            }
        }
        tokio::time::sleep(cfg.renew).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str) -> LeaseConfig {
        LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: id.into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            installation: "i".into(),
            owner: None,
        }
    }

    #[test]
    fn expiry_and_transitions() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let a = spec_for(&cfg("a"), None, t0);
        assert_eq!(a.lease_transitions, Some(0));
        assert!(!expired(&a, t0 + Duration::from_secs(10)));
        assert!(expired(&a, t0 + Duration::from_secs(16)));
        let renewed = spec_for(&cfg("a"), Some(&a), t0 + Duration::from_secs(5));
        assert_eq!(renewed.acquire_time, a.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = spec_for(&cfg("b"), Some(&a), t0 + Duration::from_secs(20));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        let released = LeaseSpec {
            holder_identity: None,
            ..a
        };
        assert!(expired(&released, t0));
    }
}
