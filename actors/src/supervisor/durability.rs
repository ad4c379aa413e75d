//! Durability: the job's folder and record on this node's disk, written off
//! the runtime's threads in the node's group commit, and each
//! saved record handed to the task that keeps the standby's copy current.

use std::path::PathBuf;

use super::SupervisorState;
use crate::commit::Commit;
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

    /// Moves a new job's upload into its folder (its data and its entry
    /// made durable with the record, by [`Self::persist_new`]).
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

    /// Makes a new job durable in one group commit with the other jobs
    /// being accepted: the input's data and the record's (written to its
    /// temporary file first), then the record's rename, then the job's
    /// folder (the input's and the record's entries) and the jobs folder
    /// (the job folder's entry, which a crash could otherwise lose with the
    /// job). A 202 is answered only after all of it; until the rename there
    /// is no record, and a folder without one is removed at start-up.
    pub(super) async fn persist_new(&mut self) -> std::io::Result<()> {
        let (data, id) = (&self.data_dir, self.job.id);
        let (input, jobs) = (paths::input(data, id), paths::jobs_dir(data));
        self.commit_record(Some(input), Some(jobs)).await
    }

    /// Writes the record to disk in the node's group commit, so that the
    /// updates of many jobs (the probes' findings after a burst of
    /// uploads among them) share their syncs.
    async fn persist(&mut self) -> std::io::Result<()> {
        self.commit_record(None, None).await
    }

    /// Writes the record to its temporary file, off the runtime's threads,
    /// then has the group commit sync it (and `also_sync`), rename it over
    /// the record and sync the job's folder (and `also_folder`).
    async fn commit_record(
        &mut self,
        also_sync: Option<PathBuf>,
        also_folder: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let record = self.record.clone();
        let (data, id) = (&self.data_dir, self.job.id);
        let path = paths::record(data, id);
        let written = path.clone();
        let tmp = tokio::task::spawn_blocking(move || record.write_temporary(&written))
            .await
            .map_err(std::io::Error::other)??;
        self.committer
            .commit(Commit {
                sync: also_sync.into_iter().chain([tmp.clone()]).collect(),
                renames: vec![(tmp, path)],
                folders: [paths::job_dir(data, id)]
                    .into_iter()
                    .chain(also_folder)
                    .collect(),
            })
            .await?;
        self.dirty = false;
        Ok(())
    }
}
