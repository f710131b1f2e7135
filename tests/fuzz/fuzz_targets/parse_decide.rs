//! The data-plane parser and classifier on arbitrary bytes, over the compiled PS matrix (the
//! host model of the kernel's maps): no panic, no out-of-bounds read (the parser reads through
//! raw pointers, so the address sanitizer is what proves its bounds checks), and the verdict
//! is consistent with the parse; the fast path is never a second opinion: where
//! `parse_fast` takes a frame, it says what the general parser says, and where
//! `decide_quick` answers, it says what `decide_walk` says.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ps_agent::{
    compile::{HostFacts, RuleSet, compile},
    config::{Config, Mode, ReplyTracking},
    model::Model,
};
use ps_common::{
    classify::Verdict,
    parse::{Parsed, parse_fast, parse_slice},
    reason::DropReason,
};

fn sets() -> &'static [RuleSet; 2] {
    static SETS: OnceLock<[RuleSet; 2]> = OnceLock::new();
    SETS.get_or_init(|| {
        let host = HostFacts { ephemeral: (32768, 60999), interfaces: vec!["eth0".into(), "eth1".into()] };
        let stateful = compile(&Config::shipped(), &host).unwrap();
        let mut cfg = Config::shipped();
        cfg.site.reply_tracking = ReplyTracking::Stateless;
        cfg.site.allow_ping = true;
        [stateful, compile(&cfg, &host).unwrap()]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    // An exact-size copy, so reading one byte past the frame is caught.
    let frame = frame.to_vec();
    let set = &sets()[(sel & 1) as usize];
    let mode = if sel & 2 != 0 { Mode::DryRun } else { Mode::Enforce };
    let slot = ((sel >> 2) % 4) as u32;
    let parsed = parse_slice(&frame);
    let start = frame.as_ptr() as usize;
    // SAFETY: the frame is readable for the duration of the call.
    if let Some(p) = unsafe { parse_fast(start, start + frame.len()) } {
        assert_eq!(Parsed::Ip(p), parsed);
    }
    let model = Model::new(set, mode);
    let d = model.decide(&frame, slot);
    // The port table's short answer is never a second opinion either.
    let (quick, walked) = model.decide_steps(&frame, slot);
    if let Some(q) = quick {
        assert_eq!(q, walked);
    }
    assert_eq!(d, quick.unwrap_or(walked));
    match parsed {
        Parsed::Drop(r) => assert_eq!(d.verdict, Verdict::Drop(r)),
        Parsed::Arp => assert!(matches!(d.verdict, Verdict::Pass(_))),
        Parsed::Ip(p) => {
            assert!(frame.len() >= p.l3_off as usize + if p.ip_version == 4 { 20 } else { 40 });
            assert_ne!(d.verdict, Verdict::Drop(DropReason::Truncated));
        }
    }
    if frame.len() < 14 {
        assert_eq!(d.verdict, Verdict::Drop(DropReason::Truncated));
    }
    if mode == Mode::DryRun {
        assert!(d.passes());
    }
});
