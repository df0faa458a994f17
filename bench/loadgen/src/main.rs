//! `loadgen`: a small HTTP/1.1 load generator on tokio, so that Portico's PGO training and its
//! idle-memory measurement need nothing but the Rust toolchain (no nginx, wrk or Python).
//!
//! ```text
//! loadgen load URL [-c CONNS] [-d SECONDS] [--close] [--post BYTES]
//!     CONNS connections (default 50) send requests back to back for SECONDS (default 10):
//!     keep-alive GETs, or with --close a new connection per request, or POSTs of BYTES.
//!     Prints: LOAD <requests> <errors> <req/s> <p50 µs> <p99 µs>
//! loadgen idle URL -n CONNS [--hold SECONDS] [--pid PID]
//!     Opens CONNS keep-alive connections, one GET on each, holds them idle SECONDS (default 3)
//!     and reads PID's VmRSS before and while they are held (raise `ulimit -n` first).
//!     Prints: IDLE <connections held> <rss before KiB> <rss held KiB>
//! loadgen wait URL [--timeout SECONDS]
//!     Polls URL until it answers 200 (default 30 s); exits 1 if it never does.
//! ```
//!
//! Only what the training and the measurement need: `http://host:port/path` URLs, responses
//! framed by Content-Length or chunked encoding. Hand-written rather than a client crate
//! (reqwest, hyper) because the point is a load generator whose own cost per request is small
//! and whose behaviour on the wire is plain: one write and as few reads as possible per request.

mod http;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Conn, Target};

/// How many connections the idle mode opens at once.
const CONCURRENT_OPENS: usize = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line: a mode, a URL and `--flag value` options.
struct Args<'a> {
    rest: &'a [String],
}

impl Args<'_> {
    fn flag(&self, name: &str) -> bool {
        self.rest.iter().any(|a| a == name)
    }

    fn value<T: std::str::FromStr>(&self, names: &[&str], default: T) -> Result<T, String> {
        let Some(i) = self.rest.iter().position(|a| names.contains(&a.as_str())) else {
            return Ok(default);
        };
        let raw = self
            .rest
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", names[0]))?;
        raw.parse()
            .map_err(|_| format!("{}: not a valid value: {raw:?}", names[0]))
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let (Some(mode), Some(url)) = (args.first(), args.get(1)) else {
        return Err("usage: loadgen load|idle|wait URL [options] (see the source's header)".into());
    };
    let target = Target::parse(url)?;
    let opts = Args { rest: &args[2..] };
    match mode.as_str() {
        "load" => {
            let conns = opts.value(&["-c"], 50usize)?;
            let secs = opts.value(&["-d"], 10f64)?;
            let post = opts.value(&["--post"], 0usize)?;
            load(target, conns, Duration::from_secs_f64(secs), opts.flag("--close"), post).await
        }
        "idle" => {
            let conns = opts.value(&["-n"], 1000usize)?;
            let hold = opts.value(&["--hold"], 3f64)?;
            let pid = opts.value(&["--pid"], 0u32)?;
            idle(target, conns, Duration::from_secs_f64(hold), pid).await
        }
        "wait" => {
            let secs = opts.value(&["--timeout"], 30f64)?;
            wait(target, Duration::from_secs_f64(secs)).await
        }
        other => Err(format!("unknown mode {other:?}: load, idle or wait")),
    }
}

/// `conns` workers send requests back to back until `length` has passed.
async fn load(
    target: Target,
    conns: usize,
    length: Duration,
    close: bool,
    post: usize,
) -> Result<(), String> {
    let target = Arc::new(target);
    let request = Arc::new(target.request(close, post));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (target, request, stop, errors) =
            (target.clone(), request.clone(), stop.clone(), errors.clone());
        workers.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut conn: Option<Conn> = None;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let c = match conn.take() {
                    Some(c) => c,
                    None => match Conn::open(&target).await {
                        Ok(c) => c,
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                match c.exchange(&request).await {
                    Ok((status, c)) if (200..400).contains(&status) => {
                        let micros = sent.elapsed().as_micros();
                        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                        conn = if close { None } else { c };
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        });
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.map_err(|e| format!("worker: {e}"))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all.get(((all.len() as f64 - 1.0) * p) as usize).copied();
    println!(
        "LOAD {} {} {:.0} {} {}",
        all.len(),
        errors.load(Ordering::Relaxed),
        all.len() as f64 / elapsed,
        pct(0.5).unwrap_or(0),
        pct(0.99).unwrap_or(0)
    );
    if all.is_empty() {
        return Err(format!("no request succeeded against {}", target.describe()));
    }
    Ok(())
}

/// Opens `conns` keep-alive connections with one GET each and holds them `hold`.
async fn idle(target: Target, conns: usize, hold: Duration, pid: u32) -> Result<(), String> {
    let before = rss_kib(pid);
    let target = Arc::new(target);
    let request = Arc::new(target.request(false, 0));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_OPENS));
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (target, request, gate) = (target.clone(), request.clone(), gate.clone());
        opens.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let conn = Conn::open(&target).await.ok()?;
            match conn.exchange(&request).await {
                Ok((200, Some(conn))) => Some(conn),
                _ => None,
            }
        });
    }
    let mut held = Vec::with_capacity(conns);
    while let Some(done) = opens.join_next().await {
        if let Ok(Some(conn)) = done {
            held.push(conn);
        }
    }
    tokio::time::sleep(hold).await;
    let during = rss_kib(pid);
    println!("IDLE {} {} {}", held.len(), before, during);
    Ok(())
}

/// Polls `target` until it answers 200 or `deadline` passes.
async fn wait(target: Target, deadline: Duration) -> Result<(), String> {
    let request = target.request(true, 0);
    let started = Instant::now();
    loop {
        if let Ok(conn) = Conn::open(&target).await {
            if let Ok((200, _)) = conn.exchange(&request).await {
                return Ok(());
            }
        }
        if started.elapsed() > deadline {
            return Err(format!("{} did not answer 200 within {deadline:?}", target.describe()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// VmRSS of `pid` in KiB (-1 when it cannot be read, 0 when no pid was given).
fn rss_kib(pid: u32) -> i64 {
    if pid == 0 {
        return 0;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(-1)
}
