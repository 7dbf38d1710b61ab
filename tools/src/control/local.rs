//! A store opened in this process, by the node (which serves it on the
//! socket) or by a command when no node runs: what every request does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use backer_fs::gc::Report;
use backer_fs::history::{self, Du, Exported, LogEntry, RestoreRequest, Restored};
use backer_fs::store::Store;
use backer_fs::vfs::{Ctx, Vfs, VfsOptions};
use backer_fs::Error;

use super::{Request, Response, Status};
use crate::config::Config;
use crate::net::Net;

/// The live tree of an opened store, and what the node around it runs.
pub(crate) struct Local {
    vfs: Arc<Vfs>,
    /// Where the node is mounted.
    mount: Option<PathBuf>,
    /// The node's peers.
    net: Option<Arc<Net>>,
    /// The node's process; `None` for a command's own opening.
    pid: Option<u32>,
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
    pub(crate) fn node(vfs: Arc<Vfs>, mount: Option<PathBuf>, net: Option<Arc<Net>>) -> Local {
        Local {
            vfs,
            mount,
            net,
            pid: Some(std::process::id()),
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
        })
    }

    /// Answers one request of the protocol.
    pub(crate) fn handle(&self, req: Request) -> Response {
        let reply = match req {
            Request::Status => self.status().map(Response::Status),
            Request::Reload => self.reload().map(|()| Response::Reloaded),
            Request::Log { path } => self.log(path.as_deref()).map(Response::Log),
            Request::Du => self.du().map(Response::Du),
            Request::Gc => self.gc().map(Response::Gc),
            Request::Restore(r) => self.restore(&r).map(Response::Restored),
            Request::Export { to } => self.export(&to, None).map(Response::Exported),
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
            Some(n) => n.status(),
            None => {
                let cfg = Config::load(store.dir()).unwrap_or_default();
                serde_json::Value::Array(
                    cfg.peers
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "id": p.id, "addr": p.addr, "connected": false, "last_sync": null,
                            })
                        })
                        .collect(),
                )
            }
        };
        Ok(Status {
            root: self.vfs.root_hash()?.to_hex(),
            node: store.node_id().to_string(),
            peers,
            listen: net.and_then(Net::local_addr).map(|a| a.to_string()),
            mount: self.mount.as_ref().map(|m| m.display().to_string()),
            commits: head.map_or(0, |c| c.seq),
            pid: self.pid,
        })
    }

    /// Re-reads config.toml's peers (nothing to do without a node).
    pub(crate) fn reload(&self) -> Result<()> {
        match &self.net {
            Some(net) => net.reload(),
            None => Ok(()),
        }
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
            .gc(&policy)
            .map_err(|e| anyhow!("history collection failed: {e}"))?;
        self.sync_if_own()?;
        Ok(report)
    }

    /// Restores a path as `req` says; a mounted node's kernel hears of
    /// the changed names.
    pub(crate) fn restore(&self, req: &RestoreRequest) -> Result<Restored> {
        let hook = self.net.as_deref().and_then(Net::install_hook);
        let hook_ref = hook.as_ref().map(|h| &**h as &dyn Fn(&_));
        let out = history::restore(&self.vfs, hook_ref, req).map_err(explain("cannot restore"))?;
        self.sync_if_own()?;
        Ok(out)
    }

    /// Exports the tree into the folder `to`: a node's pending changes
    /// are committed first, then the newest commit is written (an immutable
    /// root: the node goes on meanwhile).
    pub(crate) fn export(
        &self,
        to: &Path,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Exported> {
        if self.pid.is_some() {
            self.vfs
                .commit()
                .map_err(|e| anyhow!("cannot commit the tree: {e}"))?;
        }
        history::export(&self.vfs.store(), to, progress).map_err(explain("cannot export"))
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
