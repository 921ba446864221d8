//! Operator-wide image settings for managed stores: a registry prefix, a per-store image map and
//! `imagePullSecrets`, set once for the whole operator (flags / `CBO_STORE_IMAGE_*` / chart values
//! `storeImages` and `storeImagePullSecrets`) so air-gapped and private-registry clusters do not
//! have to set `managed.image` on every backend.
//!
//! Which image a store Pod runs, first match wins:
//!
//! 1. the backend's own `spec.<backend>.managed.image`, as written;
//! 2. the per-store image of the operator (`--store-image redis=IMAGE`, [`StoreImages::images`]), as
//!    written (`managed.version` does not change it);
//! 3. the registry prefix (`--store-image-registry`) applied to the default image by
//!    [`with_registry`], tagged `managed.version` when given, else the default version;
//! 4. the default image and version (`docker.io/library/redis:7.4`, ...).
//!
//! References are checked against the grammar of `github.com/distribution/reference`
//! (`reference.go`/`regexp.go`, what Docker, containerd and the kubelet parse with), see
//! [`check_reference`]; Secret names in `imagePullSecrets` are DNS-1123 subdomains, as the API
//! server requires of Secret names.

/// Operator-wide image settings for the store Pods the operator provisions.
/// `Default` is "no override": default images, no `imagePullSecrets` (the StatefulSets rendered
/// are byte-for-byte what they were without these settings, so their applied-hash is unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreImages {
    /// Registry/repository prefix replacing the path of every default image (see [`with_registry`]).
    pub registry: Option<String>,
    /// Full image reference per store, keyed by the store's profile key (`redis`, `postgresql`,
    /// `mongodb`, `elasticsearch`, `s3`: each provisionable family's `Profile::store`).
    pub images: std::collections::BTreeMap<String, String>,
    /// Names of Secrets (in each backend's namespace) listed as `imagePullSecrets` on every store
    /// Pod template, in this order, without duplicates.
    pub pull_secrets: Vec<String>,
}

/// A refused operator-wide image setting; the message names the flag and its environment variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag} {value:?}: {reason}")]
pub struct ImageSettingError {
    /// The flag and its environment variable, e.g. `--store-image redis=IMAGE (CBO_STORE_IMAGE_REDIS)`.
    pub flag: String,
    pub value: String,
    pub reason: String,
}

/// The flag and environment variable of each setting, for error messages (kept in step with
/// `cli::RunArgs`).
pub const REGISTRY_FLAG: &str = "--store-image-registry (CBO_STORE_IMAGE_REGISTRY)";
pub const PULL_SECRET_FLAG: &str = "--store-image-pull-secret (CBO_STORE_IMAGE_PULL_SECRETS)";
/// Prefix of the per-store environment variables: `CBO_STORE_IMAGE_<STORE>`.
pub const STORE_IMAGE_ENV_PREFIX: &str = "CBO_STORE_IMAGE_";

/// The flag and environment variable of one store's image, for error messages.
pub fn store_flag(store: &str) -> String {
    format!(
        "--store-image {store}=IMAGE ({STORE_IMAGE_ENV_PREFIX}{})",
        store.to_ascii_uppercase()
    )
}

/// The store keys the operator can provision, from the provisionable families' profiles.
pub fn store_keys() -> Vec<&'static str> {
    crate::backends::managed_profiles()
        .iter()
        .map(|p| p.store)
        .collect()
}

impl StoreImages {
    /// Check every setting (see [`check_reference`], [`check_registry`], [`check_secret_name`])
    /// and normalise: a trailing `/` of the registry is dropped, duplicate pull secrets are
    /// dropped (the API server refuses a list with the same name twice). The first refused
    /// setting is the error.
    pub fn validated(mut self) -> Result<Self, ImageSettingError> {
        let err = |flag: &str, value: &str, reason: String| ImageSettingError {
            flag: flag.into(),
            value: value.into(),
            reason,
        };
        if let Some(r) = &self.registry {
            let trimmed = r.strip_suffix('/').unwrap_or(r).to_string();
            check_registry(&trimmed).map_err(|e| err(REGISTRY_FLAG, r, e))?;
            self.registry = Some(trimmed);
        }
        let known = store_keys();
        for (store, image) in &self.images {
            let flag = store_flag(store);
            if !known.contains(&store.as_str()) {
                return Err(err(
                    &flag,
                    image,
                    format!(
                        "no such store: the operator provisions {}",
                        known.join(", ")
                    ),
                ));
            }
            check_reference(image).map_err(|e| err(&flag, image, e))?;
        }
        let mut seen = std::collections::HashSet::new();
        let mut secrets = vec![];
        for s in std::mem::take(&mut self.pull_secrets) {
            check_secret_name(&s).map_err(|e| err(PULL_SECRET_FLAG, &s, e))?;
            if seen.insert(s.clone()) {
                secrets.push(s);
            }
        }
        self.pull_secrets = secrets;
        Ok(self)
    }

    /// The per-store image set for `store` (a profile key), if any.
    pub fn for_store(&self, store: &str) -> Option<&str> {
        self.images.get(store).map(String::as_str)
    }

    /// The image a store Pod runs, by the precedence in the module docs. `backend_image` and
    /// `version` are the backend's `managed.image` and `managed.version`; `default_image` is a
    /// repository without tag (`docker.io/library/redis`).
    pub fn resolve(
        &self,
        store: &str,
        backend_image: Option<&str>,
        version: Option<&str>,
        default_image: &str,
        default_version: &str,
    ) -> String {
        if let Some(i) = backend_image {
            return i.to_string();
        }
        if let Some(i) = self.for_store(store) {
            return i.to_string();
        }
        let repository = match &self.registry {
            Some(prefix) => with_registry(prefix, default_image),
            None => default_image.to_string(),
        };
        format!("{repository}:{}", version.unwrap_or(default_version))
    }
}

/// The rule of `--store-image-registry`: `prefix` + `/` + the last `/`-separated component of
/// `repository` (a repository without tag or digest). The registry host *and* every path
/// component before the image's own name are replaced, so a mirror holds all stores flat under
/// one path:
///
/// | prefix | default image | result |
/// | --- | --- | --- |
/// | `registry.corp/mirror` | `docker.io/library/redis` | `registry.corp/mirror/redis` |
/// | `registry.corp/mirror` | `quay.io/minio/minio` | `registry.corp/mirror/minio` |
/// | `registry.corp:5000` | `docker.elastic.co/elasticsearch/elasticsearch` | `registry.corp:5000/elasticsearch` |
///
/// The tag is appended by the caller ([`StoreImages::resolve`]). A trailing `/` on `prefix` is
/// ignored.
pub fn with_registry(prefix: &str, repository: &str) -> String {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    format!("{prefix}/{last}")
}

/// A registry host: `host[:port]`, host labels of letters, digits and `-` separated by `.`
/// (distribution's `domainComponent`; IPv6 literals are not accepted here).
fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the port of registry {d:?} is not a number"));
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "registry {d:?} is not a host name (letters, digits, '-' and '.')"
        ))
    }
}

/// One path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` (distribution's
/// `pathComponent`). Uppercase gets its own message: it is the usual mistake, and registries
/// refuse it ("repository name must be lowercase").
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty path component (\"//\" or a leading or trailing '/')".into());
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "uppercase letters in the repository path {c:?} (repository names must be lowercase)"
        ));
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    let mut separator_ok = false;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            separator_ok = true;
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", always between alphanumerics.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => {
                return Err(format!(
                    "{:?} is not allowed in the repository path {c:?} (lowercase letters, digits, '.', '_', '__', '-')",
                    char::from(bytes[i])
                ))
            }
        }
        if !separator_ok || !bytes.get(i).copied().is_some_and(alnum) {
            return Err(format!(
                "{:?} in the repository path {c:?} must stand between letters or digits",
                &c[start..i]
            ));
        }
        separator_ok = false;
    }
    Ok(())
}

/// Split `name` into its registry (when its first component is one: it holds `.` or `:`, is
/// `localhost`, or has uppercase letters, as in distribution's `splitDockerDomain`) and path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no repository name".into());
    }
    let (domain, path) = split_domain(name);
    if let Some(d) = domain {
        check_domain(d)?;
    }
    path.split('/').try_for_each(check_path_component)
}

fn check_nonblank(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    Ok(())
}

/// A full image reference `[registry[:port]/]path[:tag][@digest]`, checked against
/// distribution's grammar: a registry of host labels (mixed case allowed there), lowercase path
/// components, a tag of at most 128 characters `[A-Za-z0-9_][A-Za-z0-9_.-]*`, and a digest
/// `algorithm:hex` (`sha256:` + 64 lowercase hex digits for sha256). A reference without
/// registry is what the container runtime completes (`redis:7` is `docker.io/library/redis:7`).
/// Errors: empty, whitespace, uppercase in the path, a bad tag or digest.
pub fn check_reference(r: &str) -> Result<(), String> {
    check_nonblank(r)?;
    let (name_tag, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return Err(format!("digest {d:?} is not algorithm:hex"));
        };
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let hex_ok = if alg == "sha256" {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        } else {
            hex.len() >= 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        };
        if !alg_ok || !hex_ok {
            return Err(format!(
                "digest {d:?} is not algorithm:hex (sha256: 64 lowercase hex digits)"
            ));
        }
    }
    // A ':' after the last '/' starts the tag; one before it belongs to the registry's port.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(format!(
                "tag {t:?} is not 1-128 of letters, digits, '_', '.', '-' (not starting with '.' or '-')"
            ));
        }
    }
    check_name(name)
}

/// A registry prefix for [`with_registry`]: `registry[:port][/path...]` or a bare path, with no
/// tag or digest (a trailing `/` is dropped by [`StoreImages::validated`] before this check).
pub fn check_registry(p: &str) -> Result<(), String> {
    check_nonblank(p)?;
    if p.contains('@') {
        return Err("a registry prefix has no digest".into());
    }
    // A single component is taken as a registry host when it looks like one (a dot, a port or
    // localhost): `registry.corp` -> `registry.corp/redis:7.4`.
    if !p.contains('/') && (p.contains(['.', ':']) || p == "localhost") {
        return check_domain(p);
    }
    check_name(p).map_err(|e| {
        if split_domain(p).1.contains(':') {
            "a registry prefix has no tag (the tag comes from the default or managed.version)"
                .into()
        } else {
            e
        }
    })
}

/// A Secret name: a DNS-1123 subdomain (at most 253 characters, lowercase labels of letters,
/// digits and `-` separated by `.`), the API server's rule for Secret names.
pub fn check_secret_name(n: &str) -> Result<(), String> {
    check_nonblank(n)?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if n.len() <= 253 && n.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("not a Secret name (a DNS-1123 subdomain: lowercase letters, digits, '-', '.', at most 253 characters)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(store: &str, image: &str) -> std::collections::BTreeMap<String, String> {
        [(store.to_string(), image.to_string())].into()
    }

    #[test]
    fn registry_rule_keeps_the_last_component() {
        for (prefix, image, want) in [
            (
                "registry.corp/mirror",
                "docker.io/library/redis",
                "registry.corp/mirror/redis",
            ),
            (
                "registry.corp/mirror/",
                "docker.io/library/postgres",
                "registry.corp/mirror/postgres",
            ),
            (
                "registry.corp/mirror",
                "quay.io/minio/minio",
                "registry.corp/mirror/minio",
            ),
            (
                "registry.corp:5000",
                "docker.elastic.co/elasticsearch/elasticsearch",
                "registry.corp:5000/elasticsearch",
            ),
            ("cbo.local", "docker.io/library/mongo", "cbo.local/mongo"),
        ] {
            assert_eq!(with_registry(prefix, image), want, "{prefix} + {image}");
        }
    }

    #[test]
    fn precedence_table() {
        let all = StoreImages {
            registry: Some("registry.corp/mirror".into()),
            images: one("redis", "cbo.local/redis:7.0-abc"),
            ..Default::default()
        };
        let prefix_only = StoreImages {
            registry: Some("registry.corp/mirror".into()),
            ..Default::default()
        };
        let none = StoreImages::default();
        let r = "docker.io/library/redis";
        #[rustfmt::skip]
        let table: [(&StoreImages, Option<&str>, Option<&str>, &str); 7] = [
            (&all, Some("mine/redis:6"), Some("5"), "mine/redis:6"),
            (&all, None, Some("6"), "cbo.local/redis:7.0-abc"),
            (&all, None, None, "cbo.local/redis:7.0-abc"),
            (&prefix_only, None, Some("6.2"), "registry.corp/mirror/redis:6.2"),
            (&prefix_only, None, None, "registry.corp/mirror/redis:7.4"),
            (&none, None, Some("6.2"), "docker.io/library/redis:6.2"),
            (&none, None, None, "docker.io/library/redis:7.4"),
        ];
        for (i, (images, own, version, want)) in table.into_iter().enumerate() {
            assert_eq!(
                images.resolve("redis", own, version, r, "7.4"),
                want,
                "row {i}"
            );
        }
        // A per-store image is for that store only.
        assert_eq!(
            all.resolve("postgresql", None, None, "docker.io/library/postgres", "17"),
            "registry.corp/mirror/postgres:17"
        );
    }

    #[test]
    fn references_follow_the_distribution_grammar() {
        for ok in [
            "redis",
            "redis:7.4",
            "docker.io/library/redis:7.4",
            "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
            "docker.elastic.co/elasticsearch/elasticsearch:8.19.3",
            "localhost:5000/a/b__c/d-e--f:latest",
            "Registry.Corp:443/mirror/redis:7",
            "cbo.local/redis:7.0-0123abcd",
            "redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "r.io/x/redis:7@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("  ", "whitespace"),
            ("redis :7", "whitespace"),
            ("redis:7\n", "whitespace"),
            ("docker.io/library/Redis:7", "uppercase"),
            ("MyRedis", "uppercase"),
            ("registry.corp//redis", "empty path component"),
            ("registry.corp/redis/", "empty path component"),
            ("redis:", "tag"),
            ("redis:-x", "tag"),
            ("redis@sha256:abc", "digest"),
            ("re..dis", "between letters or digits"),
            ("-redis", "between letters or digits"),
            ("redis$:7", "not allowed"),
            ("bad_host!.io/redis", "not a host name"),
            ("registry.corp:port/redis", "not a number"),
        ] {
            let e = check_reference(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn registry_prefixes() {
        for ok in [
            "registry.corp",
            "registry.corp:5000",
            "registry.corp/mirror",
            "registry.corp/team/mirror",
            "localhost",
            "mirror",
        ] {
            assert_eq!(check_registry(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            (" registry.corp", "whitespace"),
            ("registry.corp/Mirror", "uppercase"),
            ("registry.corp/mirror:7", "no tag"),
            ("registry.corp/mirror@sha256:00", "no digest"),
        ] {
            let e = check_registry(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn validated_names_the_flag_and_normalises() {
        let v = StoreImages {
            registry: Some("registry.corp/mirror/".into()),
            pull_secrets: vec!["a".into(), "b.c".into(), "a".into()],
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(v.registry.as_deref(), Some("registry.corp/mirror"));
        assert_eq!(v.pull_secrets, ["a", "b.c"]);

        let e = StoreImages {
            images: one("elasticsearch", "Docker.Elastic.co/Elasticsearch/es:8"),
            ..Default::default()
        }
        .validated()
        .unwrap_err();
        assert_eq!(e.flag, store_flag("elasticsearch"));
        let msg = e.to_string();
        assert!(
            msg.starts_with("--store-image elasticsearch=IMAGE (CBO_STORE_IMAGE_ELASTICSEARCH) \"Docker.Elastic.co/Elasticsearch/es:8\": uppercase"),
            "{msg}"
        );
        // Only the stores the families provision.
        let e = StoreImages {
            images: one("mysql", "mysql:8"),
            ..Default::default()
        }
        .validated()
        .unwrap_err();
        assert_eq!(
            e.reason,
            "no such store: the operator provisions redis, postgresql, mongodb, elasticsearch, s3"
        );
        for (images, flag) in [
            (
                StoreImages {
                    images: one("s3", ""),
                    ..Default::default()
                },
                store_flag("s3"),
            ),
            (
                StoreImages {
                    registry: Some(" ".into()),
                    ..Default::default()
                },
                REGISTRY_FLAG.to_string(),
            ),
            (
                StoreImages {
                    pull_secrets: vec!["ok".into(), "Not_OK".into()],
                    ..Default::default()
                },
                PULL_SECRET_FLAG.to_string(),
            ),
            (
                StoreImages {
                    pull_secrets: vec![String::new()],
                    ..Default::default()
                },
                PULL_SECRET_FLAG.to_string(),
            ),
        ] {
            assert_eq!(images.validated().unwrap_err().flag, flag);
        }
        assert_eq!(
            StoreImages::default().validated(),
            Ok(StoreImages::default())
        );
    }
}
