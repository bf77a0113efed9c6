//! TLS for AMQPS and HTTPS management: rustls server configurations built
//! from PEM files (ring provider), and what a client's certificate says
//! (the user of the EXTERNAL mechanism, the management view).

use crate::config::{CertLogin, TlsOptions};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// A server configuration from `o`, offering `alpn` (empty: no ALPN).
/// Every error names the file and the reason: a broker that cannot load
/// its certificate refuses to start rather than listen without them.
pub fn server_config(o: &TlsOptions, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(&o.cert)?;
    let key = PrivateKeyDer::from_pem_file(&o.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", o.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&o.ca, o.verify_peer) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if o.fail_if_no_peer_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("TLS: {e}"))?)
        }
        (None, true) => return Err("verify_peer needs CA certificates (--tls-ca)".into()),
        (_, false) if o.fail_if_no_peer_cert => {
            return Err("fail_if_no_peer_cert needs verify_peer (--tls-verify-peer)".into());
        }
        (_, false) => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {}: {e}",
            o.cert.display(),
            o.key.display()
        )
    })?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// What a TLS connection shows: RabbitMQ's `ssl_*` and `peer_cert_*`
/// connection fields, and the user a client certificate names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    /// "tlsv1.3", "tlsv1.2" (RabbitMQ's spelling).
    pub protocol: String,
    pub cipher: String,
    /// Only with a verified client certificate.
    pub cert: Option<PeerCert>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerCert {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
}

impl PeerCert {
    /// The user the EXTERNAL mechanism logs in as.
    pub fn login(&self, from: CertLogin) -> Option<String> {
        match from {
            CertLogin::DistinguishedName => Some(self.subject.clone()),
            CertLogin::CommonName => self.common_name.clone(),
        }
    }
}

/// Describes an established connection.
pub fn describe(conn: &rustls::ServerConnection) -> Peer {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2".to_string(),
        Some(v) => format!("{v:?}").to_lowercase(),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()).to_lowercase())
        .unwrap_or_default();
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| parse_cert(c.as_ref()));
    Peer {
        protocol,
        cipher,
        cert,
    }
}

/// Subject and issuer as RabbitMQ formats them (RFC 4514: the most
/// specific part first, "CN=alice,O=example"), so a user named after a
/// certificate is the same name on both brokers.
pub fn parse_cert(der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(PeerCert {
        subject: format_name(cert.subject()),
        issuer: format_name(cert.issuer()),
        common_name,
    })
}

/// RabbitMQ's names for attribute types (rabbit_cert_info); others are
/// shown by their dotted OID.
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GIVENNAME"),
    ("2.5.4.43", "INITIALS"),
    ("2.5.4.44", "GENERATIONQUALIFIER"),
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "TITLE"),
    ("2.5.4.6", "C"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.65", "PSEUDONYM"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "EMAILADDRESS"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

fn format_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let oid = a.attr_type().to_id_string();
                let key = ATTRIBUTE_NAMES
                    .iter()
                    .find(|(o, _)| *o == oid)
                    .map_or(oid.clone(), |(_, n)| n.to_string());
                let value = match a.as_str() {
                    Ok(v) => escape(v),
                    Err(_) => escape(&String::from_utf8_lossy(a.attr_value().data)),
                };
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

/// RFC 4514 escaping of an attribute value, with RabbitMQ's extra: bytes
/// outside printable ASCII as `\XX`.
fn escape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = String::with_capacity(v.len());
    for (i, &c) in bytes.iter().enumerate() {
        let special = (i == 0 && (c == b' ' || c == b'#'))
            || (i > 0 && i + 1 == bytes.len() && c == b' ')
            || matches!(c, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';');
        if !(32..126).contains(&c) {
            out.push_str(&format!("\\{c:02X}"));
        } else {
            if special {
                out.push('\\');
            }
            out.push(c as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in names {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_most_specific_first() {
        let der = cert_with(&[
            (rcgen::DnType::CountryName, "NL"),
            (rcgen::DnType::OrganizationName, "Example, Inc"),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        let c = parse_cert(&der).unwrap();
        assert_eq!(c.subject, "CN=alice,O=Example\\, Inc,C=NL");
        assert_eq!(c.issuer, c.subject);
        assert_eq!(c.login(CertLogin::CommonName).as_deref(), Some("alice"));
        assert_eq!(
            c.login(CertLogin::DistinguishedName).as_deref(),
            Some(c.subject.as_str())
        );
    }

    #[test]
    fn no_common_name_no_login_by_cn() {
        let der = cert_with(&[(rcgen::DnType::OrganizationName, "x")]);
        let c = parse_cert(&der).unwrap();
        assert_eq!(c.login(CertLogin::CommonName), None);
        assert_eq!(parse_cert(b"not a certificate"), None);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let o = TlsOptions {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("key.pem"),
            ..Default::default()
        };
        let e = server_config(&o, &[]).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let o = TlsOptions {
            cert: dir.path().join("empty.pem"),
            ..o
        };
        assert!(server_config(&o, &[]).unwrap_err().contains("no certificate"));
    }

    #[test]
    fn verify_peer_needs_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        let mut o = TlsOptions {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            ..Default::default()
        };
        assert!(server_config(&o, &[b"http/1.1"]).is_ok());
        o.verify_peer = true;
        assert!(server_config(&o, &[]).unwrap_err().contains("CA"));
        o.ca = Some(dir.path().join("c.pem"));
        assert!(server_config(&o, &[]).is_ok());
        o.verify_peer = false;
        o.fail_if_no_peer_cert = true;
        assert!(server_config(&o, &[]).is_err());
    }
}
