//! The matrix importer and the site-config parser on arbitrary text: errors, never panics;
//! whatever parses also compiles without panicking. Seeds: `policy/*.toml` (`cargo xtask
//! fuzz` passes that directory as a second corpus).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ps_agent::{
    policy::compile::{HostFacts, compile},
    policy::config::{Config, Matrix, Site},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] };
    if let Ok(matrix) = Matrix::parse(text, "fuzz-policy.toml") {
        let _ = compile(&Config { matrix, site: Site::default() }, &host);
    }
    static SHIPPED: OnceLock<Matrix> = OnceLock::new();
    let matrix = SHIPPED.get_or_init(Matrix::shipped).clone();
    if let Ok(site) = Site::parse(text, "fuzz-site.toml", &matrix) {
        let _ = compile(&Config { matrix, site }, &host);
    }
});
