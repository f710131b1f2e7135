//! How numbers, names and addresses are shown in every human-readable output.

/// `1234` → `1234`, `12345` → `12.3K`, ... (SI, three significant digits).
pub fn human(n: u64) -> String {
    human_f(n as f64)
}

/// As [`human`], for rates.
pub fn human_f(v: f64) -> String {
    const U: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while (v >= 10_000.0 || (i > 0 && v >= 1000.0)) && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        if v.fract() == 0.0 || v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Cut `s` to `width` characters (marking the cut with `~`).
pub fn clip(s: &mut String, width: usize) {
    if s.chars().count() > width {
        let keep: String = s.chars().take(width.saturating_sub(1)).collect();
        *s = keep + "~";
    }
}

/// [`clip`] of a copy.
pub fn fit(s: &str, width: usize) -> String {
    let mut s = s.to_string();
    clip(&mut s, width);
    s
}

/// Protocol name for an IP protocol number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// An address of `family` (4 or 6) stored in 16 bytes.
pub fn addr(family: u8, a: &[u8; 16]) -> String {
    if family == 4 {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*a).to_string()
    }
}
