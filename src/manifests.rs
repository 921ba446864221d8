//! Reading CeleryResultBackend and Secret manifests from YAML files (used by the CLI subcommands).

use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::api::CeleryResultBackend;
use crate::uri::SecretValues;

/// Every YAML document in a file, as JSON values (empty documents skipped).
pub fn documents(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut docs = vec![];
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v = serde_json::Value::deserialize(doc)
            .with_context(|| format!("{}: document {} is not valid YAML", path.display(), i + 1))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn kind_of(v: &serde_json::Value) -> &str {
    v.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

/// Load the CeleryResultBackend from a file; Secrets in the same file are returned too.
pub fn load_backend(path: &Path) -> Result<(CeleryResultBackend, SecretValues)> {
    let mut backend = None;
    let mut secrets = SecretValues::new();
    for doc in documents(path)? {
        match kind_of(&doc) {
            "CeleryResultBackend" => {
                if backend.is_some() {
                    bail!(
                        "{}: more than one CeleryResultBackend; give one per file",
                        path.display()
                    );
                }
                let b: CeleryResultBackend = serde_json::from_value(doc)
                    .with_context(|| format!("{}: invalid CeleryResultBackend", path.display()))?;
                backend = Some(b);
            }
            "Secret" => add_secret(&mut secrets, doc, path)?,
            "ConfigMap" => add_config_map(&mut secrets, doc, path)?,
            _ => {}
        }
    }
    let b = backend.with_context(|| format!("{}: no CeleryResultBackend found", path.display()))?;
    Ok((b, secrets))
}

/// Load every Secret (and ConfigMap, for CA bundles) in a file into `into`.
pub fn load_secrets(path: &Path, into: &mut SecretValues) -> Result<()> {
    let mut found = false;
    for doc in documents(path)? {
        match kind_of(&doc) {
            "Secret" => add_secret(into, doc, path)?,
            "ConfigMap" => add_config_map(into, doc, path)?,
            _ => continue,
        }
        found = true;
    }
    if !found {
        bail!("{}: no Secret or ConfigMap found", path.display());
    }
    Ok(())
}

/// A ConfigMap's `data` under `configmap:<name>` ([`crate::api::CONFIG_MAP_PREFIX`]), as the
/// controller reads it (`binaryData` is not text and is left out).
fn add_config_map(into: &mut SecretValues, doc: serde_json::Value, path: &Path) -> Result<()> {
    let c: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(doc)
        .with_context(|| format!("{}: invalid ConfigMap", path.display()))?;
    let name = c
        .metadata
        .name
        .clone()
        .with_context(|| format!("{}: ConfigMap without metadata.name", path.display()))?;
    into.entry(crate::api::config_map_source(&name))
        .or_default()
        .extend(c.data.unwrap_or_default());
    Ok(())
}

fn add_secret(into: &mut SecretValues, doc: serde_json::Value, path: &Path) -> Result<()> {
    let s: Secret = serde_json::from_value(doc)
        .with_context(|| format!("{}: invalid Secret", path.display()))?;
    let name = s
        .metadata
        .name
        .clone()
        .with_context(|| format!("{}: Secret without metadata.name", path.display()))?;
    // As the controller reads Secrets (`uri::secret_text`): keys whose value is not UTF-8 (a
    // keystore beside the PEM, as cert-manager can add) are left out; one the backend refers to
    // is then reported by the builder, naming the field.
    let data = into.entry(name).or_default();
    data.extend(crate::secret_data::secret_text(&s));
    for (k, v) in s.string_data.unwrap_or_default() {
        data.insert(k, v);
    }
    Ok(())
}
