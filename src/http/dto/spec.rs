//! The types that exist only for the OpenAPI document (`GET /openapi.json`):
//! the bodies named by the handlers' annotations ([`Video`], [`Jpeg`],
//! [`SubmitForm`]), the string enums of the model's names
//! (`string_enum!`: [`StatusName`], [`CodecName`] …) and the bounded integers
//! and number of `POST /jobs` and `GET /jobs` (`bounded_integer!`,
//! [`MinSsimRange`]), their values and bounds taken from the code the
//! server runs, so that the spec and the checks cannot drift apart. None of
//! them is ever built or serialized.

use std::borrow::Cow;

use strum::IntoEnumIterator;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use vidpress_actors::{EventKind, JobStatus, SegmentStatus};
use vidpress_cluster::MemberState;
use vidpress_transcode::{Codec, EncodeOptions, Format, Parallel, Preset};

use super::{MAX_LIMIT, MIN_LIMIT};

/// The bytes of a video: an upload or a result.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Video(pub Vec<u8>);

/// The bytes of a JPEG picture: a job's thumbnail.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Jpeg(pub Vec<u8>);

/// The `multipart/form-data` body of `POST /jobs`, in the spec: one part,
/// `file`, the video. (The server reads parts up to `file` and ignores
/// the others; the contract is the one part.)
pub struct SubmitForm;

impl utoipa::PartialSchema for SubmitForm {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("file", <Video as utoipa::PartialSchema>::schema())
            .required("file")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl ToSchema for SubmitForm {}

/// Declares a type that only names a string enum in the spec, its values
/// taken from the model's own names, so that the two cannot drift apart.
macro_rules! string_enum {
    ($(#[$doc:meta])* $ty:ident => $name:literal, $values:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let values: Vec<&str> = $values.into_iter().collect();
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(values))
                    .into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_enum!(
    /// A job's status in the spec.
    StatusName => "JobStatus", JobStatus::ALL.map(JobStatus::as_str)
);
string_enum!(
    /// An x264 preset in the spec.
    PresetName => "Preset", Preset::ALL.map(Preset::as_str)
);
string_enum!(
    /// A segment's state in the spec.
    SegmentStatusName => "SegmentState", SegmentStatus::ALL.map(SegmentStatus::as_str)
);
string_enum!(
    /// A choice of `parallel` in the spec.
    ParallelName => "Parallel", Parallel::ALL.map(Parallel::as_str)
);
string_enum!(
    /// A video codec in the spec.
    CodecName => "Codec", Codec::ALL.map(Codec::as_str)
);
string_enum!(
    /// A container in the spec.
    FormatName => "Format", Format::ALL.map(Format::as_str)
);
string_enum!(
    /// An event kind in the spec.
    EventName => "EventKind", EventKind::iter().map(EventKind::as_str)
);
string_enum!(
    /// A node's state in the spec.
    NodeStateName => "NodeState",
    [MemberState::Up, MemberState::Suspect, MemberState::Down].map(MemberState::as_str)
);

/// Declares a type that only names a bounded integer in the spec (inlined
/// where used), its bounds the constants the server checks, so that the
/// two cannot drift apart.
macro_rules! bounded_integer {
    ($(#[$doc:meta])* $ty:ident: $format:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::$format)))
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .into()
            }
        }

        impl ToSchema for $ty {}
    };
}

bounded_integer!(
    /// `crf` of `POST /jobs`.
    CrfRange: Int32, EncodeOptions::CRF_MIN, EncodeOptions::CRF_MAX
);
bounded_integer!(
    /// `target_size_bytes` of `POST /jobs`.
    TargetSizeRange: Int64, EncodeOptions::TARGET_SIZE_MIN, EncodeOptions::TARGET_SIZE_MAX
);
bounded_integer!(
    /// `max_height` of `POST /jobs`.
    MaxHeightRange: Int32, EncodeOptions::MAX_HEIGHT_MIN, EncodeOptions::MAX_HEIGHT_MAX
);
bounded_integer!(
    /// `audio_bitrate` of `POST /jobs`, in kbit/s.
    AudioBitrateRange: Int32, EncodeOptions::AUDIO_BITRATE_MIN, EncodeOptions::AUDIO_BITRATE_MAX
);
bounded_integer!(
    /// `limit` of `GET /jobs`.
    LimitRange: Int32, MIN_LIMIT, MAX_LIMIT
);

/// `min_ssim` of `POST /jobs`: a number within the bounds the server checks.
pub struct MinSsimRange;

impl utoipa::PartialSchema for MinSsimRange {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .minimum(Some(EncodeOptions::MIN_SSIM_MIN))
            .maximum(Some(EncodeOptions::MIN_SSIM_MAX))
            .into()
    }
}

impl ToSchema for MinSsimRange {}
