//! A shared filesystem (`file://`).

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn filesystem(cx: &mut Ctx, spec: &FilesystemBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    if !b.path.starts_with('/') || b.path.contains(['?', '#']) {
        return Err(invalid(
            "spec.filesystem.external.path",
            "must be an absolute path without ? or #",
        ));
    }
    checked_path("spec.filesystem.external.path", Some(&b.path))?;
    // Celery uses the path verbatim (no percent-decoding).
    cx.out.uri = format!("file://{}", b.path);
    if let Some(claim) = &b.claim_name {
        cx.warn(format!(
            "filesystem: the operator does not mount claim {claim:?}: give the workers a volume for it mounted at {}",
            b.path
        ));
    }
    cx.bind("type", "filesystem");
    cx.bind("path", &b.path);
    Ok(())
}

impl Family for FilesystemBackend {
    fn worker_local(cfg: &crate::uri::BackendConfig) -> Option<(String, std::path::PathBuf)> {
        let p = cfg.uri.strip_prefix("file://")?;
        Some((p.to_string(), p.into()))
    }

    fn secret_refs(&self, _refs: &mut SecretRefs) {}

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        filesystem(cx, self)
    }

    fn managed_why(&self) -> Option<&'static str> {
        FilesystemBackend::MANAGED_WHY
    }

    fn store_client(
        cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::FilesystemStore::new(&cfg.uri))))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[(
            "filesystem",
            "file:///var/lib/celery/results",
        )]);
    }
}
