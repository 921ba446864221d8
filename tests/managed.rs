//! Managed mode against the real control plane with kube-controller-manager: the operator renders
//! StatefulSet, Services, credentials and the URI Secret for all five stores; the StatefulSet
//! controller creates Pods and claims; Provisioned follows readiness; Retain and Delete do what
//! they say. There is no kubelet, so the test marks the store Pod Ready through its status.

mod support;

use serde_json::Value;
use support::cluster::{install_crds, kubectl, kubectl_ok, TestNamespace};
use support::operator::{condition, get, secret_key, uri_of, wait_until, Operator};

fn apply_yaml(ns: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(&["apply", "-n", ns, "-f", f.to_str().unwrap()]);
}

fn json_of(ns: &str, what: &[&str]) -> Option<Value> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    let out = get(ns, &args);
    serde_json::from_str(&out).ok()
}

/// Mark the store Pod ready (no kubelet here) so the StatefulSet controller reports it ready.
fn make_pod_ready(ns: &str, pod: &str) {
    wait_until(&format!("pod {pod}"), 60, || json_of(ns, &["pod", pod]));
    let patch = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"},{"type":"PodScheduled","status":"True"}]}}"#;
    kubectl_ok(&[
        "-n",
        ns,
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ]);
}

struct Case {
    name: &'static str,
    component: &'static str,
    spec: &'static str,
    image: &'static str,
    uri_prefix: String,
    port: u16,
}

#[test]
fn managed_stores_are_provisioned_and_retain_or_delete_their_data() {
    install_crds();
    let ns = TestNamespace::blocking("managed");
    let n = ns.name.clone();
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::start(tmp.path(), &n);
    let host = |sts: &str| format!("{sts}.{n}.svc");
    let cases = [
        Case {
            name: "m-redis",
            component: "redis",
            spec: "redis: {managed: {version: '7.2', storage: {size: 2Gi}}}",
            image: "docker.io/library/redis:7.2",
            uri_prefix: format!("redis://:PW@{}:6379/0", host("m-redis-redis")),
            port: 6379,
        },
        Case {
            name: "m-pg",
            component: "postgresql",
            spec: "database: {managed: {database: results, deletionPolicy: Delete, resources: {requests: {cpu: 250m, memory: 300Mi}}}}",
            image: "docker.io/library/postgres:17",
            uri_prefix: format!("db+postgresql+psycopg2://celery:PW@{}:5432/results", host("m-pg-postgresql")),
            port: 5432,
        },
        Case {
            name: "m-mongo",
            component: "mongodb",
            spec: "mongodb: {managed: {}}",
            image: "docker.io/library/mongo:8.0",
            uri_prefix: format!("mongodb://celery:PW@{}:27017/celery?authSource=admin", host("m-mongo-mongodb")),
            port: 27017,
        },
        Case {
            name: "m-es",
            component: "elasticsearch",
            spec: "elasticsearch: {managed: {}, index: results}",
            image: "docker.elastic.co/elasticsearch/elasticsearch:8.19.3",
            uri_prefix: format!("elasticsearch+http://elastic:PW@{}:9200/results", host("m-es-elasticsearch")),
            port: 9200,
        },
        Case {
            name: "m-s3",
            component: "minio",
            spec: "s3: {managed: {bucket: results, image: 'registry.example/minio:pinned'}, basePath: celery/}",
            image: "registry.example/minio:pinned",
            uri_prefix: "s3://".into(),
            port: 9000,
        },
    ];
    for c in &cases {
        apply_yaml(
            &n,
            &format!(
                "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {{name: {}}}\nspec:\n  {}\n",
                c.name, c.spec
            ),
        );
    }
    for c in &cases {
        let sts_name = format!("{}-{}", c.name, c.component);
        let creds = format!("{}-credentials", c.name);
        // Everything exists with the expected spec.
        let sts = wait_until(&format!("StatefulSet {sts_name}"), 60, || {
            json_of(&n, &["statefulset", &sts_name])
        });
        let spec = &sts["spec"];
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"], c.image, "{sts_name}");
        assert_eq!(container["ports"][0]["containerPort"], c.port);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        assert!(container["resources"]["requests"]["memory"].is_string());
        assert!(container["readinessProbe"].is_object());
        assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "data");
        assert_eq!(spec["serviceName"], format!("{sts_name}-hl"));
        assert_eq!(
            sts["metadata"]["ownerReferences"][0]["kind"],
            "CeleryResultBackend"
        );
        let env = serde_json::to_string(&container["env"]).unwrap();
        assert!(
            env.contains(&creds),
            "{sts_name}: credentials come from the Secret: {env}"
        );
        let svc = json_of(&n, &["service", &sts_name]).expect("client Service");
        assert_eq!(svc["spec"]["ports"][0]["port"], c.port);
        let hl = json_of(&n, &["service", &format!("{sts_name}-hl")]).expect("headless Service");
        assert_eq!(hl["spec"]["clusterIP"], "None");
        // Credentials and URI.
        let password = wait_until("credentials", 30, || secret_key(&n, &creds, "password"));
        assert_eq!(password.len(), 32);
        let uri = wait_until("URI Secret", 30, || {
            uri_of(&n, &format!("{}-celery-result-backend", c.name))
        });
        assert_eq!(uri, c.uri_prefix.replace("PW", &password), "{}", c.name);
        if c.component == "minio" {
            let config = secret_key(&n, "m-s3-celery-result-backend", "celeryconfig.py").unwrap();
            assert!(
                config.contains("'results'")
                    && config.contains(&format!("http://{}:9000", host(&sts_name))),
                "{config}"
            );
            assert!(
                config.contains(&password),
                "the S3 secret key is in the config module"
            );
        }
        // Not ready yet: Provisioned=False, Ready=False (Provisioning), URI already referenced.
        let prov = wait_until("Provisioned=False", 30, || {
            let s = condition(&n, c.name, "Provisioned");
            s.starts_with("False|Provisioning|").then_some(s)
        });
        assert!(prov.contains(&sts_name), "{prov}");
        assert!(condition(&n, c.name, "Ready").starts_with("False|Provisioning|"));
        // The StatefulSet controller created the claim and the Pod; make the Pod ready.
        wait_until("claim", 60, || {
            json_of(&n, &["pvc", &format!("data-{sts_name}-0")])
        });
        make_pod_ready(&n, &format!("{sts_name}-0"));
        wait_until(&format!("{} Ready", c.name), 60, || {
            let r = condition(&n, c.name, "Ready");
            let p = condition(&n, c.name, "Provisioned");
            (r.starts_with("True|") && p.starts_with("True|StoreReady|")).then_some(())
        });
    }
    let events = get(
        &n,
        &[
            "get",
            "events",
            "-o",
            "custom-columns=R:.reason",
            "--no-headers",
        ],
    );
    for reason in [
        "CredentialsGenerated",
        "Provisioning",
        "StoreReady",
        "UriPublished",
    ] {
        assert!(events.contains(reason), "event {reason} missing: {events}");
    }

    // What the operator applied round-trips through the API server: no reconcile so far (Pods
    // made ready, StatefulSet status changes) found drift where there was none.
    assert!(
        !op.log().contains("correcting drift"),
        "false drift (a rendered field the API server normalises?):\n{}",
        op.log()
    );
    // Drift in fields the operator owns is put back: a scaled-down StatefulSet, a swapped image,
    // an edited Service port. A field it does not own (an extra label) is left alone.
    kubectl_ok(&["-n", &n, "scale", "sts", "m-mongo-mongodb", "--replicas=0"]);
    kubectl_ok(&[
        "-n",
        &n,
        "set",
        "image",
        "sts/m-es-elasticsearch",
        "elasticsearch=registry.example/other:1",
    ]);
    kubectl_ok(&[
        "-n",
        &n,
        "label",
        "sts",
        "m-es-elasticsearch",
        "team=search",
    ]);
    kubectl_ok(&[
        "-n",
        &n,
        "patch",
        "service",
        "m-mongo-mongodb",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":27018}]"#,
    ]);
    let t0 = std::time::Instant::now();
    wait_until("drift corrected", 30, || {
        let mongo = json_of(&n, &["statefulset", "m-mongo-mongodb"])?;
        let es = json_of(&n, &["statefulset", "m-es-elasticsearch"])?;
        let svc = json_of(&n, &["service", "m-mongo-mongodb"])?;
        (mongo["spec"]["replicas"] == 1
            && es["spec"]["template"]["spec"]["containers"][0]["image"]
                == "docker.elastic.co/elasticsearch/elasticsearch:8.19.3"
            && svc["spec"]["ports"][0]["port"] == 27017)
            .then_some(())
    });
    eprintln!(
        "MEASURE drift in 2 StatefulSets and a Service corrected in {} ms",
        t0.elapsed().as_millis()
    );
    let es = json_of(&n, &["statefulset", "m-es-elasticsearch"]).unwrap();
    assert_eq!(es["metadata"]["labels"]["team"], "search");
    assert!(op.log().contains("correcting drift"));

    // Credentials are never regenerated: a spec change re-renders the StatefulSet only.
    let before = secret_key(&n, "m-redis-credentials", "password").unwrap();
    apply_yaml(&n, "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: m-redis}\nspec:\n  redis: {managed: {version: '7.4', storage: {size: 2Gi}}}\n");
    wait_until("new image", 30, || {
        let img = get(
            &n,
            &[
                "get",
                "sts",
                "m-redis-redis",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
        );
        (img == "docker.io/library/redis:7.4").then_some(())
    });
    assert_eq!(
        secret_key(&n, "m-redis-credentials", "password").unwrap(),
        before
    );

    // An immutable field change is refused by the API server: reported, nothing lost.
    apply_yaml(&n, "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: m-redis}\nspec:\n  redis: {managed: {version: '7.4', storage: {size: 5Gi}}}\n");
    let msg = wait_until("ApplyRejected", 30, || {
        let s = condition(&n, "m-redis", "Ready");
        s.starts_with("False|ApplyRejected|").then_some(s)
    });
    assert!(msg.contains("StatefulSet m-redis-redis"), "{msg}");
    assert!(uri_of(&n, "m-redis-celery-result-backend").is_some());
    apply_yaml(&n, "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: m-redis}\nspec:\n  redis: {managed: {version: '7.4', storage: {size: 2Gi}}}\n");

    // Retain (default): the claim and the credentials survive the backend.
    kubectl_ok(&["-n", &n, "delete", "crb", "m-redis", "--wait=true"]);
    wait_until("redis StatefulSet garbage-collected", 60, || {
        json_of(&n, &["statefulset", "m-redis-redis"])
            .is_none()
            .then_some(())
    });
    wait_until("URI Secret garbage-collected", 60, || {
        uri_of(&n, "m-redis-celery-result-backend")
            .is_none()
            .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        json_of(&n, &["pvc", "data-m-redis-redis-0"]).is_some(),
        "Retain keeps the claim"
    );
    assert_eq!(
        secret_key(&n, "m-redis-credentials", "password").as_deref(),
        Some(before.as_str()),
        "Retain keeps the credentials"
    );

    // Delete: claim and credentials go with the backend.
    kubectl_ok(&["-n", &n, "delete", "crb", "m-pg", "--wait=true"]);
    wait_until("postgres claim deleted", 90, || {
        json_of(&n, &["pvc", "data-m-pg-postgresql-0"])
            .is_none()
            .then_some(())
    });
    wait_until("postgres credentials deleted", 60, || {
        json_of(&n, &["secret", "m-pg-credentials"])
            .is_none()
            .then_some(())
    });

    // No generated password in status, events or logs.
    let everywhere = format!(
        "{}{}{}",
        get(&n, &["get", "crb", "-o", "yaml"]),
        get(&n, &["get", "events", "-o", "yaml"]),
        op.log()
    );
    let out = kubectl(&[
        "-n",
        &n,
        "get",
        "secrets",
        "-l",
        "app.kubernetes.io/managed-by=celery-backend-operator",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    for s in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Some(pw) = secret_key(&n, s, "password") {
            assert!(!everywhere.contains(&pw), "password of {s} leaked");
        }
    }
}
