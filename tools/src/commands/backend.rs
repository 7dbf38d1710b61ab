//! What commands run against: the node running on the store (asked over
//! its socket) or, when none runs, the store opened by the command. Each
//! command is written once, against [`Backend`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use backer_fs::gc::Report;
use backer_fs::history::{self, Du, Exported, LogEntry, RestoreRequest, Restored, WriteOptions};
use backer_fs::store::Store;
use backer_fs::Error;

use crate::control::client::{self, Session};
use crate::control::{Local, RemoteSource, Request, Response, Status};

/// How long a quick request (status, reload) may take.
const QUICK: Duration = Duration::from_secs(10);

/// How long a history request (log, restore, export, gc) may take.
const LONG: Duration = Duration::from_secs(3600);

/// The node running on a store.
pub(crate) struct Remote {
    store: PathBuf,
}

impl Remote {
    /// The node running on the store at `store`, with its status; `None`
    /// if none runs.
    pub(crate) fn find(store: &Path) -> Result<Option<(Remote, Status)>> {
        let remote = Remote {
            store: store.to_path_buf(),
        };
        match client::ask(store, &Request::Status, QUICK)? {
            None => Ok(None),
            Some(Response::Status(s)) => Ok(Some((remote, s))),
            Some(other) => Err(unexpected(other)),
        }
    }

    /// Asks the node to re-read config.toml.
    pub(crate) fn reload(&self) -> Result<()> {
        match self.call(Request::Reload, QUICK)? {
            Response::Reloaded(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The node's tree as a source for the writer, with the version
    /// `at` names (`None`: the newest, pending changes committed first).
    fn source(&self, at: Option<&str>) -> Result<(RemoteSource, Option<history::Version>)> {
        let Some(mut session) = Session::connect(&self.store, LONG)? else {
            bail!(
                "the node on the store at {} stopped before it answered",
                self.store.display()
            );
        };
        let req = Request::Version {
            at: at.map(str::to_string),
        };
        let version = match session.call(&req)? {
            Response::Version(v) => v,
            Response::Error(e) => bail!("{e}"),
            other => return Err(unexpected(other)),
        };
        Ok((RemoteSource::new(session), version))
    }

    /// Sends `req`; the node's error becomes ours.
    fn call(&self, req: Request, timeout: Duration) -> Result<Response> {
        match client::ask(&self.store, &req, timeout)? {
            None => bail!(
                "the node on the store at {} stopped before it answered",
                self.store.display()
            ),
            Some(Response::Error(e)) => bail!("{e}"),
            Some(r) => Ok(r),
        }
    }
}

fn unexpected(r: Response) -> anyhow::Error {
    anyhow!("the node answered out of turn: {r:?}")
}

/// Runs `$local` on the store opened here, or sends `$req` to the node
/// and takes the answer out of its `$reply` variant.
macro_rules! either {
    ($backend:expr, $local:expr, $req:expr, $timeout:expr, $reply:path) => {
        match $backend {
            Backend::Local(l) => $local(l),
            Backend::Remote(r) => match r.call($req, $timeout)? {
                $reply(v) => Ok(v),
                other => Err(unexpected(other)),
            },
        }
    };
}

/// Why a store did not open: its database is damaged (the packs can
/// rebuild it), or anything else.
enum Opened {
    Damaged(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Opened {
    fn from(e: anyhow::Error) -> Opened {
        Opened::Other(e)
    }
}

/// The running node, or the store opened here.
pub(crate) enum Backend {
    /// A node runs: it holds the store.
    Remote(Remote),
    /// No node runs: the store is opened by this command.
    Local(Local),
}

impl Backend {
    /// The node running on the store at `store_dir`, else the store opened
    /// here (waiting a moment for a node that is starting).
    pub(crate) fn connect(store_dir: &Path) -> Result<Backend> {
        Self::connect_with(store_dir).map_err(|e| match e {
            Opened::Damaged(why) => super::open_store_error(store_dir, Error::IndexDamaged(why)),
            Opened::Other(e) => e,
        })
    }

    fn connect_with(store_dir: &Path) -> std::result::Result<Backend, Opened> {
        let store_dir = super::require_store(store_dir)?;
        for attempt in 0..50 {
            if let Some((remote, _)) = Remote::find(&store_dir)? {
                return Ok(Backend::Remote(remote));
            }
            match Store::open(&store_dir) {
                Ok(store) => return Ok(Backend::Local(Local::open(store)?)),
                // A node is starting: its socket comes up in a moment.
                Err(Error::Locked) if attempt < 49 => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Error::IndexDamaged(why)) => return Err(Opened::Damaged(why)),
                Err(e) => return Err(super::open_store_error(&store_dir, e).into()),
            }
        }
        Err(anyhow!("the store at {} is locked", store_dir.display()).into())
    }

    /// [`Backend::connect`], or why the stopped store's database (its
    /// index) is missing or does not open (`backer check` rebuilds it).
    pub(crate) fn connect_or_damaged(
        store_dir: &Path,
    ) -> Result<std::result::Result<Backend, String>> {
        match Self::connect_with(store_dir) {
            Ok(b) => Ok(Ok(b)),
            Err(Opened::Damaged(why)) => Ok(Err(why)),
            Err(Opened::Other(e)) => Err(e),
        }
    }

    /// Who and where the node is.
    pub(crate) fn status(&self) -> Result<Status> {
        either!(
            self,
            Local::status,
            Request::Status,
            QUICK,
            Response::Status
        )
    }

    /// The log, of everything or of `path`.
    pub(crate) fn log(&self, path: Option<&str>) -> Result<Vec<LogEntry>> {
        let req = Request::Log {
            path: path.map(str::to_string),
        };
        either!(self, |l: &Local| l.log(path), req, LONG, Response::Log)
    }

    /// The sizes of the live tree and of its history.
    pub(crate) fn du(&self) -> Result<Du> {
        either!(self, Local::du, Request::Du, LONG, Response::Du)
    }

    /// Collects history by the config's retention policy.
    pub(crate) fn gc(&self) -> Result<Report> {
        either!(self, Local::gc, Request::Gc, LONG, Response::Gc)
    }

    /// Verifies the store; with `repair`, fixes what its files allow.
    pub(crate) fn check(&self, repair: bool) -> Result<backer_fs::check::Report> {
        match self {
            Backend::Local(l) => l.check(repair),
            Backend::Remote(r) => match r.call(Request::Check { repair }, LONG)? {
                Response::Check(v) => Ok(*v),
                other => Err(unexpected(other)),
            },
        }
    }

    /// Restores as `req` says, into the live tree.
    pub(crate) fn restore(&self, req: RestoreRequest) -> Result<Restored> {
        let local = |l: &Local| l.restore(&req);
        either!(
            self,
            local,
            Request::Restore(req.clone()),
            LONG,
            Response::Restored
        )
    }

    /// Writes `path` as of `at` into the folder `to`, here, with this
    /// process's permissions (the node only streams the tree).
    pub(crate) fn restore_to(
        &self,
        path: &str,
        at: &str,
        to: &Path,
        opts: WriteOptions,
    ) -> Result<Restored> {
        match self {
            Backend::Local(l) => l.restore_to(path, at, to, opts),
            Backend::Remote(r) => {
                let (src, v) = r.source(Some(at))?;
                let v = v.ok_or_else(|| anyhow!("no version at {at}"))?;
                history::restore_to(&src, &v, path, to, opts).map_err(fs_error)
            }
        }
    }

    /// Exports the newest committed tree into `to`, here, with this
    /// process's permissions; `progress` hears (bytes written, bytes in
    /// all).
    pub(crate) fn export(
        &self,
        to: &Path,
        opts: WriteOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Exported> {
        match self {
            Backend::Local(l) => l.export(to, opts, progress),
            Backend::Remote(r) => {
                let (src, v) = r.source(None)?;
                let root = v.map(|v| v.root_hash()).transpose().map_err(fs_error)?;
                history::export_tree(&src, root, to, opts, progress).map_err(fs_error)
            }
        }
    }
}

/// A backer-fs error of the writer: a request error says it all.
fn fs_error(e: Error) -> anyhow::Error {
    match e {
        Error::Request(why) => anyhow!(why),
        other => anyhow!("{other}"),
    }
}
