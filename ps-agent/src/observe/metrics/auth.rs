//! Basic authentication against the web config's bcrypt hashes, as the exporter-toolkit
//! does it: an unknown user costs the same bcrypt as a known one (no user enumeration by
//! timing), one bcrypt runs at a time (each is ~70 ms of CPU at cost 10), off the async
//! threads, and a successful (user, password) is remembered so that a scraper pays the
//! bcrypt once, not at every scrape (nor once per concurrent first request). Only a SHA-256 of a success is kept, never a password.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, OnceLock},
};

use headers::{Authorization, authorization::Basic};

/// Successes remembered (a few scrapers and operators; the oldest goes first).
const REMEMBERED: usize = 64;

/// The users of the web config.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    remembered: Mutex<VecDeque<[u8; 32]>>,
    bcrypt: Mutex<()>,
    decoy: OnceLock<String>,
}

impl BasicAuth {
    /// `users`: user → bcrypt hash (already validated).
    pub fn new(users: BTreeMap<String, String>) -> Arc<Self> {
        Arc::new(Self {
            users,
            remembered: Mutex::new(VecDeque::new()),
            bcrypt: Mutex::new(()),
            decoy: OnceLock::new(),
        })
    }

    /// Does `creds` name a user with the right password?
    pub async fn allows(self: &Arc<Self>, creds: Option<Authorization<Basic>>) -> bool {
        let Some(c) = creds else { return false };
        let (user, pass) = (c.username().to_string(), c.password().to_string());
        let digest = digest(&user, &pass);
        if self.lock_remembered().contains(&digest) {
            return true;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.verify(&user, &pass, digest)).await.unwrap_or(false)
    }

    fn lock_remembered(&self) -> std::sync::MutexGuard<'_, VecDeque<[u8; 32]>> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One bcrypt at a time; a request that waited for another's bcrypt of the same
    /// credentials finds the answer remembered. An unknown user is checked against a decoy
    /// hash of the same cost as the first user's.
    fn verify(&self, user: &str, pass: &str, digest: [u8; 32]) -> bool {
        let _one = self.bcrypt.lock().unwrap_or_else(|e| e.into_inner());
        if self.lock_remembered().contains(&digest) {
            return true;
        }
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(pass, hash).unwrap_or(false),
            None => {
                let decoy = self.decoy.get_or_init(|| {
                    let cost = self.users.values().next().and_then(|h| h.parse::<bcrypt::HashParts>().ok());
                    bcrypt::hash("ps-agent decoy", cost.map_or(bcrypt::DEFAULT_COST, |p| p.get_cost()))
                        .unwrap_or_default()
                });
                let _ = bcrypt::verify(pass, decoy);
                false
            }
        };
        if ok {
            let mut r = self.lock_remembered();
            if r.len() == REMEMBERED {
                r.pop_front();
            }
            r.push_back(digest);
        }
        ok
    }
}

fn digest(user: &str, pass: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(user.as_bytes());
    ctx.update(&[0]);
    ctx.update(pass.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &str) -> Option<Authorization<Basic>> {
        Some(Authorization::basic(user, pass))
    }

    #[tokio::test]
    async fn checks_users_and_remembers_successes() {
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_string(), bcrypt::hash("s3cret", 4).unwrap())]));
        assert!(auth.allows(creds("prom", "s3cret")).await);
        assert_eq!(auth.lock_remembered().len(), 1, "a success is remembered");
        assert!(auth.allows(creds("prom", "s3cret")).await, "and answered from memory");
        assert!(!auth.allows(creds("prom", "wrong")).await);
        assert!(!auth.allows(creds("nobody", "s3cret")).await);
        assert!(!auth.allows(None).await);
        assert_eq!(auth.lock_remembered().len(), 1, "failures are not remembered");
        assert!(auth.decoy.get().is_some_and(|d| d.starts_with("$2b$04$")), "the decoy has the users' cost");
    }

    #[tokio::test]
    async fn reads_htpasswd_hashes() {
        // htpasswd -B writes $2y$ hashes.
        let hash = bcrypt::hash_with_result("s3cret", 4).unwrap().format_for_version(bcrypt::Version::TwoY);
        assert!(hash.starts_with("$2y$04$"), "{hash}");
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)]));
        assert!(auth.allows(creds("prom", "s3cret")).await);
        assert!(!auth.allows(creds("prom", "s3cre")).await);
    }
}
