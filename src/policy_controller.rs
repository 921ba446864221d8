//! The CeleryResultCleanupPolicy controller (leader only): on each policy's cron schedule, purge the
//! results older than its retention from every selected backend whose store does not expire them
//! itself, batched and rate-limited, and report per-backend counts in the policy's status. A
//! controller of its own: woken by the policy's changes, requeued at its next run time.
//!
//! Runs happen in the operator rather than in CronJobs: the operator already holds the backends'
//! credentials (including generated ones), needs no image pull or per-namespace Job RBAC, and
//! reports results in one place. Policies run concurrently; one slow store delays only the policy
//! that is cleaning it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{tz::TimeZone, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::{controller::Action, watcher, Controller};
use kube::Resource as _;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::footprint::FIELD_MANAGER;
use crate::api::{
    parse_duration, BackendCleanup, CeleryResultBackend, CeleryResultCleanupPolicy,
    CleanupPolicyStatus,
};
use crate::inject::selector_matches;
use crate::stores::{Expiry, PurgeOptions, Store};

pub use crate::api::policy::parse_schedule;

/// The first run strictly after `after` (Unix seconds).
pub fn next_run(cron: &croner::Cron, after: i64) -> Option<i64> {
    let z = Timestamp::from_second(after).ok()?.to_zoned(TimeZone::UTC);
    cron.find_next_occurrence(&z, false)
        .ok()
        .map(|n| n.timestamp().as_second())
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

fn policy_condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    old: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    crate::conditions::condition(old, type_, status, reason, message, generation)
}

/// Writes a policy's status by server-side apply. `precondition`: the resourceVersion the writer
/// decided on; when set, the write happens only if the policy has not changed since (the API
/// server answers 409 otherwise). An installation that is not yet the status's named writer (the
/// first write, or a take-over) writes conditionally, so two installations deciding at the same
/// moment that they are first cannot both write: the second gets 409, backs off, and at its next
/// run reads the winner's name. Returns whether the status was written.
async fn write_status(
    client: &Client,
    name: &str,
    status: &CleanupPolicyStatus,
    precondition: Option<&str>,
) -> bool {
    let api: Api<CeleryResultCleanupPolicy> = Api::all(client.clone());
    let mut patch = json!({"apiVersion": CeleryResultCleanupPolicy::api_version(&()), "kind": CeleryResultCleanupPolicy::kind(&()), "status": status});
    if let Some(rv) = precondition {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 409 && precondition.is_some() => {
            tracing::info!(policy = %name, "policy changed since this run read it (another installation wrote its status first); not written");
            false
        }
        Err(e) => {
            tracing::warn!(policy = %name, error = %e, "cannot write cleanup policy status");
            false
        }
    }
}

/// Who runs a policy: this installation, its scope (`--namespace`), and the namespaces other
/// installations serve (left to them).
struct Served {
    scope: Option<String>,
    me: crate::installation::Identity,
    claimed: HashSet<String>,
}

/// The age (seconds) beyond which a policy deletes a backend's results: the policy's retention,
/// or the backend's `spec.resultExpires` when that is set, not `0` (never), and shorter: a
/// backend that asks for 1h is not kept for a 168h policy. Celery's own default (1 day) is not
/// applied when resultExpires is omitted. Returns the age and, when resultExpires decided, a note
/// for the status (`BackendCleanup.rule`).
pub fn backend_max_age(retention_secs: f64, result_expires: Option<&str>) -> (f64, Option<String>) {
    match result_expires.map(parse_duration) {
        Some(Ok(e)) if e > 0.0 && e < retention_secs => (
            e,
            Some(format!(
                "results older than the backend's resultExpires ({}) instead of the policy's longer retention",
                result_expires.unwrap_or_default()
            )),
        ),
        _ => (retention_secs, None),
    }
}

/// One run of one policy.
async fn run_policy(
    client: Client,
    metrics: crate::telemetry::Metrics,
    served: Served,
    policy: CeleryResultCleanupPolicy,
    started: i64,
    next: Option<i64>,
) {
    let Served { scope, me, claimed } = served;
    let name = policy.name_any();
    let spec = &policy.spec;
    let retention = parse_duration(&spec.retention).unwrap_or(f64::MAX);
    let cutoff = started - retention as i64;
    let opts = PurgeOptions {
        cutoff_unix: cutoff,
        batch: spec.batch_size.unwrap_or(1000),
        rate: spec.max_deletions_per_second.unwrap_or(0),
        dry_run: spec.dry_run.unwrap_or(false),
    };
    let backends_api: Api<CeleryResultBackend> = crate::installation::scoped(&client, &scope);
    let mut results = vec![];
    let mut error = None;
    let namespaces: Option<HashSet<String>> = match &spec.namespace_selector {
        Some(sel)
            if sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                || sel
                    .match_expressions
                    .as_ref()
                    .is_some_and(|e| !e.is_empty()) =>
        {
            match Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await
            {
                Ok(list) => Some(
                    list.items
                        .into_iter()
                        .filter(|n| selector_matches(sel, &n.labels().clone()))
                        .map(|n| n.name_any())
                        .collect(),
                ),
                Err(e) => {
                    error = Some(format!("cannot list namespaces: {e}"));
                    Some(HashSet::new())
                }
            }
        }
        _ => None,
    };
    match backends_api.list(&ListParams::default()).await {
        Err(e) => error = Some(format!("cannot list CeleryResultBackends: {e}")),
        Ok(list) => {
            for b in list.items {
                let ns = b.namespace().unwrap_or_default();
                // Another installation serves it (and runs the policy there).
                if claimed.contains(&ns) {
                    continue;
                }
                if namespaces.as_ref().is_some_and(|set| !set.contains(&ns)) {
                    continue;
                }
                if let Some(sel) = &spec.backend_selector {
                    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
                    if !empty && !selector_matches(sel, &b.labels().clone()) {
                        continue;
                    }
                }
                let mut r = BackendCleanup {
                    namespace: ns.clone(),
                    name: b.name_any(),
                    ..Default::default()
                };
                match crate::resolve::config(&client, &b).await {
                    Err(e) => {
                        r.failed = true;
                        r.message = Some(e);
                    }
                    Ok(cfg) => {
                        let (age, why) =
                            backend_max_age(retention, b.spec.result_expires.as_deref());
                        let opts = PurgeOptions {
                            cutoff_unix: started - age as i64,
                            ..opts
                        };
                        if let Some(why) = crate::stores::not_visible(&cfg) {
                            r.message = Some(format!("skipped: {why}"));
                            backend_event(&client, &b, &name, &r, opts.dry_run).await;
                            results.push(r);
                            continue;
                        }
                        let store = Store::from_config(&cfg, b.spec.result_expires.is_some());
                        match store.expiry() {
                            Expiry::Native(why) => r.message = Some(format!("skipped: {why}")),
                            Expiry::Unsupported(why) => r.message = Some(format!("skipped: {why}")),
                            Expiry::Purgeable => match bounded_purge(&store, opts).await {
                                Ok(rep) => {
                                    r.deleted_tasks = rep.tasks;
                                    r.deleted_groups = rep.groups;
                                    r.rule = Some(
                                        why.iter()
                                            .cloned()
                                            .chain(Some(rep.rules()))
                                            .filter(|s| !s.is_empty())
                                            .collect::<Vec<_>>()
                                            .join("; "),
                                    )
                                    .filter(|s| !s.is_empty());
                                    r.notes = Some(rep.notes()).filter(|s| !s.is_empty());
                                    tracing::info!(policy = %name, namespace = %ns, backend = %r.name, tasks = rep.tasks, groups = rep.groups, dry_run = opts.dry_run, "cleanup done");
                                }
                                Err(e) => {
                                    r.failed = true;
                                    r.message = Some(e.to_string());
                                }
                            },
                        }
                    }
                }
                backend_event(&client, &b, &name, &r, opts.dry_run).await;
                results.push(r);
            }
        }
    }
    if scope.is_some() && results.is_empty() && error.is_none() {
        // A namespace-scoped operator leaves policies that select nothing it sees to others.
        return;
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.failed)
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    let old = policy.status.clone().unwrap_or_default();
    let (ok, reason, message) = match (&error, failed.is_empty()) {
        (Some(e), _) => (false, "RunFailed", e.clone()),
        (None, false) => (
            false,
            "BackendsFailed",
            format!("cleanup failed for {}", failed.join(", ")),
        ),
        (None, true) => (
            true,
            "RunSucceeded",
            format!(
                "{} backend(s); {} task and {} group results {}",
                results.len(),
                results.iter().map(|r| r.deleted_tasks).sum::<u64>(),
                results.iter().map(|r| r.deleted_groups).sum::<u64>(),
                if opts.dry_run {
                    "would be deleted (dry run)"
                } else {
                    "deleted"
                }
            ),
        ),
    };
    let mut conditions = vec![
        policy_condition(
            "Ready",
            true,
            "Scheduled",
            "schedule and retention are valid",
            policy.metadata.generation,
            &old.conditions,
        ),
        policy_condition(
            "LastRunSucceeded",
            ok,
            reason,
            &message,
            policy.metadata.generation,
            &old.conditions,
        ),
    ];
    conditions.extend(
        old.conditions
            .iter()
            .filter(|c| c.type_ != "Ready" && c.type_ != "LastRunSucceeded")
            .cloned(),
    );
    let policy_label = |kind: &str| crate::telemetry::PolicyKindLabel {
        policy: name.clone(),
        kind: kind.into(),
    };
    // A dry run deletes nothing: its series exist, at zero.
    let counted = |n: u64| if opts.dry_run { 0 } else { n };
    metrics
        .cleanup_deleted
        .get_or_create(&policy_label("task"))
        .inc_by(counted(results.iter().map(|r| r.deleted_tasks).sum()));
    metrics
        .cleanup_deleted
        .get_or_create(&policy_label("group"))
        .inc_by(counted(results.iter().map(|r| r.deleted_groups).sum()));
    metrics
        .cleanup_runs
        .get_or_create(&crate::telemetry::PolicyResultLabel {
            policy: name.clone(),
            result: if ok { "succeeded" } else { "failed" }.into(),
        })
        .inc();
    if ok {
        metrics
            .cleanup_last_success
            .get_or_create(&crate::telemetry::PolicyLabel {
                policy: name.clone(),
            })
            .set(started);
    }
    // One writer per policy status (installation::writes_policy_status); the others' runs show
    // as Events on their backends and in their metrics.
    let writes = match crate::installation::records(&client).await {
        Ok(records) => {
            crate::installation::writes_policy_status(&me, old.installation.as_deref(), &records)
        }
        Err(e) => {
            tracing::warn!(policy = %name, error = %e, "cannot tell which installation writes the policy status");
            old.installation.as_deref().is_none_or(|o| o == me.id)
        }
    };
    if !writes {
        tracing::info!(policy = %name, writer = ?old.installation, backends = results.len(), "run done; another installation writes this policy's status");
        return;
    }
    let status = CleanupPolicyStatus {
        observed_generation: policy.metadata.generation,
        last_run_time: Some(rfc3339(started)),
        next_run_time: next.map(rfc3339),
        backends: results,
        conditions,
        installation: Some(me.id.clone()),
    };
    // Not yet the named writer: only if nobody wrote since this run read the policy.
    let precondition = if old.installation.as_deref() == Some(me.id.as_str()) {
        None
    } else {
        policy.metadata.resource_version.as_deref()
    };
    write_status(&client, &name, &status, precondition).await;
}

/// An Event on the backend for what a run did to it, so `kubectl describe crb` shows cleanup
/// activity: `ResultsCleaned` when something was deleted, `CleanupFailed` (Warning) on failure.
/// Skips and empty runs stay in the policy's status only.
async fn backend_event(
    client: &Client,
    backend: &CeleryResultBackend,
    policy: &str,
    r: &BackendCleanup,
    dry_run: bool,
) {
    use kube::runtime::events::{Event, EventType};
    use kube::Resource;
    let (type_, reason, note) = if r.failed {
        (
            EventType::Warning,
            "CleanupFailed",
            format!(
                "cleanup policy {policy}: {}",
                r.message.clone().unwrap_or_default()
            ),
        )
    } else if !dry_run && r.deleted_tasks + r.deleted_groups > 0 {
        (
            EventType::Normal,
            "ResultsCleaned",
            format!(
                "cleanup policy {policy} deleted {} task and {} group results",
                r.deleted_tasks, r.deleted_groups
            ),
        )
    } else {
        return;
    };
    let recorder = crate::conditions::recorder(client);
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Cleanup".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &backend.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// What the cleanup-policy controller shares between reconciles.
struct PolicyContext {
    client: Client,
    metrics: crate::telemetry::Metrics,
    scope: Option<String>,
    me: crate::installation::Identity,
    claims: crate::installation::Claims,
    /// When this process last started each policy: a run whose status another installation
    /// writes must not start again before that status shows it.
    started: Mutex<HashMap<String, i64>>,
}

type GuardedPolicy = DeserializeGuard<CeleryResultCleanupPolicy>;

/// Leader-only controller of `CeleryResultCleanupPolicy`s: a watch wakes a policy when it changes,
/// and each reconcile either runs a due policy or requeues it at its next run time (no polling).
/// Policies run concurrently; one slow store delays only the policy that is cleaning it.
pub async fn run(
    client: Client,
    metrics: crate::telemetry::Metrics,
    scope: Option<String>,
    me: crate::installation::Identity,
    claims: crate::installation::Claims,
) {
    let ctx = Arc::new(PolicyContext {
        client: client.clone(),
        metrics,
        scope,
        me,
        claims,
        started: Mutex::default(),
    });
    let api: Api<GuardedPolicy> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .run(reconcile_policy, |_, e: &Infallible, _| match *e {}, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "cleanup policy reconcile did not complete");
            }
        })
        .await;
}

/// How long until `due` (Unix seconds), from now, at least zero.
fn until(due: i64) -> Duration {
    let now_ms = Timestamp::now().as_millisecond();
    Duration::from_millis(u64::try_from(due.saturating_mul(1000) - now_ms).unwrap_or(0))
}

async fn reconcile_policy(
    guarded: Arc<GuardedPolicy>,
    ctx: Arc<PolicyContext>,
) -> Result<Action, Infallible> {
    let p = match &guarded.0 {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a CeleryResultCleanupPolicy; left alone until it changes");
            return Ok(Action::await_change());
        }
    };
    let client = &ctx.client;
    let now = Timestamp::now().as_second();
    let name = p.name_any();
    let old = p.status.clone().unwrap_or_default();
    // A schedule that parses but names no date that exists (30 February) would never run and
    // never say so: refused like a schedule that does not parse.
    let schedule = parse_schedule(&p.spec.schedule).and_then(|c| match next_run(&c, now) {
        Some(_) => Ok(c),
        None => Err(format!(
            "spec.schedule {:?} never fires: no date matches it (such as 30 February)",
            p.spec.schedule
        )),
    });
    let cron = match (schedule, parse_duration(&p.spec.retention)) {
        (Ok(c), Ok(_)) => c,
        (Err(e), _) | (_, Err(e)) => {
            let c = policy_condition(
                "Ready",
                false,
                "InvalidSpec",
                &e,
                p.metadata.generation,
                &old.conditions,
            );
            if old
                .conditions
                .iter()
                .find(|x| x.type_ == "Ready")
                .map(|x| (&x.status, &x.message))
                != Some((&c.status, &c.message))
            {
                let status = CleanupPolicyStatus {
                    conditions: vec![c],
                    observed_generation: p.metadata.generation,
                    ..old.clone()
                };
                write_status(client, &name, &status, None).await;
            }
            return Ok(Action::await_change());
        }
    };
    let ran = ctx
        .started
        .lock()
        .ok()
        .and_then(|s| s.get(&name).copied())
        .unwrap_or(i64::MIN);
    let since = old
        .last_run_time
        .as_deref()
        .and_then(parse_time)
        .or_else(|| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or(now)
        .max(ran);
    let Some(due) = next_run(&cron, since) else {
        return Ok(Action::await_change());
    };
    if p.spec.suspend.unwrap_or(false) {
        return Ok(Action::await_change());
    }
    if due > now {
        return Ok(Action::requeue(until(due)));
    }
    if let Ok(mut s) = ctx.started.lock() {
        s.insert(name.clone(), now);
    }
    let next = next_run(&cron, now);
    let served = Served {
        scope: ctx.scope.clone(),
        me: ctx.me.clone(),
        claimed: ctx.claims.borrow().iter().cloned().collect(),
    };
    run_policy(
        client.clone(),
        ctx.metrics.clone(),
        served,
        p.clone(),
        now,
        next,
    )
    .await;
    Ok(next.map_or_else(Action::await_change, |n| Action::requeue(until(n))))
}

/// A purge that cannot hang a policy run: the store must answer a probe within
/// [`PROBE_BEFORE_PURGE`] first (a port that accepts connections but never speaks the protocol
/// would otherwise stall the run, and every backend after it), and the purge itself is stopped
/// after [`PURGE_LIMIT`]. Stopping is safe: a purge deletes only expired results, batch by
/// batch, and the next run carries on.
async fn bounded_purge(
    store: &Store,
    opts: PurgeOptions,
) -> Result<crate::stores::PurgeReport, String> {
    store
        .probe(PROBE_BEFORE_PURGE)
        .await
        .map_err(|e| format!("cleanup not started: {e}"))?;
    match tokio::time::timeout(PURGE_LIMIT, store.purge_expired(opts)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "cleanup ran past {} s and was stopped; the next run carries on",
            PURGE_LIMIT.as_secs()
        )),
    }
}

/// How long a store has to answer before a cleanup starts.
pub const PROBE_BEFORE_PURGE: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest one backend's cleanup may run in a policy run.
pub const PURGE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let daily = parse_schedule("0 3 * * *").unwrap();
        let t0 = parse_time("2026-11-24T02:00:00Z").unwrap();
        assert_eq!(
            next_run(&daily, t0).map(rfc3339).as_deref(),
            Some("2026-11-24T03:00:00Z")
        );
        let every5s = parse_schedule("*/5 * * * * *").unwrap();
        assert_eq!(next_run(&every5s, t0), Some(t0 + 5));
        assert!(parse_schedule("not a cron").is_err());
        // Parses, but no date matches: the reconcile refuses it as InvalidSpec (never fires).
        let never = parse_schedule("0 0 30 2 *").unwrap();
        assert_eq!(next_run(&never, t0), None);
        let leap = parse_schedule("0 0 29 2 *").unwrap();
        assert!(
            next_run(&leap, t0).is_some(),
            "29 February comes every four years"
        );
    }

    /// A 2-hour-old result of a backend with resultExpires 1h is deleted by a 168h policy.
    #[test]
    fn policies_honour_a_shorter_result_expires() {
        let week = 168.0 * 3600.0;
        let (age, why) = backend_max_age(week, Some("1h"));
        assert_eq!(age, 3600.0);
        assert!(why.is_some_and(|w| w.contains("resultExpires (1h)")));
        let started = 1_000_000;
        let two_hours_old = started - 7200;
        assert!(
            two_hours_old < started - age as i64,
            "expired under the 1h rule"
        );
        for (expires, want) in [
            (None, week),
            (Some("0"), week),
            (Some("0s"), week),
            (Some("30d"), week),
            (Some("168h"), week),
            (Some("7d"), week),
            (Some("1d"), 86400.0),
            (Some("not a duration"), week),
        ] {
            assert_eq!(backend_max_age(week, expires).0, want, "{expires:?}");
        }
    }
}
