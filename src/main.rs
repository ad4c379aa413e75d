//! The `vidpress` binary: a node, the client commands, and the internal
//! transcoder child.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vidpress::client::{self, JobArgs, SubmitArgs};
use vidpress::config::ServeConfig;
use vidpress::server::Server;

#[derive(Parser)]
#[command(
    name = "vidpress",
    version,
    about = "A clustered video-compression service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `pretty` (for people) or `json`
    /// (one object per line, for log collectors). `RUST_LOG` filters them.
    #[arg(
        long,
        global = true,
        env = "VIDPRESS_LOG_FORMAT",
        default_value = "pretty"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node (with no flags: a single node on 127.0.0.1:8080).
    Serve(Box<ServeConfig>),
    /// Uploads a video for compression.
    Submit(SubmitArgs),
    /// Prints a job's status document.
    Status(JobArgs),
    /// Follows a job's progress until it ends.
    Watch(JobArgs),
    /// Cancels a job.
    Cancel(JobArgs),
    /// Runs one transcode and reports over stdout (used by the node itself).
    #[command(name = vidpress_transcode::child::SUBCOMMAND, hide = true)]
    Transcode { job: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Transcode { job } = &cli.command {
        // The child never starts a runtime: it only transcodes.
        return vidpress_transcode::child::main(job);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Pretty => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    // Before any TLS client or server is built: the clients that take no
    // configuration of ours (reqwest's default) need a process default.
    vidpress::tls::install_default_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => {
                let server = Server::start(&config).await?;
                server.run(shutdown_signal()).await?;
            }
            Command::Submit(args) => client::submit(args).await?,
            Command::Status(args) => client::status(args).await?,
            Command::Watch(args) => client::watch(args).await?,
            Command::Cancel(args) => client::cancel(args).await?,
            Command::Transcode { .. } => unreachable!("handled before the runtime starts"),
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
