//! RPC (`rpc://`): results as AMQP messages on the broker.

/// The operator's client for this store: health round trip and cleanup.
pub mod store;

use super::prelude::*;
use super::{Family, SecretRefs};

pub(crate) fn rpc(cx: &mut Ctx, spec: &RpcBackend) -> Result<(), BuildError> {
    let b = &spec.external;
    cx.out.uri = "rpc://".into();
    cx.set_opt("result_persistent", b.persistent);
    cx.bind("type", "rpc");
    cx.warn("rpc results travel over the broker (broker_url): only the client that sent a task can read its result, once");
    Ok(())
}

impl Family for RpcBackend {
    fn secret_refs(&self, _refs: &mut SecretRefs) {}

    fn build(&self, cx: &mut Ctx) -> Result<(), BuildError> {
        rpc(cx, self)
    }

    fn managed_why(&self) -> Option<&'static str> {
        RpcBackend::MANAGED_WHY
    }

    fn store_client(
        _cfg: &crate::uri::BackendConfig,
        _result_expires_set: bool,
    ) -> Option<Result<Box<dyn crate::stores::StoreClient>, String>> {
        Some(Ok(Box::new(store::AmqpStore::from_env())))
    }
}

#[cfg(test)]
mod examples {
    /// This family's examples and the URIs they build (see `backends::tests`).
    #[test]
    fn examples_build_their_uris() {
        crate::backends::tests::assert_examples(&[("rpc", "rpc://")]);
    }
}
