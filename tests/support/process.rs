//! A child process of a test: started with its output in a log file
//! under the target's tmp dir, waited for until it is ready (its port
//! answers, its log says so; failing at once, with its log, if it exits
//! first), sent signals (SIGSTOP/SIGCONT
//! to freeze it, SIGTERM/SIGINT to stop it) and waited for without
//! blocking the runtime, killed (SIGKILL) and reaped on drop. Knows
//! nothing about what the process is; the starters in `redis` and
//! `cluster` do.

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

    /// Waits until the process's log holds `marker`, a line it prints
    /// once it serves: proof of its own readiness, where an open port may
    /// be another process's that took it first (the child then exits,
    /// and this fails at once with its log).
    pub async fn wait_logged(&mut self, limit: Duration, marker: &str) {
        let log = self.log.clone();
        let logged = || async { std::fs::read_to_string(&log).is_ok_and(|t| t.contains(marker)) };
        self.wait_ready(limit, &format!("{marker:?} in its log"), logged)
            .await;
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

    /// Sends signal `name` (`STOP`, `CONT`, `TERM`, `INT`…) with kill(1).
    /// A `STOP` returns only once every thread of the process is stopped:
    /// kill(2) returns before the target's threads take the stop, and a
    /// test that goes on meanwhile could see the process still answer.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.name);
        if name == "STOP" {
            self.wait_stopped();
        }
    }

    /// Blocks (up to `STEP`) until /proc shows every thread stopped.
    fn wait_stopped(&self) {
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let deadline = Instant::now() + STEP;
        while !all_stopped(&tasks) {
            assert!(
                Instant::now() < deadline,
                "{} not stopped {STEP:?} after SIGSTOP",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not yet reaped");
        child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (polling, without blocking the runtime) up to `limit` for the
    /// process to exit by itself; returns its status. Past `limit` it is
    /// killed and the test fails with its log.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("not yet reaped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if start.elapsed() > limit {
                self.kill9();
                panic!(
                    "{} did not exit within {limit:?}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(limit).await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True if every thread under `tasks` (/proc/PID/task) is stopped: state
/// `T` in its stat line, after the command name in parentheses.
fn all_stopped(tasks: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return false;
    };
    entries.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, Some('T' | 't'))
    })
}
