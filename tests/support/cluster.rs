//! Test support for the real local control plane: start or reuse it (hack/cluster.sh up), give each
//! test its own namespace, delete it afterwards, and dump useful state when a test fails.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Config};

/// The checkout the tests run from. Read at run time: a test binary built by another clone that
/// shares the target directory (CI does) must not run that clone's scripts.
pub fn root() -> &'static str {
    static ROOT: OnceLock<String> = OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
    })
}

/// `(kubeconfig, bin dir)` of the running cluster; starts it on first use. A cluster that cannot
/// start fails the test with the script's output: these tests never skip.
pub fn cluster() -> &'static (PathBuf, PathBuf) {
    static CLUSTER: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let up = Command::new("bash")
            .arg(format!("{}/hack/cluster.sh", root()))
            .arg("up")
            .output()
            .expect("cannot run hack/cluster.sh");
        assert!(
            up.status.success(),
            "the local control plane did not start (hack/cluster.sh up):\n{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let env = Command::new("bash")
            .arg(format!("{}/hack/cluster.sh", root()))
            .arg("env")
            .output()
            .unwrap();
        let env = String::from_utf8_lossy(&env.stdout);
        let kubeconfig = env
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .expect("KUBECONFIG in env output");
        let path = env
            .lines()
            .find_map(|l| l.strip_prefix("export PATH="))
            .expect("PATH in env output");
        let bin = path.split(':').next().unwrap();
        (PathBuf::from(kubeconfig), PathBuf::from(bin))
    })
}

/// A kube client for the local cluster.
pub async fn client() -> Client {
    cbo::stores::tls::install_crypto_provider();
    let (kubeconfig, _) = cluster();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// Run kubectl against the local cluster.
pub fn kubectl(args: &[&str]) -> Output {
    let (kubeconfig, bin) = cluster();
    Command::new(bin.join("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .current_dir(root())
        .output()
        .expect("cannot run kubectl")
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Install (server-side apply) every CRD in crds/ and wait until each is Established.
pub fn install_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=cbo-tests",
            "-f",
            "crds/",
        ]);
        // `kubectl wait` fails at once ("status.conditions accessor error") on a CRD the API
        // server has not given any condition yet, instead of waiting: retry until it can wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                "crds/",
            ]);
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                err.contains("accessor error") && std::time::Instant::now() < deadline,
                "kubectl wait --for=condition=Established -f crds/ failed: {err}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
}

/// A namespace owned by one test: created on construction, deleted on drop; on a failing test the
/// namespace's objects and events are printed first.
pub struct TestNamespace {
    pub name: String,
}

/// The taint on the local node (hack/node.sh); a namespace whose Pods may run there carries it as
/// a default toleration, which the API server's PodTolerationRestriction plugin adds to each Pod.
pub const NODE_TAINT: &str = "node.cbo.dev/local";

impl TestNamespace {
    /// A namespace whose Pods stay Pending (they never reach the node), as on a cluster without
    /// nodes: for the tests of objects on the API server.
    pub async fn new(prefix: &str) -> Self {
        Self::create(prefix, false).await
    }

    /// A namespace whose Pods run on the local node.
    pub async fn on_node(prefix: &str) -> Self {
        Self::create(prefix, true).await
    }

    async fn create(prefix: &str, on_node: bool) -> Self {
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let client = client().await;
        let api: Api<Namespace> = Api::all(client.clone());
        let mut meta = serde_json::json!({"name": name, "labels": {"cbo-test": "true"}});
        if on_node {
            meta["annotations"] = serde_json::json!({
                "scheduler.alpha.kubernetes.io/defaultTolerations":
                    format!("[{{\"key\": \"{NODE_TAINT}\", \"operator\": \"Exists\"}}]")
            });
        }
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": meta })).unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // The ServiceAccount admission plugin refuses Pods until the namespace's default
        // ServiceAccount exists (kube-controller-manager creates it within moments).
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, &name);
        for _ in 0..100 {
            if sas.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        TestNamespace { name }
    }

    /// Same as `on_node`, for plain (non-async) tests.
    pub fn blocking_on_node(prefix: &str) -> Self {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(Self::on_node(prefix))
    }

    /// Same as `new`, for plain (non-async) tests.
    pub fn blocking(prefix: &str) -> Self {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(Self::new(prefix))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dump = kubectl(&[
                "-n",
                &self.name,
                "get",
                "all,celeryresultbackends,secrets,events",
                "-o",
                "wide",
            ]);
            eprintln!(
                "---- state of namespace {} ----\n{}{}",
                self.name,
                String::from_utf8_lossy(&dump.stdout),
                String::from_utf8_lossy(&dump.stderr)
            );
        }
        let name = self.name.clone();
        // Deleting is best effort and must not panic inside drop.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    let api: Api<Namespace> = Api::all(client().await);
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                });
            }
        })
        .join();
    }
}

/// Run helm (built by hack/build-k8s.sh) from the checkout; must succeed; returns stdout.
pub fn helm(args: &[&str]) -> String {
    let (kubeconfig, bin) = cluster();
    let out = Command::new(bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(root())
        .output()
        .expect("helm (hack/build-k8s.sh builds it)");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
