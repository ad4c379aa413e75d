//! TLS: reads a node's PEM files and builds the rustls configurations of
//! every TLS endpoint, all on the aws-lc-rs provider: the HTTP API's server
//! side ([`http_server`]), the cluster protocol's mutual TLS and the client
//! of node-to-node HTTPS and WebSockets ([`ClusterIdentity`],
//! [`peer_client`]), and the CLI's client ([`client`]).
//!
//! Every configuration names its provider, so none depends on a process
//! default; [`install_default_provider`] is for the clients that do not take
//! a configuration (reqwest's default builder panics without one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::warn;
use vidpress_cluster::ClusterTls;

/// The only application protocol the HTTP API speaks.
const HTTP_1_1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no usable CA certificate", .0.display())]
    BadCa(PathBuf),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot check client certificates against the CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Returns the crypto provider of every configuration: aws-lc-rs, the one
/// tokio-rustls and ractor_cluster build with (ring is never linked in).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process's default provider, for clients built
/// without a configuration of ours; a second call changes nothing.
pub fn install_default_provider() {
    // An error only says a default is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Returns the HTTP API's server configuration: `cert` (a PEM chain, leaf
/// first) and its `key`; no client certificates; HTTP/1.1 only.
pub fn http_server(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates(cert)?, private_key(key)?)?;
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// A node's identity among the nodes: its certificate and key, and the
/// cluster's CA, which signs every node's certificates.
pub struct ClusterIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: Arc<RootCertStore>,
}

impl ClusterIdentity {
    /// Reads `--cluster-tls-cert`, `--cluster-tls-key` and `--cluster-ca`.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            chain: certificates(cert)?,
            key: private_key(key)?,
            ca: Arc::new(roots_from(ca)?),
        })
    }

    /// Returns the cluster protocol's mutual TLS: a listener that requires
    /// a certificate the CA signed, and a dialer that trusts only the CA.
    pub fn cluster_tls(&self) -> Result<ClusterTls, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.ca.clone(), provider()).build()?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(self.client()?),
        })
    }

    /// Returns a client that trusts only the cluster's CA and presents this
    /// node's certificate.
    fn client(&self) -> Result<ClientConfig, TlsError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.ca.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?)
    }
}

/// The client TLS of node-to-node requests: the WebSocket bridge
/// (`http::route`) connects to an owner with it.
#[derive(Clone)]
pub struct PeerTls(pub Arc<ClientConfig>);

/// Returns the client of node-to-node HTTPS and WebSockets: it trusts the
/// cluster's CA and presents this node's certificate (which the HTTP API
/// does not ask for, but a proxy in front of it may); without a cluster
/// identity, it trusts the system's roots.
pub fn peer_client(identity: Option<&ClusterIdentity>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = match identity {
        Some(identity) => identity.client()?,
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Returns the CLI's client: it trusts only the CA in `ca` when given (a
/// private CA), else the system's roots.
pub fn client(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        Some(ca) => roots_from(ca)?,
        None => system_roots(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Reads every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the CA certificates a PEM file holds, as roots of trust.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(TlsError::BadCa(path.to_owned()));
    }
    Ok(roots)
}

/// Returns the system's trusted CAs; those it cannot parse are skipped, as
/// system stores hold a few ancient ones.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        warn!(%error, "cannot read some of the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = http_server(&missing, &missing).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = client(Some(&empty)).unwrap_err();
        assert!(
            matches!(&error, TlsError::NoCertificate(p) if p == &empty),
            "{error}"
        );
    }
}
