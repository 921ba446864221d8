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

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    /// A keystore beside the PEM (as cert-manager can add) is left out, the text keys stay: the
    /// controller and the CLI (`manifests::load_secrets`) read Secrets through this.
    #[test]
    fn keys_that_are_not_text_are_left_out() {
        let s = k8s_openapi::api::core::v1::Secret {
            data: Some(
                [
                    (
                        "ca.crt".to_string(),
                        ByteString(b"-----BEGIN CERTIFICATE-----".to_vec()),
                    ),
                    (
                        "truststore.p12".to_string(),
                        ByteString(vec![0x30, 0x82, 0xff, 0xfe]),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let text = super::secret_text(&s);
        assert_eq!(text.keys().collect::<Vec<_>>(), ["ca.crt"]);
    }
}
