//! Integration tests for vidpress-transcode, in one binary to keep link time
//! down: the engine in-process, the driver against the real child binary,
//! the output against the ffmpeg CLI's, a video split into segments against
//! its single pass, and probes served by long-lived children.

mod cli_parity;
mod codecs;
mod driver;
mod engine;
mod fixtures;
mod probes;
mod segments;
