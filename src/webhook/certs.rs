//! Webhook certificates: a self-generated CA and serving certificate, kept in a Secret, rotated
//! before expiry. Pure functions except for the clock passed in.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Secret keys.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// Unix seconds after which the serving certificate is invalid.
pub const NOT_AFTER: &str = "tls.not-after";
/// Unix seconds after which the CA is invalid.
pub const CA_NOT_AFTER: &str = "ca.not-after";
/// The SANs the serving certificate was made for (comma-separated), to re-issue when they change.
pub const SANS: &str = "tls.sans";
/// The previous CA, kept in the caBundle for one serving-certificate lifetime after a CA rotation.
pub const PREVIOUS_CA: &str = "ca-previous.crt";

const CA_CN: &str = "celery-backend-operator-webhook-ca";

/// Lifetimes and the rotation margin, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub ca: i64,
    pub serving: i64,
    /// Re-issue when less than this remains.
    pub margin: i64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: 10 * 365 * 86400,
            serving: 365 * 86400,
            margin: 30 * 86400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("time: {0}")]
    Time(String),
}

fn ca_params(now: i64, life: i64) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at(now - 3600)?;
    p.not_after = at(now + life)?;
    Ok(p)
}

fn at(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CertError::Time(e.to_string()))
}

/// What the Secret should hold next, given what it holds now (`None`: nothing to do).
pub fn next_bundle(
    current: &BTreeMap<String, String>,
    sans: &[String],
    now: i64,
    life: Lifetimes,
) -> Result<Option<BTreeMap<String, String>>, CertError> {
    let num = |k: &str| current.get(k).and_then(|v| v.parse::<i64>().ok());
    let sans_joined = sans.join(",");
    let ca_ok = current.contains_key(CA_CERT)
        && current.contains_key(CA_KEY)
        && num(CA_NOT_AFTER).is_some_and(|t| t - now > life.serving + life.margin);
    let serving_ok = ca_ok
        && current.contains_key(TLS_CERT)
        && current.contains_key(TLS_KEY)
        && num(NOT_AFTER).is_some_and(|t| t - now > life.margin)
        && current.get(SANS) == Some(&sans_joined);
    if serving_ok {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    let (ca_key, ca_pem, ca_after) = if ca_ok {
        let key = KeyPair::from_pem(&current[CA_KEY])?;
        if let Some(prev) = current.get(PREVIOUS_CA) {
            out.insert(PREVIOUS_CA.to_string(), prev.clone());
        }
        (
            key,
            current[CA_CERT].clone(),
            num(CA_NOT_AFTER).unwrap_or(now),
        )
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(now, life.ca)?.self_signed(&key)?;
        if let Some(old) = current.get(CA_CERT) {
            // Keep trusting the old CA until every certificate it signed has been replaced.
            out.insert(PREVIOUS_CA.to_string(), old.clone());
        }
        (key, cert.pem(), now + life.ca)
    };
    let issuer = Issuer::new(ca_params(now, life.ca)?, &ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    leaf.distinguished_name = dn;
    leaf.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.not_before = at(now - 3600)?;
    let serving_after = (now + life.serving).min(ca_after);
    leaf.not_after = at(serving_after)?;
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, &issuer)?;
    out.insert(CA_CERT.into(), ca_pem);
    out.insert(CA_KEY.into(), ca_key.serialize_pem());
    out.insert(CA_NOT_AFTER.into(), ca_after.to_string());
    out.insert(TLS_CERT.into(), cert.pem());
    out.insert(TLS_KEY.into(), leaf_key.serialize_pem());
    out.insert(NOT_AFTER.into(), serving_after.to_string());
    out.insert(SANS.into(), sans_joined);
    Ok(Some(out))
}

/// The PEM bundle the API server should trust: the current CA plus the previous one, if any.
pub fn ca_bundle(data: &BTreeMap<String, String>) -> String {
    let mut b = data.get(CA_CERT).cloned().unwrap_or_default();
    if let Some(prev) = data.get(PREVIOUS_CA) {
        if !b.ends_with('\n') {
            b.push('\n');
        }
        b.push_str(prev);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_keep_and_rotate() {
        let sans = vec!["127.0.0.1".to_string(), "svc.ns.svc".to_string()];
        let life = Lifetimes::default();
        let now = 1_800_000_000;
        let first = next_bundle(&BTreeMap::new(), &sans, now, life)
            .unwrap()
            .unwrap();
        for k in [
            CA_CERT,
            CA_KEY,
            TLS_CERT,
            TLS_KEY,
            NOT_AFTER,
            CA_NOT_AFTER,
            SANS,
        ] {
            assert!(first.contains_key(k), "{k}");
        }
        assert!(!first.contains_key(PREVIOUS_CA));
        // Fresh: nothing to do.
        assert!(next_bundle(&first, &sans, now + 86400, life)
            .unwrap()
            .is_none());
        // Serving certificate close to expiry: re-issued under the same CA.
        let later = now + life.serving - life.margin + 1;
        let second = next_bundle(&first, &sans, later, life).unwrap().unwrap();
        assert_eq!(second[CA_CERT], first[CA_CERT]);
        assert_ne!(second[TLS_CERT], first[TLS_CERT]);
        assert!(second[NOT_AFTER].parse::<i64>().unwrap() > later + life.margin);
        // New SANs: re-issued.
        let more = vec!["127.0.0.1".to_string(), "other.ns.svc".to_string()];
        assert!(next_bundle(&second, &more, later, life).unwrap().is_some());
        // CA close to expiry: new CA, the old one stays in the bundle.
        let ca_late = now + life.ca - life.serving;
        let third = next_bundle(&second, &sans, ca_late, life).unwrap().unwrap();
        assert_ne!(third[CA_CERT], first[CA_CERT]);
        assert_eq!(third[PREVIOUS_CA], first[CA_CERT]);
        assert!(ca_bundle(&third).contains(first[CA_CERT].trim()));
    }
}
