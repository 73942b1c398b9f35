//! A rate limit and a concurrency limit shared by several processes through Redis
//! (feature `redis`): `cargo run --example fleet_limits --features redis`.
//!
//! Point it at your Redis with `REDIS_URL` (`redis://:password@host:6379/0`, or
//! `rediss://` with the `redis-tls` feature). Without it, the example starts a
//! throw-away `redis-server` on a free port if one is installed, and otherwise says
//! why and exits successfully. It then starts itself three more times as worker
//! processes: together they send at most 5 requests a second (burst 5) and run at
//! most 2 exports at once, each export guarded by a fencing token.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral::{
    fleet::{RedisPool, RedisRateError},
    RedisRateLimiter, RedisSemaphore,
};

const WORKER: &str = "FLEET_LIMITS_WORKER";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(url) = std::env::var(WORKER) {
        return worker(&url);
    }
    let mut server = None;
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            match start_redis() {
                Some((child, url)) => {
                    server = Some(child);
                    url
                }
                None => {
                    println!("fleet_limits: no REDIS_URL and no redis-server on the PATH; nothing to show");
                    return Ok(());
                }
            }
        }
    };
    let me = std::env::current_exe()?;
    let workers: Vec<Child> = (0..3)
        .map(|_| Command::new(&me).env(WORKER, &url).spawn())
        .collect::<Result<_, _>>()?;
    let mut ok = true;
    for mut w in workers {
        ok &= w.wait()?.success();
    }
    if let Some(mut child) = server {
        let _ = child.kill();
        let _ = child.wait();
    }
    if !ok {
        return Err("a worker failed".into());
    }
    println!("fleet_limits: 3 processes shared one rate limit and one concurrency limit");
    Ok(())
}

/// One process of the fleet.
fn worker(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    // One pool per process, shared by its limits and threads.
    let pool = RedisPool::builder(url)
        .max_connections(4)
        .io_timeout(Duration::from_millis(500))
        .build()?;
    let requests = RedisRateLimiter::builder_on(&pool)
        .per_second(5)
        .burst(5)
        .key_prefix("example:rate:")
        .build()?;
    let exports = RedisSemaphore::builder_on(&pool, "example-exports")
        .capacity(2)
        .lease_ttl(Duration::from_secs(10))
        .build()?;
    let pid = std::process::id();
    for i in 0..3 {
        match requests.wait_timeout("upstream", Duration::from_secs(5)) {
            Ok(by) => println!("[{pid}] request {i} admitted ({by:?})"),
            Err(RedisRateError::Timeout) => println!("[{pid}] request {i}: no slot in time"),
            Err(e) => return Err(e.into()),
        }
    }
    let permit = exports.acquire_timeout(Duration::from_secs(10))?;
    println!(
        "[{pid}] exporting with fencing token {}",
        permit.fencing_token()
    );
    std::thread::sleep(Duration::from_millis(50)); // the export
    permit.release()?;
    Ok(())
}

/// A `redis-server` on a free loopback port, if one is installed.
fn start_redis() -> Option<(Child, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::yield_now();
    }
    Some((child, format!("redis://127.0.0.1:{port}")))
}
