//! A `redis-server` per test, and the child processes of the cross-process tests.
//!
//! Without `redis-server` on the PATH the tests print why and pass, so `cargo test`
//! stays set-up free; CI installs Redis and sets `CORRAL_REQUIRE_REDIS=1`, which turns
//! a missing server into a failure.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const LONG: Duration = Duration::from_secs(30);

/// The variable that turns a test binary started by a test into a child process.
pub const CHILD: &str = "CORRAL_REDIS_CHILD";

/// A `redis-server` on a free port, killed when dropped.
///
/// Each server listens on a loopback address of its own (`127.x.y.z`, from this
/// process's id and a counter): tests run in parallel, and with one shared
/// `127.0.0.1` a port freed by one test (a server stopped on purpose, or the probe
/// listener below) could be picked by another, whose probe would then reach the
/// wrong server.
pub struct Server {
    child: Child,
    ip: String,
    pub port: u16,
    pub addr: String,
    args: Vec<String>,
}

static SERVERS: AtomicU32 = AtomicU32::new(0);

impl Server {
    pub fn start() -> Option<Server> {
        Server::start_with(&[])
    }

    /// A server with extra command-line settings (`--requirepass x`, `--user ...`).
    pub fn start_with(args: &[&str]) -> Option<Server> {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed) + 1;
        let pid = std::process::id();
        let ip = format!("127.{}.{}.{}", (pid >> 8) & 0xff, pid & 0xff, n.min(254));
        let port = TcpListener::bind((ip.as_str(), 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = match spawn_redis(&ip, port, &args) {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("CORRAL_REQUIRE_REDIS").is_none(),
                    "CORRAL_REQUIRE_REDIS is set but redis-server cannot start: {e}"
                );
                eprintln!("skipped: redis-server is not available ({e})");
                return None;
            }
        };
        let mut server = Server {
            child,
            addr: format!("{ip}:{port}"),
            ip,
            port,
            args,
        };
        server.wait_until_listening();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts a new server on this one's address, after the old one was stopped.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(&self.ip, self.port, &self.args).expect("redis-server restarts");
        self.wait_until_listening();
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + LONG;
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server on {} exited: {status}", self.addr);
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::yield_now();
        }
    }

    /// A plain connection, to look at the server's state.
    pub fn raw(&self) -> corral::redis::Connection {
        corral::redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(LONG))
            .expect("a raw connection")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal_quietly();
        self.stop();
    }
}

impl Server {
    fn signal_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT".to_owned(), self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn_redis(ip: &str, port: u16, args: &[String]) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", ip])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// This test binary again, running only the test `name` with `CHILD` set to `role`
/// and the extra variables `env`; its stdout is piped.
pub fn spawn_child(name: &str, role: &str, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("the test binary starts again")
}

/// What a child printed after `RESULT ` on each line (libtest may print its own
/// text before it on the same line), once it has exited.
pub fn results(child: &mut Child) -> Vec<String> {
    let out = child.stdout.take().expect("piped stdout");
    let lines = result_lines(out);
    let status = child.wait().expect("the child is waited for");
    assert!(status.success(), "child failed: {status}");
    lines
}

pub fn result_lines(out: ChildStdout) -> Vec<String> {
    BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.split_once("RESULT ").map(|(_, r)| r.to_owned()))
        .collect()
}

/// The child's setting `key`.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child setting {key} missing"))
}
