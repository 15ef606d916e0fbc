//! Tools around the processes of a test: grpcurl, Prometheus scrapes and
//! their samples, resident memory from /proc, and the `switchboard-load`
//! binary (another workspace package, built on first use). Must not start
//! servers (see `cluster`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::STEP;

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
