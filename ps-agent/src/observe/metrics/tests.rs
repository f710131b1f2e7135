//! The server on loopback with a stand-in reader (no kernel needed): methods, formats, gzip,
//! TLS with certificates made here, basic auth, client certificates, a renewed certificate,
//! and idle connections at the cap.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use super::*;

const TEXT: &str = "# HELP ps_agent_drops Packets dropped.\n# TYPE ps_agent_drops counter\nps_agent_drops_total{reason=\"no_rule\"} 5\n# EOF\n";
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A CA, and certificates it signs, written as PEM files in a scratch directory.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ps-metrics-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, format!("{tag} CA"));
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    /// Write `name.crt` and `name.key` for `localhost` and 127.0.0.1; returns the DER.
    fn leaf(&self, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = p.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn web(&self, yaml: &str) -> PathBuf {
        let p = self.dir.join("web.yml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn client(&self, identity: Option<&str>) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match identity {
            None => b.with_no_client_auth(),
            Some(n) => {
                let certs = vec![CertificateDer::from_pem_file(self.dir.join(format!("{n}.crt"))).unwrap()];
                let key = PrivateKeyDer::from_pem_file(self.dir.join(format!("{n}.key"))).unwrap();
                b.with_client_auth_cert(certs, key).unwrap()
            }
        };
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(web: Option<&Path>, max_connections: usize) -> SocketAddr {
    let mut ep = bind("127.0.0.1:0".parse().unwrap(), web).await.unwrap();
    ep.max_connections = max_connections;
    let addr = ep.local_addr().unwrap();
    tokio::spawn(serve(ep, Arc::new(|| Ok(TEXT.to_string()))));
    addr
}

/// An answer: status code, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One request; an error when the connection ends without an answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    extra: &str,
) -> std::io::Result<Answer> {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("an answer in time");
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::Error::other(format!("no answer, {} bytes", raw.len())));
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer { status, headers, body: raw[split + 4..].to_vec() })
}

async fn plain(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Answer {
    exchange(TcpStream::connect(addr).await.unwrap(), method, path, extra).await.unwrap()
}

async fn tls(addr: SocketAddr, c: &tokio_rustls::TlsConnector, path: &str, extra: &str) -> std::io::Result<Answer> {
    let s = c.connect(ServerName::try_from("localhost").unwrap(), TcpStream::connect(addr).await?).await?;
    exchange(s, "GET", path, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn methods_formats_and_gzip() {
    let addr = start(None, MAX_CONNECTIONS).await;
    let om = plain(addr, "GET", "/metrics", &format!("Accept: {PROMETHEUS_ACCEPT}\r\n")).await;
    assert_eq!(om.status, 200);
    assert_eq!(om.header("content-type"), Some(Format::OpenMetrics.content_type()));
    assert_eq!(om.body, TEXT.as_bytes());
    let classic = plain(addr, "GET", "/metrics", "").await;
    assert_eq!(classic.header("content-type"), Some(Format::Classic.content_type()));
    assert_eq!(classic.body, to_classic(TEXT).as_bytes());
    let head = plain(addr, "HEAD", "/metrics", "").await;
    assert_eq!(head.status, 200, "HEAD is answered");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(classic.body.len().to_string().as_str()));
    let gz = plain(addr, "GET", "/metrics", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text).unwrap();
    assert_eq!(text, to_classic(TEXT));
    assert_eq!(plain(addr, "GET", "/nope", "").await.status, 404);
    let post = plain(addr, "POST", "/metrics", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
    assert!(post.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", post.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn tls_and_basic_auth() {
    let pki = Pki::new("auth");
    pki.leaf("server");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = pki.web(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  prometheus: '{hash}'\n"
    ));
    let addr = start(Some(&web), MAX_CONNECTIONS).await;
    let c = pki.client(None);
    // "prometheus:s3cret", "prometheus:wrong"
    let ok = tls(addr, &c, "/metrics", "Authorization: Basic cHJvbWV0aGV1czpzM2NyZXQ=\r\n").await.unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"), "configured headers");
    let none = tls(addr, &c, "/metrics", "").await.unwrap();
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Basic"));
    assert_eq!(tls(addr, &c, "/", "").await.unwrap().status, 401, "every path");
    let wrong = tls(addr, &c, "/metrics", "Authorization: Basic cHJvbWV0aGV1czp3cm9uZw==\r\n").await.unwrap();
    assert_eq!(wrong.status, 401);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "no plain HTTP on a TLS endpoint");
    let other = Pki::new("other");
    assert!(tls(addr, &other.client(None), "/metrics", "").await.is_err(), "a client trusting another CA refuses it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn client_certificates_when_required() {
    let pki = Pki::new("mtls");
    pki.leaf("server");
    pki.leaf("scraper");
    let web = pki.web(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let addr = start(Some(&web), MAX_CONNECTIONS).await;
    assert_eq!(tls(addr, &pki.client(Some("scraper")), "/metrics", "").await.unwrap().status, 200);
    let refused = match tls(addr, &pki.client(None), "/metrics", "").await {
        Err(_) => true,
        Ok(a) => a.status != 200,
    };
    assert!(refused, "no client certificate, no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_renewed_certificate_needs_no_restart() {
    let pki = Pki::new("renew");
    let first = pki.leaf("server");
    let web = pki.web("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let addr = start(Some(&web), MAX_CONNECTIONS).await;
    let peer = |c: tokio_rustls::TlsConnector| async move {
        let s = c.connect(ServerName::try_from("localhost").unwrap(), TcpStream::connect(addr).await.unwrap()).await;
        s.unwrap().get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(peer(pki.client(None)).await, first);
    // A coarse file system clock may give the same mtime within a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = pki.leaf("server");
    assert_eq!(peer(pki.client(None)).await, second, "the new certificate at the next connection");
    std::fs::write(pki.dir.join("server.crt"), "not a certificate").unwrap();
    assert_eq!(peer(pki.client(None)).await, second, "a broken renewal keeps the last good one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn idle_connections_cannot_lock_out_a_scrape() {
    let addr = start(None, 4).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let a = tokio::time::timeout(Duration::from_secs(20), plain(addr, "GET", "/metrics", "")).await.expect("answered");
    assert_eq!(a.status, 200);
    let mut closed = 0;
    for mut s in idle {
        let mut b = [0u8; 1];
        if matches!(tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert!(closed >= 16, "the idle connections beyond the cap were closed: {closed} of 20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_burst_of_scrapes_does_not_evict_itself() {
    let addr = start(None, 4).await;
    let scrapes: Vec<_> = (0..64).map(|_| tokio::spawn(plain(addr, "GET", "/metrics", ""))).collect();
    for s in scrapes {
        assert_eq!(s.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_bad_web_config_fails_bind() {
    let pki = Pki::new("bad");
    let web = pki.web("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n");
    let e = bind("127.0.0.1:0".parse().unwrap(), Some(&web)).await.err().unwrap().to_string();
    assert!(e.contains(&web.display().to_string()) && e.contains("cert_file") && e.contains("missing.crt"), "{e}");
}
