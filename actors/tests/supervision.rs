//! The gateway as the supervisor of a node's actors, with real actors: a
//! worker that dies is started again and the attempt it held runs again; a
//! job whose supervisor dies fails with code `internal` instead of staying
//! in its last state.
//!
//! The children die by ractor's kill, the one way to end a running actor
//! from outside without code for it in the actors (ractor type-checks a
//! message sent to a local actor, so none of another type can make its
//! handler fail); the gateway treats a killed child as one that failed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorId};
use vidpress_actors::paths;
use vidpress_actors::protocol::workers_group;
use vidpress_actors::record::{JobRecord, Outcome};
use vidpress_actors::{
    Attempt, Epoch, GatewayArgs, JobId, JobState, JobStatus, Jobs, Relinquished, ReplicaFile,
    SubmitRequest, Transfer, TransferError, TransferFuture,
};
use vidpress_cluster::NodeName;
use vidpress_transcode::driver::ChildCommand;

/// A node alone never moves bytes between nodes.
struct NoTransfer;

fn alone<'a, T: Send + 'a>() -> TransferFuture<'a, T> {
    Box::pin(async { Err(TransferError("a node alone moves no bytes".into())) })
}

impl Transfer for NoTransfer {
    fn fetch_input<'a>(&'a self, _: &'a str, _: JobId, _: &'a Path) -> TransferFuture<'a> {
        alone()
    }
    fn replicate_file<'a>(
        &'a self,
        _: &'a str,
        _: JobId,
        _: ReplicaFile,
        _: &'a Path,
    ) -> TransferFuture<'a> {
        alone()
    }
    fn replicate_record<'a>(&'a self, _: &'a str, _: &'a JobRecord) -> TransferFuture<'a> {
        alone()
    }
    fn relinquish<'a>(
        &'a self,
        _: &'a str,
        _: JobId,
        _: Epoch,
        _: bool,
    ) -> TransferFuture<'a, Relinquished> {
        alone()
    }
    fn drop_given_up<'a>(&'a self, _: &'a str, _: JobId, _: Epoch) -> TransferFuture<'a> {
        alone()
    }
    fn push_output<'a>(
        &'a self,
        _: &'a str,
        _: JobId,
        _: Attempt,
        _: &'a Path,
    ) -> TransferFuture<'a> {
        alone()
    }
}

/// A node of one worker whose transcoder never ends (a shell that sleeps),
/// so an attempt stays running until it is stopped.
struct TestNode {
    node: vidpress_actors::Node,
    jobs: Jobs,
    name: NodeName,
    scope: String,
    data: tempfile::TempDir,
}

async fn start(test: &str) -> TestNode {
    let data = tempfile::tempdir().expect("a temporary folder");
    let name: NodeName = "node-a".parse().expect("a valid node name");
    // Process groups are global to the process: one scope a test.
    let scope = format!("supervision-{test}");
    let node = vidpress_actors::start(GatewayArgs {
        node: name.clone(),
        data_dir: data.path().to_owned(),
        workers: 1,
        spare_workers: 0,
        tenant_max_active: 0,
        queue_capacity: 8,
        command: ChildCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exec sleep 60".into()],
        },
        stall_timeout: Duration::from_secs(120),
        limits: Default::default(),
        scope: scope.clone(),
        retention: Duration::from_secs(3600),
        http: "http://127.0.0.1:9".into(),
        transfer: Arc::new(NoTransfer),
        cluster: None,
        split: Default::default(),
    })
    .await
    .expect("the node starts");
    let jobs = node.jobs();
    TestNode {
        node,
        jobs,
        name,
        scope,
        data,
    }
}

impl TestNode {
    fn workers(&self) -> Vec<ActorCell> {
        ractor::pg::get_scoped_members(&self.scope, &workers_group(&self.name))
    }

    async fn submit(&self) -> JobId {
        let upload = self.data.path().join(format!("upload-{}", rand_suffix()));
        std::fs::write(&upload, b"not really a video").expect("an upload");
        let submitted = self
            .jobs
            .submit(SubmitRequest {
                upload,
                bytes: 18,
                digest: None,
                options: Default::default(),
                idempotency_key: None,
                tenant: None,
                copied: None,
            })
            .await
            .expect("the job is accepted");
        submitted.job.id
    }

    /// Waits until the job's published snapshot satisfies `ok`.
    async fn until(
        &self,
        id: JobId,
        what: &str,
        ok: impl Fn(&vidpress_actors::JobSnapshot) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        loop {
            let job = self.jobs.get(id).ok();
            if job.as_deref().is_some_and(|j| ok(j)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never {what}; last seen: {:?}",
                job.map(|j| (j.state.clone(), j.attempt))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the node has one worker again, not `dead`.
    async fn worker_back(&self, dead: ActorId) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let workers = self.workers();
            let stats = self.jobs.stats().await.expect("stats");
            if stats.workers == 1 && workers.iter().all(|w| w.get_id() != dead) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the dead worker was not replaced: {} workers",
                stats.workers
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rand_suffix() -> String {
    format!("{:?}", std::time::SystemTime::now())
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

fn running(job: &vidpress_actors::JobSnapshot) -> bool {
    matches!(job.state, JobState::Running { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_is_replaced_and_a_new_job_is_dispatched_to_it() {
    let node = start("idle-worker").await;
    let workers = node.workers();
    assert_eq!(workers.len(), 1);
    let dead = workers[0].get_id();
    workers[0].kill();
    node.worker_back(dead).await;

    let id = node.submit().await;
    node.until(id, "dispatched", |j| {
        running(j) && j.attempt == Attempt::new(1)
    })
    .await;
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_of_a_dead_worker_runs_again_on_its_replacement() {
    let node = start("busy-worker").await;
    let id = node.submit().await;
    node.until(id, "dispatched", running).await;
    let busy = node.jobs.stats().await.expect("stats").busy;
    assert_eq!(busy, 1);

    let worker = node.workers().remove(0);
    let dead = worker.get_id();
    worker.kill();
    node.worker_back(dead).await;
    // Long before the supervisor's own timeouts (10 s to start, 30 s of
    // silence) would notice the attempt lost.
    node.until(id, "dispatched again", |j| {
        running(j) && j.attempt == Attempt::new(2)
    })
    .await;
    let stats = node.jobs.stats().await.expect("stats");
    assert_eq!((stats.workers, stats.busy), (1, 1));
    node.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_of_a_dead_supervisor_fails_with_code_internal() {
    let node = start("dead-supervisor").await;
    let id = node.submit().await;
    node.until(id, "dispatched", running).await;

    let name = ractor::registry::registered()
        .into_iter()
        .find(|name| name.to_string().ends_with(&id.to_string()))
        .expect("the job's supervisor is registered");
    let supervisor = ractor::registry::where_is(name).expect("the supervisor runs");
    supervisor.kill();

    node.until(id, "failed", |j| j.status() == JobStatus::Failed)
        .await;
    let job = node.jobs.get(id).expect("the job answers");
    let JobState::Failed(error) = &job.state else {
        unreachable!()
    };
    assert_eq!(error.code.as_str(), "internal");

    // Out of the queue and its slot back; in the index as failed.
    let stats = node.jobs.stats().await.expect("stats");
    assert_eq!((stats.active, stats.queued), (0, 0));
    let failed = node
        .jobs
        .list(Some(JobStatus::Failed), None, None, 10)
        .await
        .expect("a listing");
    assert!(failed.iter().any(|j| j.id == id), "{failed:?}");
    // The worker's attempt was stopped: it takes the next job.
    let next = node.submit().await;
    node.until(next, "dispatched", running).await;

    // Failed on disk too, so a restart does not bring it back unfinished.
    let record = JobRecord::read(&paths::record(node.data.path(), id)).expect("the record");
    assert!(
        matches!(record.outcome, Some(Outcome::Failed { .. })),
        "{:?}",
        record.outcome
    );
    node.node.stop().await;
}
