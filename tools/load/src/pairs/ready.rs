//! The --ready-file of a `pairs` run: counts outcomes towards
//! --ready-after-outcomes and then writes, once and atomically, the file
//! that tells a test traffic flows. Must not delay or block traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Counts outcomes towards --ready-after-outcomes and fires once.
pub(super) struct Ready {
    after: u64,
    notify: Notify,
}

impl Ready {
    pub(super) fn new(after: u64) -> Arc<Ready> {
        Arc::new(Ready {
            after: after.max(1),
            notify: Notify::new(),
        })
    }

    /// `before` outcomes had arrived, `got` more just did.
    pub(super) fn on_outcomes(&self, before: u64, got: u64) {
        if before < self.after && before + got >= self.after {
            self.notify.notify_one();
        }
    }

    /// Writes `path` once it fires (abort the task if the run ends first).
    pub(super) fn spawn_writer(
        self: &Arc<Self>,
        path: PathBuf,
        run: String,
        users: Vec<String>,
    ) -> JoinHandle<()> {
        let ready = self.clone();
        tokio::spawn(async move {
            ready.notify.notified().await;
            match write_ready_file(&path, &run, &users) {
                Ok(()) => eprintln!("[pairs] ready: wrote {}", path.display()),
                Err(e) => eprintln!("[pairs] cannot write {}: {e}", path.display()),
            }
        })
    }
}

/// Writes the ready file: a temporary file renamed into place, so that a
/// reader never sees it half written.
fn write_ready_file(path: &Path, run: &str, users: &[String]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let body = json!({"run": run, "pid": std::process::id(), "users": users});
    std::fs::write(&tmp, format!("{body}\n"))?;
    std::fs::rename(&tmp, path)
}
