//! Injection on the real control plane with kube-controller-manager: workload pod templates get
//! the URI by reference and roll only on real changes; the Pod webhook (TLS, self-managed CA)
//! injects bare Pods; a webhook outage is reported; opting out removes exactly the injection.

mod support;

use support::stores::free_port;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{condition, get, wait_until, Operator, WebhookConfigGuard};

const SECRET: &str = "orders-redis-celery-result-backend";

fn apply_yaml(ns: &str, yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl(&["apply", "-n", ns, "-f", f.to_str().unwrap()])
}

fn json_of(ns: &str, what: &[&str]) -> Option<Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&get(ns, &args)).ok()
}

fn deployment(name: &str, opt_in: bool) -> String {
    let label = if opt_in {
        "\n  labels: {celery.dev/result-backend: orders-redis}"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}{label}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - {{name: worker, image: registry.invalid/celery-worker:1, command: [celery, worker], env: [{{name: LOG_LEVEL, value: info}}]}}\n"
    )
}

fn bare_pod(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{celery.dev/result-backend: orders-redis}}\n  annotations: {{{annotations}}}\nspec:\n  containers:\n  - {{name: worker, image: registry.invalid/celery-worker:1}}\n"
    )
}

/// Whether a container spec (JSON) gets CELERY_RESULT_BACKEND from the URI Secret.
fn has_uri_env(container: &Value) -> bool {
    container["env"].as_array().is_some_and(|env| {
        env.iter().any(|e| {
            e["name"] == "CELERY_RESULT_BACKEND"
                && e["valueFrom"]["secretKeyRef"]["name"] == SECRET
                && e["valueFrom"]["secretKeyRef"]["key"] == "CELERY_RESULT_BACKEND"
        })
    })
}

fn pods_of(ns: &str, app: &str) -> Vec<Value> {
    json_of(ns, &["pods", "-l", &format!("app={app}")])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn replicasets(ns: &str, app: &str) -> usize {
    json_of(ns, &["replicasets", "-l", &format!("app={app}")])
        .and_then(|v| v["items"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn template_checksum(ns: &str, deploy: &str) -> String {
    get(
        ns,
        &[
            "get",
            "deployment",
            deploy,
            "-o",
            "jsonpath={.spec.template.metadata.annotations.checksum\\.celery\\.dev/orders-redis}",
        ],
    )
}

#[test]
fn workloads_and_pods_get_the_uri_by_reference() {
    install_crds();
    let ns = TestNamespace::blocking("inject");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (flags, _guard) = support::operator::local_webhook(&n);
    let config_name = _guard.0.clone();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut op = Operator::start_with(tmp.path(), &n, "op1.log", &flags);
    support::operator::apply_redis_example(&n, 30);
    // Nothing opts in yet.
    assert!(condition(&n, "orders-redis", "Injected").starts_with("False|NoOptIn|"));
    // The leader issued a certificate and registered the webhook with its CA.
    let mwc = wait_until("MutatingWebhookConfiguration", 30, || {
        serde_json::from_slice::<Value>(
            &kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &config_name,
                "-o",
                "json",
            ])
            .stdout,
        )
        .ok()
    });
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert!(hook["clientConfig"]["caBundle"]
        .as_str()
        .is_some_and(|c| c.len() > 100));
    assert_eq!(
        hook["matchConditions"][0]["expression"],
        cbo::webhook::MATCH_CONDITION
    );

    // 1. A labelled Deployment: the ReplicaSet controller's Pods carry the env from the Secret.
    assert!(apply_yaml(&n, &deployment("worker", true)).status.success());
    assert!(apply_yaml(&n, &deployment("plain", false)).status.success());
    let pod = wait_until("an injected worker Pod", 60, || {
        pods_of(&n, "worker")
            .into_iter()
            .find(|p| has_uri_env(&p["spec"]["containers"][0]))
    });
    let env = &pod["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "LOG_LEVEL"),
        "the user's env stays: {env}"
    );
    assert!(
        !serde_json::to_string(env).unwrap().contains("redis://"),
        "never the URI in plain text"
    );
    std::thread::sleep(Duration::from_secs(2));
    for p in pods_of(&n, "plain") {
        assert!(
            !has_uri_env(&p["spec"]["containers"][0]),
            "an unlabelled Deployment is untouched"
        );
    }
    let d = json_of(&n, &["deployment", "worker"]).unwrap();
    let record: Value = serde_json::from_str(
        d["metadata"]["annotations"]["injected.celery.dev/orders-redis"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["envVar"], "CELERY_RESULT_BACKEND");
    // The owner's template is untouched but for one annotation: the webhook injects the Pods.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0],
        serde_json::json!({"name": "worker", "image": "registry.invalid/celery-worker:1", "command": ["celery", "worker"], "env": [{"name": "LOG_LEVEL", "value": "info"}], "imagePullPolicy": "IfNotPresent", "resources": {}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})
    );
    wait_until("Injected=True", 30, || {
        condition(&n, "orders-redis", "Injected")
            .starts_with("True|Injected|")
            .then_some(())
    });
    assert_eq!(
        get(
            &n,
            &[
                "get",
                "crb",
                "orders-redis",
                "-o",
                "jsonpath={.status.injectedWorkloads}"
            ]
        ),
        "1"
    );

    // 2. Rotation rolls the workers (new checksum, new ReplicaSet) ...
    let sum1 = template_checksum(&n, "worker");
    let rs1 = replicasets(&n, "worker");
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "secret",
        "redis-auth",
        "-p",
        r#"{"stringData":{"password":"rotated pw/2"}}"#,
    ]);
    wait_until("new checksum", 30, || {
        let s = template_checksum(&n, "worker");
        (!s.is_empty() && s != sum1).then_some(())
    });
    wait_until("a new ReplicaSet", 30, || {
        (replicasets(&n, "worker") == rs1 + 1).then_some(())
    });
    // ... and an operator restart rolls nothing.
    let sum2 = template_checksum(&n, "worker");
    let gen = get(
        &n,
        &[
            "get",
            "deployment",
            "worker",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    );
    assert!(op.terminate().success());
    let mut op = Operator::start_with(tmp.path(), &n, "op2.log", &flags);
    wait_until("the restarted operator leads", 30, || {
        op.log().contains("became leader").then_some(())
    });
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(template_checksum(&n, "worker"), sum2);
    assert_eq!(
        replicasets(&n, "worker"),
        rs1 + 1,
        "a restart must not roll workers"
    );
    assert_eq!(
        get(
            &n,
            &[
                "get",
                "deployment",
                "worker",
                "-o",
                "jsonpath={.metadata.generation}"
            ]
        ),
        gen
    );

    // 3. A bare labelled Pod is injected by the webhook; one naming another namespace is not.
    wait_until("default ServiceAccount", 30, || {
        json_of(&n, &["serviceaccount", "default"]).map(|_| ())
    });
    let t0 = Instant::now();
    let out = wait_until("bare Pod admitted", 30, || {
        let o = apply_yaml(&n, &bare_pod("bare", ""));
        o.status.success().then_some(o)
    });
    let _ = out;
    let bare = json_of(&n, &["pod", "bare"]).unwrap();
    assert!(
        has_uri_env(&bare["spec"]["containers"][0]),
        "webhook injection: {}",
        bare["spec"]
    );
    assert!(bare["metadata"]["annotations"]["injected.celery.dev/orders-redis"].is_string());
    eprintln!(
        "MEASURE bare Pod create through the webhook: {} ms",
        t0.elapsed().as_millis()
    );
    // 3a. A client-library variable (python-consul's CONSUL_HTTP_TOKEN) reaches the Pod by
    // reference to the URI Secret, with no config module: listed in the status, never a value.
    assert!(apply_yaml(
        &n,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: consul-acl}\nstringData: {token: s3cr3t-acl-token}\n---\napiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: kv}\nspec:\n  consul: {external: {host: consul.invalid, tokenSecretRef: {name: consul-acl, key: token}}}\n  injection: {workloadSelector: {matchLabels: {app: none}}}\n",
    )
    .status
    .success());
    wait_until("kv publishes its client variables", 30, || {
        (get(
            &n,
            &["get", "crb", "kv", "-o", "jsonpath={.status.clientEnv}"],
        ) == r#"["CONSUL_HTTP_TOKEN"]"#)
            .then_some(())
    });
    assert!(condition(&n, "kv", "ConfigDelivered").starts_with("True|UriCarriesAll|"));
    assert!(apply_yaml(
        &n,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kv-worker\n  labels: {celery.dev/result-backend: kv}\nspec:\n  containers:\n  - {name: worker, image: registry.invalid/celery-worker:1}\n",
    )
    .status
    .success());
    let kv = json_of(&n, &["pod", "kv-worker"]).unwrap();
    let env = &kv["spec"]["containers"][0]["env"];
    let token = env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "CONSUL_HTTP_TOKEN")
        .unwrap_or_else(|| panic!("CONSUL_HTTP_TOKEN injected: {env}"));
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "kv-celery-result-backend", "key": "CONSUL_HTTP_TOKEN", "optional": true})
    );
    assert!(!env.to_string().contains("s3cr3t"), "never a plain value");
    // The key it names holds the token.
    let held = get(
        &n,
        &[
            "get",
            "secret",
            "kv-celery-result-backend",
            "-o",
            "jsonpath={.data.CONSUL_HTTP_TOKEN}",
        ],
    );
    assert_eq!(
        {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(held)
                .unwrap()
        },
        b"s3cr3t-acl-token"
    );
    kubectl_ok(&["-n", &n, "delete", "pod", "kv-worker", "--wait=false"]);

    let other = apply_yaml(
        &n,
        &bare_pod("elsewhere", "celery.dev/result-backend-namespace: team-b"),
    );
    assert!(other.status.success());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("another namespace"),
        "the webhook explains itself: {stderr}"
    );
    let elsewhere = json_of(&n, &["pod", "elsewhere"]).unwrap();
    assert!(!has_uri_env(&elsewhere["spec"]["containers"][0]));
    kubectl_ok(&["-n", &n, "delete", "pod", "elsewhere", "--wait=false"]);
    wait_until("elsewhere gone", 30, || {
        json_of(&n, &["pod", "elsewhere"]).is_none().then_some(())
    });

    // 3b. Certificates. A serving certificate near its end is re-issued by the same CA; a deleted
    // Secret gets a new CA that alone is trusted, so a Pod is only injected if the webhook
    // reloaded its certificate; a caBundle edited by hand is put back.
    let tls = |key: &str| {
        get(
            &n,
            &[
                "get",
                "secret",
                "celery-backend-operator-webhook-tls",
                "-o",
                &format!("jsonpath={{.data.{}}}", key.replace('.', "\\.")),
            ],
        )
    };
    let ca_bundle = || {
        String::from_utf8_lossy(
            &kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &config_name,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])
            .stdout,
        )
        .to_string()
    };
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let unb64 = |s: &str| {
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
    };
    let (ca0, cert0) = (tls("ca.crt"), tls("tls.crt"));
    assert!(!ca0.is_empty() && !cert0.is_empty());
    let soon = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86400)
        .to_string();
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "secret",
        "celery-backend-operator-webhook-tls",
        "--type=merge",
        "-p",
        &format!(r#"{{"data":{{"tls.not-after":"{}"}}}}"#, b64(&soon)),
    ]);
    let t0 = Instant::now();
    wait_until("serving certificate re-issued", 20, || {
        (tls("tls.crt") != cert0).then_some(())
    });
    eprintln!(
        "MEASURE serving certificate re-issued {} ms after it was found expiring",
        t0.elapsed().as_millis()
    );
    assert_eq!(tls("ca.crt"), ca0, "a serving renewal keeps the CA");
    kubectl_ok(&[
        "-n",
        &n,
        "delete",
        "secret",
        "celery-backend-operator-webhook-tls",
    ]);
    let t0 = Instant::now();
    let ca1 = wait_until("new CA", 20, || {
        let ca = tls("ca.crt");
        (!ca.is_empty() && ca != ca0).then_some(ca)
    });
    wait_until("caBundle trusts only the new CA", 20, || {
        (unb64(&ca_bundle()) == unb64(&ca1)).then_some(())
    });
    let mut tries = 0;
    wait_until(
        "a Pod injected through the reloaded certificate",
        30,
        || {
            tries += 1;
            let name = format!("after-rotation-{tries}");
            let o = apply_yaml(&n, &bare_pod(&name, ""));
            assert!(o.status.success());
            let pod = json_of(&n, &["pod", &name])?;
            has_uri_env(&pod["spec"]["containers"][0]).then_some(())
        },
    );
    eprintln!(
        "MEASURE certificate Secret deleted -> new CA trusted and served in {} ms ({tries} Pod(s))",
        t0.elapsed().as_millis()
    );
    kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        &config_name,
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"{}"}}]"#,
            ca0
        ),
    ]);
    wait_until("caBundle restored", 20, || {
        (unb64(&ca_bundle()) == unb64(&ca1)).then_some(())
    });
    kubectl_ok(&[
        "-n",
        &n,
        "delete",
        "pods",
        "-l",
        "celery.dev/result-backend=orders-redis",
        "--field-selector",
        "metadata.name!=bare",
        "--wait=false",
    ]);

    // 4. Webhook down + Ignore: the Pod is still created; the status names it.
    op.kill();
    let missed = apply_yaml(&n, &bare_pod("missed", ""));
    assert!(
        missed.status.success(),
        "Ignore admits Pods while the webhook is down"
    );
    assert!(!has_uri_env(
        &json_of(&n, &["pod", "missed"]).unwrap()["spec"]["containers"][0]
    ));
    let op = Operator::start_with(tmp.path(), &n, "op3.log", &flags);
    let msg = wait_until("PodsMissed", 60, || {
        let c = condition(&n, "orders-redis", "Injected");
        c.starts_with("False|PodsMissed|").then_some(c)
    });
    assert!(msg.contains("missed"), "{msg}");
    assert_eq!(
        get(
            &n,
            &[
                "get",
                "crb",
                "orders-redis",
                "-o",
                "jsonpath={.status.missedPods}"
            ]
        ),
        r#"["missed"]"#
    );
    kubectl_ok(&["-n", &n, "delete", "pod", "missed", "--wait=false"]);

    // 5. Removing the label removes exactly the injection (env, checksum, record), nothing else.
    kubectl_ok(&[
        "-n",
        &n,
        "label",
        "deployment",
        "worker",
        "celery.dev/result-backend-",
    ]);
    wait_until("injection removed", 30, || {
        let d = json_of(&n, &["deployment", "worker"])?;
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let gone = !has_uri_env(c)
            && d["spec"]["template"]["metadata"]["annotations"]["checksum.celery.dev/orders-redis"]
                .is_null()
            && d["metadata"]["annotations"]["injected.celery.dev/orders-redis"].is_null();
        (gone
            && c["env"][0]["name"] == "LOG_LEVEL"
            && c["image"] == "registry.invalid/celery-worker:1")
            .then_some(())
    });
    // 6. The finalizer is held only while a workload carries the injection; deleting the
    //    backend first releases those workloads, then the backend and its Secret go.
    let finalizers = || {
        get(
            &n,
            &[
                "get",
                "crb",
                "orders-redis",
                "-o",
                "jsonpath={.metadata.finalizers}",
            ],
        )
    };
    wait_until("no finalizer once nothing is injected", 30, || {
        (!finalizers().contains("celery.dev/release-workloads")).then_some(())
    });
    assert!(apply_yaml(&n, &deployment("worker2", true))
        .status
        .success());
    wait_until("worker2 injected, finalizer held", 30, || {
        let d = json_of(&n, &["deployment", "worker2"])?;
        (d["spec"]["template"]["metadata"]["annotations"]["checksum.celery.dev/orders-redis"]
            .is_string()
            && finalizers().contains("celery.dev/release-workloads"))
        .then_some(())
    });
    kubectl_ok(&["-n", &n, "delete", "crb", "orders-redis", "--wait=false"]);
    wait_until("backend deleted after releasing worker2", 30, || {
        json_of(&n, &["crb", "orders-redis"])
            .is_none()
            .then_some(())
    });
    let d = json_of(&n, &["deployment", "worker2"]).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["checksum.celery.dev/orders-redis"]
            .is_null(),
        "released before the backend went: {d}"
    );
    assert!(d["metadata"]["annotations"]["injected.celery.dev/orders-redis"].is_null());
    assert_eq!(c["env"][0]["name"], "LOG_LEVEL");
    wait_until("URI Secret garbage-collected", 60, || {
        json_of(&n, &["secret", SECRET]).is_none().then_some(())
    });
    let events = get(
        &n,
        &["get", "events", "-o", "custom-columns=R:.reason,M:.message"],
    );
    assert!(
        events.contains("WorkloadsReleased") && events.contains("Deployment/worker2"),
        "{events}"
    );
    eprintln!(
        "MEASURE operator resident memory after the injection test: {} KiB",
        op.rss_kib()
    );
}

/// StatefulSets, DaemonSets and CronJobs are injected at their template paths;
/// `injection.overrideExisting` and `injection.configModule` on workloads, and the result checked
/// with a real Celery: the mounted module and the variable agree.
#[test]
fn every_workload_kind_override_existing_and_config_module() {
    install_crds();
    let ns = TestNamespace::blocking("inject-cfg");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    // The Pod webhook injects the Pods (the operator only marks the templates).
    let (flags, _guard) = support::operator::local_webhook(&n);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let op = Operator::start_with(tmp.path(), &n, "op.log", &flags);
    support::operator::apply_redis_example(&n, 30);
    // A worker that sets the variable itself keeps its value by default: nothing is injected.
    let own = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: own\n  labels: {celery.dev/result-backend: orders-redis}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: own}}\n  template:\n    metadata: {labels: {app: own}}\n    spec:\n      containers:\n      - {name: worker, image: registry.invalid/celery-worker:1, env: [{name: CELERY_RESULT_BACKEND, value: 'redis://mine:6379/0'}]}\n";
    assert!(apply_yaml(&n, own).status.success());
    wait_until("own workload skipped", 30, || {
        let c = condition(&n, "orders-redis", "Injected");
        c.contains("set the variable themselves: Deployment/own")
            .then_some(c)
    });
    let d = json_of(&n, &["deployment", "own"]).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"][0]["value"], "redis://mine:6379/0");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["checksum.celery.dev/orders-redis"]
            .is_null()
    );

    // Every workload kind with a pod template is injected, each at its own template path.
    let kinds = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: sts\n  labels: {celery.dev/result-backend: orders-redis}\nspec:\n  replicas: 0\n  serviceName: sts\n  selector: {matchLabels: {app: sts}}\n  template:\n    metadata: {labels: {app: sts}}\n    spec:\n      containers: [{name: worker, image: registry.invalid/celery-worker:1}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\n  labels: {celery.dev/result-backend: orders-redis}\nspec:\n  selector: {matchLabels: {app: ds}}\n  template:\n    metadata: {labels: {app: ds}}\n    spec:\n      containers: [{name: worker, image: registry.invalid/celery-worker:1}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\n  labels: {celery.dev/result-backend: orders-redis}\nspec:\n  schedule: '0 3 * * *'\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: beat, image: registry.invalid/celery-worker:1, env: [{name: CELERY_RESULT_BACKEND, value: 'redis://theirs:6379/1'}]}]\n";
    assert!(apply_yaml(&n, kinds).status.success());
    let template_of = |kind: &str, name: &str| -> Option<Value> {
        let o = json_of(&n, &[kind, name])?;
        Some(if kind == "cronjob" {
            o["spec"]["jobTemplate"]["spec"]["template"].clone()
        } else {
            o["spec"]["template"].clone()
        })
    };
    wait_until("StatefulSet and DaemonSet injected", 30, || {
        ["statefulset/sts", "daemonset/ds"]
            .iter()
            .all(|w| {
                let (k, name) = w.split_once('/').unwrap();
                template_of(k, name).is_some_and(|t| {
                    t["metadata"]["annotations"]["checksum.celery.dev/orders-redis"].is_string()
                })
            })
            .then_some(())
    });
    let cron = template_of("cronjob", "nightly").unwrap();
    assert_eq!(
        cron["spec"]["containers"][0]["env"][0]["value"], "redis://theirs:6379/1",
        "the CronJob keeps its own value until overrideExisting"
    );

    // overrideExisting + configModule: the reference replaces the value, the module is mounted.
    let backend =
        std::fs::read_to_string(format!("{}/examples/redis.yaml", support::cluster::root()))
            .unwrap();
    let patched = backend.replace(
        "  injection:\n",
        "  injection:\n    overrideExisting: true\n    configModule: true\n",
    );
    assert_ne!(
        patched, backend,
        "examples/redis.yaml has an injection block"
    );
    assert!(apply_yaml(&n, &patched).status.success());
    // One write: the CronJob's template gets the checksum and keeps the owner's value; the webhook
    // replaces it in each Pod (a Job started from the CronJob here).
    wait_until("CronJob marked", 30, || {
        let t = template_of("cronjob", "nightly")?;
        t["metadata"]["annotations"]["checksum.celery.dev/orders-redis"]
            .is_string()
            .then_some(())
    });
    let t = template_of("cronjob", "nightly").unwrap();
    assert_eq!(
        t["spec"]["containers"][0]["env"],
        serde_json::json!([{"name": "CELERY_RESULT_BACKEND", "value": "redis://theirs:6379/1"}]),
        "the owner's template keeps the owner's value (its next apply must not be refused)"
    );
    kubectl_ok(&[
        "-n",
        &n,
        "create",
        "job",
        "nightly-1",
        "--from=cronjob/nightly",
    ]);
    let pod = wait_until("the Job's Pod", 30, || {
        json_of(&n, &["pods", "-l", "job-name=nightly-1"])
            .and_then(|v| v["items"].as_array().and_then(|a| a.first().cloned()))
    });
    let d = serde_json::json!({"spec": {"template": {"spec": pod["spec"].clone()}}});
    assert!(
        has_uri_env(&pod["spec"]["containers"][0])
            && pod["spec"]["containers"][0]["env"]
                .as_array()
                .is_some_and(|e| e.iter().all(|e| e["value"] != "redis://theirs:6379/1")),
        "overrideExisting replaced the value in the Pod: {} {}",
        pod["metadata"],
        pod["spec"]
    );
    let tpl = &d["spec"]["template"]["spec"];
    let c = &tpl["containers"][0];
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    assert_eq!(
        env.iter()
            .filter(|e| e["name"] == "CELERY_RESULT_BACKEND")
            .count(),
        1,
        "one variable, the reference: {env:?}"
    );
    // The entry of a JSON list with this name.
    let named = |list: &Value, name: &str| -> Value {
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {list}"))
    };
    let module = named(&c["env"], "CELERY_CONFIG_MODULE")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mount = named(&c["volumeMounts"], "celery-result-backend")["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = named(&tpl["volumes"], "celery-result-backend");
    assert_eq!(vol["secret"]["secretName"], SECRET);
    let key = vol["secret"]["items"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let file = vol["secret"]["items"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();

    // What the kubelet would project, then Celery as the worker would load it.
    let secret_value = |k: &str| {
        support::operator::secret_key(&n, SECRET, k).unwrap_or_else(|| panic!("{SECRET} has {k}"))
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(mount.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&file), secret_value(&key)).unwrap();
    let o = std::process::Command::new(support::python::python())
        .args([
            "-c",
            "import os\nfrom celery import Celery\napp = Celery('w')\napp.config_from_envvar('CELERY_CONFIG_MODULE')\nassert app.conf.result_backend == os.environ['CELERY_RESULT_BACKEND'], app.conf.result_backend\nprint('ok', app.backend.__class__.__name__)",
        ])
        .current_dir(root.path())
        .env("CELERY_CONFIG_MODULE", &module)
        .env("CELERY_RESULT_BACKEND", secret_value("CELERY_RESULT_BACKEND"))
        .env("PYTHONPATH", &dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Celery could not load the mounted module:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok RedisBackend"));
    drop(op);
}

/// `--webhook-certificates external` (cert-manager): the operator serves whatever the Secret
/// holds, reloads it when the issuer renews it, and never issues a certificate or touches the
/// configuration itself.
#[test]
fn externally_issued_certificates_are_served_and_reloaded() {
    use std::collections::BTreeMap;
    install_crds();
    let ns = TestNamespace::blocking("inject-ext");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_name = format!("cbo-test-{n}");
    let _guard = WebhookConfigGuard(config_name.clone());
    let url = format!("https://127.0.0.1:{port}");
    let opts = cbo::webhook::WebhookOptions {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        endpoint: cbo::webhook::Endpoint::Url(url.clone()),
        config_name: config_name.clone(),
        secret_namespace: n.clone(),
        secret_name: "celery-backend-operator-webhook-tls".into(),
        failure_policy: "Ignore".into(),
        own_namespace: "cbo-system".into(),
        only_namespace: Some(n.clone()),
        self_managed: false,
    };
    // What an issuer such as cert-manager writes: ca.crt, tls.crt, tls.key, nothing else.
    let issue = |at: i64| {
        let b = cbo::webhook::certs::next_bundle(
            &BTreeMap::new(),
            &opts.sans(),
            at,
            cbo::webhook::certs::Lifetimes::default(),
        )
        .unwrap()
        .unwrap();
        let keep: BTreeMap<String, String> = ["ca.crt", "tls.crt", "tls.key"]
            .iter()
            .map(|k| (k.to_string(), b[*k].clone()))
            .collect();
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "celery-backend-operator-webhook-tls", "namespace": n},
            "type": "kubernetes.io/tls", "stringData": keep});
        // The identity the operator below takes by default: `<lease namespace>.<lease name>`.
        let me = cbo::installation::Identity {
            id: format!("{n}.celery-backend-operator"),
            scope: cbo::installation::Scope::Namespace(n.clone()),
            record: config_name.clone(),
        };
        let config =
            cbo::webhook::webhook_configuration(&opts, &me, &keep["ca.crt"], &Default::default());
        (secret, config)
    };
    let install = |secret: &Value, config: &Value| {
        for (i, doc) in [secret, config].iter().enumerate() {
            let f = tmp.path().join(format!("ext-{i}.json"));
            std::fs::write(&f, doc.to_string()).unwrap();
            kubectl_ok(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                f.to_str().unwrap(),
            ]);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (secret, config) = issue(now);
    install(&secret, &config);
    let op = Operator::start_with(
        tmp.path(),
        &n,
        "op.log",
        &[
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--webhook-url",
            &url,
            "--webhook-config-name",
            &config_name,
            "--webhook-certificates",
            "external",
        ],
    );
    support::operator::apply_redis_example(&n, 30);
    wait_until("default ServiceAccount", 30, || {
        json_of(&n, &["serviceaccount", "default"]).map(|_| ())
    });
    let injected = |prefix: &str| {
        let mut tries = 0;
        wait_until(&format!("{prefix}: a Pod injected"), 30, || {
            tries += 1;
            let name = format!("{prefix}-{tries}");
            assert!(apply_yaml(&n, &bare_pod(&name, "")).status.success());
            let pod = json_of(&n, &["pod", &name])?;
            has_uri_env(&pod["spec"]["containers"][0]).then_some(())
        });
    };
    injected("first");
    // The issuer renews with a new CA (and updates the caBundle, as cert-manager's injector does):
    // only the new CA is trusted, so injection resumes only if the operator reloaded.
    let (secret2, config2) = issue(now + 1);
    install(&secret2, &config2);
    injected("renewed");
    // Nothing was issued or rewritten by the operator.
    let live = json_of(&n, &["secret", "celery-backend-operator-webhook-tls"]).unwrap();
    let keys: Vec<&String> = live["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["ca.crt", "tls.crt", "tls.key"],
        "the Secret is the issuer's"
    );
    let mwc: Value = serde_json::from_slice(
        &kubectl(&[
            "get",
            "mutatingwebhookconfiguration",
            &config_name,
            "-o",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(
        mwc["webhooks"][0]["clientConfig"]["caBundle"],
        config2["webhooks"][0]["clientConfig"]["caBundle"]
    );
    assert!(!op.log().contains("issued the webhook serving certificate"));
    assert!(op.log().contains("webhook certificate reloaded"));
}
