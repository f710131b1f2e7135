//! The capture reader on arbitrary bytes: errors, never panics, never loops; after an error
//! it yields nothing more; and every frame it yields replays through `explain` without a
//! panic. Seeds: none needed (pcap and pcapng magics are four bytes; libFuzzer finds them).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ps_agent::policy::{
    capture::Capture,
    compile::{HostFacts, RuleSet, compile},
    config::{Config, Mode},
    explain::replay,
};

fn set() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] };
        compile(&Config::shipped(), &host).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut capture) = Capture::new(data) else { return };
    let mut frames = Vec::new();
    for item in capture.by_ref() {
        match item {
            Ok(frame) => frames.push(Ok::<_, ()>(frame)),
            Err(_) => break,
        }
    }
    assert!(capture.next().is_none(), "nothing after the end or an error");
    let _ = replay(set(), Mode::Enforce, frames, 1, &[]);
});
