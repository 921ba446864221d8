//! The process runner: start-up checks, the installation record, metrics and health server,
//! signals, leader election, and spawning the webhook, the cleanup-policy controller and the
//! backend controller; on exit, drain and leave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

use crate::api::CeleryResultBackend;
use crate::controller::run_controller;
use crate::installation::scoped;
use crate::policy_controller as cleanup;
use crate::provision;
use crate::telemetry::Metrics;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch only this namespace (None: the whole cluster).
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz (None: no HTTP server).
    pub metrics_addr: Option<SocketAddr>,
    /// Elect a leader through a Lease before reconciling.
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    /// The Pod webhook (None: not served).
    pub webhook: Option<crate::webhook::WebhookOptions>,
    /// Operator-wide images and pull secrets for managed stores (validated by the caller).
    pub store_images: provision::StoreImages,
    /// After a shutdown signal, keep serving the webhook (not Ready) this long (`--shutdown-drain`).
    pub shutdown_drain: Duration,
    /// Who this installation is and what it serves (`crate::installation`).
    pub installation: crate::installation::Identity,
    /// ClusterRole owning the record, Lease and webhook certificate Secret (`--owner-cluster-role`).
    pub owner_cluster_role: Option<String>,
    /// Start despite another installation's record, Lease or Secret (`--take-over`).
    pub take_over: bool,
    /// Remove the record (and webhook configuration) on exit (`--dev`).
    pub remove_record_on_exit: bool,
}

/// Run the controller until SIGTERM/Ctrl-C (or until leadership is lost, which is an error).
pub async fn run(client: Client, opts: RunOptions) -> anyhow::Result<()> {
    let probe: Api<CeleryResultBackend> = scoped(&client, &opts.namespace);
    if let Err(e) = probe.list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!("cannot list CeleryResultBackends ({e}); are the CRDs installed? kubectl apply -f crds/");
    }
    // Installation identity: refuse to act where another installation does, before anything else.
    let owner = crate::installation::owner(
        &client,
        opts.owner_cluster_role.as_deref(),
        &opts.installation.scope,
    )
    .await?;
    let secret = opts
        .webhook
        .as_ref()
        .map(|w| (w.secret_namespace.as_str(), w.secret_name.as_str()));
    let records = crate::installation::records(&client).await?;
    let conflict = match crate::installation::check(&opts.installation, &records) {
        Err(c) => Some(c.to_string()),
        Ok(()) => {
            crate::installation::foreign_objects(
                &client,
                &opts.installation,
                (&opts.lease_namespace, &opts.lease_name),
                secret,
            )
            .await?
        }
    };
    if let Some(conflict) = conflict {
        if opts.take_over {
            tracing::warn!(conflict = %conflict, "--take-over: starting anyway");
        } else {
            anyhow::bail!(conflict);
        }
    }
    crate::installation::apply_record(&client, &opts.installation, owner.as_ref()).await?;
    // Seed the namespaces other installations serve from a full list *before* anything
    // reconciles, admits or cleans: an empty start would let this installation act on a
    // namespace a scoped installation already serves until the watch caught up.
    let claimed_now = crate::installation::claimed_elsewhere(
        &opts.installation,
        &crate::installation::records(&client).await?,
    );
    if !claimed_now.is_empty() {
        tracing::info!(namespaces = ?claimed_now, "namespaces served by other installations (left alone)");
    }
    let (claims_tx, claims) = tokio::sync::watch::channel(claimed_now);
    let claims_task = tokio::spawn(crate::installation::watch_claims(
        client.clone(),
        opts.installation.clone(),
        owner.clone(),
        claims_tx,
    ));
    let checksum_key = crate::installation::checksum_key(
        &client,
        &opts.lease_namespace,
        &crate::installation::checksum_key_secret(&opts.lease_name),
        owner.as_ref(),
    )
    .await?;
    let metrics = Metrics::default();
    if let Some(addr) = opts.metrics_addr {
        let m = metrics.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics/health: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        tokio::spawn(async move {
            if let Err(e) = crate::telemetry::serve_on(listener, m).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let signal = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| tracing::error!(error = %e, "cannot install SIGTERM handler"))
            .ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => futures::future::pending::<()>().await } } => {},
        }
    };
    let mut signal = Box::pin(signal);

    // Leader election: standbys are ready (they serve health) but do not reconcile.
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &opts.lease_namespace);
    let lease_cfg = crate::leader::LeaseConfig {
        name: opts.lease_name.clone(),
        namespace: opts.lease_namespace.clone(),
        identity: opts.identity.clone(),
        duration: Duration::from_secs(15),
        renew: Duration::from_secs(5),
        installation: opts.installation.id.clone(),
        owner: owner.clone(),
    };
    if let Some(w) = opts.webhook.clone() {
        metrics
            .webhook_ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let (c, m, cl) = (client.clone(), metrics.clone(), claims.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::webhook::serve(c, w, m, cl).await {
                tracing::error!(error = %e, "webhook stopped");
            }
        });
    }
    let (tx, mut rx) = tokio::sync::watch::channel(!opts.leader_election);
    if opts.leader_election {
        tokio::spawn(crate::leader::run(lease_api.clone(), lease_cfg.clone(), tx));
        metrics
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(identity = %opts.identity, lease = %opts.lease_name, "waiting to become leader");
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = &mut signal => {
                    tracing::info!("signal received while standing by");
                    drain(&opts, &metrics).await;
                    claims_task.abort();
                    leave(&client, &opts).await;
                    return Ok(());
                }
                changed = rx.changed() => { if changed.is_err() { anyhow::bail!("leader election stopped"); } }
            }
        }
        tracing::info!(identity = %opts.identity, "became leader");
    }
    metrics.leader.set(1);
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let maintainer = opts.webhook.clone().filter(|w| w.self_managed).map(|w| {
        tokio::spawn(crate::webhook::maintain(
            client.clone(),
            w,
            opts.installation.clone(),
            owner.clone(),
            claims.clone(),
        ))
    });
    let cleaner = tokio::spawn(cleanup::run(
        client.clone(),
        metrics.clone(),
        opts.namespace.clone(),
        opts.installation.clone(),
        claims.clone(),
    ));

    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let shutdown = async move {
        tokio::select! {
            _ = &mut signal => tracing::info!("signal received; shutting down"),
            _ = async { while rx.changed().await.is_ok() { if !*rx.borrow() { break; } } } => {
                tracing::error!("lost leadership; stopping");
                lost_flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    run_controller(
        client.clone(),
        opts.namespace.clone(),
        metrics.clone(),
        opts.store_images.clone(),
        claims,
        checksum_key,
        shutdown,
    )
    .await;
    metrics.leader.set(0);
    if let Some(h) = maintainer {
        h.abort();
    }
    cleaner.abort();
    if opts.leader_election {
        crate::leader::release(&lease_api, &lease_cfg).await;
    }
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("lost the leader lease; exiting so that the new leader works alone");
    }
    drain(&opts, &metrics).await;
    // No more re-writing of the record, which `leave` may remove.
    claims_task.abort();
    leave(&client, &opts).await;
    Ok(())
}

/// A `--dev` run removes its record (and webhook configuration) on the way out, so that a
/// cluster-wide installation serves the namespace again.
async fn leave(client: &Client, opts: &RunOptions) {
    if opts.remove_record_on_exit {
        crate::installation::unregister(client, &opts.installation).await;
    }
}

/// On a signal: report not Ready and keep the webhook serving for `shutdown_drain`, so that
/// admissions routed here while the endpoint removal propagates are still answered.
async fn drain(opts: &RunOptions, metrics: &Metrics) {
    if opts.webhook.is_none() || opts.shutdown_drain.is_zero() {
        return;
    }
    metrics
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(drain = ?opts.shutdown_drain, "not ready; serving the webhook until the drain ends");
    tokio::time::sleep(opts.shutdown_drain).await;
}
