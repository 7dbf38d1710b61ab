//! The routes: the embedded page, `/api/login`, and the JSON API, each a
//! control request answered by the node's [`Local`] (see `docs/api.md`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backer_fs::events::{Bus, Event};
use backer_fs::history::RestoreRequest;
use serde::Deserialize;
use tokio::sync::Notify;

use super::Access;
use crate::control::{self, Local};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The longest a long poll waits.
const MAX_POLL: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct App {
    access: Arc<Access>,
    local: Arc<Local>,
    bus: Bus,
    /// Woken by every publish on the bus.
    notify: Arc<Notify>,
}

/// Serves the page and the API on `listener` until the process ends.
pub(super) async fn serve(
    listener: std::net::TcpListener,
    access: Arc<Access>,
    local: Arc<Local>,
    bus: Bus,
) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    bus.on_publish(move || n.notify_waiters());
    let app = App {
        access,
        local,
        bus,
        notify,
    };
    let router = Router::new()
        .route("/", get(|| page(INDEX, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| page(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route("/style.css", get(|| page(STYLE, "text/css; charset=utf-8")))
        .route("/api/login", post(login))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/log", get(log))
        .route("/api/du", get(du))
        .route("/api/gc", post(gc))
        .route("/api/restore", post(restore))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    super::conns::serve(listener, router).await;
    Ok(())
}

/// An embedded file; the page may load only from us.
async fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

fn error(code: StatusCode, why: &str) -> Response {
    (code, Json(serde_json::json!({ "error": why }))).into_response()
}

/// The Host check for everything, the credentials check for `/api/`
/// (but the login itself).
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let (host_ok, api, allowed) = {
        let h = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let path = req.uri().path();
        (
            app.access.host_ok(h(header::HOST)),
            path.starts_with("/api/"),
            path == "/api/login" || app.access.allows(h(header::AUTHORIZATION)),
        )
    };
    if !host_ok {
        return error(StatusCode::FORBIDDEN, "this Host is not served here");
    }
    if api && !allowed {
        let mut r = error(StatusCode::UNAUTHORIZED, "credentials needed");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut r = next.run(req).await;
    if api {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(app): State<App>, Json(l): Json<Login>) -> Response {
    match app.access.login(&l.token) {
        Some(s) => Json(serde_json::json!({ "session": s })).into_response(),
        None => error(
            StatusCode::UNAUTHORIZED,
            "this login link was used or is too old",
        ),
    }
}

/// Answers `req` as the control socket would, off the async threads; the
/// reply's body is the response's content (`{"status": X}` gives X), a
/// failed request is 400 with `{"error": why}`.
async fn ask(app: &App, req: control::Request) -> Response {
    let local = app.local.clone();
    let reply = match tokio::task::spawn_blocking(move || local.handle(req)).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let control::Response::Error(why) = &reply {
        return error(StatusCode::BAD_REQUEST, why);
    }
    match serde_json::to_value(&reply) {
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => {
            Json(m.into_iter().next().map(|(_, v)| v)).into_response()
        }
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn status(State(app): State<App>) -> Response {
    ask(&app, control::Request::Status).await
}

async fn peers(State(app): State<App>) -> Response {
    let local = app.local.clone();
    match tokio::task::spawn_blocking(move || local.status()).await {
        Ok(Ok(s)) => Json(s.peers).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

async fn log(State(app): State<App>, Query(q): Query<PathQuery>) -> Response {
    let path = q.path.filter(|p| !p.is_empty());
    ask(&app, control::Request::Log { path }).await
}

async fn du(State(app): State<App>) -> Response {
    ask(&app, control::Request::Du).await
}

async fn gc(State(app): State<App>) -> Response {
    ask(&app, control::Request::Gc).await
}

#[derive(Deserialize)]
struct Restore {
    path: String,
    at: String,
}

async fn restore(State(app): State<App>, Json(r): Json<Restore>) -> Response {
    let req = RestoreRequest {
        path: r.path,
        at: r.at,
        to: None,
    };
    ask(&app, control::Request::Restore(req)).await
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<u64>,
    timeout: Option<u64>,
}

/// The events after `since`, waiting up to `wait` for one to come.
async fn next_events(app: &App, since: u64, wait: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = app.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let got = app.bus.since(since);
        if !got.is_empty() {
            return got;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Vec::new();
        }
    }
}

/// With `since`: a long poll answering a JSON array (empty after
/// `timeout` seconds, 60 by default). Without: Server-Sent Events
/// whatever the Accept header, from after `Last-Event-ID` when a
/// reconnecting client sends one (from the ring), else from now.
async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    if let Some(since) = q.since {
        let wait = Duration::from_secs(q.timeout.unwrap_or(60)).min(MAX_POLL);
        return Json(next_events(&app, since, wait).await).into_response();
    }
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| app.bus.last_id());
    let state = (app, since, VecDeque::<Event>::new());
    let stream = futures_util::stream::unfold(state, |(app, mut since, mut queue)| async move {
        while queue.is_empty() {
            queue.extend(next_events(&app, since, MAX_POLL).await);
        }
        let e = queue.pop_front()?;
        since = e.id;
        let data = serde_json::to_string(&e).unwrap_or_default();
        let ev = sse::Event::default().id(e.id.to_string()).data(data);
        Some((Ok::<_, Infallible>(ev), (app, since, queue)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
