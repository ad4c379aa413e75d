//! The JSON documents of the HTTP API, built from actor snapshots. These are
//! the wire types; the actors' state is never serialized as-is.

use std::time::SystemTime;

use serde::Serialize;
use vidpress_actors::{JobEvent, JobSnapshot, JobState};
use vidpress_transcode::EncodeOptions;

/// The status document of one job.
#[derive(Debug, Serialize)]
pub struct JobDocument {
    pub id: String,
    pub status: &'static str,
    pub progress: f64,
    pub eta_seconds: Option<f64>,
    pub attempt: u32,
    pub node: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub options: OptionsDocument,
    pub input: InputDocument,
    pub result: Option<ResultDocument>,
    pub error: Option<ErrorDocument>,
    pub links: Links,
}

#[derive(Debug, Serialize)]
pub struct OptionsDocument {
    pub crf: u8,
    pub preset: String,
    pub max_height: Option<u32>,
    pub audio_bitrate: u32,
}

#[derive(Debug, Serialize)]
pub struct InputDocument {
    pub bytes: u64,
    pub duration_seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub video_codec: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ResultDocument {
    pub bytes: u64,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct ErrorDocument {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Links {
    #[serde(rename = "self")]
    pub this: String,
    pub events: String,
    pub result: String,
}

/// One WebSocket frame.
#[derive(Debug, Serialize)]
pub struct EventDocument {
    pub event: &'static str,
    pub seq: u64,
    pub job: JobDocument,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<&EncodeOptions> for OptionsDocument {
    fn from(o: &EncodeOptions) -> Self {
        Self {
            crf: o.crf,
            preset: o.preset.to_string(),
            max_height: o.max_height,
            audio_bitrate: o.audio_bitrate_kbps,
        }
    }
}

impl From<&JobSnapshot> for JobDocument {
    fn from(job: &JobSnapshot) -> Self {
        let base = format!("/jobs/{}", job.id);
        let media = job.input.media.as_ref();
        let (result, error) = match &job.state {
            JobState::Completed { bytes, .. } => (
                Some(ResultDocument {
                    bytes: *bytes,
                    url: format!("{base}/result"),
                }),
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
            attempt: job.attempt,
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
            seq: e.seq,
            job: JobDocument::from(e.job.as_ref()),
        }
    }
}
