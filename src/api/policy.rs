//! The cluster-scoped `CeleryResultCleanupPolicy`: which backends to clean, how old results may
//! get, when to run, and how gently.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DURATION_PATTERN;

/// Result-expiry cleanup for the CeleryResultBackends it selects. Runs in the operator (leader) on
/// the schedule, for stores that do not expire results themselves. Overlapping policies each run
/// on their own schedule; since a cleanup only deletes what is older than its retention, the
/// shortest retention among the policies that select a backend is what effectively applies.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "celery.dev",
    version = "v1alpha1",
    kind = "CeleryResultCleanupPolicy",
    plural = "celeryresultcleanuppolicies",
    singular = "celeryresultcleanuppolicy",
    shortname = "crcp",
    category = "celery",
    status = "CleanupPolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule","description":"Cron schedule (UTC)"}"#,
    printcolumn = r#"{"name":"Retention","type":"string","jsonPath":".spec.retention","description":"Results older than this are deleted"}"#,
    printcolumn = r#"{"name":"Last run","type":"date","jsonPath":".status.lastRunTime","description":"When the last run started"}"#,
    printcolumn = r#"{"name":"Next run","type":"string","jsonPath":".status.nextRunTime","description":"When the next run is due"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CleanupPolicySpec {
    /// Labels a CeleryResultBackend must carry to be cleaned; an empty selector selects every backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_selector: Option<LabelSelector>,
    /// Labels of the namespaces whose backends are cleaned; an empty selector selects all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Results that completed longer ago than this are deleted (Go duration, e.g. 168h).
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub retention: String,
    /// When to run, as a cron expression in UTC: 5 fields (minute hour day month weekday) or 6
    /// with leading seconds.
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// Rows or keys deleted per statement or batch (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: Option<u32>,
    /// Upper bound on deletions per second per backend; 0 or unset means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_deletions_per_second: Option<u32>,
    /// Count what would be deleted and report it; delete nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Skip scheduled runs while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// Observed state of a cleanup policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<String>,
    /// When the next run is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<String>,
    /// Per backend outcome of the last run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendCleanup>,
    /// Ready (the schedule and retention are valid) and LastRunSucceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The operator installation that writes this status (its `--installation` identity). With
    /// several installations on one cluster there is one writer: a cluster-wide installation,
    /// else the one named here while it runs. The others report their runs as Events on their
    /// backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
}

/// What the last run did to one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendCleanup {
    /// Namespace of the backend.
    pub namespace: String,
    /// Name of the backend.
    pub name: String,
    /// Task results deleted (or, in a dry run, that would be).
    #[serde(default)]
    pub deleted_tasks: u64,
    /// Group results deleted (or, in a dry run, that would be).
    #[serde(default)]
    pub deleted_groups: u64,
    /// Why nothing was deleted: the store expires results itself, has no cleanup, or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The timestamp and group rule the run applied to this store (e.g. PostgreSQL: date_done is wall time in the database session time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the run kept or skipped and why, e.g. task results without date_done, groups not shown to be expired, chord bookkeeping keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Whether the cleanup of this backend failed.
    #[serde(default)]
    pub failed: bool,
}
