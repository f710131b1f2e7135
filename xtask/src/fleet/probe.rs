//! Does a node answer a port? A TCP connection from a lab namespace: a SYN-ACK or a RST
//! means the packet reached the node's stack (nothing needs to listen), silence means the
//! node dropped it.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::bail;

use super::lab::in_ns;

/// How long a probe waits for an answer.
const WAIT: Duration = Duration::from_millis(700);

/// What a probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK or RST: the node's stack saw the SYN.
    Answered,
    /// Nothing within the wait: dropped.
    Silent,
}

fn once(to: SocketAddr, wait: Duration) -> Result<Answer, String> {
    match TcpStream::connect_timeout(&to, wait) {
        Ok(_) => Ok(Answer::Answered),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Answer::Answered),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => Ok(Answer::Silent),
        Err(e) => Err(format!("{to}: {e}")),
    }
}

/// Probe each target from namespace `ns`, in order.
pub fn tcp(ns: &str, targets: Vec<SocketAddr>) -> anyhow::Result<Vec<Answer>> {
    let answers = in_ns(ns, move || targets.iter().map(|&t| once(t, WAIT)).collect::<Result<Vec<_>, _>>())?;
    match answers {
        Ok(a) => Ok(a),
        Err(e) => bail!("probe from {ns} failed: {e}"),
    }
}

/// Probes of one target repeated until stopped, counting the answers.
pub struct Prober {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 3]>,
    thread: JoinHandle<()>,
}

/// What a [`Prober`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Probes sent.
    pub sent: u64,
    /// Probes answered (SYN-ACK or RST).
    pub answered: u64,
    /// Probes that failed otherwise (no route, no neighbour): the probe proved nothing.
    pub errors: u64,
}

impl Prober {
    /// Probe `to` from `ns` every few milliseconds until [`Prober::finish`].
    pub fn start(ns: &str, to: SocketAddr) -> Self {
        let (stop, counts) = (Arc::<AtomicBool>::default(), Arc::<[AtomicU64; 3]>::default());
        let (s, c, ns) = (Arc::clone(&stop), Arc::clone(&counts), ns.to_string());
        let thread = std::thread::spawn(move || {
            let r = in_ns(&ns, move || {
                while !s.load(Ordering::Relaxed) {
                    c[0].fetch_add(1, Ordering::Relaxed);
                    match once(to, Duration::from_millis(200)) {
                        Ok(Answer::Answered) => c[1].fetch_add(1, Ordering::Relaxed),
                        Ok(Answer::Silent) => 0,
                        Err(_) => c[2].fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            if let Err(e) = r {
                eprintln!("[fleet] prober of {to}: {e:#}");
            }
        });
        Prober { stop, counts, thread }
    }

    /// Stop and count.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        Tally { sent: n(0), answered: n(1), errors: n(2) }
    }
}
