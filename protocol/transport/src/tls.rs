//! rustls configuration for both transports: the server's identity and the client's trust.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::ALPN;

/// Bytes read from the socket at a time under TLS. rustls asks its reader for 4 KiB at most
/// per call, one `recv` per 4 KiB (250 000 per GB); a buffer this size under it makes that
/// one `recv` per 256 KiB, for a copy out of a buffer that stays in the cache.
pub const SOCKET_READ: usize = 256 << 10;

/// Why TLS could not be set up.
///
/// Each message includes its cause, so the cause is not also exposed as `source()`: an error
/// chain printer (`anyhow`'s `{:#}`) would print it twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key file could not be read.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The PEM file holds no certificate or no private key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is missing.
        what: &'static str,
    },
    /// Certificate generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
    /// A `--cert-sha256` value that is not 64 hex digits.
    #[error(
        "certificate pin must be 64 hex digits (the cert-sha256 of the server's listening line)"
    )]
    BadPin,
    /// No system root certificates could be loaded.
    #[error(
        "no system root certificates found: pass --cert-sha256 HEX (from the server's listening line), --ca FILE, or --insecure"
    )]
    NoRoots,
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        Self::Rustls(e)
    }
}

/// The server's certificate chain and key, and the SHA-256 of its leaf certificate.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate for `localhost`, the loopback addresses and `names`.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        Ok(Self::self_signed_pem(names)?.0)
    }

    /// [`Identity::self_signed`], with the certificate and the key as PEM too, for a server
    /// that keeps them so that its pin survives restarts.
    pub fn self_signed_pem(names: &[String]) -> Result<(Self, String, String), TlsError> {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        sans.extend(
            names
                .iter()
                .filter(|n| !sans.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let ck = rcgen::generate_simple_self_signed(sans)?;
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let pems = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let identity = Self {
            certs: vec![ck.cert.der().clone()],
            key,
        };
        Ok((identity, pems.0, pems.1))
    }

    /// Loads a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|cause| TlsError::Read {
                path: p.display().to_string(),
                cause,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        Self::from_pem(&cert_pem, cert, &key_pem, key)
    }

    /// Parses a PEM certificate chain and a PEM private key (which may be in one file);
    /// `cert` and `key` name where they came from, for errors.
    pub fn from_pem(
        cert_pem: &[u8],
        cert: &Path,
        key_pem: &[u8],
        key: &Path,
    ) -> Result<Self, TlsError> {
        let certs = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|cause| TlsError::Read {
                path: cert.display().to_string(),
                cause,
            })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                path: cert.display().to_string(),
                what: "no certificate",
            });
        }
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|cause| TlsError::Read {
                path: key.display().to_string(),
                cause,
            })?
            .ok_or(TlsError::Pem {
                path: key.display().to_string(),
                what: "no private key",
            })?;
        Ok(Self { certs, key })
    }

    /// SHA-256 of the leaf certificate's DER: what clients pin with `--cert-sha256`.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.certs[0]).into()
    }

    /// The fingerprint as lower-case hex.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// ring's provider with AES-128-GCM preferred: as safe for this use as AES-256 and about a
/// third cheaper per byte, which profiles showed at ~0.1 CPU s per GB on tcps and QUIC.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// The rustls server configuration for TLS-over-TCP and QUIC: TLS 1.3 only (QUIC requires it,
/// and one configuration for both keeps the two transports' security the same).
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// How the client decides to trust the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The system's root certificates, with the server name checked.
    System,
    /// Only the certificate whose SHA-256 is this (names and expiry are not checked: the pin
    /// is the identity, as with SSH host keys).
    Pin([u8; 32]),
    /// Certificates signed by the CA(s) in this PEM file, names and expiry checked; and any
    /// certificate in the file presented as it is (a self-signed server certificate, as
    /// `openssl req -x509` makes, is its own CA, which WebPKI refuses as `CaUsedAsEndEntity`:
    /// given by the user, it is trusted like a pin).
    Ca(std::path::PathBuf),
    /// Anything: no protection against an active attacker.
    Insecure,
}

impl Trust {
    /// Parses a `--cert-sha256` value (64 hex digits; `:` separators allowed).
    pub fn pin_from_hex(s: &str) -> Result<Self, TlsError> {
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return Err(TlsError::BadPin);
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(digits.get(2 * i..2 * i + 2).ok_or(TlsError::BadPin)?, 16)
                .map_err(|_| TlsError::BadPin)?;
        }
        Ok(Self::Pin(out))
    }
}

/// The rustls client configuration for `trust`, TLS 1.3, ALPN `chunkcast/1`.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut cfg = match trust {
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Ca(path) => {
            let pem = std::fs::read(path).map_err(|cause| TlsError::Read {
                path: path.display().to_string(),
                cause,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            let mut given = Vec::new();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|cause| TlsError::Read {
                    path: path.display().to_string(),
                    cause,
                })?;
                roots.add(cert.clone())?;
                given.push(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::Pem {
                    path: path.display().to_string(),
                    what: "no certificate",
                });
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CaVerifier { webpki, given }))
                .with_no_client_auth()
        }
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                pin: Some(*pin),
                provider,
            }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                pin: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// WebPKI against the `--ca` file, and failing that, the server's certificate if it is one of
/// the file's own certificates (see [`Trust::Ca`]).
#[derive(Debug)]
struct CaVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    given: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(_) if self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Accepts the certificate whose SHA-256 is `pin` (or any, when `pin` is `None`), and still
/// checks the handshake signature, so that the peer must hold the certificate's key.
#[derive(Debug)]
struct Verifier {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pin {
            let seen: [u8; 32] = Sha256::digest(end_entity).into();
            if seen != pin {
                return Err(rustls::Error::General(format!(
                    "certificate mismatch: the server's certificate has sha256 {}, not the pinned {}",
                    hex(&seen),
                    hex(&pin)
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
