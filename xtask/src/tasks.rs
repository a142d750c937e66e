//! The subcommands: `install`, `up`, `down`, `test` and `demo`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::backend::{Backend, Ctx, Running, StartOptions};
use crate::install::{self, Selection};
use crate::proc;
use crate::state;
use crate::tools;

/// Exit code after an interruption (128 + SIGINT), as shells report it.
const INTERRUPTED_EXIT: u8 = 130;

/// `cargo xtask install`.
pub(crate) fn install(ctx: &Ctx, backends: &[Backend], kinesalite: bool) -> Result<ExitCode> {
    let mut selection = Selection { kinesalite, ..Selection::default() };
    for backend in backends {
        let more = Selection::for_backend(*backend);
        selection.engines |= more.engines;
        selection.localstack |= more.localstack;
    }
    install::install(&ctx.layout, selection)?;
    eprintln!("xtask: installed under {}", ctx.layout.local().display());
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask up`: install if needed, start, print the exports, then wait
/// for Ctrl-C (or leave the servers running with `detach`).
pub(crate) fn up(ctx: &Ctx, backend: Backend, kinesalite: bool, detach: bool) -> Result<ExitCode> {
    let mut selection = Selection::for_backend(backend);
    selection.kinesalite = kinesalite;
    install::install(&ctx.layout, selection)?;
    let mut running = Running::start(ctx, backend, StartOptions { kinesalite, detach })?;
    // The exports go to stdout alone, so that `eval "$(cargo xtask up --detach)"` works.
    print!("{}", running.exports());
    if let Some(file) = running.state_file() {
        eprintln!("xtask: state in {}", file.display());
    }
    if detach {
        running.detach()?;
        eprintln!("xtask: left running; stop with `cargo xtask down`");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("xtask: running; press Ctrl-C to stop");
    while !proc::interrupted() {
        running.check_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    running.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// How long `down` lets a live foreground xtask stop its own servers.
const OWNER_STOP_LIMIT: Duration = Duration::from_secs(30);

/// `cargo xtask down`: stop what `.local/run/state.env` (or, with `all`,
/// every state file) lists.
pub(crate) fn down(ctx: &Ctx, all: bool) -> Result<ExitCode> {
    let run_dir = ctx.layout.run_dir();
    let files = state::all_state_files(&run_dir)?;
    let primary = run_dir.join("state.env");
    let (chosen, others): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|file| all || *file == primary);
    if chosen.is_empty() {
        eprintln!("xtask: nothing to stop (no {})", primary.display());
    }
    let mut failed = false;
    for file in &chosen {
        if let Err(error) = stop_listed(file) {
            eprintln!("xtask: {error:#}");
            failed = true;
        }
    }
    if !others.is_empty() {
        eprintln!(
            "xtask: other instances have state files ({}); `cargo xtask down --all` stops them too",
            others.iter().map(|file| file.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Stops the servers one state file lists, then removes the file. A live
/// foreground xtask that owns the file is asked (SIGTERM) to stop them itself first.
fn stop_listed(file: &std::path::Path) -> Result<()> {
    let entries = state::read(file)?;
    let owner = state::get(&entries, "XTASK_PID")
        .and_then(|pid| pid.parse::<u32>().ok())
        .zip(state::get(&entries, "XTASK_START").and_then(|start| start.parse::<u64>().ok()));
    if let Some((pid, start)) =
        owner.filter(|&(pid, start)| pid != std::process::id() && proc::is_same_process(pid, start))
    {
        eprintln!("xtask: asking the xtask that owns {} (pid {pid}) to stop", file.display());
        proc::terminate(pid)?;
        let deadline = Instant::now() + OWNER_STOP_LIMIT;
        while file.exists() && proc::is_same_process(pid, start) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for server in state::servers(&entries).iter().rev() {
        let outcome = proc::stop_group(server.pid, server.start, server.marker.as_deref(), || {})
            .with_context(|| format!("stopping {} (pid {})", server.name, server.pid))?;
        let note = match outcome {
            proc::Stopped::AlreadyGone => "was not running",
            proc::Stopped::Terminated => "stopped",
            proc::Stopped::Killed => "stopped with SIGKILL after the grace period",
        };
        eprintln!("xtask: {} (pid {}) {note}", server.name, server.pid);
    }
    state::remove_if_exists(file)
}

/// Options of `cargo xtask test`.
#[derive(Debug, Clone)]
pub(crate) struct TestOptions {
    /// Where the main suite runs.
    pub(crate) backend: Backend,
    /// Do not run the smoke subset against LocalStack.
    pub(crate) skip_localstack: bool,
    /// Extra arguments for the main suite's test runner.
    pub(crate) args: Vec<OsString>,
}

/// The test runner: cargo-nextest if installed, else `cargo test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Nextest,
    CargoTest,
}

impl Runner {
    fn detect() -> Self {
        if tools::find_on_path("cargo-nextest").is_some() {
            Runner::Nextest
        } else {
            Runner::CargoTest
        }
    }

    /// Compiles every test binary without running it.
    fn build(self) -> Vec<&'static str> {
        match self {
            Runner::Nextest => vec!["nextest", "run", "--workspace", "--no-run"],
            Runner::CargoTest => vec!["test", "--workspace", "--no-run"],
        }
    }

    /// Unit and integration tests of the whole workspace.
    fn suite(self) -> Vec<&'static str> {
        match self {
            Runner::Nextest => vec!["nextest", "run", "--workspace", "--no-fail-fast"],
            Runner::CargoTest => vec!["test", "--workspace", "--no-fail-fast"],
        }
    }

    /// The smoke subset of the integration tests (names containing `smoke`).
    /// With nextest it selects them from the whole workspace, which reuses the
    /// build of the main suite (`-p` alone changes feature unification and
    /// recompiles).
    fn smoke(self) -> Vec<&'static str> {
        match self {
            Runner::Nextest => vec![
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "--no-tests=warn",
                "-E",
                "package(kinesis-integration-tests) & test(/smoke/)",
            ],
            Runner::CargoTest => {
                vec!["test", "-p", "kinesis-integration-tests", "--no-fail-fast", "smoke"]
            }
        }
    }
}

/// `cargo xtask test`: the README's test command.
pub(crate) fn test(ctx: &Ctx, options: TestOptions) -> Result<ExitCode> {
    let runner = Runner::detect();
    if runner == Runner::CargoTest {
        eprintln!("xtask: cargo-nextest is not installed; using `cargo test`");
    }
    let backend = options.backend;
    let smoke = backend == Backend::KinesisMock && !options.skip_localstack;
    let mut report = Report::default();

    let installed = backend == Backend::External
        || report.step(&format!("install {}", backend.describe()), || {
            install::install(&ctx.layout, Selection::for_backend(backend))
        });
    let localstack_installed = smoke
        && report.step("install LocalStack 4.7.0", || {
            install::install(&ctx.layout, Selection::for_backend(Backend::Localstack))
        });
    report.step("cargo deny check", || crate::deny::check(&ctx.layout));
    let built = report.step("build tests", || cargo(ctx, &runner.build(), &[], None));

    if built && installed {
        let mut running = report.step_value(&format!("start {}", backend.describe()), || {
            Running::start(ctx, backend, StartOptions::default())
        });
        match &running {
            Some(running) => {
                report.step(&format!("tests ({backend})"), || {
                    cargo(ctx, &runner.suite(), &options.args, Some(running))
                });
                report.step("doc tests", || {
                    cargo(ctx, &["test", "--workspace", "--doc"], &[], Some(running))
                });
            }
            None => report.skip(&format!("tests ({backend})"), "the backend did not start"),
        }
        if let Some(mut running) =
            running.take().filter(|running| running.backend() != Backend::External)
        {
            report.step_always(&format!("stop {}", backend.describe()), || running.stop());
        }
    } else {
        let reason = if built { "install failed" } else { "the build failed" };
        report.skip(&format!("tests ({backend})"), reason);
    }

    // The short chaos run (its own substrate, stopped afterwards); see RELIABILITY.md.
    if backend == Backend::KinesisMock {
        if built && installed {
            report.step("chaos --short", || {
                if crate::chaos::run(ctx, &crate::chaos::ChaosArgs::short())? {
                    Ok(())
                } else {
                    bail!("the chaos verdict failed (see the summary above)")
                }
            });
        } else {
            let reason = if built { "install failed" } else { "the build failed" };
            report.skip("chaos --short", reason);
        }
    }

    if smoke {
        if built && localstack_installed {
            let running = report.step_value("start LocalStack 4.7.0", || {
                Running::start(ctx, Backend::Localstack, StartOptions::default())
            });
            match running {
                Some(mut running) => {
                    report.step("smoke tests (localstack)", || {
                        cargo(ctx, &runner.smoke(), &[], Some(&running))
                    });
                    report.step_always("stop LocalStack 4.7.0", || running.stop());
                }
                None => report.skip("smoke tests (localstack)", "LocalStack did not start"),
            }
        } else {
            let reason = if built { "the LocalStack install failed" } else { "the build failed" };
            report.skip("smoke tests (localstack)", reason);
        }
    }

    report.print();
    Ok(if proc::interrupted() {
        ExitCode::from(INTERRUPTED_EXIT)
    } else if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask demo`: start the default backend and run the demo binary.
pub(crate) fn demo(ctx: &Ctx, args: &[OsString]) -> Result<ExitCode> {
    let backend = Backend::KinesisMock;
    install::install(&ctx.layout, Selection::for_backend(backend))?;
    let mut running = Running::start(ctx, backend, StartOptions::default())?;
    let result =
        cargo(ctx, &["run", "-p", "kinesis-examples", "--bin", "demo", "--"], args, Some(&running));
    running.stop()?;
    if proc::interrupted() {
        return Ok(ExitCode::from(INTERRUPTED_EXIT));
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Runs cargo in the workspace root with inherited output and, when a backend
/// runs, its environment contract.
fn cargo(ctx: &Ctx, args: &[&str], extra: &[OsString], running: Option<&Running>) -> Result<()> {
    proc::bail_if_interrupted()?;
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&program);
    cmd.args(args).args(extra).current_dir(ctx.layout.root());
    if let Some(running) = running {
        running.apply_env(&mut cmd);
    }
    let shown: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string())
        .chain(extra.iter().map(|arg| arg.to_string_lossy().into_owned()))
        .collect();
    eprintln!("xtask: cargo {}", shown.join(" "));
    let mut child =
        cmd.spawn().with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let status = proc::wait_interruptible(&mut child)?;
    proc::bail_if_interrupted()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", shown.join(" "));
    }
    Ok(())
}

/// How a step of `cargo xtask test` ended.
#[derive(Debug)]
enum Outcome {
    Passed,
    Failed,
    Skipped(String),
}

/// One line of the summary table.
#[derive(Debug)]
struct StepResult {
    name: String,
    outcome: Outcome,
    took: Duration,
}

/// The steps of `cargo xtask test`, in order.
#[derive(Debug, Default)]
struct Report {
    steps: Vec<StepResult>,
}

impl Report {
    /// Runs a step unless interrupted; true if it passed.
    fn step(&mut self, name: &str, run: impl FnOnce() -> Result<()>) -> bool {
        self.step_value(name, run).is_some()
    }

    /// Runs a step that must run even after an interruption (stopping servers).
    fn step_always(&mut self, name: &str, run: impl FnOnce() -> Result<()>) -> bool {
        self.run_step(name, run).is_some()
    }

    /// Runs a step that produces a value; `None` if it failed or was skipped.
    fn step_value<T>(&mut self, name: &str, run: impl FnOnce() -> Result<T>) -> Option<T> {
        if proc::interrupted() {
            self.skip(name, "interrupted");
            return None;
        }
        self.run_step(name, run)
    }

    fn run_step<T>(&mut self, name: &str, run: impl FnOnce() -> Result<T>) -> Option<T> {
        eprintln!("\n==> xtask test: {name}");
        let started = Instant::now();
        let result = run();
        let took = started.elapsed();
        match result {
            Ok(value) => {
                self.steps.push(StepResult {
                    name: name.to_owned(),
                    outcome: Outcome::Passed,
                    took,
                });
                Some(value)
            }
            Err(error) => {
                eprintln!("xtask: {name}: {error:#}");
                self.steps.push(StepResult {
                    name: name.to_owned(),
                    outcome: Outcome::Failed,
                    took,
                });
                None
            }
        }
    }

    /// Records a step that did not run.
    fn skip(&mut self, name: &str, reason: &str) {
        let reason = if proc::interrupted() { "interrupted" } else { reason };
        self.steps.push(StepResult {
            name: name.to_owned(),
            outcome: Outcome::Skipped(reason.to_owned()),
            took: Duration::ZERO,
        });
    }

    /// Whether every step ran and passed.
    fn passed(&self) -> bool {
        self.steps.iter().all(|step| matches!(step.outcome, Outcome::Passed))
    }

    /// Prints the summary table on stderr.
    fn print(&self) {
        let width = self.steps.iter().map(|step| step.name.len()).max().unwrap_or(4).max(4);
        eprintln!("\nxtask test summary");
        eprintln!("{:<width$}  {:<7}  {:>9}", "step", "result", "time");
        for step in &self.steps {
            let (result, note) = match &step.outcome {
                Outcome::Passed => ("pass", String::new()),
                Outcome::Failed => ("FAIL", String::new()),
                Outcome::Skipped(reason) => ("skipped", format!("  ({reason})")),
            };
            eprintln!(
                "{:<width$}  {result:<7}  {:>7.1} s{note}",
                step.name,
                step.took.as_secs_f64()
            );
        }
        let total: Duration = self.steps.iter().map(|step| step.took).sum();
        eprintln!(
            "{:<width$}  {:<7}  {:>7.1} s",
            "total",
            if self.passed() { "pass" } else { "FAIL" },
            total.as_secs_f64()
        );
    }
}
