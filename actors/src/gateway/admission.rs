//! Admission: a submission becomes a job, or is refused with its reason.
//! Idempotency keys, the standby of a new job, and the spawning of job
//! supervisors (for new, recovered and taken-over jobs alike) live here.

use std::time::{Instant, SystemTime};

use ractor::{Actor, ActorRef, RpcReplyPort};
use tracing::info;
use vidpress_cluster::NodeName;

use super::{GatewayState, JobEntry};
use crate::counters::{Attempt, Epoch};
use crate::job::{JobId, JobStatus};
use crate::protocol::{GatewayMsg, SubmitError, SubmitRequest, Submitted, SupervisorMsg};
use crate::record::{self, JobRecord, Outcome};
use crate::supervisor::{JobSupervisor, SupervisorArgs};
use crate::tenant::Tenant;

/// Where the answer to a submission goes.
type SubmitReply = RpcReplyPort<Result<Submitted, SubmitError>>;

/// What an idempotency key says of a submission.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Idempotency {
    /// The key is new (or there is none): a new job.
    New,
    /// The key came with the same body before: the answer is that job.
    Same(JobId),
    /// The key came with a different body before: refused.
    Conflict,
}

/// Decides what a submission with a key already seen as `known` (its
/// body's digest and its job) is, given this body's `digest`.
pub(super) fn idempotency(
    known: Option<&([u8; 32], JobId)>,
    digest: Option<[u8; 32]>,
) -> Idempotency {
    match known {
        None => Idempotency::New,
        Some((seen, id)) if Some(*seen) == digest => Idempotency::Same(*id),
        Some(_) => Idempotency::Conflict,
    }
}

/// Returns whether `tenant` already has `limit` jobs that are not terminal
/// among `jobs` (their tenants and statuses); a limit of 0 is no limit, and
/// jobs of no tenant (a node without keys) have none.
pub(super) fn over_quota<'a>(
    limit: usize,
    tenant: Option<&Tenant>,
    jobs: impl Iterator<Item = (Option<&'a Tenant>, JobStatus)>,
) -> bool {
    let Some(tenant) = tenant.filter(|_| limit > 0) else {
        return false;
    };
    jobs.filter(|(t, status)| *t == Some(tenant) && !status.is_terminal())
        .nth(limit - 1)
        .is_some()
}

/// Picks the standby of a new job owned by `me` among the nodes `up`: the
/// next node after `me` by name, wrapping around; none when `me` is alone.
pub fn standby_among<'a>(
    me: &NodeName,
    up: impl IntoIterator<Item = &'a NodeName>,
) -> Option<NodeName> {
    let others: Vec<&NodeName> = up.into_iter().filter(|n| *n != me).collect();
    others
        .iter()
        .find(|n| **n > me)
        .or(others.first())
        .map(|n| (*n).clone())
}

/// Returns the status a job record stands for.
pub(super) fn status_of(record: &JobRecord) -> JobStatus {
    match &record.outcome {
        None => JobStatus::Queued,
        Some(Outcome::Completed { .. }) => JobStatus::Completed,
        Some(Outcome::Failed { .. }) => JobStatus::Failed,
        Some(Outcome::Canceled) => JobStatus::Canceled,
    }
}

impl GatewayState {
    /// Handles a submission: on success the new supervisor answers, once
    /// the job is on disk; on refusal the reason is answered here.
    pub(super) async fn on_submit(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        request: SubmitRequest,
        reply: SubmitReply,
    ) {
        if let Err((e, reply)) = self.submit(myself, request, reply).await {
            let _ = reply.send(Err(e));
        }
        self.pump();
    }

    /// Accepts a job: its supervisor starts, moves the input into the job's
    /// folder and answers `reply` once the record is on disk (off this
    /// actor, which every request goes through). On refusal,
    /// gives the reply port back with the reason.
    async fn submit(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        request: SubmitRequest,
        reply: SubmitReply,
    ) -> Result<(), (SubmitError, SubmitReply)> {
        if let Some(key) = &request.idempotency_key {
            // The upload is dropped only when the key answers for it; a key
            // whose job is gone makes a new job of this upload.
            let scoped = (request.tenant.clone(), key.clone());
            match idempotency(self.idempotency.get(&scoped), request.digest) {
                Idempotency::New => {}
                Idempotency::Conflict => {
                    let _ = std::fs::remove_file(&request.upload);
                    return Err((SubmitError::IdempotencyConflict, reply));
                }
                Idempotency::Same(id) => {
                    let bytes = self.jobs.get(&id).map_or(0, |e| e.bytes);
                    if let Some(job) = self.snapshot(id).await {
                        let _ = std::fs::remove_file(&request.upload);
                        let _ = reply.send(Ok(Submitted {
                            estimate: self.estimate(bytes),
                            job,
                            created: false,
                        }));
                        return Ok(());
                    }
                }
            }
        }
        let refused = if self.draining {
            Some(SubmitError::Draining)
        } else if self.board.cut_off() {
            // It could not run here before the cut heals; elsewhere it can.
            Some(SubmitError::CutOff)
        } else if self.queue.len() >= self.args.queue_capacity {
            let retry_after = self.estimate(0);
            Some(SubmitError::QueueFull { retry_after })
        } else if over_quota(
            self.args.tenant_max_active,
            request.tenant.as_ref(),
            self.jobs.values().map(|e| (e.tenant.as_ref(), e.status)),
        ) {
            Some(SubmitError::TenantBusy {
                limit: self.args.tenant_max_active,
                retry_after: self.tenant_wait(request.tenant.as_ref()),
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            let _ = std::fs::remove_file(&request.upload);
            return Err((refused, reply));
        }

        // An input streamed to its standby keeps the ID minted for that
        // copy while the standby is up; else another is picked, and the
        // supervisor copies the input before the 202.
        let copied = request.copied.filter(|c| self.is_up(&c.standby));
        let (id, standby) = match &copied {
            Some(copied) => (copied.id, Some(copied.standby.clone())),
            None => {
                let standby = self.pick_standby();
                (
                    JobId::with_standby(&self.args.node, standby.as_ref()),
                    standby,
                )
            }
        };
        let record = JobRecord {
            id,
            options: request.options,
            input_bytes: request.bytes,
            created_at_ms: record::to_ms(SystemTime::now()),
            idempotency_key: request.idempotency_key.clone(),
            digest: request.digest.as_ref().map(hex::encode).unwrap_or_default(),
            attempt: Attempt::default(),
            lost_attempts: 0,
            interrupted: 0,
            node: None,
            media: None,
            finished_at_ms: None,
            outcome: None,
            owner: Some(self.args.node.clone()),
            standby,
            epoch: Epoch::default(),
            tenant: request.tenant.clone(),
            split: None,
        };
        let supervisor = match self.spawn_supervisor(myself, record, true).await {
            Ok(supervisor) => supervisor,
            Err(e) => {
                let _ = std::fs::remove_file(&request.upload);
                return Err((e, reply));
            }
        };
        let estimate = self.estimate(request.bytes);
        if let (Some(key), Some(digest)) = (request.idempotency_key, request.digest) {
            self.idempotency
                .insert((request.tenant.clone(), key), (digest, id));
        }
        self.queue.push_back(id, request.bytes, request.tenant);
        info!(job_id = %id, node = %self.args.node, attempt = 0, bytes = request.bytes, "job accepted");
        let _ = supervisor.cast(SupervisorMsg::Accept {
            upload: request.upload,
            input_copied: copied.is_some(),
            reply,
            estimate,
        });
        Ok(())
    }

    /// Starts the supervisor of a job and indexes it.
    pub(super) async fn spawn_supervisor(
        &mut self,
        myself: &ActorRef<GatewayMsg>,
        record: JobRecord,
        fresh: bool,
    ) -> Result<ActorRef<SupervisorMsg>, SubmitError> {
        let id = record.id;
        let bytes = record.input_bytes;
        let tenant = record.tenant.clone();
        let status = status_of(&record);
        let finished = record.finished_at_ms.map(|ms| {
            let age = SystemTime::now()
                .duration_since(record::from_ms(ms))
                .unwrap_or_default();
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
        });
        let standby_http = record
            .standby
            .as_ref()
            .and_then(|standby| self.http_of(standby));
        let args = SupervisorArgs {
            record,
            standby_http,
            view: self.args.cluster.as_ref().map(|c| c.view.clone()),
            board: self.board.clone(),
            fresh,
            transfer: self.args.transfer.clone(),
            data_dir: self.args.data_dir.clone(),
            gateway: myself.clone(),
            node: self.args.node.clone(),
            http: self.args.http.clone(),
            scope: self.args.scope.clone(),
            prober: self.prober.clone(),
            committer: self.committer.clone(),
            split: self.args.split,
            local_workers: self.args.workers,
        };
        let (supervisor, _) = Actor::spawn_linked(
            Some(id.actor_name()),
            JobSupervisor,
            args,
            myself.get_cell(),
        )
        .await
        .map_err(|e| SubmitError::Spawn(e.to_string()))?;
        self.jobs.insert(
            id,
            JobEntry {
                status,
                supervisor: Some(supervisor.clone()),
                bytes,
                finished: finished.filter(|_| status.is_terminal()),
                tenant,
            },
        );
        Ok(supervisor)
    }

    /// Returns whether `node` is up in this node's view.
    fn is_up(&self, node: &NodeName) -> bool {
        self.args
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.view.borrow().up().any(|m| &m.name == node))
    }

    /// Picks the standby of a new job among the nodes up.
    pub(super) fn pick_standby(&self) -> Option<NodeName> {
        let cluster = self.args.cluster.as_ref()?;
        let view = cluster.view.borrow();
        standby_among(&self.args.node, view.up().map(|m| &m.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NodeName {
        s.parse().expect("a valid node name")
    }

    #[test]
    fn a_key_seen_with_the_same_body_answers_the_same_job() {
        let id = JobId::new(&name("node-a"));
        assert_eq!(
            idempotency(Some(&([7; 32], id)), Some([7; 32])),
            Idempotency::Same(id)
        );
    }

    #[test]
    fn a_key_seen_with_another_body_is_a_conflict() {
        let id = JobId::new(&name("node-a"));
        assert_eq!(
            idempotency(Some(&([7; 32], id)), Some([8; 32])),
            Idempotency::Conflict
        );
        // A body whose digest is unknown cannot be told the same.
        assert_eq!(
            idempotency(Some(&([7; 32], id)), None),
            Idempotency::Conflict
        );
    }

    #[test]
    fn a_tenant_at_its_quota_is_refused_and_others_are_not() {
        let (a, b): (Tenant, Tenant) = ("a".parse().unwrap(), "b".parse().unwrap());
        let jobs = [
            (Some(&a), JobStatus::Running),
            (Some(&a), JobStatus::Queued),
            (Some(&a), JobStatus::Completed),
            (Some(&b), JobStatus::Queued),
            (None, JobStatus::Queued),
        ];
        let over = |limit, tenant| over_quota(limit, tenant, jobs.iter().cloned());
        assert!(over(2, Some(&a)), "two unfinished jobs at a limit of two");
        assert!(!over(3, Some(&a)), "finished jobs do not count");
        assert!(!over(2, Some(&b)));
        assert!(!over(0, Some(&a)), "0 is no limit");
        assert!(!over(1, None), "jobs of no tenant have no quota");
    }

    #[test]
    fn a_new_key_makes_a_new_job() {
        assert_eq!(idempotency(None, Some([7; 32])), Idempotency::New);
        assert_eq!(idempotency(None, None), Idempotency::New);
    }

    #[test]
    fn the_standby_is_the_next_node_by_name() {
        let up = [name("node-a"), name("node-b"), name("node-c")];
        assert_eq!(standby_among(&name("node-b"), &up), Some(name("node-c")));
        assert_eq!(standby_among(&name("node-a"), &up), Some(name("node-b")));
    }

    #[test]
    fn the_standby_of_the_last_node_wraps_around() {
        let up = [name("node-a"), name("node-b"), name("node-c")];
        assert_eq!(standby_among(&name("node-c"), &up), Some(name("node-a")));
    }

    #[test]
    fn a_node_alone_has_no_standby() {
        assert_eq!(standby_among(&name("node-a"), &[name("node-a")]), None);
        assert_eq!(standby_among(&name("node-a"), &[]), None);
    }
}
