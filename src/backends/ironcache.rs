//! IronCache (`ironcache://`): refused, because Celery 5 cannot load it.

use super::prelude::*;
use super::{Family, SecretRefs};

impl Family for IronCacheBackend {
    fn secret_refs(&self, refs: &mut SecretRefs) {
        refs.one(
            "spec.ironCache.external.tokenSecretRef",
            &Some(self.external.token_secret_ref.clone()),
        );
    }

    fn build(&self, _cx: &mut Ctx) -> Result<(), BuildError> {
        Err(BuildError::Unsupported {
            field: "spec.ironCache".into(),
            message: "Celery 5 cannot load the ironcache backend (it is not in Celery's backend aliases and the iron_celery package does not import on Celery 5); choose another backend".into(),
        })
    }

    fn managed_why(&self) -> Option<&'static str> {
        IronCacheBackend::MANAGED_WHY
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[("ironcache", "")]);
    }
}
