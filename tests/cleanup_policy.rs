//! A CeleryResultCleanupPolicy on the real control plane cleans a real PostgreSQL that a real
//! Celery worker filled: on schedule, only the selected backend, only results past retention.

mod support;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::cluster::{install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{get, wait_until, Operator};
use support::python::python;

const BROKER: &str = "amqp://guest:guest@127.0.0.1:25672//";
const PG_PW: &str = "pg p@ss:w/rd#?%";

struct PolicyGuard(Vec<String>);
impl Drop for PolicyGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = kubectl(&[
                "delete",
                "celeryresultcleanuppolicy",
                p,
                "--ignore-not-found",
            ]);
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn apply(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
}

#[test]
fn a_policy_cleans_the_selected_backend_on_schedule() {
    install_crds();
    support::stores::up(&["postgresql", "rabbitmq"]);
    let ns = TestNamespace::blocking("policy");
    let n = ns.name.clone();
    let id = format!("{:08x}", rand::random::<u32>());
    let db = support::stores::pg_database("celery_policy");
    let names = [
        format!("clean-{id}"),
        format!("broken-{id}"),
        format!("dry-{id}"),
        format!("paused-{id}"),
    ];
    let _guard = PolicyGuard(names.to_vec());

    // Two backends: only the labelled one is selected.
    let backend = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pg, namespace: {n}}}\nstringData: {{password: {pw}}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: results, namespace: {n}, labels: {{tier: celery}}}}\nspec:\n  database:\n    external: {{engine: postgresql, host: 127.0.0.1, port: 15432, database: {db}, auth: {{username: celery, passwordSecretRef: {{name: pg, key: password}}}}}}\n---\n\
         apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: other, namespace: {n}}}\nspec:\n  database:\n    external: {{engine: postgresql, host: 127.0.0.1, port: 15432, database: {db}, auth: {{username: celery, passwordSecretRef: {{name: pg, key: password}}}}}}\n",
        pw = serde_json::to_string(PG_PW).unwrap()
    );
    apply(&backend);
    let tmp = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", support::stores::free_port());
    let _op = Operator::start_with(
        tmp.path(),
        &n,
        "operator.log",
        &["--metrics-addr", &metrics_addr],
    );

    // A real worker stores an old batch, then (12 s later) a fresh one.
    let cfg_dir = tempfile::tempdir().unwrap();
    let f = cfg_dir.path().join("b.yaml");
    // The first two documents: the Secret and the selected backend.
    let first_two: Vec<&str> = backend.split("---\n").take(2).collect();
    std::fs::write(&f, first_two.join("---\n")).unwrap();
    let out = Command::new(support::operator::BIN)
        .args(["uri", "-f", f.to_str().unwrap(), "-o", "config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(cfg_dir.path().join("celeryconfig.py"), &out.stdout).unwrap();
    let script = format!(
        "{}/tests/stores/celery_results.py",
        support::cluster::root()
    );
    let d = cfg_dir.path().to_str().unwrap();
    let w = Command::new(python())
        .args([script.as_str(), "write", d, BROKER, "12"])
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let ids: Value = support::python::last_json_line(&w.stdout);
    let mark = ids["mark"].as_f64().unwrap();

    // Run once, 8 s from now; retention puts the cutoff at the mark between the batches. A dry-run
    // policy over the same backend runs 4 s earlier and must count the same results and delete
    // none; a suspended every-second policy must never run.
    let at = |run_at: i64| {
        let t = k8s_openapi::jiff::Timestamp::from_second(run_at)
            .unwrap()
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
        (
            format!("{} {} {} * * *", t.second(), t.minute(), t.hour()),
            format!("{}s", (run_at as f64 - mark).round() as i64),
        )
    };
    let run_at = now().ceil() as i64 + 8;
    let (schedule, retention) = at(run_at);
    let (dry_schedule, dry_retention) = at(run_at - 4);
    apply(&format!(
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {}}}\nspec:\n  schedule: '{dry_schedule}'\n  retention: {dry_retention}\n  dryRun: true\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}\n  backendSelector: {{matchLabels: {{tier: celery}}}}\n",
        names[2]
    ));
    apply(&format!(
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {}}}\nspec:\n  schedule: '* * * * * *'\n  retention: 1s\n  suspend: true\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}\n",
        names[3]
    ));
    apply(&format!(
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {}}}\nspec:\n  schedule: '{schedule}'\n  retention: {retention}\n  batchSize: 3\n  maxDeletionsPerSecond: 1000\n  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {n}}}}}\n  backendSelector: {{matchLabels: {{tier: celery}}}}\n",
        names[0]
    ));
    apply(&format!(
        "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultCleanupPolicy\nmetadata: {{name: {}}}\nspec:\n  schedule: '0 5-1 * * *'\n  retention: 1h\n",
        names[1]
    ));

    let status = wait_until("the policy's run", 40, || {
        let s = kubectl(&["get", "celeryresultcleanuppolicy", &names[0], "-o", "json"]);
        let v: Value = serde_json::from_slice(&s.stdout).ok()?;
        v["status"]["lastRunTime"]
            .is_string()
            .then(|| v["status"].clone())
    });
    let backends = status["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "only the selected backend: {status}");
    assert_eq!(backends[0]["name"], "results");
    assert_eq!(
        backends[0]["deletedTasks"],
        ids["old_tasks"].as_array().unwrap().len(),
        "{status}"
    );
    assert_eq!(backends[0]["deletedGroups"], 1, "{status}");
    let ok = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "LastRunSucceeded")
        .unwrap()
        .clone();
    assert_eq!(ok["status"], "True", "{ok}");
    assert!(status["nextRunTime"].is_string());

    // The backend's Events say what the policy did to it (the dry run says nothing there).
    let events = support::operator::get(
        &n,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=ResultsCleaned",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert_eq!(
        events,
        format!(
            "cleanup policy {} deleted {} task and 1 group results",
            names[0], backends[0]["deletedTasks"]
        ),
        "one Event, on the selected backend"
    );
    // Metrics: what the run deleted, one successful run, and when (for "cleanup stuck" alerts).
    let metrics = support::operator::http_get(&metrics_addr, "/metrics").1;
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(String::from)
            .unwrap_or_else(|| panic!("{name} not in:\n{metrics}"))
    };
    let policy = &names[0];
    assert_eq!(
        sample(&format!(
            "celery_backend_operator_cleanup_deleted_results_total{{policy=\"{policy}\",kind=\"task\"}}"
        )),
        backends[0]["deletedTasks"].to_string()
    );
    assert_eq!(
        sample(&format!(
            "celery_backend_operator_cleanup_runs_total{{policy=\"{policy}\",result=\"succeeded\"}}"
        )),
        "1"
    );
    let last: i64 = sample(&format!(
        "celery_backend_operator_cleanup_last_success_timestamp_seconds{{policy=\"{policy}\"}}"
    ))
    .parse()
    .unwrap();
    assert!((last - run_at).abs() <= 1, "{last} vs {run_at}");
    assert_eq!(
        sample(&format!(
            "celery_backend_operator_cleanup_deleted_results_total{{policy=\"{}\",kind=\"task\"}}",
            names[2]
        )),
        "0",
        "a dry run deletes nothing"
    );

    // The dry run counted exactly what the real run then deleted (so it deleted nothing itself).
    let dry = kubectl(&["get", "celeryresultcleanuppolicy", &names[2], "-o", "json"]);
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let dry = &dry["status"];
    assert_eq!(
        dry["backends"][0]["deletedTasks"], backends[0]["deletedTasks"],
        "{dry}"
    );
    assert_eq!(dry["backends"][0]["deletedGroups"], 1, "{dry}");
    let dry_msg = dry["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "LastRunSucceeded")
        .unwrap()["message"]
        .clone();
    assert!(
        dry_msg
            .as_str()
            .unwrap()
            .contains("would be deleted (dry run)"),
        "{dry_msg}"
    );
    // The suspended policy never ran, though it was due every second.
    let paused = kubectl(&["get", "celeryresultcleanuppolicy", &names[3], "-o", "json"]);
    let paused: Value = serde_json::from_slice(&paused.stdout).unwrap();
    assert!(
        paused["status"]["lastRunTime"].is_null(),
        "{}",
        paused["status"]
    );

    // Old results are gone, fresh ones readable through Celery.
    let r = Command::new(python())
        .args([script.as_str(), "read", d, BROKER, &ids.to_string()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got: Value = support::python::last_json_line(&r.stdout);
    for id in ids["old_tasks"].as_array().unwrap() {
        assert_eq!(got["tasks"][id.as_str().unwrap()][0], "PENDING");
    }
    for id in ids["fresh_tasks"].as_array().unwrap() {
        assert_eq!(got["tasks"][id.as_str().unwrap()][0], "SUCCESS");
    }
    assert!(got["groups"][ids["old_group"].as_str().unwrap()].is_null());
    assert!(got["groups"][ids["fresh_group"].as_str().unwrap()].is_array());

    // A schedule admission cannot refuse (admission checks each field's values, not that a range
    // runs upwards) but croner does is reported on the policy.
    let msg = wait_until("InvalidSpec", 20, || {
        let s = get("default", &["get", "celeryresultcleanuppolicy", &names[1], "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}|{.status.conditions[?(@.type==\"Ready\")].message}"]);
        s.starts_with("InvalidSpec|").then_some(s)
    });
    assert!(
        msg.contains("spec.schedule") && msg.contains("5-1"),
        "{msg}"
    );
}
