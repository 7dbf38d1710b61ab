//! The web page and its JSON API, served by the node on `[web] listen`
//! (or `--web ADDR` for one run): translation only, like the control
//! socket. Every API call is a control [`Request`](crate::control::Request)
//! answered by the node's [`Local`], so the page, the CLI and scripts do
//! the same things by the same rules; events come from the node's bus.
//!
//! Access (DESIGN.md, "How it is used"):
//! - Loopback addresses only, no TLS yet: anything else is refused with
//!   one line that points to an SSH tunnel.
//! - Every request's `Host` must be the listen address, `localhost:PORT`
//!   or `127.0.0.1:PORT`, else 403: a DNS-rebinding page in the user's
//!   browser cannot talk to us under its own name.
//! - `/api/` wants `Authorization: Bearer T`, T being `[web] api_key` or a
//!   session token, else 401. A browser gets a session by trading the
//!   one-time token from `backer web` (`POST /api/login`); the page keeps it
//!   in sessionStorage and sends it in that header. There is no cookie: on
//!   127.0.0.1 cookies are shared by every port, so another local user's
//!   server could read one. Nothing is sent by the browser on its own, so a
//!   cross-site form can carry no credentials, and the session token is
//!   the CSRF token of state-changing requests.
//! - A session ends after 12 hours unused and 7 days after its login,
//!   whatever its use; at most 256 live at once (a new one ends the least
//!   recently used).
//!
//! The page itself (HTML, CSS, JavaScript) is embedded in the binary and
//! loads nothing from any other host.

mod api;
mod conns;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use backer_fs::events::Bus;

use crate::config::{web_addr, Config};
use crate::control::Local;
use crate::services::WebLogins;

/// How long a login token from `backer web` may wait to be used.
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// At most this many sessions live; a new one beyond it ends the one used
/// least recently (its user logs in again with `backer web`).
const MAX_SESSIONS: usize = 256;

/// A session not used for this long ends: a browser tab left open on a
/// shared or stolen machine does not keep the node open for ever.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// No session lives longer than this, however busy: a token that leaked
/// (a screenshot, a synced browser profile) stops working on its own.
const SESSION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// When a session began and when it was last used.
#[derive(Clone, Copy)]
struct Session {
    made: Instant,
    used: Instant,
}

impl Session {
    fn live_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.used) < SESSION_IDLE
            && now.saturating_duration_since(self.made) < SESSION_MAX_AGE
    }
}

/// 32 random bytes in hex, from the kernel: API keys and tokens.
pub(crate) fn new_secret() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(crate::control::to_hex(&b))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Who may use the page: the API key, login tokens, sessions, and the
/// address the page is served at (for its URL and the Host check).
pub(crate) struct Access {
    addr: SocketAddr,
    api_key: String,
    logins: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Access {
    fn new(addr: SocketAddr, api_key: String) -> Access {
        Access {
            addr,
            api_key,
            logins: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl WebLogins for Access {
    /// A new one-time login URL: the token rides in the fragment, which
    /// the browser never sends; the page trades it for a session.
    fn login_url(&self) -> String {
        let token = match new_secret() {
            Ok(t) => t,
            Err(e) => return format!("cannot make a login token: {e}"),
        };
        let mut logins = lock(&self.logins);
        logins.retain(|_, made| made.elapsed() < LOGIN_TTL);
        logins.insert(token.clone(), Instant::now());
        format!("http://{}/#login={token}", self.addr)
    }
}

impl Access {
    /// Trades a login token (once) for a new session token.
    fn login(&self, token: &str) -> Option<String> {
        self.login_at(token, Instant::now())
    }

    fn login_at(&self, token: &str, now: Instant) -> Option<String> {
        let made = lock(&self.logins).remove(token)?;
        if now.saturating_duration_since(made) >= LOGIN_TTL {
            return None;
        }
        let session = new_secret().ok()?;
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.live_at(now));
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            session.clone(),
            Session {
                made: now,
                used: now,
            },
        );
        Some(session)
    }

    /// Whether `Authorization: <header>` lets the caller in.
    fn allows(&self, header: Option<&str>) -> bool {
        self.allows_at(header, Instant::now())
    }

    /// [`Access::allows`] at `now`: a live session's use keeps it alive.
    /// Every session is compared (in constant time each), not looked up by
    /// hash, so the answer's timing tells nothing about the tokens.
    fn allows_at(&self, header: Option<&str>, now: Instant) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let token = token.trim();
        if !self.api_key.is_empty() && same_secret(token, &self.api_key) {
            return true;
        }
        let mut sessions = lock(&self.sessions);
        let mut found = None;
        for (key, s) in sessions.iter() {
            if same_secret(key, token) {
                found = Some((key.clone(), *s));
            }
        }
        match found {
            Some((key, s)) if s.live_at(now) => {
                if let Some(s) = sessions.get_mut(&key) {
                    s.used = now;
                }
                true
            }
            Some((key, _)) => {
                sessions.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Whether a request's `Host` names us (see the module documentation).
    fn host_ok(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let port = self.addr.port();
        host == self.addr.to_string()
            || host == format!("localhost:{port}")
            || host == format!("127.0.0.1:{port}")
    }
}

/// Starts the web listener of the node whose requests `local` answers, if
/// `[web] listen` (or `flag`, which overrides it) names an address. An
/// address that is taken or refused is one log line, and the node runs on
/// without the page.
pub(crate) fn start(store: &Path, flag: Option<&str>, local: Arc<Local>, bus: Bus) -> Result<()> {
    let cfg = Config::load(store)?;
    let web = cfg.web.unwrap_or_default();
    let text = flag.unwrap_or(&web.listen);
    let addr = match web_addr(text) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::warn!("no web page: {e}");
            return Ok(());
        }
    };
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("no web page: cannot listen on {addr}: {e}");
            return Ok(());
        }
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let access = Arc::new(Access::new(addr, web.api_key));
    local.set_web(access.clone());
    tracing::info!(%addr, "serving the web page");
    std::thread::Builder::new()
        .name("backer-web".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "no web page: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = api::serve(listener, access, local, bus).await {
                    tracing::warn!(error = %e, "the web page stopped");
                }
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new("127.0.0.1:8386".parse().unwrap(), "key".into())
    }

    #[test]
    fn the_host_must_name_us() {
        let a = access();
        for ok in ["127.0.0.1:8386", "localhost:8386"] {
            assert!(a.host_ok(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some("evil.example:8386"),
            Some("localhost:8387"),
            Some("127.0.0.1"),
        ] {
            assert!(!a.host_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_login_token_works_once_and_gives_a_session() {
        let a = access();
        assert!(a.allows(Some("Bearer key")));
        assert!(!a.allows(Some("Bearer kez")));
        assert!(!a.allows(Some("key")));
        assert!(!a.allows(None));
        let url = a.login_url();
        let token = url.rsplit_once("#login=").unwrap().1.to_string();
        assert!(url.starts_with("http://127.0.0.1:8386/"));
        assert!(!a.allows(Some(&format!("Bearer {token}"))), "not a session");
        let session = a.login(&token).unwrap();
        assert!(a.login(&token).is_none(), "once");
        assert!(a.allows(Some(&format!("Bearer {session}"))));
    }

    fn session_of(a: &Access, now: Instant) -> String {
        let url = a.login_url();
        let token = url.rsplit_once("#login=").unwrap().1.to_string();
        a.login_at(&token, now).unwrap()
    }

    #[test]
    fn an_idle_session_ends_and_a_used_one_lives_until_its_maximum_age() {
        let a = access();
        let t0 = Instant::now();
        let idle = format!("Bearer {}", session_of(&a, t0));
        let busy = format!("Bearer {}", session_of(&a, t0));
        let hour = Duration::from_secs(3600);
        // `busy` is used every 6 hours; `idle` never again.
        let mut t = t0;
        while t < t0 + SESSION_MAX_AGE - 6 * hour {
            t += 6 * hour;
            assert!(a.allows_at(Some(&busy), t), "used every 6 h");
        }
        assert!(!a.allows_at(Some(&idle), t0 + SESSION_IDLE), "idle");
        assert!(!a.allows_at(Some(&idle), t0), "ended for good");
        assert!(!a.allows_at(Some(&busy), t0 + SESSION_MAX_AGE), "too old");
        assert!(
            a.allows_at(Some("Bearer key"), t0 + SESSION_MAX_AGE),
            "api key"
        );
    }

    #[test]
    fn a_full_table_ends_the_least_recently_used_session() {
        let a = access();
        let t0 = Instant::now();
        let first = format!("Bearer {}", session_of(&a, t0));
        let second = format!("Bearer {}", session_of(&a, t0 + Duration::from_secs(1)));
        for i in 2..MAX_SESSIONS as u64 {
            session_of(&a, t0 + Duration::from_secs(i));
        }
        let late = t0 + Duration::from_secs(MAX_SESSIONS as u64 + 1);
        assert!(a.allows_at(Some(&first), late), "first is used again");
        session_of(&a, late);
        assert!(a.allows_at(Some(&first), late), "recently used: kept");
        assert!(
            !a.allows_at(Some(&second), late),
            "least recently used: ended"
        );
        assert_eq!(lock(&a.sessions).len(), MAX_SESSIONS);
    }
}
