//! The web page in a real browser: headless Chromium driven over
//! WebDriver (chromedriver's HTTP JSON, with the small client of
//! `web_util`). It logs in through `backer web`'s URL, shows the node's
//! id, shows a write in the mount among the recent changes without a
//! reload, and fits 375 px with no horizontal scroll. Screenshots go to
//! `target/web-*.png`. Needs `chromium` and `chromium-driver` (Debian;
//! `.ci/run` installs them).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mirror_util::write_synced;
use crate::web_util::{http, login_url, WebNode};

/// How long the page may take to show something: generous (a loaded
/// machine); the times are printed, never asserted.
const WAIT: Duration = Duration::from_secs(60);

/// A chromedriver and one browser session, both ended when dropped.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

fn find(program: &str) -> String {
    for dir in [
        "/usr/bin",
        "/usr/lib/chromium",
        "/usr/local/bin",
        "/snap/bin",
    ] {
        let p = format!("{dir}/{program}");
        if std::path::Path::new(&p).is_file() {
            return p;
        }
    }
    panic!("{program} is not installed: apt-get install -y chromium chromium-driver");
}

impl Browser {
    fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(find("chromedriver"))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&b.addr).is_err() {
            assert!(start.elapsed() < WAIT, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": find("chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-dev-shm-usage", "--window-size=1200,900"],
            },
        }}});
        let v = b.call("POST", "/session", &caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let r = http(&self.addr, method, path, &[], &body);
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}/{what}", self.session), &body)
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "url", json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// Waits until `script` returns true; returns how long it took.
    fn wait_for(&self, what: &str, script: &str) -> Duration {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if self.eval(script) == Value::Bool(true) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = self.eval("return document.body.innerText");
        panic!("the page never showed {what}; it shows:\n{text}");
    }

    fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "screenshot", Value::Null);
        let bytes = data_encoding::BASE64
            .decode(png.as_str().unwrap_or_default().as_bytes())
            .expect("a base64 screenshot");
        let dir = backer_tests::backer_bin()
            .parent()
            .and_then(|p| p.parent())
            .expect("target/")
            .to_path_buf();
        let path = dir.join(format!("web-{name}.png"));
        std::fs::write(&path, bytes).expect("save the screenshot");
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_logs_in_shows_the_node_and_live_changes_and_fits_a_phone() {
    let w = WebNode::start();
    let b = Browser::start();
    let start = Instant::now();
    b.open(&login_url(&w.node));
    let id = &w.node.id;
    let took = b.wait_for(
        "the node id",
        &format!("return document.getElementById('node-id').textContent === {id:?}"),
    );
    println!(
        "page showed the node id {:?} after opening",
        start.elapsed().max(took)
    );
    assert_eq!(
        b.eval("return location.hash"),
        Value::String(String::new()),
        "the login token is gone from the address bar"
    );
    assert_eq!(
        b.eval("return document.cookie"),
        Value::String(String::new()),
        "no cookie"
    );

    let name = "from-the-test.txt";
    let wrote = Instant::now();
    write_synced(&w.node.path(name), b"hello page");
    let took = b.wait_for(
        "the write among recent changes",
        &format!(
            "return [...document.querySelectorAll('#events li[data-type=LocalChange]')]\
             .some(li => li.textContent.includes({name:?}))"
        ),
    );
    println!(
        "write in the mount -> shown on the page: {took:?} (since the write: {:?})",
        wrote.elapsed()
    );
    b.screenshot("desktop");

    b.cmd("POST", "window/rect", json!({"width": 375, "height": 812}));
    b.wait_for("a 375 px wide viewport", "return window.innerWidth <= 400");
    let fits = b.eval(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
    );
    b.screenshot("phone");
    assert_eq!(
        fits,
        Value::Bool(true),
        "horizontal scroll at {}",
        b.eval("return [window.innerWidth, document.documentElement.scrollWidth]")
    );
}
