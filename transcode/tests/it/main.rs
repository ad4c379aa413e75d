//! Integration tests for vidpress-transcode, in one binary to keep link time
//! down: the engine in-process, the driver against the real child binary,
//! and the output against the ffmpeg CLI's.

mod cli_parity;
mod codecs;
mod driver;
mod engine;
mod fixtures;
