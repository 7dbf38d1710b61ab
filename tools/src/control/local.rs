//! A store opened in this process, by the node (which serves it on the
//! socket) or by a command when no node runs: what every request does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Result};
use backer_fs::events::{Bus, EventKind};
use backer_fs::gc::Report;
use backer_fs::history::{
    self, Du, Exported, LiveFile, LiveTree, LogEntry, RestoreRequest, Restored, Source, Version,
    WriteOptions,
};
use backer_fs::store::Store;
use backer_fs::tree::NodeStore;
use backer_fs::vfs::{Ctx, Vfs, VfsOptions};
use backer_fs::{Error, Hash};

use super::{to_hex, Reloaded, Request, Response, Status};
use crate::config::Config;
use crate::services::{PeerInfo, PeerNet, WebLogins};

/// The live tree of an opened store, and what the node around it runs.
pub(crate) struct Local {
    vfs: Arc<Vfs>,
    /// Where the node is mounted.
    mount: Option<PathBuf>,
    /// The node's peers.
    net: Option<Arc<dyn PeerNet>>,
    /// The node's process; `None` for a command's own opening.
    pid: Option<u32>,
    /// The node's event bus.
    bus: Option<Bus>,
    /// The web page's logins, once its listener runs.
    web: OnceLock<Arc<dyn WebLogins>>,
    /// The node's background scrub, once it runs.
    scrub: OnceLock<backer_fs::scrub::Scrub>,
}

/// The user running this process, who owns what a restore creates when
/// no node runs.
fn current_user() -> Ctx {
    // SAFETY: getuid/getgid cannot fail.
    unsafe {
        Ctx {
            uid: libc::getuid(),
            gid: libc::getgid(),
        }
    }
}

/// A hash in hex, as a request names it.
fn parse_hash(hex: &str) -> Result<Hash> {
    Hash::from_hex(hex).ok_or_else(|| anyhow!("{hex:?} is not a hash"))
}

/// A backer-fs error as the user reads it: a request error says it all,
/// others say what was being done.
fn explain(doing: &'static str) -> impl Fn(Error) -> anyhow::Error {
    move |e| match e {
        Error::Request(why) => anyhow!(why),
        other => anyhow!("{doing}: {other}"),
    }
}

impl Local {
    /// The node's side: its tree, mount and peers.
    pub(crate) fn node(
        vfs: Arc<Vfs>,
        mount: Option<PathBuf>,
        net: Option<Arc<dyn PeerNet>>,
        bus: Bus,
    ) -> Local {
        Local {
            vfs,
            mount,
            net,
            pid: Some(std::process::id()),
            bus: Some(bus),
            web: OnceLock::new(),
            scrub: OnceLock::new(),
        }
    }

    /// Sets the node's scrubber, once it runs.
    pub(crate) fn set_scrub(&self, scrub: backer_fs::scrub::Scrub) {
        let _ = self.scrub.set(scrub);
    }

    /// The node's event bus (`None`: a command's own opening).
    pub(crate) fn bus(&self) -> Option<&Bus> {
        self.bus.as_ref()
    }

    /// Sets the web listener's logins, once it runs.
    pub(crate) fn set_web(&self, access: Arc<dyn WebLogins>) {
        let _ = self.web.set(access);
    }

    /// A one-time login URL for the web page.
    fn web_login(&self) -> Result<String> {
        match self.web.get() {
            Some(a) => Ok(a.login_url()),
            None => bail!("the node serves no web page (see [web] listen in config.toml)"),
        }
    }

    /// A command's own opening of `store` (no node runs): what it creates
    /// belongs to the user running the command.
    pub(crate) fn open(store: Store) -> Result<Local> {
        let vfs = Vfs::new(
            Arc::new(store),
            VfsOptions {
                owner: current_user(),
                ..VfsOptions::default()
            },
        )
        .map_err(|e| anyhow!("cannot open the tree: {e}"))?;
        Ok(Local {
            vfs: Arc::new(vfs),
            mount: None,
            net: None,
            pid: None,
            bus: None,
            web: OnceLock::new(),
            scrub: OnceLock::new(),
        })
    }

    /// Answers one request of the protocol.
    pub(crate) fn handle(&self, req: Request) -> Response {
        let reply = match req {
            Request::Status => self.status().map(Response::Status),
            Request::Reload => self.reload().map(Response::Reloaded),
            Request::Log { path } => self.log(path.as_deref()).map(Response::Log),
            Request::Du => self.du().map(Response::Du),
            Request::Gc => self.gc().map(Response::Gc),
            Request::Check { repair } => self.check(repair).map(|r| Response::Check(Box::new(r))),
            Request::Restore(RestoreRequest { to: Some(_), .. }) => Err(anyhow!(
                "restore --to is written by the command, not the node: update backer"
            )),
            Request::Restore(r) => self.restore(&r).map(Response::Restored),
            Request::Version { at } => self.version(at.as_deref()).map(Response::Version),
            Request::Node { hash } => self.tree_node(&hash).map(|b| Response::Bytes(to_hex(&b))),
            Request::Owner { path } => self.owner(&path).map(Response::Owner),
            Request::Chunk { hash } => self.chunk(&hash).map(|b| Response::Bytes(to_hex(&b))),
            Request::Events { .. } => match self.bus {
                Some(_) => Err(anyhow!("events are followed on a connection of their own")),
                None => Err(anyhow!("no node runs")),
            },
            Request::WebLogin => self.web_login().map(Response::WebLogin),
        };
        reply.unwrap_or_else(|e| Response::Error(format!("{e:#}").replace('\n', " ")))
    }

    /// What the node reports about itself: with `net`, the live peers;
    /// else the peers of `config.toml`, none connected.
    pub(crate) fn status(&self) -> Result<Status> {
        let store = self.vfs.store();
        let head = history::head(&store).map_err(explain("cannot read the commit log"))?;
        let net = self.net.as_deref();
        let peers = match net {
            Some(n) => n.peers(),
            None => {
                let cfg = Config::load(store.dir())?;
                cfg.peers
                    .iter()
                    .map(|p| PeerInfo {
                        id: p.node_id().map_or_else(|_| p.id.clone(), |n| n.to_string()),
                        addr: p.addr.clone(),
                        connected: false,
                        last_sync: None,
                        files_to_go: 0,
                        bytes_to_go: 0,
                        refused_us: false,
                    })
                    .collect()
            }
        };
        Ok(Status {
            root: self.vfs.root_hash()?.to_hex(),
            node: store.node_id().to_string(),
            peers,
            listen: net.and_then(PeerNet::local_addr).map(|a| a.to_string()),
            mount: self.mount.as_ref().map(|m| m.display().to_string()),
            commits: head.map_or(0, |c| c.seq),
            pid: self.pid,
            missing_chunks: store
                .missing_chunks()
                .map_err(explain("cannot read the missing chunks"))?
                .iter()
                .map(Hash::to_hex)
                .collect(),
            scrub: match self.scrub.get() {
                Some(s) => s.status(),
                None => backer_fs::scrub::Status {
                    last: backer_fs::scrub::last(&store)
                        .map_err(explain("cannot read the last scrub's time"))?,
                    ..Default::default()
                },
            },
            ignored: self
                .vfs
                .ignore_status()
                .map_err(explain("cannot read the ignore patterns"))?,
        })
    }

    /// Re-reads config.toml's peers (a node that does not run has
    /// nothing to apply: it reports what the file holds).
    pub(crate) fn reload(&self) -> Result<Reloaded> {
        let peers = match &self.net {
            Some(net) => net.reload()?,
            None => Config::load(self.vfs.store().dir())?.peers.len(),
        };
        Ok(Reloaded { peers })
    }

    /// The log, of everything or of `path`.
    pub(crate) fn log(&self, path: Option<&str>) -> Result<Vec<LogEntry>> {
        history::log(&self.vfs.store(), path).map_err(explain("cannot read the history"))
    }

    /// The sizes of the live tree and of its history.
    pub(crate) fn du(&self) -> Result<Du> {
        history::du(&self.vfs.store()).map_err(explain("cannot read the store"))
    }

    /// Collects history by the config's retention policy.
    pub(crate) fn gc(&self) -> Result<Report> {
        let policy = Config::load(self.vfs.store().dir())?.retention.policy()?;
        let report = self
            .vfs
            .history()
            .gc(&policy)
            .map_err(|e| anyhow!("history collection failed: {e}"))?;
        self.sync_if_own()?;
        if let Some(bus) = &self.bus {
            bus.publish(EventKind::collected(&report));
        }
        Ok(report)
    }

    /// Verifies the store (see [`backer_fs::check`]); with `repair`,
    /// fixes what its own files allow.
    pub(crate) fn check(&self, repair: bool) -> Result<backer_fs::check::Report> {
        backer_fs::check::run(&self.vfs.store(), repair).map_err(|e| anyhow!("check failed: {e}"))
    }

    /// Restores a path as `req` says; a mounted node's kernel hears of
    /// the changed names.
    pub(crate) fn restore(&self, req: &RestoreRequest) -> Result<Restored> {
        let hook = self.net.as_deref().and_then(PeerNet::install_hook);
        let hook_ref = hook.as_ref().map(|h| &**h as &dyn Fn(&_));
        let out = history::restore(&self.vfs, hook_ref, req).map_err(explain("cannot restore"))?;
        self.sync_if_own()?;
        Ok(out)
    }

    /// The commit `at` names, or with `None` the newest (a node's pending
    /// changes committed first: an export writes what is there now).
    pub(crate) fn version(&self, at: Option<&str>) -> Result<Option<Version>> {
        let store = self.vfs.store();
        match at {
            Some(at) => Ok(Some(
                history::version_at(&store, at).map_err(explain("cannot read the history"))?,
            )),
            None => {
                if self.pid.is_some() {
                    // Durable and published like any commit, so peers
                    // and the next start see the root we export.
                    self.vfs
                        .commit_durable()
                        .map_err(|e| anyhow!("cannot commit the tree: {e}"))?;
                }
                let head = history::head(&store).map_err(explain("cannot read the commit log"))?;
                let Some(c) = head else { return Ok(None) };
                Ok(Some(Version {
                    commit: history::commit_id(&c)?,
                    time: history::time_name(c.time),
                    root: Hash(c.root).to_hex(),
                }))
            }
        }
    }

    /// The tree node `hash` (hex) names.
    fn tree_node(&self, hash: &str) -> Result<Vec<u8>> {
        let h = parse_hash(hash)?;
        match self.vfs.store().get_node(&h)? {
            Some(b) => Ok(b),
            None => bail!("no tree node {hash}"),
        }
    }

    /// What the live tree has at the path `hex` (names joined by `/`, in
    /// hex).
    fn owner(&self, hex: &str) -> Result<Option<LiveFile>> {
        let path = super::from_hex(hex).ok_or_else(|| anyhow!("{hex:?} is not hex"))?;
        let names: Vec<Vec<u8>> = path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        LiveTree::new(&self.vfs)
            .live(&names)
            .map_err(explain("cannot read the live tree"))
    }

    /// The chunk `hash` (hex) names.
    fn chunk(&self, hash: &str) -> Result<Vec<u8>> {
        let h = parse_hash(hash)?;
        self.vfs
            .store()
            .chunk(&h)
            .map_err(|e| anyhow!("cannot read chunk {hash}: {e}"))
    }

    /// Exports the newest committed tree into the folder `to`, in this
    /// process (a command's own opening: no node runs).
    pub(crate) fn export(
        &self,
        to: &Path,
        opts: WriteOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Exported> {
        let src = LiveTree::new(&self.vfs);
        let head =
            history::head(&self.vfs.store()).map_err(explain("cannot read the commit log"))?;
        let root = head.map(|c| Hash(c.root));
        history::export_tree(&src, root, to, opts, progress).map_err(explain("cannot export"))
    }

    /// Writes `path` as of `at` into the folder `to`, in this process.
    pub(crate) fn restore_to(
        &self,
        path: &str,
        at: &str,
        to: &Path,
        opts: WriteOptions,
    ) -> Result<Restored> {
        let store = self.vfs.store();
        let v = history::version_at(&store, at).map_err(explain("cannot restore"))?;
        history::restore_to(&LiveTree::new(&self.vfs), &v, path, to, opts)
            .map_err(explain("cannot restore"))
    }

    /// A command's own opening leaves the store synced (a node syncs as
    /// it goes and when it stops).
    fn sync_if_own(&self) -> Result<()> {
        if self.pid.is_none() {
            self.vfs
                .sync()
                .map_err(|e| anyhow!("cannot save the store: {e}"))?;
        }
        Ok(())
    }
}
