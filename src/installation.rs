//! Installation identity: which operator installation serves which namespaces, so that two
//! installations (a Helm release, the quick start, a local debug run, the tests) never fight.
//!
//! Every installation records itself on a cluster-scoped MutatingWebhookConfiguration labelled
//! `app.kubernetes.io/managed-by=celery-backend-operator`, annotated with its identity
//! ([`INSTALLATION`]) and scope ([`SCOPE`]: `*` for the whole cluster, else its namespace). The
//! object is the Pod webhook's configuration when the webhook is served, and a configuration with
//! no webhooks otherwise, so the record exists whatever the flags. The rules ([`check`]):
//! - a record owned by another installation is never taken over (unless `--take-over`);
//! - there is at most one cluster-wide installation;
//! - a namespace is served by at most one namespace-scoped installation;
//! - a cluster-wide installation steps aside from every namespace a namespace-scoped one serves
//!   ([`claimed_elsewhere`]): no reconcile, no health check, no cleanup, no injection there.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sha2::Digest;

pub use crate::api::footprint::{CHECKSUM_KEY, INSTALLATION, MANAGED_BY, RECORD_MANAGER, SCOPE};
/// Name of a cluster-wide installation's record: the same for every cluster-wide installation,
/// so the name itself is the lock.
pub const CLUSTER_RECORD: &str = "celery-backend-operator";

/// What an installation serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (no `--namespace`).
    Cluster,
    /// One namespace (`--namespace`).
    Namespace(String),
}

impl Scope {
    /// The [`SCOPE`] annotation's value.
    pub fn annotation(&self) -> &str {
        match self {
            Scope::Cluster => "*",
            Scope::Namespace(n) => n,
        }
    }

    /// From a [`SCOPE`] annotation (`None`: absent or empty).
    pub fn parse(value: Option<&str>) -> Option<Scope> {
        match value.map(str::trim) {
            None | Some("") => None,
            Some("*") => Some(Scope::Cluster),
            Some(n) => Some(Scope::Namespace(n.to_string())),
        }
    }

    /// The default record name: [`CLUSTER_RECORD`], or `celery-backend-operator.<namespace>`
    /// (at most 24 + 63 characters, a valid object name).
    pub fn default_record(&self) -> String {
        match self {
            Scope::Cluster => CLUSTER_RECORD.to_string(),
            Scope::Namespace(n) => format!("{CLUSTER_RECORD}.{n}"),
        }
    }
}

/// This installation: who it is, what it serves, and the name of its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// A label value (at most 63 characters: alphanumerics, `-`, `_`, `.`, alphanumeric ends).
    pub id: String,
    pub scope: Scope,
    /// The MutatingWebhookConfiguration that records it (the webhook's configuration).
    pub record: String,
}

/// Whether `s` is a valid label value (Kubernetes: at most 63 characters, `[A-Za-z0-9]`
/// at both ends, `-`, `_` and `.` inside).
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The default identity, `<lease namespace>.<lease name>` (a Lease names one election group, which
/// is one installation). Longer than 63 characters: its first 54 characters, `-` and 8 hex digits
/// of its SHA-256, so distinct inputs stay distinct.
pub fn default_id(lease_namespace: &str, lease_name: &str) -> String {
    let full = format!("{lease_namespace}.{lease_name}");
    if full.len() <= 63 {
        return full;
    }
    let digest = sha2::Sha256::digest(full.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let head: String = full.chars().take(54).collect();
    format!("{}-{hex}", head.trim_end_matches(['-', '.', '_']))
}

/// One installation's record, as read from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The MutatingWebhookConfiguration's name.
    pub name: String,
    /// [`INSTALLATION`]; `None` on a configuration written by an operator from before
    /// installation identities (adoptable).
    pub installation: Option<String>,
    /// [`SCOPE`]; `None` when absent: a configuration named [`CLUSTER_RECORD`] is then taken as
    /// cluster-wide.
    pub scope: Option<Scope>,
}

impl Record {
    pub fn from_object(mwc: &MutatingWebhookConfiguration) -> Record {
        let ann = mwc.annotations();
        let name = mwc.name_any();
        let scope = Scope::parse(ann.get(SCOPE).map(String::as_str))
            .or_else(|| (name == CLUSTER_RECORD).then_some(Scope::Cluster));
        Record {
            installation: ann.get(INSTALLATION).filter(|s| !s.is_empty()).cloned(),
            scope,
            name,
        }
    }

    fn other_than(&self, me: &Identity) -> Option<&str> {
        self.installation.as_deref().filter(|o| *o != me.id)
    }
}

/// Why an installation refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("the MutatingWebhookConfiguration {record} belongs to installation {owner:?}; this installation ({me:?}) does not take it over. Use another --webhook-config-name, stop the other installation, or pass --take-over if it is gone for good")]
    RecordOwned {
        record: String,
        owner: String,
        me: String,
    },
    #[error("installation {owner:?} already serves the whole cluster (MutatingWebhookConfiguration {record}); a second cluster-wide installation ({me:?}) would act on the same backends. Scope this one to a namespace with --namespace (a cluster-wide installation steps aside from it), stop the other one, or pass --take-over if it is gone for good")]
    ClusterWide {
        record: String,
        owner: String,
        me: String,
    },
    #[error("namespace {namespace} is already served by installation {owner:?} (MutatingWebhookConfiguration {record}); this installation ({me:?}) does not share it. Use another namespace, stop the other installation, or pass --take-over if it is gone for good")]
    Namespace {
        namespace: String,
        record: String,
        owner: String,
        me: String,
    },
}

/// Whether `me` may start beside `records` (pure). Records without an installation are adoptable.
pub fn check(me: &Identity, records: &[Record]) -> Result<(), Conflict> {
    for r in records {
        let Some(owner) = r.other_than(me) else {
            continue;
        };
        let conflict = |kind: fn(String, String, String) -> Conflict| {
            Err(kind(r.name.clone(), owner.to_string(), me.id.clone()))
        };
        if r.name == me.record {
            return conflict(|record, owner, me| Conflict::RecordOwned { record, owner, me });
        }
        match (&me.scope, &r.scope) {
            (Scope::Cluster, Some(Scope::Cluster)) => {
                return conflict(|record, owner, me| Conflict::ClusterWide { record, owner, me })
            }
            (Scope::Namespace(mine), Some(Scope::Namespace(theirs))) if mine == theirs => {
                return Err(Conflict::Namespace {
                    namespace: mine.clone(),
                    record: r.name.clone(),
                    owner: owner.to_string(),
                    me: me.id.clone(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The namespaces a cluster-wide `me` leaves alone: those served by other, namespace-scoped
/// installations (pure). Empty for a namespace-scoped `me`.
pub fn claimed_elsewhere(me: &Identity, records: &[Record]) -> BTreeSet<String> {
    if me.scope != Scope::Cluster {
        return BTreeSet::new();
    }
    records
        .iter()
        .filter(|r| r.other_than(me).is_some())
        .filter_map(|r| match &r.scope {
            Some(Scope::Namespace(n)) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// Whether `me` writes the status of a (cluster-scoped) `CeleryResultCleanupPolicy` whose status
/// names `owner` as its writer (pure). One writer per policy, so two installations never overwrite
/// each other's report: a running cluster-wide installation writes it; else the installation the
/// status names while its record exists; else `me` (first come, or taking over from one that is
/// gone). The others report their runs as Events on their backends and in their metrics.
pub fn writes_policy_status(me: &Identity, owner: Option<&str>, records: &[Record]) -> bool {
    let cluster_wide = records
        .iter()
        .filter(|r| r.scope == Some(Scope::Cluster))
        .find_map(|r| r.installation.as_deref());
    if me.scope == Scope::Cluster {
        return cluster_wide.is_none_or(|c| c == me.id);
    }
    if let Some(c) = cluster_wide {
        return c == me.id;
    }
    match owner {
        None => true,
        Some(o) if o == me.id => true,
        Some(o) => !records.iter().any(|r| r.installation.as_deref() == Some(o)),
    }
}

/// The namespaces other installations serve, as the controller, the webhook and the cleanup
/// runner see them (kept current by [`watch_claims`]).
pub type Claims = tokio::sync::watch::Receiver<BTreeSet<String>>;

/// The installation named on an object's [`INSTALLATION`] annotation when it is not `me`.
pub fn foreign_owner<'a>(
    me: &Identity,
    annotations: &'a std::collections::BTreeMap<String, String>,
) -> Option<&'a str> {
    annotations
        .get(INSTALLATION)
        .map(String::as_str)
        .filter(|o| !o.is_empty() && *o != me.id)
}

/// The first of this installation's namespaced objects (its leader Lease, its webhook
/// certificate Secret) that another installation owns, as a sentence naming both; an object
/// without the annotation (from before identities, or not created yet) is this installation's.
pub async fn foreign_objects(
    client: &Client,
    me: &Identity,
    lease: (&str, &str),
    secret: Option<(&str, &str)>,
) -> anyhow::Result<Option<String>> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease.0);
    // Without permission to read it the election reports the problem itself.
    if let Ok(Some(l)) = leases.get_opt(lease.1).await {
        if let Some(owner) = foreign_owner(me, l.annotations()) {
            return Ok(Some(format!("the leader Lease {}/{} belongs to installation {owner:?}; this installation ({:?}) does not share its election. Use another --lease-name or --lease-namespace, stop the other installation, or pass --take-over if it is gone for good", lease.0, lease.1, me.id)));
        }
    }
    if let Some((ns, name)) = secret {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        if let Ok(Some(s)) = secrets.get_metadata_opt(name).await {
            if let Some(owner) = foreign_owner(me, s.annotations()) {
                return Ok(Some(format!("the webhook certificate Secret {ns}/{name} belongs to installation {owner:?}; this installation ({:?}) does not take it over. Use another --webhook-secret, stop the other installation, or pass --take-over if it is gone for good", me.id)));
            }
        }
    }
    Ok(None)
}

/// The record's metadata as applied by [`RECORD_MANAGER`].
pub fn record_object(me: &Identity, owner: Option<&OwnerReference>) -> serde_json::Value {
    let mut metadata = json!({
        "name": me.record,
        "labels": {"app.kubernetes.io/managed-by": crate::api::footprint::FIELD_MANAGER},
        "annotations": {INSTALLATION: me.id, SCOPE: me.scope.annotation()},
    });
    if let Some(o) = owner {
        metadata["ownerReferences"] = json!([o]);
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
    })
}

/// Every record in the cluster.
pub async fn records(client: &Client) -> anyhow::Result<Vec<Record>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(MANAGED_BY))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list MutatingWebhookConfigurations ({MANAGED_BY}) to check for other installations: {e}"))?;
    Ok(list.items.iter().map(Record::from_object).collect())
}

/// Write (or refresh) this installation's record, after [`check`] found no conflict.
pub async fn apply_record(
    client: &Client,
    me: &Identity,
    owner: Option<&OwnerReference>,
) -> anyhow::Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(
        &me.record,
        &PatchParams::apply(RECORD_MANAGER).force(),
        &Patch::Apply(record_object(me, owner)),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot write this installation's record (MutatingWebhookConfiguration {}): {e}",
            me.record
        )
    })?;
    tracing::info!(installation = %me.id, scope = me.scope.annotation(), record = %me.record, "installation recorded");
    Ok(())
}

/// Remove this installation's record if it still names this installation (a local run leaving).
pub async fn unregister(client: &Client, me: &Identity) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match api.get_opt(&me.record).await {
        Ok(Some(m)) if Record::from_object(&m).installation.as_deref() == Some(&me.id) => {
            match api.delete(&me.record, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(record = %me.record, "removed this installation's record and webhook configuration")
                }
                Err(e) => {
                    tracing::warn!(error = %e, record = %me.record, "cannot remove this installation's record")
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, record = %me.record, "cannot read this installation's record")
        }
    }
}

/// What owns this installation's record (and its Lease and webhook certificate Secret), so that
/// removing the installation removes them: the ClusterRole a Helm release installs
/// (`--owner-cluster-role`), else, for a namespace-scoped run, the watched Namespace, else nothing
/// (a cluster-wide local run; `--dev` removes its record on exit).
pub async fn owner(
    client: &Client,
    cluster_role: Option<&str>,
    scope: &Scope,
) -> anyhow::Result<Option<OwnerReference>> {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let reference = |api_version: &str, kind: &str, name: &str, uid: Option<String>| {
        uid.map(|uid| OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid,
            ..Default::default()
        })
    };
    if let Some(name) = cluster_role {
        let api: Api<ClusterRole> = Api::all(client.clone());
        let role = api.get(name).await.map_err(|e| {
            anyhow::anyhow!("--owner-cluster-role {name}: cannot read the ClusterRole: {e}")
        })?;
        return Ok(reference(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            name,
            role.metadata.uid,
        ));
    }
    if let Scope::Namespace(ns) = scope {
        let api: Api<Namespace> = Api::all(client.clone());
        return match api.get_opt(ns).await {
            Ok(Some(n)) => Ok(reference("v1", "Namespace", ns, n.metadata.uid)),
            Ok(None) => Err(anyhow::anyhow!(
                "--namespace {ns}: the namespace does not exist"
            )),
            // Without permission to read it, the record just has no owner.
            Err(e) => {
                tracing::debug!(error = %e, namespace = %ns, "cannot read the watched namespace; the record gets no owner");
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// Name of the installation's checksum-key Secret (beside its Lease).
pub fn checksum_key_secret(lease_name: &str) -> String {
    format!("{lease_name}-checksum-key")
}

/// The installation's secret key for pod-template checksums (`crate::inject::checksum`): read
/// from the Secret `name` in `namespace`, or created once with 32 random bytes (owned like the
/// certificate Secret, so uninstalling removes it). Every replica reads the same key, so no
/// restart or failover rolls a worker; deleting the Secret rolls every injected worker once.
pub async fn checksum_key(
    client: &Client,
    namespace: &str,
    name: &str,
    owner: Option<&OwnerReference>,
) -> anyhow::Result<Vec<u8>> {
    use k8s_openapi::api::core::v1::Secret;
    use rand::RngCore;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get(CHECKSUM_KEY))
            .map(|v| v.0.clone())
            .filter(|v| v.len() >= 16)
    };
    for _ in 0..3 {
        let live = api.get_opt(name).await.map_err(|e| {
            anyhow::anyhow!("cannot read the checksum-key Secret {namespace}/{name}: {e}")
        })?;
        if let Some(key) = live.as_ref().and_then(read) {
            return Ok(key);
        }
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": crate::api::footprint::FIELD_MANAGER},
                "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
            },
            "type": "Opaque",
        }))?;
        let written = match live {
            // Present but without a usable key (edited by hand): a merge patch guarded by its
            // resourceVersion (a conflict means someone wrote it meanwhile: read theirs). Patch,
            // not update: the chart grants the operator get, create and patch on its Secrets.
            Some(l) => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": l.metadata.resource_version},
                    "data": {CHECKSUM_KEY: k8s_openapi::ByteString(key.clone())},
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
            None => {
                secret.data = Some(
                    [(
                        CHECKSUM_KEY.to_string(),
                        k8s_openapi::ByteString(key.clone()),
                    )]
                    .into(),
                );
                api.create(&Default::default(), &secret).await
            }
        };
        match written {
            Ok(_) => return Ok(key),
            // Another replica wrote it first: read theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                anyhow::bail!("cannot write the checksum-key Secret {namespace}/{name}: {e}")
            }
        }
    }
    anyhow::bail!("the checksum-key Secret {namespace}/{name} keeps changing; is another installation writing it?")
}

/// Keep `tx` current with [`claimed_elsewhere`] and re-write this installation's record if it
/// disappears (a user deleted it), until the process ends.
pub async fn watch_claims(
    client: Client,
    me: Identity,
    owner: Option<OwnerReference>,
    tx: tokio::sync::watch::Sender<BTreeSet<String>>,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::Event;
    use kube::runtime::{watcher, WatchStreamExt};
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(MANAGED_BY))
        .default_backoff()
        // Every event, deletions included (a record going away frees its namespace).
        .reflect(writer);
    let mut stream = Box::pin(stream);
    let mut seen_mine = false;
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                tracing::debug!(error = %e, "installation record watch");
                continue;
            }
            // Mid-relist: wait for the whole list.
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Ok(_) => {}
        }
        let all: Vec<Record> = reader
            .state()
            .iter()
            .map(|m| Record::from_object(m))
            .collect();
        let claimed = claimed_elsewhere(&me, &all);
        tx.send_if_modified(|old| {
            if *old != claimed {
                tracing::info!(namespaces = ?claimed, "namespaces served by other installations (left alone)");
                *old = claimed;
                true
            } else {
                false
            }
        });
        let mine = all
            .iter()
            .any(|r| r.name == me.record && r.installation.as_deref() == Some(&me.id));
        if mine {
            seen_mine = true;
        } else if seen_mine {
            seen_mine = false;
            if let Err(e) = apply_record(&client, &me, owner.as_ref()).await {
                tracing::warn!(error = %e, "cannot re-write this installation's record");
            }
        }
    }
}

/// The API of a namespaced kind in the installation's namespace, or in every namespace.
pub fn scoped<K>(client: &kube::Client, ns: &Option<String>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(n) => kube::Api::namespaced(client.clone(), n),
        None => kube::Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(id: &str, scope: Scope) -> Identity {
        Identity {
            id: id.into(),
            record: scope.default_record(),
            scope,
        }
    }

    fn rec(name: &str, owner: Option<&str>, scope: Option<Scope>) -> Record {
        Record {
            name: name.into(),
            installation: owner.map(Into::into),
            scope,
        }
    }

    fn ns(n: &str) -> Scope {
        Scope::Namespace(n.into())
    }

    #[test]
    fn conflicts() {
        let cluster_a = me("a", Scope::Cluster);
        let demo_b = me("b", ns("demo"));
        let cases: Vec<(&Identity, Vec<Record>, Option<&str>)> = vec![
            // Nothing else: fine.
            (&cluster_a, vec![], None),
            // Its own record (a restart, another replica): fine.
            (
                &cluster_a,
                vec![rec(CLUSTER_RECORD, Some("a"), Some(Scope::Cluster))],
                None,
            ),
            // A record from before identities: adoptable.
            (&cluster_a, vec![rec(CLUSTER_RECORD, None, None)], None),
            // Same record, other owner.
            (
                &cluster_a,
                vec![rec(CLUSTER_RECORD, Some("z"), Some(Scope::Cluster))],
                Some("belongs to installation \"z\""),
            ),
            // Another cluster-wide installation under another name.
            (
                &cluster_a,
                vec![rec("other", Some("z"), Some(Scope::Cluster))],
                Some("already serves the whole cluster"),
            ),
            // A namespace-scoped installation beside a cluster-wide one: fine both ways.
            (
                &cluster_a,
                vec![rec(
                    "celery-backend-operator.demo",
                    Some("b"),
                    Some(ns("demo")),
                )],
                None,
            ),
            (
                &demo_b,
                vec![rec(CLUSTER_RECORD, Some("a"), Some(Scope::Cluster))],
                None,
            ),
            // Disjoint namespaces: fine.
            (
                &demo_b,
                vec![rec("celery-backend-operator.x", Some("c"), Some(ns("x")))],
                None,
            ),
            // The same namespace under another record name.
            (
                &demo_b,
                vec![rec("mine-too", Some("c"), Some(ns("demo")))],
                Some("namespace demo is already served by installation \"c\""),
            ),
        ];
        for (i, (who, records, want)) in cases.into_iter().enumerate() {
            let got = check(who, &records).err().map(|e| e.to_string());
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.contains(w), "case {i}: {g}"),
                (w, g) => panic!("case {i}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn cluster_wide_steps_aside() {
        let records = vec![
            rec(CLUSTER_RECORD, Some("a"), Some(Scope::Cluster)),
            rec("celery-backend-operator.demo", Some("b"), Some(ns("demo"))),
            rec("celery-backend-operator.t1", Some("c"), Some(ns("t1"))),
            // Its own namespaced record would not count (not possible, but harmless).
            rec("x", Some("a"), Some(ns("own"))),
        ];
        let got = claimed_elsewhere(&me("a", Scope::Cluster), &records);
        assert_eq!(got, BTreeSet::from(["demo".to_string(), "t1".to_string()]));
        assert!(claimed_elsewhere(&me("b", ns("demo")), &records).is_empty());
    }

    #[test]
    fn one_writer_per_policy_status() {
        let cluster = me("cbo-system.cbo", Scope::Cluster);
        let demo = me("cbo-system.demo", Scope::Namespace("demo".into()));
        let other = me("team.x", Scope::Namespace("x".into()));
        let r_cluster = rec(
            "celery-backend-operator",
            Some("cbo-system.cbo"),
            Some(Scope::Cluster),
        );
        let r_demo = rec(
            "celery-backend-operator.demo",
            Some("cbo-system.demo"),
            Some(Scope::Namespace("demo".into())),
        );
        let r_other = rec(
            "celery-backend-operator.x",
            Some("team.x"),
            Some(Scope::Namespace("x".into())),
        );
        let all = [r_cluster.clone(), r_demo.clone(), r_other.clone()];
        // (who asks, status names, records, writes)
        let table: &[(&Identity, Option<&str>, &[Record], bool)] = &[
            // A running cluster-wide installation is the writer, whatever the status says.
            (&cluster, Some("cbo-system.demo"), &all, true),
            (&demo, Some("cbo-system.demo"), &all, false),
            (&demo, None, &all, false),
            // Only scoped ones: the one the status names, while it lives; else the first to run.
            (&demo, None, &[r_demo.clone(), r_other.clone()], true),
            (
                &other,
                Some("cbo-system.demo"),
                &[r_demo.clone(), r_other.clone()],
                false,
            ),
            (
                &demo,
                Some("cbo-system.demo"),
                &[r_demo.clone(), r_other.clone()],
                true,
            ),
            (
                &other,
                Some("cbo-system.demo"),
                std::slice::from_ref(&r_other),
                true,
            ),
            // A cluster-wide one takes over from a scoped writer.
            (
                &cluster,
                Some("team.x"),
                &[r_cluster.clone(), r_other.clone()],
                true,
            ),
            (&cluster, None, &[], true),
        ];
        for (i, (who, owner, records, want)) in table.iter().enumerate() {
            assert_eq!(
                writes_policy_status(who, *owner, records),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn identities_are_label_values() {
        assert_eq!(default_id("cbo-system", "cbo"), "cbo-system.cbo");
        let long = default_id(&"n".repeat(63), &"l".repeat(100));
        assert!(is_label_value(&long), "{long}");
        assert_ne!(long, default_id(&"n".repeat(63), &"l".repeat(101)));
        for bad in ["", "-a", "a-", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
        assert_eq!(ns("demo").default_record(), "celery-backend-operator.demo");
        assert_eq!(Scope::parse(Some("*")), Some(Scope::Cluster));
        assert_eq!(Scope::parse(Some("")), None);
    }

    #[test]
    fn record_carries_identity_and_owner() {
        let o = OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "demo".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let v = record_object(&me("b", ns("demo")), Some(&o));
        assert_eq!(v["metadata"]["annotations"][INSTALLATION], "b");
        assert_eq!(v["metadata"]["annotations"][SCOPE], "demo");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Namespace");
        assert!(
            v.get("webhooks").is_none(),
            "the record never touches webhooks"
        );
    }
}
