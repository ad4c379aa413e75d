//! Recovery: at start, the jobs of a previous run come back from the data
//! directory, finished ones to answer for, unfinished ones queued for a new
//! attempt, with their idempotency keys; those that had an attempt running
//! go first in line, with the spare workers.

use hex::FromHex;
use ractor::ActorRef;
use tracing::{error, info, warn};

use super::GatewayState;
use crate::counters::Attempt;
use crate::paths;
use crate::protocol::GatewayMsg;
use crate::record::JobRecord;

impl GatewayState {
    /// Brings back the jobs of a previous run from the data directory:
    /// finished ones to answer for, unfinished ones queued for a new attempt.
    pub(super) async fn recover(&mut self, myself: &ActorRef<GatewayMsg>) {
        let Ok(dirs) = std::fs::read_dir(paths::jobs_dir(&self.args.data_dir)) else {
            return;
        };
        let mut records = Vec::new();
        for dir in dirs.flatten() {
            let path = dir.path().join("job.json");
            match JobRecord::read(&path) {
                Ok(record) => records.push(record),
                Err(e) => {
                    // Never acknowledged (no record): not a job.
                    warn!(path = %dir.path().display(), error = %e, "removing a job folder without a readable record");
                    let _ = std::fs::remove_dir_all(dir.path());
                }
            }
        }
        records.sort_by_key(|r| r.id);
        let (mut finished, mut resumed) = (0, 0);
        for record in records {
            let (id, key, digest, tenant) = (
                record.id,
                record.idempotency_key.clone(),
                record.digest.clone(),
                record.tenant.clone(),
            );
            let (unfinished, bytes, attempt) =
                (record.outcome.is_none(), record.input_bytes, record.attempt);
            if let Err(e) = self.spawn_supervisor(myself, record, false).await {
                error!(job_id = %id, node = %self.args.node, attempt = attempt.get(), error = %e, "cannot recover job");
                continue;
            }
            if let Some(key) = key {
                if let Ok(digest) = <[u8; 32]>::from_hex(&digest) {
                    self.idempotency.insert((tenant.clone(), key), (digest, id));
                }
            }
            if unfinished {
                if attempt > Attempt::default() {
                    // It ran when the node stopped: first in line, with the
                    // spares.
                    self.recovering.insert(id);
                    self.queue.push_recovering(id, bytes);
                } else {
                    self.queue.push_back(id, bytes, tenant);
                }
                resumed += 1;
                info!(job_id = %id, node = %self.args.node, attempt = attempt.get(), "job resumed from disk");
            } else {
                finished += 1;
            }
        }
        if finished + resumed > 0 {
            info!(node = %self.args.node, finished, resumed, "jobs recovered from disk");
        }
    }
}
