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
    let mut backend: Option<CeleryResultBackend> = None;
    let mut rest = vec![];
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
            "Secret" | "ConfigMap" => rest.push(doc),
            _ => {}
        }
    }
    let b = backend.with_context(|| format!("{}: no CeleryResultBackend found", path.display()))?;
    let mut secrets = SecretValues::new();
    let ns = b.metadata.namespace.as_deref();
    for doc in rest {
        add(&mut secrets, doc, path, ns)?;
    }
    Ok((b, secrets))
}

/// Load every Secret (and ConfigMap, for CA bundles) in a file into `into`, for a backend in
/// namespace `namespace` (when the manifests say): an object of another namespace is refused (a
/// backend reads its own namespace's objects only), and so is a name given twice (which one
/// would count is not for the order of files to decide).
pub fn load_secrets(path: &Path, into: &mut SecretValues, namespace: Option<&str>) -> Result<()> {
    let mut found = false;
    for doc in documents(path)? {
        match kind_of(&doc) {
            "Secret" | "ConfigMap" => add(into, doc, path, namespace)?,
            _ => continue,
        }
        found = true;
    }
    if !found {
        bail!("{}: no Secret or ConfigMap found", path.display());
    }
    Ok(())
}

fn add(
    into: &mut SecretValues,
    doc: serde_json::Value,
    path: &Path,
    namespace: Option<&str>,
) -> Result<()> {
    let kind = kind_of(&doc).to_string();
    let meta = doc.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(|v| v.as_str());
    let name = field("name").unwrap_or_default().to_string();
    if let (Some(theirs), Some(ours)) = (field("namespace"), namespace) {
        if theirs != ours {
            bail!(
                "{}: {kind} {theirs}/{name} is in another namespace than the backend ({ours}); a backend reads its own namespace's objects only",
                path.display()
            );
        }
    }
    let key = if kind == "ConfigMap" {
        crate::api::config_map_source(&name)
    } else {
        name.clone()
    };
    if !name.is_empty() && into.contains_key(&key) {
        bail!(
            "{}: {kind} {name:?} is given twice; give each once",
            path.display()
        );
    }
    if kind == "ConfigMap" {
        add_config_map(into, doc, path)
    } else {
        add_secret(into, doc, path)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn secrets_of_another_namespace_or_given_twice_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let backend = "apiVersion: celery.dev/v1alpha1\nkind: CeleryResultBackend\nmetadata: {name: b, namespace: team-a}\nspec:\n  redis: {external: {host: r}}\n";
        let secret = |ns: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: pw{ns}}}\nstringData: {{password: x}}\n")
        };
        let f = file(d.path(), "b.yaml", &format!("{backend}---\n{}", secret("")));
        let (b, mut s) = load_backend(&f).unwrap();
        assert!(s.contains_key("pw"));
        let ns = b.metadata.namespace.as_deref();
        // The same name again (from -s) is refused, naming it.
        let again = file(d.path(), "s.yaml", &secret(""));
        let e = load_secrets(&again, &mut s, ns).unwrap_err().to_string();
        assert!(e.contains("Secret \"pw\" is given twice"), "{e}");
        // Another namespace is refused; the backend's own (or none) is fine.
        let other = file(d.path(), "o.yaml", &secret(", namespace: other"));
        let e = load_secrets(&other, &mut s, ns).unwrap_err().to_string();
        assert!(
            e.contains("Secret other/pw is in another namespace than the backend (team-a)"),
            "{e}"
        );
        let own = file(
            d.path(),
            "own.yaml",
            &secret(", namespace: team-a").replace("name: pw", "name: pw2"),
        );
        load_secrets(&own, &mut s, ns).unwrap();
        // A ConfigMap and a Secret may share a name.
        let cm = file(
            d.path(),
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pw}\ndata: {ca.pem: x}\n",
        );
        load_secrets(&cm, &mut s, ns).unwrap();
    }
}
