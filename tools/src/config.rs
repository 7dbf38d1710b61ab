//! `config.toml` in the store folder: the settings a node runs with.
//!
//! ```toml
//! listen = "127.0.0.1:22000"       # optional: where to accept peers
//!
//! [[peer]]
//! id = "ABCDEFG-..."               # a node id, as `backer id` prints it
//! addr = "192.0.2.7:22000"         # optional: no address, it dials us
//!
//! [retention]                      # optional; these are the defaults
//! all = "24h"                      # keep every root this recent
//! hourly = "7d"                    # then one per hour this far back
//! daily = "90d"                    # then one per day this far back
//! keep_last = 1                    # and always the N newest roots
//! gc_every = "1h"                  # how often a running node collects
//!
//! [check]                          # optional
//! scrub_every = "30d"              # how often a running node scrubs
//!
//! [web]                            # written by init; absent: no web page
//! listen = "127.0.0.1:8386"        # loopback only; "" turns it off
//! api_key = "..."                  # `Authorization: Bearer KEY`
//! ```
//!
//! Durations are a number and a unit: `s`, `m`, `h`, `d` or `w`.
//!
//! Flags override the file for one run. The file is rewritten whole by
//! `peer add`/`peer remove` (atomically: a temp file renamed over it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use backer_fs::gc::Policy;
use backer_fs::NodeId;
use serde::{Deserialize, Serialize};

/// The settings in `config.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where the node accepts peers (none: it only dials out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<SocketAddr>,
    /// The peers this node trusts, and where to dial them.
    #[serde(default, rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub(crate) peers: Vec<Peer>,
    /// What history to keep (defaults when absent).
    #[serde(default, skip_serializing_if = "Retention::is_default")]
    pub(crate) retention: Retention,
    /// The web page and its API (absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) web: Option<Web>,
    /// The background check (defaults when absent).
    #[serde(default, skip_serializing_if = "Check::is_default")]
    pub(crate) check: Check,
}

/// The `[check]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Check {
    /// How often a running node scrubs (reads and checks every chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scrub_every: Option<String>,
}

/// How often a running node scrubs unless the config says.
pub(crate) const DEFAULT_SCRUB_EVERY: Duration = Duration::from_secs(30 * 86_400);

impl Check {
    fn is_default(&self) -> bool {
        *self == Check::default()
    }

    /// How often a running node scrubs.
    pub(crate) fn scrub_every(&self) -> Result<Duration> {
        match &self.scrub_every {
            Some(t) => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(1) => Ok(d),
                Ok(_) => Err(anyhow!("config.toml: check.scrub_every: at least 1s")),
                Err(e) => Err(anyhow!("config.toml: check.scrub_every: {e}")),
            },
            None => Ok(DEFAULT_SCRUB_EVERY),
        }
    }
}

/// The `[web]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Web {
    /// Where the node serves the page (a loopback address; "" off).
    #[serde(default)]
    pub(crate) listen: String,
    /// What API clients send as `Authorization: Bearer KEY`.
    #[serde(default)]
    pub(crate) api_key: String,
}

/// Where the page is served by default (the next free port when taken).
pub(crate) const DEFAULT_WEB_PORT: u16 = 8386;

/// The web listen address `text` names: `None` for "" (off); an error for
/// anything but a loopback `ip:port` (the page has no TLS yet: remote
/// access goes through an SSH tunnel).
pub(crate) fn web_addr(text: &str) -> Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| anyhow!("web address {text:?} is not an ip:port"))?;
    if !addr.ip().is_loopback() {
        return Err(anyhow!(
            "web address {addr} is not a loopback address: the page is served on \
             127.0.0.1 only; from another machine use an SSH tunnel \
             (ssh -L {port}:127.0.0.1:{port} HOST)",
            port = addr.port()
        ));
    }
    Ok(Some(addr))
}

/// The `[retention]` table: durations as text, as people write them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retention {
    /// Keep every root this recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) all: Option<String>,
    /// Keep one root per hour this far back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hourly: Option<String>,
    /// Keep one root per day this far back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) daily: Option<String>,
    /// Always keep this many of the newest roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) keep_last: Option<usize>,
    /// How often a running node collects history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gc_every: Option<String>,
}

/// How often a running node collects history unless the config says.
pub(crate) const DEFAULT_GC_EVERY: Duration = Duration::from_secs(3600);

impl Retention {
    fn is_default(&self) -> bool {
        *self == Retention::default()
    }

    /// The policy these settings give (defaults for what is absent).
    pub(crate) fn policy(&self) -> Result<Policy> {
        let d = Policy::default();
        let field = |v: &Option<String>, name: &str, default: Duration| match v {
            Some(text) => {
                parse_duration(text).map_err(|e| anyhow!("config.toml: retention.{name}: {e}"))
            }
            None => Ok(default),
        };
        Ok(Policy {
            all: field(&self.all, "all", d.all)?,
            hourly: field(&self.hourly, "hourly", d.hourly)?,
            daily: field(&self.daily, "daily", d.daily)?,
            keep_last: self.keep_last.unwrap_or(d.keep_last),
        })
    }

    /// How often a running node collects.
    pub(crate) fn gc_every(&self) -> Result<Duration> {
        match &self.gc_every {
            Some(t) => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(1) => Ok(d),
                Ok(_) => Err(anyhow!("config.toml: retention.gc_every: at least 1s")),
                Err(e) => Err(anyhow!("config.toml: retention.gc_every: {e}")),
            },
            None => Ok(DEFAULT_GC_EVERY),
        }
    }
}

/// `"90d"`, `"36h"`, `"15m"`, `"30s"`, `"2w"`, `"0"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a duration such as \"24h\" or \"90d\""))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(anyhow!("{text:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| anyhow!("{text:?} is too long"))
}

/// One trusted peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Peer {
    /// Its node id, in the displayed form.
    pub(crate) id: String,
    /// Where to dial it (`host:port`); none: it dials us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) addr: Option<String>,
}

impl Peer {
    /// The peer's id, parsed.
    pub(crate) fn node_id(&self) -> Result<NodeId> {
        self.id
            .parse()
            .map_err(|e| anyhow!("bad peer id {:?} in config.toml: {e}", self.id))
    }
}

/// A syntax or field error of the config file `path` (holding `text`) as
/// one line that names where: `PATH:LINE:COLUMN: what`.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let what = e.message().trim().replace('\n', " ");
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return anyhow!("{}: {what}", path.display());
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    anyhow!("{}:{line}:{column}: {what}", path.display())
}

/// The config file of the store at `store`.
pub(crate) fn path(store: &Path) -> PathBuf {
    store.join("config.toml")
}

impl Config {
    /// Reads the store's config; a missing file is the default config.
    pub(crate) fn load(store: &Path) -> Result<Config> {
        let p = path(store);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(anyhow!("cannot read {}: {e}", p.display())),
        };
        let cfg: Config = toml::from_str(&text).map_err(|e| parse_error(&p, &text, &e))?;
        for peer in &cfg.peers {
            peer.node_id()?;
        }
        cfg.retention.policy()?;
        cfg.retention.gc_every()?;
        cfg.check.scrub_every()?;
        if let Some(w) = &cfg.web {
            web_addr(&w.listen).map_err(|e| anyhow!("config.toml: web.listen: {e}"))?;
        }
        Ok(cfg)
    }

    /// Writes the config atomically (temp file, fsync, rename).
    pub(crate) fn save(&self, store: &Path) -> Result<()> {
        let p = path(store);
        let tmp = store.join(".config.toml.tmp");
        let text = toml::to_string(self).context("cannot encode the config")?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // 0600: it holds the web page's API key.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(())
    }

    /// The ids of every trusted peer.
    pub(crate) fn peer_ids(&self) -> Result<Vec<NodeId>> {
        self.peers.iter().map(Peer::node_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), Config::default());
        let id = NodeId([3; 32]).to_string();
        let cfg = Config {
            listen: Some("127.0.0.1:22000".parse().unwrap()),
            peers: vec![
                Peer {
                    id: id.clone(),
                    addr: Some("127.0.0.1:22001".into()),
                },
                Peer {
                    id: NodeId([4; 32]).to_string(),
                    addr: None,
                },
            ],
            retention: Retention {
                keep_last: Some(3),
                daily: Some("30d".into()),
                ..Retention::default()
            },
            web: Some(Web {
                listen: "127.0.0.1:8386".into(),
                api_key: "k".into(),
            }),
            check: Check {
                scrub_every: Some("2s".into()),
            },
        };
        cfg.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), cfg);
        assert_eq!(cfg.peer_ids().unwrap()[0], NodeId([3; 32]));
        let p = cfg.retention.policy().unwrap();
        assert_eq!(p.keep_last, 3);
        assert_eq!(p.daily, Duration::from_secs(30 * 86_400));
        assert_eq!(p.all, Policy::default().all);
        assert_eq!(cfg.check.scrub_every().unwrap(), Duration::from_secs(2));
        assert_eq!(Check::default().scrub_every().unwrap(), DEFAULT_SCRUB_EVERY);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration(" 2w ").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "h", "5", "5y", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "[retention]\nall = \"soon\"\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("retention.all"), "{e}");
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "listen = 5\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml") && !e.contains('\n'), "{e}");
        std::fs::write(path(dir.path()), "[[peer]]\nid = \"nope\"\n").unwrap();
        assert!(Config::load(dir.path()).is_err());
    }

    #[test]
    fn the_web_page_listens_on_loopback_only() {
        assert_eq!(web_addr("").unwrap(), None);
        assert_eq!(
            web_addr("127.0.0.1:8386").unwrap(),
            Some("127.0.0.1:8386".parse().unwrap())
        );
        assert!(web_addr("[::1]:8386").unwrap().is_some());
        let e = web_addr("0.0.0.0:8386").unwrap_err().to_string();
        assert!(e.contains("SSH tunnel") && !e.contains('\n'), "{e}");
        assert!(web_addr("192.0.2.1:80").is_err());
        assert!(web_addr("localhost").is_err());
    }

    #[test]
    fn syntax_errors_name_their_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path(dir.path()),
            "listen = \"127.0.0.1:1\"\n\n[retention]\nkeep_last = = 3\n",
        )
        .unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml:4:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(path(dir.path()), "\nlisten = \"x\"\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml:2:10:"), "{e}");
        std::fs::write(path(dir.path()), "# ok\nfrobnicate = 1\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("config.toml:2:1:") && e.contains("frobnicate"),
            "{e}"
        );
    }
}
