//! The session's certificate authority: made fresh for each session, trusted only inside it,
//! and used to sign a certificate for each host whose TLS the proxy intercepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Error making or using the session CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Key or certificate generation failed.
    #[error("session CA: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the generated material.
    #[error("session CA: {0}")]
    Tls(#[from] rustls::Error),
}

/// Host name and ALPN protocols of a server configuration.
type ConfigKey = (String, Vec<Vec<u8>>);

/// A per-session CA and the per-host server configurations signed by it.
pub struct SessionCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    /// One key for every host certificate of the session (they live as long as the session).
    leaf_key: KeyPair,
    cache: Mutex<HashMap<ConfigKey, Arc<ServerConfig>>>,
}

impl SessionCa {
    /// A new CA named after the session, valid from a day ago for 30 days.
    pub fn new(session: &str) -> Result<SessionCa, CaError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            format!("Guard sandbox session {session} CA"),
        );
        p.distinguished_name
            .push(DnType::OrganizationName, "Guard sandbox (per-session CA)");
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
        let cert = p.self_signed(&key)?;
        Ok(SessionCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
            leaf_key: KeyPair::generate()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (PEM), for the sandbox's trust stores.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server configuration presenting a certificate for `host` (a name or an IP address)
    /// and offering the ALPN protocols `alpn`. Cached.
    pub fn server_config(
        &self,
        host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, CaError> {
        let k = (host.to_string(), alpn.to_vec());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&k) {
            return Ok(c.clone());
        }
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into()?),
        }];
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, host);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(29);
        let cert = p.signed_by(&self.leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        cfg.alpn_protocols = alpn.to_vec();
        let cfg = Arc::new(cfg);
        cache.insert(k, cfg.clone());
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_certificates_chain_to_the_session_ca() {
        let ca = SessionCa::new("t").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let a = ca
            .server_config("localhost", &[b"http/1.1".to_vec()])
            .unwrap();
        let b = ca
            .server_config("localhost", &[b"http/1.1".to_vec()])
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached");
        ca.server_config("127.0.0.1", &[]).unwrap();
    }
}
