//! The drop-event ring: the XDP program sends each drop (and, in dry-run, each would-drop)
//! to the `PS_EVENTS` ring buffer, rate-limited per CPU in the program (`PS_EVENT_RL`);
//! this module reads the ring and hands each event to the caller (the daemon logs it,
//! formatted by [`crate::observe::events`]).
//!
//! # Minimum kernel version
//! 5.8 (`BPF_MAP_TYPE_RINGBUF`).

use aya::maps::{MapData, RingBuf};
use log::warn;
use ps_common::{names, observe::Event};
use tokio::io::unix::AsyncFd;

use super::Loaded;

/// Decode a ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    (bytes.len() >= size_of::<Event>())
        // SAFETY: length checked; Event is plain old data, read unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

impl Loaded {
    /// Take the event ring from the loaded object and pass each event to `on_event` until
    /// the task is aborted. `None` without a ring buffer (kernels before 5.8: probed, the
    /// program sends nothing), or with a warning if the ring cannot be used.
    pub fn spawn_events(
        &mut self,
        on_event: impl FnMut(Event) + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.features.ringbuf {
            // `PS_EVENTS` is a placeholder (`super::probe::configure`).
            return None;
        }
        let map = self.ebpf_mut().take_map(names::MAP_EVENTS)?;
        let ring = match RingBuf::try_from(map) {
            Ok(r) => r,
            Err(e) => {
                warn!("drop events are unavailable (counted, not logged): {e}");
                return None;
            }
        };
        // SAFETY: the ring owns its map fd, which stays open and the same for as long as
        // the ring (moved into the AsyncFd) lives.
        let fd = match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                warn!("drop events are unavailable (counted, not logged): {e}");
                return None;
            }
        };
        Some(tokio::spawn(drain(fd, on_event)))
    }
}

impl Loaded {
    /// Start the program's dry-run log (aya-log), drained a few times a second into this
    /// process's logger until the task is aborted; `None` (with a warning) if the object
    /// has no log ring this kernel can use.
    pub fn spawn_dry_run_log(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.features.ringbuf {
            // `AYA_LOGS` is a placeholder and the program logs nothing.
            return None;
        }
        let mut logger = match aya_log::EbpfLogger::init(self.ebpf_mut()) {
            Ok(l) => l,
            Err(e) => {
                warn!("dry-run log from the XDP program is unavailable: {e}");
                return None;
            }
        };
        // The dry-run log is rate-limited in the program; draining it a few times a second
        // is plenty.
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                logger.flush();
            }
        }))
    }
}

async fn drain(mut fd: AsyncFd<RingBuf<MapData>>, mut on_event: impl FnMut(Event)) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!("drop events: {e}; no more events are logged");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if let Some(e) = decode(&item) {
                on_event(e);
            }
        }
        guard.clear_ready();
    }
}
