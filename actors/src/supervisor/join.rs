//! The end of a split job: once every piece is done, the owner joins them
//! (a child that copies packets, `Task::Join`, run by the node's prober
//! without a slot) under an attempt number of its own, and the joined file
//! completes the job as any result does.

use std::time::Instant;

use ractor::ActorRef;
use tracing::{info, Instrument};
use vidpress_transcode::{Output, TranscodeError};

use super::{After, SupervisorState};
use crate::counters::Attempt;
use crate::job::JobState;
use crate::paths;
use crate::protocol::SupervisorMsg;

impl SupervisorState {
    /// Joins the pieces on this node, in a task that reports back with
    /// `Joined`, under an attempt number of its own.
    pub(super) fn start_join(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(split) = &mut self.split else {
            return;
        };
        let attempt = self.job.attempt.next();
        split.joining = Some(attempt);
        let (data, id) = (self.data_dir.clone(), self.job.id);
        let work = split.join_work(|piece| paths::piece(&data, id, piece));
        self.job.attempt = attempt;
        self.job.node = Some(self.owner.clone());
        self.record.attempt = attempt;
        self.record.node = Some(self.owner.clone());
        self.dirty = true;
        info!(job_id = %id, attempt = attempt.get(), segments = work.segments.len(), "joining");
        let (prober, options, myself) = (self.prober.clone(), self.job.options, myself.clone());
        let output = paths::attempt_output(&data, id, attempt);
        tokio::spawn(
            async move {
                let started = Instant::now();
                let result = prober.join(work, options, output).await;
                info!(job_id = %id, attempt = attempt.get(), seconds = started.elapsed().as_secs_f64(), ok = result.is_ok(), "joined");
                let _ = myself.cast(SupervisorMsg::Joined { attempt, result });
            }
            .in_current_span(),
        );
    }

    /// `Joined`: the joined file is the job's result, with the segments'
    /// quality as the whole's and their times added up (the time all the
    /// workers spent), completed as any result is; or the job fails with
    /// the join's error.
    pub(super) fn on_joined(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        attempt: Attempt,
        result: Result<Output, TranscodeError>,
    ) -> After {
        let joining = self.split.as_ref().and_then(|s| s.joining);
        if joining != Some(attempt) || !matches!(self.job.state, JobState::Running { .. }) {
            return After::Nothing;
        }
        match result {
            Ok(mut output) => {
                if let (Some(report), Some(split)) = (&mut output.report, &self.split) {
                    report.quality = split.quality();
                    let join = report.timings.encode_seconds;
                    report.timings = split.timings();
                    report.timings.encode_seconds += join;
                }
                self.complete(myself, output);
            }
            Err(e) => self.finish(JobState::Failed(e)),
        }
        After::Settle
    }
}
