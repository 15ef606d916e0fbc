//! A child process of a test: started with its output in a log file
//! under the target's tmp dir, waited for until it is ready (failing at
//! once, with its log, if it exits first), killed (SIGKILL) and reaped on
//! drop. Knows nothing about what the process is; the starters in
//! `redis` and `cluster` do.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{STEP, free_port, poll_until};

/// Where the logs of test processes go (the target's tmp dir).
pub(super) fn log_dir() -> PathBuf {
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

    /// Polls `ready` (its port opens, say) like `eventually`, but fails at
    /// once if the process exits first (a port already taken, a bad
    /// flag); either failure shows the process's log.
    pub async fn wait_ready<F, Fut>(&mut self, limit: Duration, what: &str, ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let child = self.child.as_mut().expect("running");
        let name = &self.name;
        let exited = || {
            let status = child.try_wait().ok().flatten()?;
            Some(format!("{name} exited ({status})"))
        };
        if let Err(why) = poll_until(limit, ready, exited).await {
            panic!(
                "{why} waiting for {what}; log {}:\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`STOP`, `CONT`, `TERM`...) without waiting.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Waits (up to `STEP`) until the log contains `text`, e.g. the
    /// error a process logs when it is refused; fails with the log.
    pub async fn wait_log(&self, text: &str) {
        let logged = || std::future::ready(self.logs().contains(text));
        if let Err(why) = poll_until(STEP, logged, || None).await {
            panic!(
                "{why} waiting for {text:?} in the log of {}:\n{}",
                self.name,
                self.logs()
            );
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
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
