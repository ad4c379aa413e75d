//! Durability: the job's folder and record on this node's disk, written off
//! the runtime's threads, and each saved record handed to the task that
//! keeps the standby's copy current.

use std::path::PathBuf;

use super::SupervisorState;
use crate::paths;

impl SupervisorState {
    /// Writes the record to disk and hands it to the task that keeps the
    /// standby's copy current (never waiting for a standby that may be frozen).
    pub(super) async fn save(&mut self) -> std::io::Result<()> {
        self.persist().await?;
        if let Some(replica) = &self.replica {
            self.version += 1;
            replica.send_replace((self.version, self.record.clone()));
        }
        Ok(())
    }

    /// Moves a new job's upload into its folder (made durable with the
    /// record, by [`Self::persist_new`]).
    pub(super) async fn place_input(&self, upload: PathBuf) -> std::io::Result<()> {
        let (dir, input) = (
            paths::job_dir(&self.data_dir, self.job.id),
            paths::input(&self.data_dir, self.job.id),
        );
        tokio::task::spawn_blocking(move || {
            let placed =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(&upload, input));
            if placed.is_err() {
                let _ = std::fs::remove_file(&upload);
            }
            placed
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Writes a new job's record, which also makes its folder's entries (the
    /// input, the record) durable, then fsyncs the jobs folder, whose entry
    /// for the job's new folder a crash could otherwise lose with the job:
    /// a 202 is answered only after both.
    pub(super) async fn persist_new(&mut self) -> std::io::Result<()> {
        self.write_record(Some(paths::jobs_dir(&self.data_dir)))
            .await
    }

    /// Writes the record to disk, off the runtime's threads.
    async fn persist(&mut self) -> std::io::Result<()> {
        self.write_record(None).await
    }

    /// Writes the record, then fsyncs `parent` (a folder whose entries
    /// changed) if given, in one trip to a blocking thread.
    async fn write_record(&mut self, parent: Option<PathBuf>) -> std::io::Result<()> {
        let record = self.record.clone();
        let path = paths::record(&self.data_dir, self.job.id);
        tokio::task::spawn_blocking(move || {
            record.write(&path)?;
            match parent {
                Some(parent) => std::fs::File::open(parent)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        self.dirty = false;
        Ok(())
    }
}
