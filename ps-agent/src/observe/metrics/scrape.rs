//! One read of the maps shared by concurrent scrapes. Reading the pinned maps is ~35k
//! lookups and runs on a blocking thread; scrapes that arrive while a read runs wait for the
//! next read, which starts after they arrived (so every answer is at least as fresh as its
//! request), and share it: a thousand concurrent scrapes cost two reads and one blocking
//! thread, not a thousand. Each read's answer is encoded, converted and gzipped at most once
//! per variant that is asked for.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use axum::body::Bytes;

use super::negotiate::Format;

/// What reads the maps and encodes OpenMetrics text (blocking), or says why it cannot.
pub type Reader = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// One read's answer, in every variant asked for so far.
pub struct Snapshot {
    read_at: Instant,
    result: Result<String, String>,
    /// OpenMetrics, classic; plain and gzipped.
    bodies: [[OnceLock<Bytes>; 2]; 2],
}

impl Snapshot {
    /// The body in `format`, gzipped or not; `Err`: why the maps could not be read.
    pub fn body(&self, format: Format, gzip: bool) -> Result<Bytes, &str> {
        let text = self.result.as_deref().map_err(String::as_str)?;
        let f = usize::from(format == Format::Classic);
        let plain = self.bodies[f][0].get_or_init(|| match format {
            Format::OpenMetrics => Bytes::copy_from_slice(text.as_bytes()),
            Format::Classic => Bytes::from(super::encode::to_classic(text)),
        });
        if !gzip {
            return Ok(plain.clone());
        }
        Ok(self.bodies[f][1].get_or_init(|| Bytes::from(gzip_bytes(plain))).clone())
    }
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 8), flate2::Compression::fast());
    e.write_all(data).and_then(|()| e.finish()).expect("gzip into a Vec cannot fail")
}

/// The shared reads.
pub struct Scraper {
    reader: Reader,
    last: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
}

impl Scraper {
    /// Scrapes answered by `reader`.
    pub fn new(reader: Reader) -> Self {
        Self { reader, last: tokio::sync::Mutex::new(None) }
    }

    /// A snapshot read after this call began.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref()
            && s.read_at >= asked
        {
            return s.clone();
        }
        let read_at = Instant::now();
        let reader = self.reader.clone();
        let result = tokio::task::spawn_blocking(move || reader())
            .await
            .unwrap_or_else(|e| Err(format!("reading the maps failed: {e}")));
        let s = Arc::new(Snapshot { read_at, result, bodies: Default::default() });
        *last = Some(s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn concurrent_scrapes_share_reads() {
        let reads = Arc::new(AtomicU32::new(0));
        let r = reads.clone();
        let scraper = Arc::new(Scraper::new(Arc::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok("# TYPE x counter\nx_total 1\n# EOF\n".into())
        })));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let s = scraper.clone();
                tokio::spawn(async move { s.snapshot().await.body(Format::OpenMetrics, false).unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().ends_with(b"# EOF\n"));
        }
        let n = reads.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "200 concurrent scrapes took {n} reads");
        scraper.snapshot().await;
        assert_eq!(reads.load(Ordering::SeqCst), n + 1, "a later scrape reads again");
    }

    #[tokio::test]
    async fn variants_and_errors() {
        let s = Scraper::new(Arc::new(|| Ok("# TYPE x counter\n# HELP x X.\nx_total 1\n# EOF\n".into())));
        let snap = s.snapshot().await;
        let classic = snap.body(Format::Classic, false).unwrap();
        assert_eq!(&classic[..], b"# TYPE x_total counter\n# HELP x_total X.\nx_total 1\n");
        let gz = snap.body(Format::Classic, true).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out.as_bytes(), &classic[..]);
        let bad = Scraper::new(Arc::new(|| Err("no agent".into())));
        assert_eq!(bad.snapshot().await.body(Format::OpenMetrics, true), Err("no agent"));
    }
}
