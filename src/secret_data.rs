//! Kubernetes Secret data as text: one rule for the controller, the webhook, the cleanup
//! policies and the CLI.

use std::collections::BTreeMap;

/// A Secret's `data` as text: key -> UTF-8 value; keys whose value is not UTF-8 are left out
/// (the builder then names the field as missing, never printing the bytes).
pub fn secret_text(s: &k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|t| (k.clone(), t)))
        .collect()
}
