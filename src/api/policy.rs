//! The cluster-scoped `CeleryResultCleanupPolicy`: which backends to clean, how old results may
//! get, when to run, and how gently.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DURATION_PATTERN;

/// One comma-separated cron field whose values match `$v` (a regex for the field's range):
/// each item is `*` or `v` or `v-v`, optionally with `/step` where step is at least 1.
macro_rules! cron_field {
    ($v:expr) => {
        concat!(
            "(\\*|",
            $v,
            "(-",
            $v,
            ")?)(/0*[1-9][0-9]*)?(,(\\*|",
            $v,
            "(-",
            $v,
            ")?)(/0*[1-9][0-9]*)?)*"
        )
    };
}

/// See [`SCHEDULE_PATTERN`] (a macro so that the CEL rule can embed it with `concat!`).
macro_rules! schedule_pattern {
    () => {
        concat!(
            "^(@(yearly|annually|monthly|weekly|daily|hourly)|( *(",
            cron_field!("[0-5]?[0-9]"),
            ") +)?",
            cron_field!("[0-5]?[0-9]"),
            " +",
            cron_field!("(2[0-3]|[01]?[0-9])"),
            " +(\\?|L|",
            cron_field!("(3[01]|[12][0-9]|0?[1-9])"),
            ") +",
            cron_field!("(1[0-2]|0?[1-9]|(?i:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC))"),
            " +(\\?|",
            cron_field!("([0-7]|(?i:SUN|MON|TUE|WED|THU|FRI|SAT))"),
            ") *)$"
        )
    };
}

/// The schedule grammar admission accepts (a subset of what croner, the Rust scheduler, parses;
/// `schedule_admission_is_a_subset_of_croner` checks a table of both): `@yearly`, `@annually`,
/// `@monthly`, `@weekly`, `@daily`, `@hourly`, or 5 fields (minute 0-59, hour 0-23, day of month
/// 1-31 or `?`/`L`, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT or `?`), optionally preceded
/// by seconds 0-59, separated by spaces. What admission cannot see (a range `a-b` with a > b) the
/// controller reports as Ready=False naming spec.schedule.
pub const SCHEDULE_PATTERN: &str = schedule_pattern!();

/// See [`LABEL_KEY_PATTERN`].
macro_rules! label_key_pattern {
    () => {
        "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    };
}
/// See [`LABEL_VALUE_PATTERN`].
macro_rules! label_value_pattern {
    () => {
        "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
    };
}
/// A label key: a qualified name, an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters. Source: k8s.io/apimachinery `validation.IsQualifiedName`.
pub const LABEL_KEY_PATTERN: &str = label_key_pattern!();
/// A label value: empty, or at most 63 characters. Source: `validation.IsValidLabelValue`.
pub const LABEL_VALUE_PATTERN: &str = label_value_pattern!();

/// Schema of a policy's label selectors: the shape of `metav1.LabelSelector` with the rules
/// `metav1.LabelSelectorAsSelector` applies (operators In, NotIn, Exists, DoesNotExist; values
/// exactly for In and NotIn; keys qualified names, values label values) and bounds (32 labels,
/// 16 expressions of 64 values) that keep the CEL cost within the API server's budget.
fn selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "matchLabels": {
                "type": "object",
                "description": "Labels that must all be present with these values (key: qualified name; value: at most 63 of A-Z a-z 0-9 - _ .).",
                "maxProperties": 32,
                "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
                "x-kubernetes-validations": [{
                    "rule": concat!("self.all(k, size(k) <= 317 && k.matches(r'", label_key_pattern!(), "'))"),
                    "message": "label keys are qualified names: an optional DNS-subdomain prefix and '/', then at most 63 of A-Z a-z 0-9 - _ . beginning and ending alphanumeric"
                }]
            },
            "matchExpressions": {
                "type": "array",
                "description": "Requirements that must all hold.",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "description": "The label key (a qualified name).", "maxLength": 317, "pattern": LABEL_KEY_PATTERN},
                        "operator": {"type": "string", "description": "In, NotIn, Exists or DoesNotExist.", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "type": "array",
                            "description": "Values for In and NotIn (at least one); empty or absent for Exists and DoesNotExist.",
                            "maxItems": 64,
                            "items": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}
                        }
                    },
                    "x-kubernetes-validations": [{
                        "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                        "message": "In and NotIn need at least one value; Exists and DoesNotExist take none"
                    }]
                }
            }
        }
    })
}

const SCHEDULE_RULE: &str = concat!("self.matches(r'", schedule_pattern!(), "')");

/// Result-expiry cleanup for the CeleryResultBackends it selects. Runs in the operator (leader) on
/// the schedule, for stores that do not expire results themselves. Overlapping policies each run
/// on their own schedule; since a cleanup only deletes what is older than its retention, the
/// shortest retention among the policies that select a backend (or the backend's resultExpires,
/// when shorter still) is what effectively applies.
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
    #[schemars(schema_with = "selector_schema")]
    pub backend_selector: Option<LabelSelector>,
    /// Labels of the namespaces whose backends are cleaned; an empty selector selects all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "selector_schema")]
    pub namespace_selector: Option<LabelSelector>,
    /// Results that completed longer ago than this are deleted (a duration such as 168h or 7d); a selected backend whose resultExpires is shorter (and not 0) is cleaned by its resultExpires instead.
    #[schemars(length(min = 1, max = 64), regex(pattern = DURATION_PATTERN))]
    pub retention: String,
    /// When to run, as a cron expression in UTC: 5 fields (minute 0-59, hour 0-23, day of month
    /// 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT, 0 and 7 both Sunday), or 6 with
    /// leading seconds 0-59; each field `*`, a value, a range `a-b` or a list, with optional
    /// `/step` (step at least 1). Also @hourly, @daily, @weekly, @monthly, @yearly.
    #[schemars(length(min = 6, max = 128))]
    #[x_kube(validation = Rule::new(SCHEDULE_RULE).message("not a cron expression Kubernetes can admit: 5 fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT) or 6 with leading seconds 0-59; steps (*/n) must be at least 1"))]
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

/// Parse a policy's schedule (5 fields, or 6 with leading seconds; UTC). croner's default also
/// takes a 7th field (years), which the CRD's description and admission pattern
/// ([`SCHEDULE_PATTERN`]) do not: refused here too. Errors name spec.schedule.
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| format!("spec.schedule {s:?} is not a cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    /// Every `tests/invalid/*.yaml` policy whose schedule the API server refuses is refused by
    /// `parse_schedule` too (the policy controller's own check), so the two cannot drift apart.
    #[test]
    fn every_invalid_schedule_manifest_is_refused_by_parse_schedule() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/invalid");
        let mut checked = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            if !text.contains("kind: CeleryResultCleanupPolicy")
                || !text.contains("# expect: spec.schedule")
            {
                continue;
            }
            let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
            let schedule = doc["spec"]["schedule"].as_str().unwrap_or_default();
            assert!(
                parse_schedule(schedule).is_err(),
                "{schedule:?} is refused by the API server but accepted by parse_schedule"
            );
            checked += 1;
        }
        assert!(checked >= 8, "only {checked} schedule manifests");
    }

    use super::*;

    /// Schedules admission accepts must parse in croner (what the controller runs); schedules
    /// croner refuses must be refused by admission, except those listed as runtime-only.
    #[test]
    fn schedule_admission_is_a_subset_of_croner() {
        let re = regex::Regex::new(SCHEDULE_PATTERN).unwrap();
        let accepted = [
            "0 3 * * *",
            "*/5 * * * * *",
            "0 0 1 1 *",
            "59 23 31 12 7",
            "0 0 * * 0",
            "0-30/10 1,2,3 1-15 JAN-MAR MON-FRI",
            "0 0 * * sun",
            "0 0 L * ?",
            "30 2 ? * 1-5",
            "@daily",
            "@hourly",
            "0 */2 * * *",
            "5 4 * * *",
            "0 0 0 1 1 *",
        ];
        for s in accepted {
            assert!(re.is_match(s), "admission refuses {s:?}");
            assert!(
                parse_schedule(s).is_ok(),
                "croner refuses {s:?} which admission accepts"
            );
        }
        let refused = [
            "61 3 * * *",
            "0 24 * * *",
            "0 0 0 * *",
            "0 0 32 * *",
            "0 0 * 13 *",
            "0 0 * 0 *",
            "0 0 * * 8",
            "*/0 * * * *",
            "0 0 * * * * *",
            "0 0 * *",
            "60 0 0 * * *",
            "not a cron",
            "0 3 * * * ;",
            "0 0 * JANUARY *",
        ];
        for s in refused {
            assert!(!re.is_match(s), "admission accepts {s:?}");
            assert!(parse_schedule(s).is_err(), "the controller accepts {s:?}");
        }
        // Runtime only (admission cannot compare the two ends of a range): Ready=False.
        assert!(re.is_match("0 5-1 * * *"));
        assert!(parse_schedule("0 5-1 * * *").is_err());
    }

    #[test]
    fn label_patterns_follow_apimachinery() {
        let key = regex::Regex::new(LABEL_KEY_PATTERN).unwrap();
        let value = regex::Regex::new(LABEL_VALUE_PATTERN).unwrap();
        for k in ["app", "celery.dev/backend", "a.b-c/D_e.f", &"x".repeat(63)] {
            assert!(key.is_match(k), "{k}");
        }
        for k in [
            "",
            "-app",
            "a/b/c",
            "Celery.dev/x",
            "app_",
            &"x".repeat(64),
            "a b",
        ] {
            assert!(!key.is_match(k), "{k}");
        }
        for v in ["", "v1", "a.b_c-d", &"x".repeat(63)] {
            assert!(value.is_match(v), "{v}");
        }
        for v in ["-v", "v-", &"x".repeat(64), "a/b"] {
            assert!(!value.is_match(v), "{v}");
        }
    }
}
