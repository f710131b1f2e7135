//! The host's side of the data plane: privileges, bpffs, interfaces, the ephemeral port
//! range, and the XDP links other programs hold.

use std::{ffi::CString, fs, path::Path};

use ps_common::MAX_IFINDEX;

use super::DataplaneError;

/// Refuse to go on without root and bpffs, with a message that says what to do.
pub fn preflight() -> Result<(), DataplaneError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(DataplaneError::NotRoot { uid });
    }
    if !is_bpffs(Path::new("/sys/fs/bpf")) {
        return Err(DataplaneError::NoBpffs);
    }
    Ok(())
}

/// Is `p` on a BPF filesystem?
pub fn is_bpffs(p: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs writes into the zeroed struct we pass.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

/// ifindex of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Interface names in this network namespace (if_nameindex asks the kernel, so it is
/// right inside `nsenter --net`, where /sys/class/net still shows the host's).
pub fn available_interfaces() -> String {
    let mut v = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if !list.is_null() {
            let mut p = list;
            while (*p).if_index != 0 {
                v.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
                p = p.add(1);
            }
            libc::if_freenameindex(list);
        }
    }
    v.sort();
    v.join(", ")
}

/// Interfaces to enforce on: the given names (each must exist), or eth0 and eth1 where
/// present.
pub fn resolve_interfaces(names: Option<&[String]>) -> Result<Vec<(String, u32)>, DataplaneError> {
    let mut out = Vec::new();
    match names {
        Some(names) => {
            for n in names {
                let i = ifindex(n).ok_or_else(|| DataplaneError::NoInterface {
                    name: n.clone(),
                    available: available_interfaces(),
                })?;
                out.push((n.clone(), i));
            }
        }
        None => {
            for n in ["eth0", "eth1"] {
                if let Some(i) = ifindex(n) {
                    out.push((n.to_string(), i));
                }
            }
            if out.is_empty() {
                return Err(DataplaneError::NoInterfaces);
            }
        }
    }
    for (name, i) in &out {
        if *i >= MAX_IFINDEX {
            return Err(DataplaneError::IfindexTooLarge { name: name.clone(), ifindex: *i });
        }
    }
    Ok(out)
}

/// XDP `bpf_link`s in the kernel: program id → link id.
///
/// # Errors
/// Enumerating links (`BPF_LINK_GET_NEXT_ID`) needs CAP_SYS_ADMIN.
///
/// # Minimum kernel version
/// 5.9 (`BPF_LINK_TYPE_XDP`, kernel commit aa8d3a716b59); older kernels have no XDP links, and
/// enumeration (5.8) fails there, which callers treat as "unknown".
pub fn xdp_link_ids() -> Result<std::collections::BTreeMap<u32, u32>, aya::programs::links::LinkError> {
    let mut out = std::collections::BTreeMap::new();
    let mut seen = false;
    for info in aya::programs::loaded_links() {
        // A link can go away between listing its id and opening it: skip it, but report a
        // failure to list anything at all (no CAP_SYS_ADMIN).
        let info = match info {
            Ok(i) => i,
            Err(e) if !seen => return Err(e),
            Err(_) => continue,
        };
        seen = true;
        if matches!(info.link_type(), Ok(aya::programs::links::LinkType::Xdp)) {
            out.insert(info.program_id(), info.id());
        }
    }
    Ok(out)
}

/// `net.ipv4.ip_local_port_range` (it governs IPv6 too), or Linux's default.
pub fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// Whether XDP attaches through a `bpf_link` here (5.9, kernel commit aa8d3a716b59; probed,
/// [`super::probe`]): aya falls back to netlink where it does not, and only a `bpf_link` can
/// be pinned.
pub fn xdp_links() -> bool {
    super::probe::host().features.bpf_link
}
