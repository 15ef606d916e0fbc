//! Tools around the processes of a test: grpcurl (one call, or a
//! `Relay.Link` stream held open as a pretend server), Prometheus scrapes
//! and their samples, resident memory from /proc, and the
//! `switchboard-load` binary (another workspace package, built on first
//! use). Must not start servers (see `cluster`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::STEP;
use super::process::log_dir;

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

/// A `switchboard.v1.Relay/Link` stream opened by the real grpcurl, as an
/// impostor or a misbehaving server would: frames (JSON) go out as they
/// are sent, the stream stays open until drop, and whatever grpcurl prints
/// (frames from the relay, or the error that ended the call) is collected
/// in a file. Killed and reaped on drop.
pub struct LinkCall {
    child: Child,
    stdin: Option<ChildStdin>,
    out: PathBuf,
}

impl LinkCall {
    /// Opens the stream to `addr` (plaintext) with extra `-H` headers.
    pub fn open(addr: &str, headers: &[&str]) -> LinkCall {
        Self::open_method(addr, "switchboard.v1.Relay/Link", headers)
    }

    /// `open`, for another link method (a mesh server's
    /// `switchboard.v1.Peer/Link`).
    pub fn open_method(addr: &str, method: &str, headers: &[&str]) -> LinkCall {
        let out = log_dir().join(format!("grpcurl-link-{}.log", super::free_port()));
        let file = std::fs::File::create(&out).unwrap();
        let mut cmd = Command::new("grpcurl");
        cmd.args(["-plaintext", "-d", "@"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let mut child = cmd
            .args([addr, method])
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("grpcurl must be installed (scripts/setup.sh)");
        LinkCall {
            stdin: child.stdin.take(),
            child,
            out,
        }
    }

    /// Sends one `ServerFrame` (grpcurl's JSON form). A call the relay
    /// already ended may not take it: that is not an error here.
    pub fn send(&mut self, frame: serde_json::Value) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{frame}").and_then(|()| stdin.flush());
        }
    }

    /// Ends the sending side (grpcurl half-closes the stream). grpcurl
    /// exits only once its input has ended, even when the relay refused
    /// the call at once.
    pub fn finish(&mut self) {
        self.stdin = None;
    }

    /// Everything grpcurl printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The exit status, once grpcurl has ended (the relay ended the call).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for LinkCall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// `rss_kib`, or None if the process is gone (or a zombie, which has no
/// `VmRSS`): for processes a test may kill at any moment.
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
        // The whole workspace is selected so that features unify as in `cargo
        // test`: the shared dependencies are not compiled a second time.
        .args([
            "build",
            "--workspace",
            "--bin",
            bin,
            "--locked",
            "--target-dir",
        ])
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
