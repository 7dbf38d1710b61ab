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
//!
//! The page itself (HTML, CSS, JavaScript) is embedded in the binary and
//! loads nothing from any other host.

mod api;
mod conns;

use std::collections::{HashMap, HashSet};
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

/// At most this many sessions live; a new one drops them all beyond it
/// (the oldest cannot be told apart cheaply, and a user logs in again).
const MAX_SESSIONS: usize = 256;

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
    sessions: Mutex<HashSet<String>>,
}

impl Access {
    fn new(addr: SocketAddr, api_key: String) -> Access {
        Access {
            addr,
            api_key,
            logins: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashSet::new()),
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
        let made = lock(&self.logins).remove(token)?;
        if made.elapsed() >= LOGIN_TTL {
            return None;
        }
        let session = new_secret().ok()?;
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(session.clone());
        Some(session)
    }

    /// Whether `Authorization: <header>` lets the caller in.
    fn allows(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let token = token.trim();
        if !self.api_key.is_empty() && same_secret(token, &self.api_key) {
            return true;
        }
        lock(&self.sessions).iter().any(|s| same_secret(s, token))
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
}
