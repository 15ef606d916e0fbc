//! Test support: real processes on free loopback ports.
//!
//! `Redis`, `Relay` and `Server` start the real `redis-server` and the
//! real binaries; dropping one kills and reaps it. `Client` is a plain TCP
//! client of the NDJSON protocol. Every wait has a deadline, and waits
//! poll for a condition, never sleep for a guess.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const STEP: Duration = Duration::from_secs(5);

/// A port that was free a moment ago. Binding it again may race with
/// another test; the port space is large and tests retry start-up.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `cond` keeps holding, checked every 50 ms, for `window`:
/// an observation window for things that must NOT happen.
pub async fn holds_for<F, Fut>(window: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < window {
        assert!(
            cond().await,
            "{what} stopped holding after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[String], envs: &[(&str, &str)]) -> Proc {
        let log = log_dir().join(format!("{name}-{}.log", free_port()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .env("RUST_LOG", "info,switchboard=debug");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (did scripts/setup.sh run?)"));
        Proc {
            child: Some(child),
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {limit:?} of SIGTERM:\n{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// redis-server flags for a throwaway test instance on loopback, without
/// persistence, after `listen` (which ports to open).
pub fn redis_args(listen: &[&str]) -> Vec<String> {
    let fixed = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    listen
        .iter()
        .chain(fixed.iter())
        .map(|s| s.to_string())
        .collect()
}

pub struct Redis {
    pub proc: Proc,
    pub port: u16,
    pub password: Option<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(free_port(), None).await
    }

    /// A fresh, empty redis-server on `port` (for example the port of one
    /// that was just killed, to simulate a restart that lost its data).
    pub async fn start_on(port: u16) -> Redis {
        Self::start_with(port, None).await
    }

    /// With `requirepass` when `password` is given.
    pub async fn start_with(port: u16, password: Option<&str>) -> Redis {
        let mut args = redis_args(&["--port", &port.to_string()]);
        if let Some(p) = password {
            args.extend(["--requirepass".to_string(), p.to_string()]);
        }
        let proc = Proc::spawn("redis", "redis-server", &args, &[]);
        let redis = Redis {
            proc,
            port,
            password: password.map(str::to_owned),
        };
        eventually(STEP, "redis to answer PING", || async {
            match redis.conn_opt().await {
                Some(mut c) => redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok(),
                None => false,
            }
        })
        .await;
        redis
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    async fn conn_opt(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.conn_opt().await.expect("redis connection")
    }

    /// The server a user's presence entry points at, if any.
    pub async fn user_server(&self, name: &str) -> Option<String> {
        let mut c = self.conn().await;
        redis::cmd("HGET")
            .arg(format!("sb:user:{name}"))
            .arg("server")
            .query_async(&mut c)
            .await
            .unwrap()
    }

    pub async fn server_ids(&self) -> Vec<String> {
        let mut c = self.conn().await;
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg("sb:servers")
            .query_async(&mut c)
            .await
            .unwrap();
        ids.sort();
        ids
    }
}

pub struct Relay {
    pub proc: Proc,
    pub port: u16,
}

impl Relay {
    pub async fn start(redis: &Redis) -> Relay {
        Self::start_on(redis, free_port()).await
    }

    pub async fn start_on(redis: &Redis, port: u16) -> Relay {
        Self::start_with(redis, port, Vec::new()).await
    }

    /// `extra` flags win over the defaults (1 s health checks, 3 failures).
    pub async fn start_with(redis: &Redis, port: u16, extra: Vec<String>) -> Relay {
        let mut args = vec![
            "--grpc-listen".into(),
            format!("127.0.0.1:{port}"),
            "--redis-url".into(),
            redis.url(),
        ];
        for (flag, default) in [("--health-interval-ms", "1000"), ("--health-failures", "3")] {
            if !extra.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), default.to_string()]);
            }
        }
        args.extend(extra);
        let proc = Proc::spawn("relay", env!("CARGO_BIN_EXE_switchboard-relay"), &args, &[]);
        eventually(STEP, "relay gRPC port", || port_open(port)).await;
        Relay { proc, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub struct Server {
    pub proc: Proc,
    pub id: String,
    pub port: u16,
    pub grpc_port: u16,
}

/// Extra flags for a message server.
#[derive(Clone, Default)]
pub struct ServerOpts {
    pub max_connections: Option<u32>,
    pub extra: Vec<String>,
}

impl Server {
    pub async fn start(id: &str, relay_url: &str, redis: &Redis) -> Server {
        Self::start_with(id, relay_url, redis, ServerOpts::default()).await
    }

    pub async fn start_with(id: &str, relay_url: &str, redis: &Redis, opts: ServerOpts) -> Server {
        let (port, grpc_port) = (free_port(), free_port());
        let mut args = vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--grpc-listen".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--relay".into(),
            relay_url.into(),
            "--redis-url".into(),
            redis.url(),
            "--max-connections".into(),
            opts.max_connections.unwrap_or(500).to_string(),
        ];
        args.extend(opts.extra);
        let proc = Proc::spawn(id, env!("CARGO_BIN_EXE_switchboard-server"), &args, &[]);
        eventually(STEP, "server client port", || port_open(port)).await;
        Server {
            proc,
            id: id.into(),
            port,
            grpc_port,
        }
    }

    /// A handle on a server started by someone else (no process owned).
    pub fn attach(id: &str, port: u16) -> AttachedServer {
        AttachedServer {
            id: id.into(),
            port,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.port).await
    }
}

/// Something clients can connect to on a port.
pub trait ClientPort {
    fn port(&self) -> u16;
    fn client(&self) -> impl std::future::Future<Output = Client> {
        Client::connect(self.port())
    }
}

impl ClientPort for Server {
    fn port(&self) -> u16 {
        self.port
    }
}

pub struct AttachedServer {
    pub id: String,
    pub port: u16,
}

impl ClientPort for AttachedServer {
    fn port(&self) -> u16 {
        self.port
    }
}

/// Redis, a relay and message servers `a` and `b`, linked.
pub struct Cluster {
    pub redis: Redis,
    pub relay: Relay,
    pub a: Server,
    pub b: Server,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let redis = Redis::start().await;
        let relay = Relay::start(&redis).await;
        let a = Server::start("a", &relay.url(), &redis).await;
        let b = Server::start("b", &relay.url(), &redis).await;
        let cluster = Cluster { redis, relay, a, b };
        wait_routable(&cluster.a, &cluster.b).await;
        cluster
    }
}

/// Waits until a chat from `from` to `to` (and back) is delivered: both
/// links are up. Uses throwaway probe users.
pub async fn wait_routable(from: &impl ClientPort, to: &impl ClientPort) {
    let probe = format!("probe-{}-{}", from.port(), to.port());
    let mut x = Client::connect(from.port()).await;
    let mut y = Client::connect(to.port()).await;
    x.login(&format!("{probe}-x")).await;
    y.login(&format!("{probe}-y")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    probe_until_ack(&mut x, &mut y, &format!("{probe}-y"), deadline).await;
    probe_until_ack(&mut y, &mut x, &format!("{probe}-x"), deadline).await;
    x.send(json!({"cmd":"logout"})).await;
    y.send(json!({"cmd":"logout"})).await;
    x.expect_event("logout").await;
    y.expect_event("logout").await;
}

async fn probe_until_ack(sender: &mut Client, receiver: &mut Client, to: &str, deadline: Instant) {
    loop {
        let reply = sender.chat(to, "probe").await;
        if reply["event"] == "ack" {
            receiver.expect_event("message").await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "servers never became routable: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A protocol client over plain TCP.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timeout")
            .expect("connect");
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, v: Value) {
        let mut line = serde_json::to_vec(&v).unwrap();
        line.extend_from_slice(b"\r\n");
        self.send_raw(&line).await;
    }

    /// The next line as JSON; panics after `STEP`.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(STEP)
            .await
            .expect("expected a line, got EOF or timeout")
    }

    /// The next line, or None on EOF or after `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(limit, self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(_)) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
            ),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// True once the server has closed the connection (EOF or reset).
    pub async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(STEP, self.reader.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub async fn expect_event(&mut self, event: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["event"], event, "unexpected line {v}");
        v
    }

    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect_event("error").await;
        assert_eq!(v["code"], code, "unexpected error {v}");
        v
    }

    pub async fn login(&mut self, name: &str) -> Value {
        self.send(json!({"cmd":"login","name":name})).await;
        let v = self.expect_event("login").await;
        assert_eq!(v["ok"], true);
        v
    }

    /// Sends a chat and returns the sender's next line (its outcome).
    pub async fn chat(&mut self, to: &str, content: &str) -> Value {
        self.send(json!({"cmd":"chat","recv":to,"content":content}))
            .await;
        self.recv().await
    }
}

/// GET /metrics on 127.0.0.1:`port`: the Prometheus text.
pub async fn scrape(port: u16) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// The value of one sample line (`name{labels}` exactly) in a scrape.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Runs the real grpcurl; returns (success, stdout + stderr).
pub fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl must be installed (scripts/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl Redis {
    /// Subscribers of a pub/sub channel (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let mut c = self.conn().await;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut c)
            .await
            .unwrap();
        n
    }
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

impl Client {
    /// The next raw line (without its `\n`), or None on EOF or after
    /// `limit`: for replies that must be checked byte for byte.
    pub async fn try_recv_raw(&mut self, limit: Duration) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(limit, self.reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(_)) => Some(line.trim_end_matches('\n').to_owned()),
            Ok(Err(e)) => panic!("read error: {e}"),
        }
    }

    /// Closes the sending side (`shutdown(SHUT_WR)`): end of input.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }
}

/// The `switchboard-load` binary, built on first use for the profile of
/// this test binary. It belongs to another package of the workspace, so
/// Cargo neither builds it for these tests nor sets
/// `CARGO_BIN_EXE_switchboard-load`. Call it before starting any clock:
/// the first call may compile for a minute.
pub fn load_binary() -> &'static Path {
    static LOAD: OnceLock<PathBuf> = OnceLock::new();
    LOAD.get_or_init(|| build_workspace_bin("switchboard-load"))
}

/// Builds binary `bin` of workspace package `bin` with the profile and
/// target directory of this test binary (`<target>/<profile>/deps/<exe>`)
/// and returns its path. Panics with Cargo's output if the build fails.
fn build_workspace_bin(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", bin, "--bin", bin, "--locked", "--target-dir"])
        .arg(target_dir);
    // `cargo test` uses the dev profile (directory `debug`), `--release`
    // the release profile; any other directory is a custom profile.
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
        None => panic!("no profile directory in {}", exe.display()),
    }
    let out = cargo
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", env!("CARGO")));
    assert!(
        out.status.success(),
        "{cargo:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{cargo:?} did not produce {}",
        path.display()
    );
    path
}
