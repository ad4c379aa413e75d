//! A stand-alone transcoding child, for the crate's own tests and for
//! measuring the engine against the ffmpeg CLI:
//! `vidpress-transcode-child '<TranscodeJob as JSON>'`.
//!
//! The `vidpress` binary does the same through its `__transcode` subcommand.
//!
//! The job's `limits` (the defaults when absent) bound pixels and duration
//! here as in the service; its memory and open-files limits are resource
//! limits the driver sets before exec, so a child started by hand runs
//! without them unless started under `prlimit`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(job) = std::env::args_os().nth(1) else {
        eprintln!("usage: vidpress-transcode-child '<transcode job as JSON>'");
        return ExitCode::from(2);
    };
    let Some(job) = job.to_str() else {
        eprintln!("the transcode job is not valid UTF-8");
        return ExitCode::from(2);
    };
    vidpress_transcode::child::main(job)
}
