//! The data-plane parser and classifier on arbitrary bytes, over the compiled PS matrix (the
//! host model of the kernel's maps): no panic, no out-of-bounds read (the parser reads through
//! raw pointers, so the address sanitizer is what proves its bounds checks), and the verdict
//! is consistent with the parse; the fast path is never a second opinion: where
//! `parse_fast` takes a frame, it says what the general parser says, and where
//! `decide_quick` answers, it says what `decide_walk` says. A TCP reply that needs its flow
//! has its segment read (the option walk on arbitrary bytes) and is judged against a flow
//! made from its own numbers: a dropped reply leaves the flow as it was.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ps_agent::{
    policy::compile::{HostFacts, RuleSet, compile},
    policy::config::{Config, Mode, ReplyTracking},
    policy::model::Model,
};
use ps_common::{
    classify::Verdict,
    layout::{FLOW_TCP_ESTABLISHED, Policy},
    parse::{Parsed, parse_fast, parse_slice},
    reason::DropReason,
    track::{Reply, Segment, flow_new, flow_reply, flow_seeded, flow_sent, tcp_segment},
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
    if let (Verdict::Tracked(c), Parsed::Ip(p)) = (d.verdict, parsed)
        && p.proto == 6
    {
        let start = frame.as_ptr() as usize;
        // SAFETY: as above.
        let seg = unsafe { tcp_segment(start, start + frame.len(), &p, true) }.expect("the parser checked the header");
        check_flow(&set.policy, &seg, c, sel);
    }
});

/// Judge `seg` against a flow made from its own numbers (mid-stream, or a handshake whose
/// ISNs lie a little below them): a reply that is dropped changes nothing.
fn check_flow(policy: &Policy, seg: &Segment, counter: u32, sel: u8) {
    let now = 1 << 40;
    let mut f = if sel & 0x40 != 0 {
        flow_seeded(FLOW_TCP_ESTABLISHED, counter, now)
    } else {
        let isn_l = seg.ack.wrapping_sub(1 + (sel as u32 & 7) * 100);
        let syn = Segment { seq: isn_l, end: isn_l.wrapping_add(1), win: 1000, flags: 0x02, wscale: 7, opts: 1, ..*seg };
        let mut f = flow_new(6, Some(&syn), counter, now).expect("a SYN opens a flow");
        let isn_r = seg.seq.wrapping_sub(1);
        let ack = isn_l.wrapping_add(1);
        let synack = Segment { seq: isn_r, ack, sack: ack, end: isn_r.wrapping_add(1), flags: 0x12, ..syn };
        assert_eq!(flow_reply(&mut f, policy, 6, Some(&synack), now, true), Reply::Pass);
        let data = Segment { seq: ack, ack: seg.seq, sack: seg.seq, end: ack.wrapping_add(700), flags: 0x10, ..syn };
        flow_sent(&mut f, 6, Some(&data), counter, now);
        f
    };
    let before = f;
    if let Reply::Drop(_) = flow_reply(&mut f, policy, 6, Some(seg), now, true) {
        assert_eq!(f, before, "a dropped reply changed its flow");
    }
}
