//! The JSON documents of the HTTP API, built from actor snapshots. These are
//! the wire types; the actors' state is never serialized as-is. Each derives
//! its OpenAPI schema (`GET /openapi.json`), so the spec follows the code.
//!
//! The types that only name something in the spec (string enums, bounded
//! integers, the bodies of uploads and downloads) are in `spec`, and
//! re-exported here.

mod spec;

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;
use vidpress_actors::{JobEvent, JobSnapshot, JobState, SegmentView};
use vidpress_cluster::{MemberState, NodeLoad, NodeName};
use vidpress_transcode::{EncodeOptions, Format, Output, RateMode};

pub use self::spec::{
    AudioBitrateRange, CodecName, CrfRange, EventName, FormatName, Jpeg, LimitRange,
    MaxHeightRange, MinSsimRange, NodeStateName, ParallelName, PresetName, SegmentStatusName,
    StatusName, SubmitForm, TargetSizeRange, Video,
};

/// The range of a page's size in `GET /jobs` (`limit`).
pub const MIN_LIMIT: usize = 1;
pub const MAX_LIMIT: usize = 1000;

/// The status document of one job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDocument {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(value_type = StatusName)]
    pub status: &'static str,
    /// Fraction of the encode done, from 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: f64,
    /// Estimated seconds left, from measured progress; `null` until known.
    #[schema(required = true, minimum = 0)]
    pub eta_seconds: Option<f64>,
    /// Dispatches so far, counted from 1 (0 before the first).
    pub attempt: u32,
    /// The node running (or that ran) the current attempt; `null` while queued.
    #[schema(required = true)]
    pub node: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub options: OptionsDocument,
    pub input: InputDocument,
    /// The output, once the job is completed.
    #[schema(required = true)]
    pub result: Option<ResultDocument>,
    /// Why the job failed, once it has.
    #[schema(required = true)]
    pub error: Option<ErrorDocument>,
    /// A long video's segments, encoded on many nodes at once and joined;
    /// empty for a job encoded in one pass (or not cut yet).
    pub segments: Vec<SegmentDocument>,
    pub links: Links,
}

/// One segment of a job split over many workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentDocument {
    /// Its place in the video, from 0.
    pub index: u32,
    /// Where it starts in the input, in seconds from the input's start.
    #[schema(minimum = 0)]
    pub start_seconds: f64,
    /// Where it ends.
    #[schema(minimum = 0)]
    pub end_seconds: f64,
    #[schema(value_type = SegmentStatusName)]
    pub state: &'static str,
    /// The node encoding it, or that encoded it; `null` while pending.
    #[schema(required = true)]
    pub node: Option<String>,
    /// Fraction of it encoded, from 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: f64,
}

impl From<&SegmentView> for SegmentDocument {
    fn from(s: &SegmentView) -> Self {
        Self {
            index: s.index,
            start_seconds: (s.start_seconds * 1000.0).round() / 1000.0,
            end_seconds: (s.end_seconds * 1000.0).round() / 1000.0,
            state: s.status.as_str(),
            node: s.node.as_ref().map(ToString::to_string),
            progress: s.progress.clamp(0.0, 1.0),
        }
    }
}

/// The encode options of a job (the query of its `POST /jobs`, with the
/// defaults filled in).
#[derive(Debug, Serialize, ToSchema)]
pub struct OptionsDocument {
    #[schema(value_type = CodecName)]
    pub codec: &'static str,
    #[schema(value_type = FormatName)]
    pub format: &'static str,
    /// The CRF asked for, or the codec's default; `null` in another rate
    /// mode.
    #[schema(required = true)]
    pub crf: Option<u8>,
    #[schema(required = true)]
    pub target_size_bytes: Option<u64>,
    #[schema(required = true)]
    pub min_ssim: Option<f64>,
    #[schema(value_type = PresetName)]
    pub preset: String,
    #[schema(required = true)]
    pub max_height: Option<u32>,
    /// In kbit/s.
    pub audio_bitrate: u32,
    #[schema(value_type = ParallelName)]
    pub parallel: &'static str,
}

/// The uploaded video; the media fields are `null` until it is probed.
#[derive(Debug, Serialize, ToSchema)]
pub struct InputDocument {
    pub bytes: u64,
    #[schema(required = true)]
    pub duration_seconds: Option<f64>,
    #[schema(required = true)]
    pub width: Option<u32>,
    #[schema(required = true)]
    pub height: Option<u32>,
    #[schema(required = true)]
    pub video_codec: Option<String>,
}

/// A completed job's output and its quality report. The report's fields
/// are `null` for a job completed before reports existed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultDocument {
    pub bytes: u64,
    /// Where to download it: `/jobs/{id}/result`.
    pub url: String,
    /// `video/mp4` or `video/webm`.
    pub content_type: &'static str,
    #[schema(value_type = Option<CodecName>, required = true)]
    pub codec: Option<&'static str>,
    #[schema(value_type = Option<FormatName>, required = true)]
    pub format: Option<&'static str>,
    /// The CRF encoded at, also when searched (`min_ssim`); `null` for
    /// `target_size_bytes`, which aims at a bit rate.
    #[schema(required = true)]
    pub crf: Option<u8>,
    /// The video bit rate aimed at for `target_size_bytes`, in kbit/s.
    #[schema(required = true)]
    pub video_bitrate_kbps: Option<u32>,
    #[schema(required = true)]
    pub width: Option<u32>,
    #[schema(required = true)]
    pub height: Option<u32>,
    #[schema(required = true)]
    pub duration_seconds: Option<f64>,
    /// How the output looks against the input scaled alike.
    #[schema(required = true)]
    pub quality: Option<QualityDocument>,
    /// Seconds spent: searching or calibrating, encoding, and measuring.
    #[schema(required = true)]
    pub timings: Option<TimingsDocument>,
}

/// SSIM and PSNR of the output against the input scaled alike, as ffmpeg's
/// `ssim` ("All") and `psnr` (average) filters give them.
#[derive(Debug, Serialize, ToSchema)]
pub struct QualityDocument {
    #[schema(minimum = 0, maximum = 1)]
    pub ssim: f64,
    pub psnr_db: f64,
    /// Whether evenly spaced frames were compared rather than all.
    pub sampled: bool,
    /// Frames compared.
    pub frames: u64,
}

/// Where a transcode's time went, in seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimingsDocument {
    /// The CRF search (`min_ssim`) or passes thrown away (`target_size_bytes`).
    pub search_seconds: f64,
    /// The encode of the output, its measurement included.
    pub encode_seconds: f64,
    /// The part of `encode_seconds` spent measuring quality.
    pub quality_seconds: f64,
}

impl ResultDocument {
    fn new(url: String, format: Format, result: &Output) -> Self {
        let report = result.report.as_ref();
        let round = |x: f64, places: i32| {
            let scale = 10f64.powi(places);
            (x * scale).round() / scale
        };
        Self {
            bytes: result.bytes,
            url,
            content_type: format.content_type(),
            codec: report.map(|r| r.codec.as_str()),
            format: report.map(|r| r.format.as_str()),
            crf: report.and_then(|r| r.crf),
            video_bitrate_kbps: report.and_then(|r| r.video_bitrate_kbps),
            width: report.map(|r| r.width),
            height: report.map(|r| r.height),
            duration_seconds: report.map(|r| round(r.duration_seconds, 3)),
            quality: report.and_then(|r| r.quality).map(|q| QualityDocument {
                ssim: round(q.ssim, 5),
                psnr_db: round(q.psnr_db, 2),
                sampled: q.sampled,
                frames: q.frames,
            }),
            timings: report.map(|r| TimingsDocument {
                search_seconds: round(r.timings.search_seconds, 2),
                encode_seconds: round(r.timings.encode_seconds, 2),
                quality_seconds: round(r.timings.quality_seconds, 2),
            }),
        }
    }
}

/// An error: why a job failed, or (in an error body) why a request was
/// refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDocument {
    /// A stable snake_case code, e.g. `invalid_media` or `not_found`.
    #[schema(pattern = "^[a-z0-9_]+$")]
    pub code: &'static str,
    /// A human sentence.
    pub message: String,
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDocument,
}

/// Where a job's other resources are.
#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub result: String,
}

/// One WebSocket frame of `GET /jobs/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDocument {
    #[schema(value_type = EventName)]
    pub event: &'static str,
    /// Rises by one per event of the job; `?since=` resumes after it.
    pub seq: u64,
    pub job: JobDocument,
}

/// A page of `GET /jobs`: the whole cluster's jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobListDocument {
    /// Job documents (merged from every node as JSON, so not re-typed).
    #[schema(value_type = Vec<JobDocument>)]
    pub jobs: Vec<serde_json::Value>,
    /// The `cursor` of the next page; `null` on the last one.
    #[schema(required = true, format = Uuid)]
    pub next_cursor: Option<String>,
    /// Nodes whose jobs are missing from the page: not up, or no answer.
    pub unreachable: Vec<String>,
}

/// `GET /cluster`: every known node, this one included.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterDocument {
    /// The name of the node that answered.
    #[serde(rename = "self")]
    pub this: String,
    pub nodes: Vec<NodeDocument>,
}

/// One node as the answering node sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeDocument {
    pub name: String,
    /// Its cluster address, `HOST:PORT`: where the other nodes reach its
    /// cluster listener (`--advertise`, else `--cluster-listen`); null for a
    /// node that is not in a cluster.
    pub address: Option<String>,
    /// The base URL of its HTTP API, where clients and the other nodes
    /// reach it (`--advertise-http`, else made from its address).
    pub http: String,
    #[schema(value_type = NodeStateName)]
    pub state: &'static str,
    /// Worker slots.
    pub workers: u32,
    /// Slots running an attempt.
    pub busy: u32,
    /// Jobs waiting for a slot.
    pub queued: u32,
}

/// The body of `GET /healthz` (`ok`) and `GET /readyz` (`ready`).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDocument {
    pub status: Health,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The process answers.
    Ok,
    /// The node takes work.
    Ready,
}

/// Returns `names` as a sentence's list: `a, b, c`.
pub fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

impl NodeDocument {
    pub fn new(
        name: &NodeName,
        address: Option<&str>,
        http: &str,
        state: MemberState,
        load: NodeLoad,
    ) -> Self {
        Self {
            name: name.to_string(),
            address: address.map(str::to_owned),
            http: http.to_owned(),
            state: state.as_str(),
            workers: load.workers,
            busy: load.busy,
            queued: load.queued,
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<&EncodeOptions> for OptionsDocument {
    fn from(o: &EncodeOptions) -> Self {
        Self {
            codec: o.codec.as_str(),
            format: o.format.as_str(),
            crf: match o.rate() {
                RateMode::Crf(crf) => Some(crf),
                _ => None,
            },
            target_size_bytes: o.target_size_bytes,
            min_ssim: o.min_ssim,
            preset: o.preset.to_string(),
            max_height: o.max_height,
            audio_bitrate: o.audio_bitrate_kbps,
            parallel: o.parallel.as_str(),
        }
    }
}

impl From<&JobSnapshot> for JobDocument {
    fn from(job: &JobSnapshot) -> Self {
        let base = format!("/jobs/{}", job.id);
        let media = job.input.media.as_ref();
        let (result, error) = match &job.state {
            JobState::Completed { result, .. } => (
                Some(ResultDocument::new(
                    format!("{base}/result"),
                    job.options.format,
                    result,
                )),
                None,
            ),
            JobState::Failed(e) => (
                None,
                Some(ErrorDocument {
                    code: e.code.as_str(),
                    message: e.message.clone(),
                }),
            ),
            _ => (None, None),
        };
        Self {
            id: job.id.to_string(),
            status: job.status().as_str(),
            progress: job.progress(),
            eta_seconds: job.eta().map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
            attempt: job.attempt.get(),
            node: job.node.as_ref().map(ToString::to_string),
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            options: OptionsDocument::from(&job.options),
            input: InputDocument {
                bytes: job.input.bytes,
                duration_seconds: media.and_then(|m| m.duration_seconds),
                width: media.map(|m| m.width),
                height: media.map(|m| m.height),
                video_codec: media.map(|m| m.video_codec.clone()),
            },
            result,
            error,
            segments: job.segments.iter().map(SegmentDocument::from).collect(),
            links: Links {
                events: format!("{base}/events"),
                result: format!("{base}/result"),
                this: base,
            },
        }
    }
}

impl From<&JobEvent> for EventDocument {
    fn from(e: &JobEvent) -> Self {
        Self {
            event: e.kind.as_str(),
            seq: e.seq.get(),
            job: JobDocument::from(e.job.as_ref()),
        }
    }
}
