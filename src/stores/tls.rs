//! TLS material for the operator's store drivers: a rustls client configuration (CA, client
//! certificate, verification level) for drivers that take one in memory (the Cassandra driver),
//! and private files for drivers that read files only (sqlx, the MongoDB driver).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

use crate::api::TlsVerify;
use crate::uri::TlsMaterial;

/// The client configuration for `t` on the ring provider:
/// - the CA from `caSecretRef` is the only trust anchor (a CA given only as `caFile`, a path in
///   the workers, cannot be read here: the configuration is refused with a message that says so);
/// - `Required` verifies the chain and the server's name (for drivers that connect by address,
///   its IP address), `Optional` the chain only, `None` nothing;
/// - the client certificate from `clientCertificateSecretRef` is presented when there is one.
///
/// Errors are one readable sentence without key material.
pub fn client_config(t: &TlsMaterial) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS protocol version available: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if t.verify == TlsVerify::None {
        Arc::new(NoVerification(provider))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &t.ca_pem {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| {
                    format!("the CA (caSecretRef or caConfigMapRef) is not PEM: {e}")
                })?;
                roots.add(c).map_err(|e| {
                    format!("the CA (caSecretRef or caConfigMapRef) is not usable: {e}")
                })?;
            }
        }
        if roots.is_empty() {
            return Err(match &t.worker_ca_file {
                Some(f) => format!("caFile {f} is a path inside workers the operator cannot read: set caSecretRef or caConfigMapRef so both verify with the same CA"),
                None => "no CA to verify the server with: set caSecretRef or caConfigMapRef".into(),
            });
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| {
                format!("cannot verify with the CA (caSecretRef or caConfigMapRef): {e}")
            })?;
        match t.verify {
            TlsVerify::Optional => Arc::new(ChainOnly(webpki)),
            _ => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &t.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| "the client key is not a PEM private key".to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Verify the chain only, not the server's name (Celery's `Optional`, `ssl.CERT_REQUIRED`
/// without `check_hostname`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Verify nothing (Celery's `None`, `ssl.CERT_NONE`): still encrypted, never plain text; the
/// handshake signatures are checked so the session keys belong to the presented certificate.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS material written for a driver that reads it from files only (sqlx, the MongoDB driver):
/// a private temporary directory (0700, files 0600; a memory-backed `/tmp` in the chart), made
/// on the first file and removed with everything in it when this guard drops. Keep the guard
/// only while the driver reads the files (while connecting).
#[derive(Default)]
pub struct PrivateFiles(Option<tempfile::TempDir>);

impl PrivateFiles {
    /// Write `bytes` to a new private file `name`; its path, or why it could not be written.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<std::path::PathBuf, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = match &self.0 {
            Some(d) => d,
            None => self.0.insert(
                tempfile::Builder::new()
                    .prefix("cbo-tls-")
                    .tempdir()
                    .map_err(|e| {
                        format!("cannot write TLS material to a temporary directory: {e}")
                    })?,
            ),
        };
        let path = dir.path().join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| format!("cannot write TLS material to {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// Make ring the process's TLS crypto provider, before any TLS client or server is built. Two
/// providers are compiled in (ring, which every client here is configured with, and aws-lc-rs,
/// which the Cassandra driver's rustls dependency enables by default), and rustls then refuses
/// to guess (it panics when a client without an explicit provider is built). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_checked_and_never_printed() {
        let pem = |s: &str| s.as_bytes().to_vec();
        let no_ca = TlsMaterial {
            worker_ca_file: Some("/etc/ssl/ca.crt".into()),
            ..Default::default()
        };
        let e = client_config(&no_ca).unwrap_err();
        assert!(
            e.contains("caFile /etc/ssl/ca.crt is a path inside workers"),
            "{e}"
        );
        let bad = TlsMaterial {
            ca_pem: Some(pem(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            )),
            ..Default::default()
        };
        assert!(client_config(&bad).is_err());
        // verify None needs no CA and is still TLS.
        let none = TlsMaterial {
            verify: TlsVerify::None,
            ..Default::default()
        };
        assert!(client_config(&none).is_ok());
        let key = TlsMaterial {
            verify: TlsVerify::None,
            client: Some((
                pem("x"),
                pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"),
            )),
            ..Default::default()
        };
        let e = client_config(&key).unwrap_err();
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }
}
