//! Command-line interface: `crd` prints the CRDs, `uri` prints what the operator would publish,
//! `run` runs the controller, `check` probes a store and `cleanup` purges expired results.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{api, manifests, uri};

/// Celery result backends as Kubernetes resources.
#[derive(Debug, Parser)]
#[command(
    name = "celery-backend-operator",
    version,
    about,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CRD as multi-document YAML, or write one file per CRD into --out (what crds/ holds).
    Crd(CrdArgs),
    /// Print the result_backend URI (or settings) the operator would publish for a backend manifest.
    ///
    /// The output carries the referenced credentials in clear, as Celery needs them (the URI's
    /// password, settings such as s3_secret_access_key): write it to a Secret or a file only you
    /// can read, not to a log or a shared terminal.
    Uri(UriArgs),
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Probe the store a backend manifest names (a real round trip); exit 0 when healthy.
    Check(CheckArgs),
    /// Delete (or count, with --dry-run) the results older than a duration from the store.
    Cleanup(CleanupArgs),
}

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// CeleryResultBackend manifest (YAML; may also contain Secrets and CA ConfigMaps).
    #[arg(
        short = 'f',
        long = "file",
        required_unless_present = "backend",
        conflicts_with = "backend"
    )]
    pub file: Option<PathBuf>,
    /// Secret (or CA ConfigMap) manifests the backend references.
    #[arg(short = 's', long = "secret", requires = "file")]
    pub secrets: Vec<PathBuf>,
    /// A CeleryResultBackend in the cluster of the current kubeconfig instead of a file: its
    /// Secrets (or generated credentials, for managed stores) are read from the cluster.
    #[arg(long)]
    pub backend: Option<String>,
    /// Namespace of --backend (default: the kubeconfig context's).
    #[arg(short = 'n', long, requires = "backend")]
    pub namespace: Option<String>,
    /// Give up after this long (Go duration).
    #[arg(long, default_value = "5s")]
    pub timeout: String,
}

#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub target: CheckArgs,
    /// Results completed longer ago than this are deleted (e.g. 24h, 7d).
    #[arg(long)]
    pub older_than: String,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows or keys per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: u32,
    /// Maximum deletions per second (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

async fn store_for(args: &CheckArgs) -> Result<crate::stores::Store> {
    if let Some(name) = &args.backend {
        return live_store(name, args.namespace.as_deref()).await;
    }
    let Some(file) = &args.file else {
        anyhow::bail!("give a manifest (-f) or a backend in the cluster (--backend)");
    };
    let (backend, mut secrets) = manifests::load_backend(file)?;
    for s in &args.secrets {
        manifests::load_secrets(s, &mut secrets, backend.metadata.namespace.as_deref())?;
    }
    let name = backend.metadata.name.clone().unwrap_or_default();
    if backend.spec.is_managed() {
        anyhow::bail!("CeleryResultBackend {name:?} is managed: its credentials exist only in the cluster; use --backend {name} -n <namespace>");
    }
    let cfg = uri::build(&backend.spec, &secrets)
        .with_context(|| format!("CeleryResultBackend {name:?} in {}", file.display()))?;
    // What `uri` warns about holds for the check too (an unverified certificate, say).
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    Ok(crate::stores::Store::from_config(
        &cfg,
        backend.spec.result_expires.is_some(),
    ))
}

/// The store of a CeleryResultBackend in the cluster, with its Secrets read from there.
async fn live_store(name: &str, namespace: Option<&str>) -> Result<crate::stores::Store> {
    let client = kube::Client::try_default()
        .await
        .context("cannot load kubeconfig or in-cluster config")?;
    let ns = namespace
        .map(String::from)
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: kube::Api<crate::api::CeleryResultBackend> =
        kube::Api::namespaced(client.clone(), &ns);
    let backend = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read CeleryResultBackend {ns}/{name}"))?
        .ok_or_else(|| anyhow::anyhow!("CeleryResultBackend {ns}/{name} not found"))?;
    let cfg = crate::resolve::config(&client, &backend)
        .await
        .map_err(|e| anyhow::anyhow!("CeleryResultBackend {ns}/{name}: {e}"))?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    Ok(crate::stores::Store::from_config(
        &cfg,
        backend.spec.result_expires.is_some(),
    ))
}

fn duration_arg(flag: &str, v: &str) -> Result<std::time::Duration> {
    let secs = api::parse_duration(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `check`: a real round trip; an error (non-zero exit) when the store does not answer.
pub async fn run_check(args: &CheckArgs) -> Result<String> {
    let store = store_for(args).await?;
    let timeout = duration_arg("--timeout", &args.timeout)?;
    let p = store
        .probe(timeout)
        .await
        .map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
    Ok(format!(
        "healthy: {} ({} in {} ms); expiry: {}\n",
        store.kind(),
        p.detail,
        p.latency.as_millis(),
        match store.expiry() {
            crate::stores::Expiry::Native(w) => format!("native ({w})"),
            crate::stores::Expiry::Purgeable => "needs cleanup (the operator can purge)".into(),
            crate::stores::Expiry::Unsupported(w) => format!("not handled ({w})"),
        }
    ))
}

/// `cleanup`: purge results older than --older-than and print the counts.
pub async fn run_cleanup(args: &CleanupArgs) -> Result<String> {
    let store = store_for(&args.target).await?;
    let age = duration_arg("--older-than", &args.older_than)?;
    // --timeout bounds the wait for the store to answer, as for `check`: a port that accepts
    // connections but never speaks the protocol fails here instead of hanging the purge.
    // (Stores that expire results themselves are refused by the purge without a connection.)
    let timeout = duration_arg("--timeout", &args.target.timeout)?;
    if matches!(store.expiry(), crate::stores::Expiry::Purgeable) {
        store
            .probe(timeout)
            .await
            .map_err(|e| anyhow::anyhow!("cleanup not started: {e}"))?;
    }
    let cutoff = k8s_openapi::jiff::Timestamp::now().as_second() - age.as_secs() as i64;
    let r = store
        .purge_expired(crate::stores::PurgeOptions {
            cutoff_unix: cutoff,
            batch: args.batch,
            rate: args.rate,
            dry_run: args.dry_run,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cleanup failed: {e}"))?;
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let notes = r.notes();
    let rules = r.rules();
    Ok(format!(
        "{}: {verb} {} task results and {} group results older than {} ({} batches, longest {} ms){}\n{}",
        store.kind(),
        r.tasks,
        r.groups,
        args.older_than,
        r.batches,
        r.longest_batch.as_millis(),
        if notes.is_empty() { String::new() } else { format!("; {notes}") },
        if rules.is_empty() { String::new() } else { format!("rules: {rules}\n") },
    ))
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "CBO_LOG_JSON")]
    pub log_json: bool,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CBO_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address for /metrics, /healthz and /readyz; "off" disables the server.
    #[arg(long, env = "CBO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Elect a leader through a Lease so several replicas can run (true/false).
    #[arg(long, env = "CBO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "CBO_LEASE_NAME",
        default_value = "celery-backend-operator"
    )]
    pub lease_name: String,
    /// Namespace of the leader Lease and the webhook certificate Secret (default: POD_NAMESPACE,
    /// else the watched namespace, else default).
    #[arg(long, env = "CBO_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Address of the Pod webhook's TLS server; "off" disables the webhook.
    #[arg(long, env = "CBO_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: String,
    /// URL the API server calls (out-of-cluster runs), e.g. https://127.0.0.1:9443; default: the Service.
    #[arg(long, env = "CBO_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Service in the operator's namespace that fronts the webhook (port 443).
    #[arg(
        long,
        env = "CBO_WEBHOOK_SERVICE",
        default_value = "celery-backend-operator-webhook"
    )]
    pub webhook_service: String,
    /// Name of the MutatingWebhookConfiguration the leader maintains, which also records this
    /// installation (default: `celery-backend-operator` for a cluster-wide installation,
    /// `celery-backend-operator.<namespace>` with --namespace).
    #[arg(long, env = "CBO_WEBHOOK_CONFIG")]
    pub webhook_config_name: Option<String>,
    /// This installation's identity, a label value written on the objects it owns (its record,
    /// Lease and webhook certificate Secret); another installation's objects are never taken
    /// over. Default: `<lease namespace>.<lease name>` (`dev.<host>` with --dev).
    #[arg(long, env = "CBO_INSTALLATION")]
    pub installation: Option<String>,
    /// ClusterRole that owns this installation's record, Lease and webhook certificate Secret,
    /// so that deleting it (`helm uninstall`) removes them (the chart passes its own).
    #[arg(long, env = "CBO_OWNER_CLUSTER_ROLE")]
    pub owner_cluster_role: Option<String>,
    /// Start even if another installation owns this one's record, Lease or certificate Secret,
    /// serves the whole cluster, or serves the same namespace (only when that one is gone for
    /// good).
    #[arg(long, env = "CBO_TAKE_OVER")]
    pub take_over: bool,
    /// A local debug run beside the cluster's installation: requires --namespace; the identity
    /// defaults to `dev.<host>`, the Lease to `celery-backend-operator-dev` in that namespace,
    /// the webhook is off unless --webhook-url is given (the API server must reach it), the
    /// metrics server listens on 127.0.0.1, and the run removes its record and webhook
    /// configuration on exit, so a cluster-wide installation serves the namespace again.
    #[arg(long, env = "CBO_DEV")]
    pub dev: bool,
    /// Secret (operator namespace) with the webhook CA and serving certificate.
    #[arg(
        long,
        env = "CBO_WEBHOOK_SECRET",
        default_value = "celery-backend-operator-webhook-tls"
    )]
    pub webhook_secret: String,
    /// Who issues the webhook certificate: "self-managed" (the leader runs a CA, rotates the
    /// certificate and maintains the MutatingWebhookConfiguration) or "external" (cert-manager or
    /// another issuer writes tls.crt/tls.key into the Secret and the configuration, with its
    /// caBundle, is installed by the chart; the operator only serves and reloads).
    #[arg(long, env = "CBO_WEBHOOK_CERTIFICATES", default_value = "self-managed", value_parser = ["self-managed", "external"])]
    pub webhook_certificates: String,
    /// Ignore (default: Pods are admitted when the webhook is down; the controller reports them) or Fail.
    #[arg(long, env = "CBO_WEBHOOK_FAILURE_POLICY", default_value = "Ignore", value_parser = ["Ignore", "Fail"])]
    pub webhook_failure_policy: String,
    /// After SIGTERM, how long a replica with the webhook keeps serving it, not Ready, before it
    /// exits: the API server learns of a removed endpoint only after kube-proxy and the
    /// EndpointSlice controller catch up, and with failurePolicy Ignore a Pod admitted by a replica
    /// that is already gone misses its URI. Kubernetes duration (`5s`); `0s` exits at once. Keep it
    /// below the Pod's terminationGracePeriodSeconds.
    #[arg(long, env = "CBO_SHUTDOWN_DRAIN", default_value = "5s")]
    pub shutdown_drain: String,
    /// Registry/repository prefix for every default managed-store image.
    ///
    /// Replaces everything before the image's last path component and keeps that component and
    /// the tag: `registry.corp/mirror` turns docker.io/library/redis:7.4 into
    /// registry.corp/mirror/redis:7.4, quay.io/minio/minio:<tag> into registry.corp/mirror/minio:<tag>
    /// and docker.elastic.co/elasticsearch/elasticsearch:8.19.3 into
    /// registry.corp/mirror/elasticsearch:8.19.3. A backend's `managed.version` is the tag when
    /// set.
    ///
    /// Which image a store Pod runs, first match wins: the backend's own `managed.image` > the
    /// per-store flag below (used as is) > this prefix on the default image > the default image.
    #[arg(
        long,
        env = "CBO_STORE_IMAGE_REGISTRY",
        value_name = "PREFIX",
        help_heading = "Managed store images"
    )]
    pub store_image_registry: Option<String>,
    /// Image of one managed store, `STORE=IMAGE` (repeatable): a full reference, used as is,
    /// that beats --store-image-registry. STORE is a store the operator provisions (an unknown
    /// one is refused, naming those that exist). Also read from `CBO_STORE_IMAGE_<STORE>`
    /// environment variables (`CBO_STORE_IMAGE_REDIS=...`); a flag beats the variable.
    #[arg(
        long = "store-image",
        value_name = "STORE=IMAGE",
        help_heading = "Managed store images"
    )]
    pub store_image: Vec<String>,
    /// Secret listed in `imagePullSecrets` of every managed store Pod (repeatable; the
    /// environment variable takes a comma-separated list). The Secret must exist in each
    /// backend's namespace.
    #[arg(
        long = "store-image-pull-secret",
        env = "CBO_STORE_IMAGE_PULL_SECRETS",
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Managed store images"
    )]
    pub store_image_pull_secrets: Vec<String>,
}

impl RunArgs {
    /// The managed-store image settings, checked (`provision::images::StoreImages::validated`):
    /// an empty or blank reference, whitespace, uppercase in a repository path, a malformed tag
    /// or digest, or a pull secret that is not a Secret name is an error naming the flag and its
    /// environment variable.
    pub fn store_images(&self) -> Result<crate::provision::StoreImages> {
        self.store_images_with_env(std::env::vars())
    }

    /// [`RunArgs::store_images`] with the process environment given: every
    /// `CBO_STORE_IMAGE_<STORE>` variable (other than `_REGISTRY` and `_PULL_SECRETS`), then the
    /// `--store-image STORE=IMAGE` flags over them.
    pub fn store_images_with_env(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<crate::provision::StoreImages> {
        use crate::provision::images::STORE_IMAGE_ENV_PREFIX;
        let mut images = std::collections::BTreeMap::new();
        for (k, v) in env {
            if let Some(store) = k.strip_prefix(STORE_IMAGE_ENV_PREFIX) {
                if store != "REGISTRY" && store != "PULL_SECRETS" {
                    images.insert(store.to_ascii_lowercase(), v);
                }
            }
        }
        for pair in &self.store_image {
            let Some((store, image)) = pair.split_once('=') else {
                anyhow::bail!("--store-image {pair:?}: expected STORE=IMAGE");
            };
            images.insert(store.to_string(), image.to_string());
        }
        crate::provision::StoreImages {
            registry: self.store_image_registry.clone(),
            images,
            pull_secrets: self.store_image_pull_secrets.clone(),
        }
        .validated()
        .map_err(anyhow::Error::from)
    }
}

/// Start logging (RUST_LOG filters, default info) and run the controller until a signal.
pub async fn run_operator(args: &RunArgs) -> Result<()> {
    crate::telemetry::init_logging(args.log_json);
    let store_images = args.store_images()?;
    let profile = RunProfile::of(args)?;
    let metrics_addr = if profile.metrics_addr == "off" {
        None
    } else {
        Some(profile.metrics_addr.parse().with_context(|| {
            format!("--metrics-addr {:?} is not host:port", profile.metrics_addr)
        })?)
    };
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut config = kube::Config::infer()
        .await
        .context("cannot load kubeconfig or in-cluster config")?;
    // A user agent makes the operator's requests stand out in audit logs and API metrics.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!(
            "celery-backend-operator/",
            env!("CARGO_PKG_VERSION")
        )),
    ));
    let lease_namespace = profile.lease_namespace.clone();
    let webhook = if profile.webhook_addr == "off" {
        None
    } else {
        Some(crate::webhook::WebhookOptions {
            listen: profile.webhook_addr.parse().with_context(|| {
                format!("--webhook-addr {:?} is not host:port", profile.webhook_addr)
            })?,
            endpoint: match &args.webhook_url {
                Some(u) => crate::webhook::Endpoint::Url(u.clone()),
                None => crate::webhook::Endpoint::Service {
                    namespace: lease_namespace.clone(),
                    name: args.webhook_service.clone(),
                    port: 443,
                },
            },
            config_name: profile.installation.record.clone(),
            secret_namespace: lease_namespace.clone(),
            secret_name: args.webhook_secret.clone(),
            failure_policy: args.webhook_failure_policy.clone(),
            own_namespace: lease_namespace.clone(),
            only_namespace: args.namespace.clone(),
            self_managed: args.webhook_certificates == "self-managed",
        })
    };
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        installation = %profile.installation.id,
        dev = args.dev,
        "celery-backend-operator starting"
    );
    crate::runner::run(
        client,
        crate::runner::RunOptions {
            namespace: args.namespace.clone(),
            metrics_addr,
            leader_election: profile.leader_election,
            lease_name: profile.lease_name.clone(),
            lease_namespace: lease_namespace.clone(),
            identity,
            webhook,
            store_images,
            shutdown_drain: duration_arg("--shutdown-drain", &args.shutdown_drain)?,
            installation: profile.installation,
            owner_cluster_role: args.owner_cluster_role.clone(),
            take_over: args.take_over,
            remove_record_on_exit: args.dev,
        },
    )
    .await
}

/// The settings `run` derives from its flags (with `--dev` applied), checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunProfile {
    pub installation: crate::installation::Identity,
    pub lease_name: String,
    pub lease_namespace: String,
    pub leader_election: bool,
    pub webhook_addr: String,
    pub metrics_addr: String,
}

impl RunProfile {
    /// `--dev` defaults, the installation identity and the record name. Errors name the flag.
    pub fn of(args: &RunArgs) -> Result<RunProfile> {
        use crate::installation::{default_id, is_label_value, Identity, Scope};
        let scope = match &args.namespace {
            Some(n) => Scope::Namespace(n.clone()),
            None if args.dev => anyhow::bail!(
                "--dev needs --namespace: a local run serves one namespace, beside the cluster's installation"
            ),
            None => Scope::Cluster,
        };
        let lease_namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let lease_name = if args.dev && args.lease_name == "celery-backend-operator" {
            "celery-backend-operator-dev".to_string()
        } else {
            args.lease_name.clone()
        };
        let id = match &args.installation {
            Some(i) => i.clone(),
            None if args.dev => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let host: String = host
                    .trim()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .take(56)
                    .collect();
                format!("dev.{}", host.trim_matches('-'))
                    .trim_end_matches('.')
                    .to_string()
            }
            None => default_id(&lease_namespace, &lease_name),
        };
        if !is_label_value(&id) {
            anyhow::bail!("--installation {id:?} is not a label value (at most 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or digit)");
        }
        let record = args
            .webhook_config_name
            .clone()
            .unwrap_or_else(|| scope.default_record());
        let dev_default = |flag: &str, given: &str, default: &str, dev: &str| {
            if args.dev && given == default {
                tracing::debug!(flag, value = dev, "--dev default");
                dev.to_string()
            } else {
                given.to_string()
            }
        };
        Ok(RunProfile {
            installation: Identity { id, scope, record },
            lease_name,
            lease_namespace,
            leader_election: args.leader_election,
            webhook_addr: if args.dev && args.webhook_url.is_none() {
                "off".to_string()
            } else {
                args.webhook_addr.clone()
            },
            metrics_addr: dev_default(
                "--metrics-addr",
                &args.metrics_addr,
                "0.0.0.0:8080",
                "127.0.0.1:8080",
            ),
        })
    }
}

/// What `uri` prints.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UriOutput {
    /// The result_backend URI only.
    Uri,
    /// The settings that cannot live in the URI, as a JSON object.
    Settings,
    /// The celeryconfig.py module.
    Config,
    /// URI, settings, environment and warnings as one JSON object.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct UriArgs {
    /// File with the CeleryResultBackend (Secrets and ConfigMaps in the same file are used too).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// File(s) with the referenced Secrets (and CA ConfigMaps).
    #[arg(short = 's', long = "secret")]
    pub secrets: Vec<PathBuf>,
    /// What to print; each output carries the credentials the backend references, in clear.
    #[arg(short = 'o', long = "output", value_enum, default_value = "uri")]
    pub output: UriOutput,
}

pub fn run_uri(args: &UriArgs) -> Result<String> {
    let (backend, mut secrets) = manifests::load_backend(&args.file)?;
    for s in &args.secrets {
        manifests::load_secrets(s, &mut secrets, backend.metadata.namespace.as_deref())?;
    }
    let name = backend.metadata.name.clone().unwrap_or_default();
    let cfg = uri::build(&backend.spec, &secrets)
        .with_context(|| format!("CeleryResultBackend {name:?} in {}", args.file.display()))?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    if !cfg.env.is_empty() && matches!(args.output, UriOutput::Uri | UriOutput::Settings) {
        let names = cfg.env.keys().cloned().collect::<Vec<_>>().join(", ");
        let how = if crate::inject::client_env(&backend.spec, &cfg).is_empty() {
            "celeryconfig.py sets it (injection.configModule)"
        } else {
            "injection sets it from the URI Secret's key of that name"
        };
        eprintln!("note: the client library also reads {names} (not in this output; -o config and -o json carry it): {how}");
    }
    Ok(match args.output {
        UriOutput::Uri => format!("{}\n", cfg.uri),
        UriOutput::Settings => format!("{}\n", serde_json::to_string_pretty(&cfg.settings)?),
        UriOutput::Config => uri::config_module(&cfg),
        UriOutput::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "uri": cfg.uri,
                "settings": cfg.settings,
                "env": cfg.env,
                "warnings": cfg.warnings,
            }))?
        ),
    })
}

pub fn run_crd(args: &CrdArgs) -> Result<String> {
    let all = api::crds_yaml().context("cannot render CRDs")?;
    let Some(dir) = &args.out else {
        return Ok(all);
    };
    for doc in all.split("---\n").filter(|d| !d.trim().is_empty()) {
        let v: serde_json::Value = serde_norway::from_str(doc)?;
        let name = v["metadata"]["name"].as_str().unwrap_or("crd");
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, format!("---\n{doc}"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["celery-backend-operator", "run"];
        argv.extend(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(a) => Ok(*a),
            _ => unreachable!("parsed the run subcommand"),
        }
    }

    #[test]
    fn store_image_flags_have_their_environment_variables() {
        let cli = Cli::command();
        let run = cli
            .get_subcommands()
            .find(|c| c.get_name() == "run")
            .unwrap();
        for (flag, env) in [
            ("store-image-registry", Some("CBO_STORE_IMAGE_REGISTRY")),
            ("store-image", None),
            (
                "store-image-pull-secret",
                Some("CBO_STORE_IMAGE_PULL_SECRETS"),
            ),
        ] {
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("--{flag}"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), env, "--{flag}");
        }
        // The error messages name the same flags and variables.
        assert_eq!(
            crate::provision::images::REGISTRY_FLAG,
            "--store-image-registry (CBO_STORE_IMAGE_REGISTRY)"
        );
        assert_eq!(
            crate::provision::images::PULL_SECRET_FLAG,
            "--store-image-pull-secret (CBO_STORE_IMAGE_PULL_SECRETS)"
        );
        let help = run.clone().render_long_help().to_string();
        assert!(help.contains("Managed store images"), "{help}");
        assert!(help.contains("first match wins"), "{help}");
    }

    #[test]
    fn store_image_flags_parse_and_validate() {
        let none = || std::iter::empty::<(String, String)>();
        let a = run_args(&[
            "--store-image-registry=registry.corp/mirror",
            "--store-image=redis=cbo.local/redis:7.0-abc",
            "--store-image-pull-secret=a",
            "--store-image-pull-secret",
            "b,c",
        ])
        .unwrap();
        let images = a.store_images_with_env(none()).unwrap();
        assert_eq!(images.registry.as_deref(), Some("registry.corp/mirror"));
        assert_eq!(images.for_store("redis"), Some("cbo.local/redis:7.0-abc"));
        assert_eq!(images.pull_secrets, ["a", "b", "c"]);
        assert_eq!(
            run_args(&[])
                .unwrap()
                .store_images_with_env(none())
                .unwrap(),
            crate::provision::StoreImages::default()
        );
        // CBO_STORE_IMAGE_<STORE> variables, under the flags; _REGISTRY and _PULL_SECRETS are
        // their own settings.
        let env = [
            ("CBO_STORE_IMAGE_POSTGRESQL", "cbo.local/postgres:15-x"),
            ("CBO_STORE_IMAGE_REDIS", "cbo.local/redis:from-env"),
            ("CBO_STORE_IMAGE_REGISTRY", "ignored-here"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let images = a.store_images_with_env(env).unwrap();
        assert_eq!(
            images.for_store("postgresql"),
            Some("cbo.local/postgres:15-x")
        );
        assert_eq!(images.for_store("redis"), Some("cbo.local/redis:7.0-abc"));
        assert_eq!(images.images.len(), 2);
        for (argv, starts) in [
            (
                vec!["--store-image=postgresql="],
                "--store-image postgresql=IMAGE (CBO_STORE_IMAGE_POSTGRESQL) \"\": empty",
            ),
            (
                vec!["--store-image", "mongodb=docker.io/library/Mongo:8"],
                "--store-image mongodb=IMAGE (CBO_STORE_IMAGE_MONGODB) \"docker.io/library/Mongo:8\": uppercase",
            ),
            (
                vec!["--store-image", "s3=minio :1"],
                "--store-image s3=IMAGE (CBO_STORE_IMAGE_S3) \"minio :1\": contains whitespace",
            ),
            (
                vec!["--store-image", "cassandra=cassandra:5"],
                "--store-image cassandra=IMAGE (CBO_STORE_IMAGE_CASSANDRA) \"cassandra:5\": no such store",
            ),
            (vec!["--store-image", "redis"], "--store-image \"redis\": expected STORE=IMAGE"),
            (
                vec!["--store-image-registry", "registry.corp/mirror:1"],
                "--store-image-registry (CBO_STORE_IMAGE_REGISTRY)",
            ),
            (
                vec!["--store-image-pull-secret", "ok,"],
                "--store-image-pull-secret (CBO_STORE_IMAGE_PULL_SECRETS) \"\": empty",
            ),
        ] {
            let e = run_args(&argv)
                .unwrap()
                .store_images_with_env(none())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(starts), "{argv:?}: {e}");
        }
    }
}
