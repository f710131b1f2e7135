//! Certificates for the metrics endpoint's tests: a CA and the server, client, expired
//! certificates it signs, written as PEM files (rcgen, ring).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

/// A CA whose PEM is `dir/{name}.crt`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    /// A new CA, written to `dir/{name}.crt`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, format!("ps-agent test {name}"));
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), issuer.pem()).unwrap();
        Self { issuer, dir: dir.into(), name: name.into() }
    }

    /// The CA's certificate file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// Write `dir/{name}.crt` and `dir/{name}.key` for the IP addresses `ips`, valid now
    /// (or expired a year ago when `expired`).
    pub fn issue(&self, name: &str, ips: &[&str], expired: bool) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(ip.parse().unwrap())).collect();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
