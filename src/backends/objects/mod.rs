//! Object stores: S3 (`s3://`), Google Cloud Storage (`gs://`) and Azure Blob (`azureblockblob://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};
use crate::provision::{ContainerParts, Managed, Profile, Render};

pub(crate) fn s3(cx: &mut Ctx, s: &S3Backend) -> Result<(), BuildError> {
    let b = s.external.as_ref().ok_or_else(|| {
        invalid(
            "spec.s3",
            "set external (managed specs are rendered by the provisioner)",
        )
    })?;
    let f = "spec.s3.external";
    let key = cx.opt_secret(
        &format!("{f}.accessKeyIdSecretRef"),
        &b.access_key_id_secret_ref,
    )?;
    let secret = cx.opt_secret(
        &format!("{f}.secretAccessKeySecretRef"),
        &b.secret_access_key_secret_ref,
    )?;
    if key.is_some() != secret.is_some() {
        return Err(invalid(
            f,
            "set both accessKeyIdSecretRef and secretAccessKeySecretRef, or neither",
        ));
    }
    checked_endpoint_url(&format!("{f}.endpointUrl"), b.endpoint_url.as_ref())?;
    if let Some(t) = b.tls.as_ref().filter(|t| t.enabled) {
        private_ca(cx, t, b.endpoint_url.as_deref())?;
    }
    // Celery ignores everything after s3://; the bucket and the rest are settings.
    cx.out.uri = "s3://".into();
    cx.set("s3_bucket", b.bucket.as_str());
    cx.set_opt("s3_base_path", s.base_path.clone());
    cx.set_opt("s3_endpoint_url", b.endpoint_url.clone());
    cx.set_opt("s3_region", b.region.clone());
    cx.set_opt("s3_access_key_id", key.clone());
    cx.set_opt("s3_secret_access_key", secret.clone());
    cx.bind("type", "s3");
    cx.bind("bucket", &b.bucket);
    if let Some(e) = &b.endpoint_url {
        cx.bind("endpoint", e);
    }
    if let Some(r) = &b.region {
        cx.bind("region", r);
    }
    if let Some(k) = key {
        cx.bind("access_key_id", k);
    }
    if let Some(s) = secret {
        cx.bind("secret_access_key", s);
    }
    if s.base_path.as_deref().is_some_and(|p| !p.ends_with('/')) {
        cx.warn(
            "s3 basePath does not end with '/': Celery joins it to the key without a separator",
        );
    }
    Ok(())
}

/// A private CA for an S3-compatible https endpoint. Celery's S3 backend takes no CA setting, but
/// botocore reads `AWS_CA_BUNDLE` (its `ca_bundle` configuration) for every client it makes; the
/// config module sets it with `os.environ.setdefault`, so a worker's own value wins (without the
/// module, injection sets it from the URI Secret: `inject::client_env`).
fn private_ca(cx: &mut Ctx, t: &TlsConfig, endpoint: Option<&str>) -> Result<(), BuildError> {
    let f = "spec.s3.external.tls";
    if !endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("https://")) {
        return Err(invalid(
            f,
            "tls needs an https endpointUrl (AWS's own endpoints are https with publicly trusted certificates already)",
        ));
    }
    let only_ca = t.client_certificate_secret_ref.is_none()
        && t.cert_file.is_none()
        && t.key_file.is_none()
        && t.verify.unwrap_or_default() == TlsVerify::Required;
    let Some(ca) = t.ca_path().filter(|_| only_ca) else {
        return Err(invalid(
            f,
            "s3 tls takes a CA only (caSecretRef, caConfigMapRef or caFile; botocore reads it from AWS_CA_BUNDLE) and always verifies: no client certificate, verify Required",
        ));
    };
    cx.tls(f, t)?;
    cx.out.env.insert("AWS_CA_BUNDLE".into(), ca);
    cx.warn("s3 tls: AWS_CA_BUNDLE is process-wide: every boto3 client in the worker then trusts only this CA (a worker that sets AWS_CA_BUNDLE itself keeps its own and must include it)");
    Ok(())
}

pub(crate) fn gcs(cx: &mut Ctx, spec: &GcsBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let mut q: Vec<(&str, String)> = vec![("gcs_project", b.project.clone())];
    if let Some(t) = b.ttl_seconds {
        q.push(("gcs_ttl", t.to_string()));
    }
    if let Some(t) = b.threadpool_maxsize {
        q.push(("gcs_threadpool_maxsize", t.to_string()));
    }
    if let Some(p) = &b.firestore_project {
        q.push(("firestore_project", p.clone()));
    }
    let base = b
        .base_path
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| format!("/{}", encode::path(p)))
        .unwrap_or_default();
    cx.out.uri = format!("gs://{}{base}{}", b.bucket, query(q));
    cx.bind("type", "gcs");
    cx.bind("bucket", &b.bucket);
    cx.bind("project", &b.project);
    cx.warn("Celery's gs:// backend needs google-cloud-firestore and a Firestore TTL policy on collection group 'celery' (field expires_at) at start-up");
    Ok(())
}

pub(crate) fn azure(cx: &mut Ctx, spec: &AzureBlockBlobBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    let f = "spec.azureBlockBlob.external";
    cx.out.uri = match (
        &b.connection_string_secret_ref,
        &b.account_url,
        b.credential,
    ) {
        (Some(r), None, None) => {
            let cs = cx.secret(&format!("{f}.connectionStringSecretRef"), r)?;
            cx.bind("connection_string", &cs);
            // Celery takes everything after the scheme verbatim.
            format!("azureblockblob://{}", cs.trim())
        }
        (None, Some(url), Some(cred)) => {
            checked_url(&format!("{f}.accountUrl"), Some(url))?;
            cx.bind("account_url", url);
            format!("azureblockblob://{cred:?}@{url}")
        }
        _ => {
            return Err(invalid(
                f,
                "set either connectionStringSecretRef, or accountUrl together with credential",
            ))
        }
    };
    cx.set_opt("azureblockblob_container_name", b.container.clone());
    cx.set_opt("azureblockblob_base_path", b.base_path.clone());
    cx.set_opt(
        "azureblockblob_connection_timeout",
        b.connection_timeout_seconds,
    );
    cx.set_opt("azureblockblob_read_timeout", b.read_timeout_seconds);
    cx.bind("type", "azure-blob");
    cx.bind("container", b.container.as_deref().unwrap_or("celery"));
    Ok(())
}

impl Family for S3Backend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn tls(&self) -> Option<&TlsConfig> {
        self.external.as_ref()?.tls.as_ref()
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        if let Some(e) = &self.external {
            refs.tls("spec.s3.external.tls", &e.tls);
            refs.one(
                "spec.s3.external.accessKeyIdSecretRef",
                &e.access_key_id_secret_ref,
            );
            refs.one(
                "spec.s3.external.secretAccessKeySecretRef",
                &e.secret_access_key_secret_ref,
            );
        }
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        s3(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(
            store::ObjectClient::s3(cfg)
                .map(|c| Box::new(c) as Box<dyn crate::stores::StoreClient>)
                .map_err(|e| e.to_string()),
        )
    }
}

impl Family for GcsBackend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn secret_refs(&self, _refs: &mut SecretRefs) {}

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        gcs(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(
            store::ObjectClient::gcs(cfg)
                .map(|c| Box::new(c) as Box<dyn crate::stores::StoreClient>)
                .map_err(|e| e.to_string()),
        )
    }
}

impl Family for AzureBlockBlobBackend {
    fn cleanup_reads_results(&self) -> bool {
        true
    }

    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.one(
            "spec.azureBlockBlob.external.connectionStringSecretRef",
            &self.external.connection_string_secret_ref,
        );
    }

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        azure(cx, self)
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(
            store::ObjectClient::azure(cfg)
                .map(|c| Box::new(c) as Box<dyn crate::stores::StoreClient>)
                .map_err(|e| e.to_string()),
        )
    }
}

/// Default bucket a managed object store creates.
pub const DEFAULT_BUCKET: &str = "celery-results";

/// The store this family provisions in managed mode.
pub(crate) const MANAGED: Profile = crate::provision::Profile {
    store: "s3",
    component: "minio",
    default_image: "quay.io/minio/minio",
    default_version: "RELEASE.2025-09-07T16-13-09Z",
    port: 9000,
    port_name: "s3",
    uid: 1000,
    data_path: "/data",
    username: "celery",
    memory: "256Mi",
    read_only_root: true,
};

impl crate::provision::ManagedProfile for S3Backend {
    const PROFILE: &'static Profile = &MANAGED;
}

impl Managed for S3Backend {
    fn managed(&self) -> Option<(&ManagedCommon, Option<String>)> {
        self.managed.as_ref().map(|m| (&m.common, m.bucket.clone()))
    }
    fn container(&self, r: &Render) -> ContainerParts {
        ContainerParts {
            command: json!(["minio", "server", "/data", "--address", ":9000", "--console-address", ":9001"]),
            env: vec![
                r.username_env("MINIO_ROOT_USER"),
                r.password_env("MINIO_ROOT_PASSWORD"),
                json!({"name": "CELERY_BUCKET", "value": bucket(r)}),
                json!({"name": "MC_CONFIG_DIR", "value": "/tmp/.mc"}),
            ],
            readiness: json!({"httpGet": {"path": "/minio/health/ready", "port": 9000}}),
            // Create the bucket once the server answers; mc ships in the MinIO image.
            post_start: Some(json!(["sh", "-c", "for i in $(seq 1 120); do mc alias set local http://127.0.0.1:9000 \"$MINIO_ROOT_USER\" \"$MINIO_ROOT_PASSWORD\" >/dev/null 2>&1 && mc mb --ignore-existing \"local/$CELERY_BUCKET\" && exit 0; sleep 2; done; exit 0"])),
            scratch: vec![],
        }
    }
    fn external(&self, r: &Render, out: &mut CeleryResultBackendSpec) {
        out.s3 = Some(S3Backend {
            external: Some(S3External {
                bucket: bucket(r),
                region: Some("us-east-1".into()),
                endpoint_url: Some(format!("http://{}:{}", r.host, r.profile.port)),
                access_key_id_secret_ref: Some(r.credential(crate::provision::USERNAME_KEY)),
                secret_access_key_secret_ref: Some(r.credential(crate::provision::PASSWORD_KEY)),
                tls: None,
            }),
            managed: None,
            base_path: self.base_path.clone(),
        });
    }
}

/// The bucket a managed MinIO creates: `managed.bucket`, else the default.
fn bucket(r: &Render) -> String {
    r.name.clone().unwrap_or_else(|| DEFAULT_BUCKET.to_string())
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[
            ("azureblockblob", "azureblockblob://DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"),
            ("gcs", "gs://celery-results/results?gcs_project=my-project"),
            ("s3", "s3://"),
        ]);
    }
}
