//! The endpoint's web config: TLS and basic authentication in the format Prometheus
//! exporters share (the exporter-toolkit's `--web.config.file`), so a site configures
//! ps-agent the way it configures node_exporter.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # relative paths: to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Unknown keys are an error naming the file and the key; keys of the format that ps-agent
//! does not implement (`client_allowed_sans`, `rate_limit`, the weaker client-auth types)
//! are an error saying what to use instead. The file is read once at start; the
//! certificate, key and client-CA files are read again when they change (see
//! [`TlsFiles`]), so a renewed certificate needs no restart.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use log::warn;
use rustls::{
    ServerConfig, SupportedProtocolVersion,
    crypto::CryptoProvider,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

/// Why the web config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file could not be read.
    #[error("failed to read the metrics web config {path}: {source}")]
    Read {
        /// The web config.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML of the expected shape (the parser's message names the line and the key).
    #[error("failed to parse the metrics web config {path}: {message}")]
    Syntax {
        /// The web config.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is wrong, or a file it names cannot be used.
    #[error("metrics web config {path}: `{key}`: {problem}")]
    Invalid {
        /// The web config.
        path: PathBuf,
        /// The key, dotted (`tls_server_config.cert_file`).
        key: &'static str,
        /// What is wrong and what to do.
        problem: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<serde::de::IgnoredAny>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility; the endpoint speaks HTTP/1.1.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// PEM text, from a file or inline in the web config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    /// A file (absolute, or made absolute against the web config's directory).
    File(PathBuf),
    /// Inline text.
    Inline(String),
}

impl Pem {
    fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::File(p) => std::fs::read(p),
            Self::Inline(t) => Ok(t.clone().into_bytes()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Inline(_) => "the inline PEM".into(),
        }
    }
}

/// Which client certificates the server asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// None (`NoClientCert`).
    None,
    /// Verified against the CA when the client sends one (`VerifyClientCertIfGiven`).
    IfGiven(Pem),
    /// Required and verified against the CA (`RequireAndVerifyClientCert`).
    Required(Pem),
}

/// TLS settings of the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain.
    pub cert: Pem,
    /// Private key.
    pub key: Pem,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// Protocol versions, as rustls names them (TLS 1.2 and 1.3 only).
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// TLS 1.2 cipher suites to offer (`None`: rustls' defaults).
    pub cipher_suites: Option<Vec<String>>,
    /// Key exchange groups in preference order (`None`: rustls' defaults).
    pub curves: Option<Vec<String>>,
    /// The server's cipher order wins.
    pub prefer_server_order: bool,
}

/// A validated web config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// TLS (`None`: plain HTTP).
    pub tls: Option<TlsSettings>,
    /// User → bcrypt hash (empty: no authentication).
    pub users: BTreeMap<String, String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

/// The response headers the format allows, and their allowed values (empty: any).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Read and validate `path` (certificates are loaded too, so that a bad one fails
    /// start-up, not the first scrape).
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, a key is unknown or unsupported, a value is
    /// wrong, or a certificate, key or CA cannot be loaded.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { path: path.into(), source })?;
        let cfg = Self::parse(&text, path)?;
        if let Some(tls) = &cfg.tls {
            tls.server_config().map_err(|(key, problem)| WebConfigError::Invalid {
                path: path.into(),
                key,
                problem,
            })?;
        }
        Ok(cfg)
    }

    /// Validate web-config text read from `path` (relative file names are taken from
    /// `path`'s directory); no file it names is read.
    ///
    /// # Errors
    ///
    /// As [`WebConfig::load`], without the file checks.
    pub fn parse(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        let invalid = |key: &'static str, problem: String| WebConfigError::Invalid { path: path.into(), key, problem };
        let f: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| WebConfigError::Syntax { path: path.into(), message: e.to_string() })?
        };
        if f.rate_limit.is_some() {
            return Err(invalid(
                "rate_limit",
                "not supported by ps-agent; the endpoint caps connections and reads the maps once for concurrent scrapes: remove the key".into(),
            ));
        }
        for (user, hash) in &f.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(
                    "basic_auth_users",
                    format!(
                        "the password of `{user}` is not a bcrypt hash; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                    ),
                ));
            }
        }
        let mut headers = Vec::new();
        for (name, value) in f.http_server_config.map(|h| h.headers).unwrap_or_default() {
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(n, _)| *n).collect();
                return Err(invalid(
                    "http_server_config.headers",
                    format!("header `{name}` cannot be set; settable: {}", names.join(", ")),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(invalid(
                    "http_server_config.headers",
                    format!("`{name}: {value}`: expected one of {}", allowed.join(", ")),
                ));
            }
            headers.push((name, value));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match f.tls_server_config {
            Some(t) => Some(tls_settings(t, dir).map_err(|(key, problem)| invalid(key, problem))?),
            None => None,
        };
        Ok(Self { path: path.into(), tls, users: f.basic_auth_users, headers })
    }
}

type Problem = (&'static str, String);

fn pem(
    inline: Option<String>,
    file: Option<PathBuf>,
    dir: &Path,
    keys: (&'static str, &'static str),
) -> Result<Option<Pem>, Problem> {
    match (inline, file) {
        (Some(_), Some(_)) => Err((keys.1, format!("give either `{}` or `{}`, not both", keys.0, keys.1))),
        (Some(t), None) => Ok(Some(Pem::Inline(t))),
        (None, Some(p)) if p.as_os_str().is_empty() => Err((keys.1, "empty file name".into())),
        (None, Some(p)) => Ok(Some(Pem::File(if p.is_relative() { dir.join(p) } else { p }))),
        (None, None) => Ok(None),
    }
}

fn version(name: &str, key: &'static str) -> Result<u8, Problem> {
    match name {
        "TLS10" => Ok(0),
        "TLS11" => Ok(1),
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        _ => Err((key, format!("`{name}`: expected TLS10, TLS11, TLS12 or TLS13"))),
    }
}

fn tls_settings(t: TlsFile, dir: &Path) -> Result<TlsSettings, Problem> {
    const CERT: &str = "tls_server_config.cert_file";
    const KEY: &str = "tls_server_config.key_file";
    const CA: &str = "tls_server_config.client_ca_file";
    const AUTH: &str = "tls_server_config.client_auth_type";
    if t.client_allowed_sans.is_some() {
        return Err((
            "tls_server_config.client_allowed_sans",
            "not supported by ps-agent: issue the scrapers' certificates from a CA of their own and name it in client_ca_file".into(),
        ));
    }
    let cert = pem(t.cert, t.cert_file, dir, ("cert", "cert_file"))?
        .ok_or((CERT, "missing: give cert_file (or cert) and key_file (or key)".to_string()))?;
    let key = pem(t.key, t.key_file, dir, ("key", "key_file"))?
        .ok_or((KEY, "missing: give key_file (or key) with cert_file".to_string()))?;
    let ca = pem(t.client_ca, t.client_ca_file, dir, ("client_ca", "client_ca_file"))?;
    let client_auth = match (t.client_auth_type.as_deref().unwrap_or("NoClientCert"), ca) {
        ("NoClientCert", None) => ClientAuth::None,
        ("NoClientCert", Some(_)) => {
            return Err((
                AUTH,
                "a client CA is given without a client auth type: set RequireAndVerifyClientCert".into(),
            ));
        }
        ("VerifyClientCertIfGiven", Some(ca)) => ClientAuth::IfGiven(ca),
        ("RequireAndVerifyClientCert", Some(ca)) => ClientAuth::Required(ca),
        ("VerifyClientCertIfGiven" | "RequireAndVerifyClientCert", None) => {
            return Err((CA, "missing: the client auth type verifies client certificates against this CA".into()));
        }
        ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert", _) => {
            return Err((
                AUTH,
                "accepts any client certificate, verified by nobody; ps-agent does not offer it: use RequireAndVerifyClientCert with client_ca_file".into(),
            ));
        }
        (other, _) => {
            return Err((
                AUTH,
                format!("`{other}`: expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"),
            ));
        }
    };
    let min = version(t.min_version.as_deref().unwrap_or("TLS12"), "tls_server_config.min_version")?;
    let max = version(t.max_version.as_deref().unwrap_or("TLS13"), "tls_server_config.max_version")?;
    let versions: Vec<&'static SupportedProtocolVersion> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
    if versions.is_empty() {
        return Err((
            "tls_server_config.max_version",
            "leaves no protocol version ps-agent speaks (TLS 1.2 and 1.3); set TLS12 or TLS13".into(),
        ));
    }
    let s = TlsSettings {
        cert,
        key,
        client_auth,
        versions,
        cipher_suites: t.cipher_suites.filter(|v| !v.is_empty()),
        curves: t.curve_preferences.filter(|v| !v.is_empty()),
        prefer_server_order: t.prefer_server_cipher_suites.unwrap_or(true),
    };
    s.provider()?;
    Ok(s)
}

/// The IANA names of the TLS 1.2 suites `p` offers (Go's names for them too).
fn tls12_suites(p: &CryptoProvider) -> Vec<String> {
    p.cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// Go's curve names → rustls' key exchange group names.
const CURVES: [(&str, &str); 3] = [("X25519", "X25519"), ("CurveP256", "secp256r1"), ("CurveP384", "secp384r1")];

impl TlsSettings {
    /// The ring provider, narrowed to the configured cipher suites and curves.
    fn provider(&self) -> Result<Arc<CryptoProvider>, Problem> {
        let mut p = rustls::crypto::ring::default_provider();
        if let Some(names) = &self.cipher_suites {
            let tls12 = tls12_suites(&p);
            for n in names {
                if !tls12.contains(n) {
                    return Err((
                        "tls_server_config.cipher_suites",
                        format!("`{n}` is not a TLS 1.2 suite ps-agent offers; offered: {}", tls12.join(", ")),
                    ));
                }
            }
            p.cipher_suites
                .retain(|s| s.version() != &rustls::version::TLS12 || names.contains(&format!("{:?}", s.suite())));
        }
        if let Some(names) = &self.curves {
            let mut groups = Vec::new();
            for n in names {
                let Some((_, rustls_name)) = CURVES.iter().find(|(go, _)| go == n) else {
                    let known: Vec<&str> = CURVES.iter().map(|(go, _)| *go).collect();
                    return Err((
                        "tls_server_config.curve_preferences",
                        format!("`{n}` is not offered; offered: {}", known.join(", ")),
                    ));
                };
                groups
                    .extend(p.kx_groups.iter().filter(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(rustls_name)));
            }
            p.kx_groups = groups;
        }
        Ok(Arc::new(p))
    }

    /// Every file the TLS settings read.
    pub fn files(&self) -> Vec<PathBuf> {
        let ca = match &self.client_auth {
            ClientAuth::None => None,
            ClientAuth::IfGiven(ca) | ClientAuth::Required(ca) => Some(ca),
        };
        [Some(&self.cert), Some(&self.key), ca]
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                Pem::File(f) => Some(f.clone()),
                Pem::Inline(_) => None,
            })
            .collect()
    }

    /// Build the rustls server config: read the certificate, key and CA.
    fn server_config(&self) -> Result<ServerConfig, Problem> {
        const CERT: &str = "tls_server_config.cert_file";
        const KEY: &str = "tls_server_config.key_file";
        let provider = self.provider()?;
        let certs = read_certs(&self.cert).map_err(|e| (CERT, e))?;
        let key_pem = self.key.read().map_err(|e| (KEY, format!("failed to read {}: {e}", self.key.describe())))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| (KEY, format!("no private key in {}: {e}", self.key.describe())))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| ("tls_server_config.min_version", e.to_string()))?;
        let builder = match self.client_verifier(&provider)? {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
            (KEY, format!("{} and {} do not go together: {e}", self.cert.describe(), self.key.describe()))
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg.ignore_client_order = self.prefer_server_order;
        Ok(cfg)
    }

    fn client_verifier(&self, provider: &Arc<CryptoProvider>) -> Result<Option<Arc<dyn ClientCertVerifier>>, Problem> {
        const CA: &str = "tls_server_config.client_ca_file";
        let (ca, required) = match &self.client_auth {
            ClientAuth::None => return Ok(None),
            ClientAuth::IfGiven(ca) => (ca, false),
            ClientAuth::Required(ca) => (ca, true),
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca).map_err(|e| (CA, e))? {
            roots.add(c).map_err(|e| (CA, format!("{}: {e}", ca.describe())))?;
        }
        let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let b = if required { b } else { b.allow_unauthenticated() };
        b.build().map(Some).map_err(|e| (CA, format!("{}: {e}", ca.describe())))
    }
}

fn read_certs(p: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = p.read().map_err(|e| format!("failed to read {}: {e}", p.describe()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", p.describe()))?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", p.describe()));
    }
    Ok(certs)
}

/// The TLS acceptor, rebuilt when a certificate, key or CA file changes (checked at each
/// new connection: a `stat` per file). A change that does not load is logged once and the
/// previous config stays in force.
pub struct TlsFiles {
    settings: TlsSettings,
    path: PathBuf,
    current: Mutex<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl TlsFiles {
    /// Load the files now.
    ///
    /// # Errors
    ///
    /// A certificate, key or CA cannot be loaded.
    pub fn new(settings: TlsSettings, path: &Path) -> Result<Self, WebConfigError> {
        let stamps = mtimes(&settings.files());
        let cfg = settings.server_config().map_err(|(key, problem)| WebConfigError::Invalid {
            path: path.into(),
            key,
            problem,
        })?;
        Ok(Self { settings, path: path.into(), current: Mutex::new((stamps, Arc::new(cfg))) })
    }

    /// The config for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        let stamps = mtimes(&self.settings.files());
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.0 != stamps {
            match self.settings.server_config() {
                Ok(cfg) => cur.1 = Arc::new(cfg),
                Err((key, problem)) => {
                    warn!(
                        "metrics web config {}: `{key}`: {problem}; serving the previous certificate",
                        self.path.display()
                    )
                }
            }
            cur.0 = stamps;
        }
        cur.1.clone()
    }
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, Path::new("/etc/ps-agent/web.yml"))
    }

    #[test]
    fn reads_the_exporter_toolkit_format() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /k/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\nhttp_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/ps-agent/server.crt".into()), "relative to the web config");
        assert_eq!(tls.key, Pem::File("/k/server.key".into()));
        assert_eq!(tls.client_auth, ClientAuth::Required(Pem::File("/etc/ps-agent/ca.crt".into())));
        assert_eq!(tls.versions, vec![&rustls::version::TLS13]);
        assert_eq!(c.users["prometheus"], hash);
        assert_eq!(c.headers, vec![("X-Frame-Options".to_string(), "deny".to_string())]);
        let empty = parse("").unwrap();
        assert!(empty.tls.is_none() && empty.users.is_empty(), "an empty file: plain HTTP, no auth");
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  cert_flie: c\n").unwrap_err().to_string();
        assert!(e.starts_with("failed to parse the metrics web config /etc/ps-agent/web.yml:"), "{e}");
        assert!(e.contains("cert_flie"), "{e}");
        let e = parse("basic_auth_user:\n  a: b\n").unwrap_err().to_string();
        assert!(e.contains("basic_auth_user"), "{e}");
    }

    #[test]
    fn wrong_values_say_what_to_do() {
        let cases = [
            ("basic_auth_users:\n  p: secret\n", "`basic_auth_users`: the password of `p` is not a bcrypt hash"),
            ("tls_server_config:\n  key_file: k\n", "`tls_server_config.cert_file`: missing"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
                "without a client auth type: set RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
                "use RequireAndVerifyClientCert with client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "`tls_server_config.client_ca_file`: missing",
            ),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  max_version: TLS11\n", "leaves no protocol version"),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: SSL3\n", "expected TLS10, TLS11"),
            ("tls_server_config:\n  cert_file: c\n  cert: x\n  key_file: k\n", "give either `cert` or `cert_file`"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: [CurveP521]\n",
                "offered: X25519",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                "not a TLS 1.2 suite",
            ),
            ("rate_limit:\n  interval: 1s\n  burst: 5\n", "`rate_limit`: not supported by ps-agent"),
            ("http_server_config:\n  headers:\n    Server: x\n", "header `Server` cannot be set"),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "expected one of deny, sameorigin"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("/etc/ps-agent/web.yml"), "{e}");
        }
    }

    #[test]
    fn suites_and_curves_narrow_the_provider() {
        let c = parse("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [CurveP256, X25519]\n").unwrap();
        let p = c.tls.unwrap().provider().unwrap();
        let tls12 = tls12_suites(&p);
        assert_eq!(tls12, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert!(p.cipher_suites.iter().any(|s| s.version() == &rustls::version::TLS13), "TLS 1.3 suites stay");
        let groups: Vec<String> = p.kx_groups.iter().map(|g| format!("{:?}", g.name())).collect();
        assert_eq!(groups, ["secp256r1", "X25519"]);
    }

    #[test]
    fn a_missing_certificate_fails_load() {
        let dir = std::env::temp_dir().join(format!("ps-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(&path, "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n").unwrap();
        let e = WebConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("`tls_server_config.cert_file`: failed to read") && e.contains("nope.crt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
