//! Pure rules that several Celery backends share (and the client libraries under them): host
//! forms, Basic-auth credentials, paths and URLs; a backend's own rules live in its family file. Each rule names its source in Celery 5.7 or the client
//! code; the builder in `super` applies them and refuses with the field named (never the value).

use std::net::{Ipv4Addr, Ipv6Addr};

/// The form of a host as written in a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostForm {
    /// A DNS name (`redis.prod.svc`, `localhost`).
    Name,
    /// An IPv4 address (`10.0.0.5`).
    Ipv4,
    /// An IPv6 address without brackets (`fd00::11`).
    Ipv6,
}

/// How a backend's Celery code treats an IPv6 literal it got from the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Rule {
    /// Celery (or its client) keeps the address intact: write it in brackets in the URI.
    Bracketed,
    /// Celery rebuilds `scheme://{host}:{port}` without brackets, which the client cannot parse;
    /// the text says where (e.g. "Celery's elasticsearch backend builds http://{host}:{port}").
    Refused(&'static str),
}

/// Classify `host` and refuse forms no backend can use. Errors are messages for the caller to
/// prefix with the field (they never repeat the value):
/// - a `:` in something that is not an IPv6 address, e.g. `10.0.0.5:6379` or `db:5432`: a port
///   written into the host (the port has its own field);
/// - brackets (`[fd00::1]`): the operator adds them where the URI needs them;
/// - an IPv6 address when the backend's rule is [`Ipv6Rule::Refused`].
///
/// Source: RFC 3986 section 3.2.2 (IP-literal in brackets), and for each backend the Celery code
/// named in its [`Ipv6Rule`].
pub fn host(host: &str, ipv6: Ipv6Rule) -> Result<HostForm, String> {
    if host.starts_with('[') || host.ends_with(']') {
        return Err(
            "write an IPv6 address without brackets (the operator adds them where the URI needs them)"
                .into(),
        );
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(HostForm::Ipv4);
    }
    if host.contains(':') {
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(
                "contains ':' but is not an IPv6 address; a port goes into the port field, not the host"
                    .into(),
            );
        }
        return match ipv6 {
            Ipv6Rule::Bracketed => Ok(HostForm::Ipv6),
            Ipv6Rule::Refused(why) => Err(format!(
                "IPv6 addresses cannot be used with this backend ({why}); use a DNS name"
            )),
        };
    }
    Ok(HostForm::Name)
}

/// Whether `s` can travel in an HTTP Basic `Authorization` header as the clients build it:
/// elastic-transport (Elasticsearch) encodes `user:password` as ASCII (a non-ASCII character
/// raises `UnicodeEncodeError` when Celery creates the client, measured with elasticsearch-py
/// 8.19); requests (pyArango, ArangoDB) encodes it as Latin-1, which fails on other characters
/// and sends Latin-1 bytes, not the UTF-8 the server compares, for the rest. RFC 7617 section 2
/// forbids `:` in the user-id (the server splits at the first colon). Returns the reason.
pub fn basic_auth_part(s: &str, is_user: bool) -> Result<(), &'static str> {
    if !s.is_ascii() {
        return Err("Basic-auth credentials must be ASCII for this backend: its client encodes them as ASCII or Latin-1 (UnicodeEncodeError, or bytes the server does not match)");
    }
    if is_user && s.contains(':') {
        return Err(
            "a Basic-auth user name cannot contain ':' (RFC 7617: the server splits at the first colon)",
        );
    }
    Ok(())
}

/// Refuse a `..` segment in a path inside the worker container (the same rule as the CRD's
/// `NO_TRAVERSAL_RULE`, applied again for objects admitted before it existed).
pub fn path_without_traversal(path: &str) -> Result<(), &'static str> {
    if path.split('/').any(|seg| seg == "..") {
        return Err("must not contain '..' segments (path traversal): write the path without them");
    }
    Ok(())
}

/// Refuse `user:password@` in a URL's authority (RFC 3986 section 3.2.1 userinfo): credentials
/// belong in a Secret, and these URLs are published as plain settings.
pub fn url_without_credentials(url: &str) -> Result<(), &'static str> {
    // Anywhere, not only before the first '/': a secret with a '/' in it would hide otherwise.
    if url.contains('@') {
        return Err(crate::api::NO_URL_CREDENTIALS_MESSAGE);
    }
    Ok(())
}

/// An http(s) endpoint URL as the CRD's `HTTP_URL_RULE` admits it: lowercase `http://` or
/// `https://`, a host (optional port), an optional path; no spaces, query or fragment.
pub fn http_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(crate::api::HTTP_URL_MESSAGE)?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(crate::api::HTTP_URL_MESSAGE);
    }
    Ok(())
}

/// Whether `s` is an environment variable name as Kubernetes and the shell take it
/// (`^[A-Za-z_][A-Za-z0-9_]*$`).
pub fn env_var_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: Ipv6Rule =
        Ipv6Rule::Refused("its client builds '{host}:{port}' without brackets");

    #[test]
    fn host_forms_and_refusals() {
        let table: &[(&str, Ipv6Rule, Result<HostForm, &str>)] = &[
            ("redis.prod.svc", Ipv6Rule::Bracketed, Ok(HostForm::Name)),
            ("localhost", REFUSED, Ok(HostForm::Name)),
            ("10.0.0.5", REFUSED, Ok(HostForm::Ipv4)),
            ("fd00::11", Ipv6Rule::Bracketed, Ok(HostForm::Ipv6)),
            ("::1", Ipv6Rule::Bracketed, Ok(HostForm::Ipv6)),
            ("fd00::92", REFUSED, Err("IPv6 addresses cannot be used")),
            ("fd00::92", REFUSED, Err("builds '{host}:{port}'")),
            (
                "10.0.0.5:6379",
                Ipv6Rule::Bracketed,
                Err("port goes into the port field"),
            ),
            (
                "db:5432",
                Ipv6Rule::Bracketed,
                Err("port goes into the port field"),
            ),
            ("redis:6379", REFUSED, Err("port goes into the port field")),
            ("1:2:3", Ipv6Rule::Bracketed, Err("not an IPv6 address")),
            ("[fd00::1]", Ipv6Rule::Bracketed, Err("without brackets")),
        ];
        for (h, rule, want) in table {
            let got = host(h, *rule);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{h}"),
                (Err(w), Err(g)) => {
                    assert!(g.contains(w), "{h}: {g}")
                }
                _ => panic!("{h}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn basic_auth_parts() {
        assert!(basic_auth_part("p@ss:w/rd#?% ;", false).is_ok());
        assert!(basic_auth_part("elastic", true).is_ok());
        assert!(basic_auth_part("pässwörd-€", false).is_err());
        assert!(basic_auth_part("ünïcødé", true).is_err());
        assert!(basic_auth_part("a:b", true).is_err());
        assert!(basic_auth_part("a:b", false).is_ok());
    }

    #[test]
    fn paths_and_urls() {
        for ok in [
            "/etc/ssl/ca.pem",
            "/a/..b/c..",
            "/a/./b",
            "/x/...",
            "/re%20sults",
        ] {
            assert!(path_without_traversal(ok).is_ok(), "{ok}");
        }
        for bad in ["/etc/../root/.ssh/id", "/a/..", "/../x"] {
            assert!(path_without_traversal(bad).is_err(), "{bad}");
        }
        for ok in ["http://minio.storage:9000", "http://[fd00::1]:9000/p"] {
            assert!(url_without_credentials(ok).is_ok(), "{ok}");
            assert!(http_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "HTTPS://h/",
            "https://h/#x",
            "https://h/?q",
            "ftp://h",
            "https://",
            "https://h /",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
        for bad in [
            "https://AKIA:wJalr/K7MD/bPx@minio.example.internal",
            "https://s3.example/a@b",
            "https://AKIA:secret@minio.example.internal",
            "http://user@h:9000/",
        ] {
            assert!(url_without_credentials(bad).is_err(), "{bad}");
        }
    }
}
