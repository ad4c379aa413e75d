//! The typed extractors of the job routes: the job ID of a path, and the
//! query strings of submit and list, whose refusals are the error document.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vidpress_actors::{JobId, JobStatus};
use vidpress_transcode::{Codec, EncodeOptions, Format, Parallel, Preset};

use super::dto::{
    one_of, AudioBitrateRange, CodecName, CrfRange, FormatName, LimitRange, MaxHeightRange,
    MinSsimRange, ParallelName, PresetName, StatusName, TargetSizeRange, MAX_LIMIT, MIN_LIMIT,
};
use super::error::ApiError;

/// Page size of `GET /jobs` when no `limit` is given.
const DEFAULT_LIMIT: usize = 50;

/// A query string read by axum's [`Query`] into `T`; one `T` refuses is a
/// 400 `invalid_option` with the sentence [`Explained::explain`] gives.
pub struct Params<T>(pub T);

/// Query parameters that say what is wrong with each of them.
pub trait Explained: DeserializeOwned {
    /// Returns why the value of parameter `name` is refused, or that `name`
    /// is unknown.
    fn explain(name: &str) -> String;
}

impl<T: Explained, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(Self(params)),
            Err(rejection) => Err(ApiError::bad_query(&rejection, T::explain)),
        }
    }
}

/// The query of `POST /jobs`: the encode options, each optional; unknown
/// names are refused. The ranges are [`EncodeOptions`]' own constants,
/// which [`EncodeOptions::validate`] checks and the spec states.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// Video codec (default `h264`)
    #[param(value_type = Option<CodecName>)]
    codec: Option<Codec>,
    /// Container: `mp4` (AAC audio) or `webm` (Opus audio); default `mp4`,
    /// or `webm` for `vp9`. The pairs are h264/mp4, h265/mp4, av1/mp4,
    /// av1/webm, vp9/webm
    #[param(value_type = Option<FormatName>)]
    format: Option<Format>,
    /// Constant rate factor on the codec's scale: lower is better and
    /// larger; at most 51 for h264 and h265, 63 for av1 and vp9, and at
    /// least 1 for av1 (default 28, 30, 40, 40). One rate mode at most: crf, target_size_bytes or
    /// min_ssim
    #[param(value_type = Option<CrfRange>, inline)]
    crf: Option<u8>,
    /// Rate mode: the whole file, audio included, at this size (within 5 %)
    #[param(value_type = Option<TargetSizeRange>, inline)]
    target_size_bytes: Option<u64>,
    /// Rate mode: the largest CRF whose SSIM against the input is at least
    /// this, searched on samples
    #[param(value_type = Option<MinSsimRange>, inline)]
    min_ssim: Option<f64>,
    /// Speed preset, x264's names mapped onto each encoder (default
    /// `veryfast`; SVT-AV1 `preset` 12 to 4, libvpx `cpu-used` 5 to 0)
    #[param(value_type = Option<PresetName>)]
    preset: Option<Preset>,
    /// Downscale to at most this height, aspect kept, dimensions even
    #[param(value_type = Option<MaxHeightRange>, inline)]
    max_height: Option<u32>,
    /// AAC bitrate in kbit/s (default 96)
    #[param(value_type = Option<AudioBitrateRange>, inline)]
    audio_bitrate: Option<u32>,
    /// `off` runs the job as one pass on one worker; `auto` (default) cuts
    /// a long video into segments encoded on many nodes at once
    #[param(value_type = Option<ParallelName>)]
    parallel: Option<Parallel>,
}

impl Explained for SubmitQuery {
    fn explain(name: &str) -> String {
        match name {
            "crf" => format!(
                "crf must be an integer from {} to {}",
                EncodeOptions::CRF_MIN,
                EncodeOptions::CRF_MAX
            ),
            "codec" => format!(
                "codec must be one of {}",
                one_of(Codec::ALL.map(Codec::as_str))
            ),
            "format" => format!(
                "format must be one of {}",
                one_of(Format::ALL.map(Format::as_str))
            ),
            "target_size_bytes" => "target_size_bytes must be an integer number of bytes".into(),
            "min_ssim" => "min_ssim must be a number from 0.90 to 0.999".into(),
            "preset" => format!(
                "preset must be one of {}",
                one_of(Preset::ALL.map(Preset::as_str))
            ),
            "max_height" => "max_height must be a positive integer".into(),
            "audio_bitrate" => "audio_bitrate must be an integer in kbit/s".into(),
            "parallel" => format!(
                "parallel must be one of {}",
                one_of(Parallel::ALL.map(Parallel::as_str))
            ),
            _ => {
                format!(
                    "unknown option {name}; options are codec, format, crf, target_size_bytes, \
                     min_ssim, preset, max_height, audio_bitrate, parallel"
                )
            }
        }
    }
}

impl SubmitQuery {
    /// Returns the options asked for, defaults elsewhere, if all are in range.
    pub fn options(&self) -> Result<EncodeOptions, ApiError> {
        let defaults = EncodeOptions::default();
        let codec = self.codec.unwrap_or(defaults.codec);
        let options = EncodeOptions {
            codec,
            format: self.format.unwrap_or(codec.default_format()),
            crf: self.crf,
            target_size_bytes: self.target_size_bytes,
            min_ssim: self.min_ssim,
            preset: self.preset.unwrap_or(defaults.preset),
            max_height: self.max_height,
            audio_bitrate_kbps: self.audio_bitrate.unwrap_or(defaults.audio_bitrate_kbps),
            parallel: self.parallel.unwrap_or_default(),
        };
        options.validate().map_err(|e| ApiError::BadOption {
            message: e.to_string(),
        })?;
        Ok(options)
    }
}

/// The query of `GET /jobs`; unknown names are refused. Passed on as it
/// came to the other nodes, for the same page of their jobs.
#[derive(Debug, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status
    #[param(value_type = Option<StatusName>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Page size (default 50)
    #[param(value_type = Option<LimitRange>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    /// `next_cursor` of the previous page
    #[param(value_type = Option<String>, format = Uuid)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<JobId>,
}

impl Explained for ListQuery {
    fn explain(name: &str) -> String {
        match name {
            "status" => format!(
                "status must be one of {}",
                one_of(JobStatus::ALL.map(JobStatus::as_str))
            ),
            "limit" => format!("limit must be an integer from {MIN_LIMIT} to {MAX_LIMIT}"),
            "cursor" => "cursor must be a job id from next_cursor".into(),
            _ => format!("unknown parameter {name}; parameters are status, limit, cursor"),
        }
    }
}

impl ListQuery {
    /// Returns the page size asked for, or the default, if in range.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (MIN_LIMIT..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::BadOption {
                message: Self::explain("limit"),
            }),
        }
    }
}

/// Parses a job ID from a path; anything else is an unknown job.
pub fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// The job ID of a `/jobs/{id}…` path. Anything that is not one, even a
/// path that is not UTF-8 once decoded, is an unknown job (404).
#[derive(utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct JobPath(
    /// The job's ID, from its status document.
    #[param(value_type = String, format = Uuid)]
    pub JobId,
);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        parse_id(&id).map(Self)
    }
}
