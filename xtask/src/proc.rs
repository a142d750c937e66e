//! Child processes: servers in their own process groups, interruptible waits,
//! and stopping a process group with SIGTERM, then SIGKILL after a grace period.
//!
//! Signals are sent by running the system `kill` program (`kill -s TERM -- -<pgid>`):
//! the workspace forbids `unsafe`, and this needs no extra crate. Process
//! liveness and identity come from `/proc/<pid>/stat` (state, process group,
//! start time), so a recycled PID is never mistaken for one of ours.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Set by the signal handler on Ctrl-C (SIGINT), SIGTERM or SIGHUP.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a process group gets to exit after SIGTERM before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for a process group to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Poll interval of every wait in this module.
const POLL: Duration = Duration::from_millis(100);

/// Records that the user (or CI) asked us to stop.
pub(crate) fn set_interrupted() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested by a signal.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails if a stop was requested, so that long sequences end early.
pub(crate) fn bail_if_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    /// One-letter state; `Z` (zombie) and `X` (dead) count as gone.
    state: char,
    /// Parent process id.
    ppid: u32,
    /// Process group id.
    pgrp: u32,
    /// Start time in clock ticks since boot: with the PID, a process's identity.
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); pgrp is field 5; starttime is field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn is_live(stat: &ProcStat) -> bool {
    !matches!(stat.state, 'Z' | 'X')
}

/// The start time of a live process, if `pid` names one.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).filter(is_live).map(|stat| stat.start_ticks)
}

/// Whether `pid` is alive and is the very process that started at `start`.
pub(crate) fn is_same_process(pid: u32, start: u64) -> bool {
    start_ticks(pid) == Some(start)
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|stat| stat.pgrp == pgid && is_live(&stat)))
        .collect()
}

/// Every live process with its `/proc` facts.
fn all_processes() -> Vec<(u32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid).filter(is_live)?)))
        .collect()
}

/// Whether an argument of `pid`'s command line contains `needle`.
fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|bytes| {
        bytes.split(|&b| b == 0).any(|arg| String::from_utf8_lossy(arg).contains(needle))
    })
}

/// Processes outside group `pgid` that belong to it all the same: descendants
/// of its leader that moved to their own session (LocalStack starts its
/// engines with a new session), and, when `marker` is given, processes with
/// `marker` in their command line (such children after their parent died).
/// Returned with their start times, so that a later PID reuse is not touched.
fn related_outside_group(pgid: u32, marker: Option<&str>) -> Vec<(u32, u64)> {
    let processes = all_processes();
    let me = std::process::id();
    let mut tree = vec![pgid];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, stat) in &processes {
            if tree.contains(&stat.ppid) && !tree.contains(pid) {
                tree.push(*pid);
                grew = true;
            }
        }
    }
    processes
        .iter()
        .filter(|(pid, stat)| {
            *pid != me
                && stat.pgrp != pgid
                && (tree.contains(pid)
                    || marker.is_some_and(|marker| cmdline_contains(*pid, marker)))
        })
        .map(|(pid, stat)| (*pid, stat.start_ticks))
        .collect()
}

/// Whether the process group led by `pgid` (started at `start`) still has members.
///
/// If the leader is alive but started at another time, the PID was recycled:
/// the group is not ours and counts as gone.
pub(crate) fn group_alive(pgid: u32, start: u64) -> bool {
    match proc_stat(pgid).filter(is_live) {
        Some(stat) => stat.start_ticks == start && stat.pgrp == pgid,
        None => !group_members(pgid).is_empty(),
    }
}

/// Sends `signal` (a name such as `TERM`) to every process of group `pgid`.
fn signal_group(pgid: u32, signal: &str) -> Result<()> {
    signal_target(&format!("-{pgid}"), signal)
}

/// Sends SIGTERM to one process.
pub(crate) fn terminate(pid: u32) -> Result<()> {
    signal_pid(pid, "TERM")
}

/// Sends `signal` to one process.
fn signal_pid(pid: u32, signal: &str) -> Result<()> {
    signal_target(&pid.to_string(), signal)
}

fn signal_target(target: &str, signal: &str) -> Result<()> {
    // A non-zero exit only means that nothing matched (the process just exited).
    Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| {
            format!("running `kill -s {signal} -- {target}` (procps `kill` must be on PATH)")
        })?;
    Ok(())
}

/// How a process group ended when we stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It had already exited.
    AlreadyGone,
    /// It exited after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// Stops the process group `pgid` (whose leader started at `start`): SIGTERM,
/// up to [`STOP_GRACE`] for it to exit, then SIGKILL. Processes that belong to
/// it but left the group (see [`related_outside_group`]; `marker` finds
/// orphans by command line) are stopped the same way afterwards. `reap` is
/// called while waiting so that a child of ours does not linger as a zombie.
pub(crate) fn stop_group(
    pgid: u32,
    start: u64,
    marker: Option<&str>,
    mut reap: impl FnMut(),
) -> Result<Stopped> {
    reap();
    let leader_ours = proc_stat(pgid).filter(is_live).is_none_or(|stat| stat.start_ticks == start);
    let related = if leader_ours { related_outside_group(pgid, marker) } else { Vec::new() };
    let mut outcome = Stopped::AlreadyGone;
    if group_alive(pgid, start) {
        signal_group(pgid, "TERM")?;
        outcome = Stopped::Terminated;
        if !wait_group_gone(pgid, start, STOP_GRACE, &mut reap) {
            signal_group(pgid, "KILL")?;
            outcome = Stopped::Killed;
            if !wait_group_gone(pgid, start, KILL_GRACE, &mut reap) {
                bail!(
                    "process group {pgid} still has members {:?} after SIGKILL",
                    group_members(pgid)
                );
            }
        }
    }
    // The leader normally stops these itself; whatever is left gets the same treatment.
    let alive = |list: &[(u32, u64)]| -> Vec<(u32, u64)> {
        list.iter().copied().filter(|&(pid, start)| is_same_process(pid, start)).collect()
    };
    let left = alive(&related);
    if left.is_empty() {
        return Ok(outcome);
    }
    for &(pid, _) in &left {
        signal_pid(pid, "TERM")?;
    }
    if outcome == Stopped::AlreadyGone {
        outcome = Stopped::Terminated;
    }
    let deadline = Instant::now() + KILL_GRACE;
    while !alive(&left).is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let stubborn = alive(&left);
    if stubborn.is_empty() {
        return Ok(outcome);
    }
    for &(pid, _) in &stubborn {
        signal_pid(pid, "KILL")?;
    }
    let deadline = Instant::now() + KILL_GRACE;
    while !alive(&stubborn).is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let still = alive(&stubborn);
    if !still.is_empty() {
        bail!("processes {still:?} that belong to group {pgid} survived SIGKILL");
    }
    Ok(Stopped::Killed)
}

fn wait_group_gone(pgid: u32, start: u64, limit: Duration, reap: &mut impl FnMut()) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap();
        // The leader may be gone while its children still run: wait for the whole group.
        if !group_alive(pgid, start) && group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A server started by xtask: the leader of its own process group, with its
/// output in a log file.
#[derive(Debug)]
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    pid: u32,
    start: u64,
    log: PathBuf,
    marker: Option<String>,
    stopped: bool,
}

impl Server {
    /// Spawns `cmd` as the leader of a new process group, stdin from
    /// `/dev/null`, stdout and stderr appended to `log`. `marker`, if given, is
    /// a string found in the command lines of the server's own children that
    /// leave its process group (see [`stop_group`]).
    pub(crate) fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        marker: Option<String>,
    ) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        // Read the identity at once; if it already exited, the start time does not matter.
        let start = start_ticks(pid).unwrap_or(0);
        Ok(Self { name, child, pid, start, log: log.to_path_buf(), marker, stopped: false })
    }

    /// The server's name, for messages and state keys.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// PID of the leader, which is also the process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Start time of the leader in clock ticks since boot.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The command-line marker of its children outside its process group.
    pub(crate) fn marker(&self) -> Option<&str> {
        self.marker.as_deref()
    }

    /// The log file that receives its output.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(description)` if the leader has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(error) => Some(format!("{}: cannot check its status: {error}", self.name)),
        }
    }

    /// Stops the whole process group (TERM, then KILL after [`STOP_GRACE`]).
    pub(crate) fn stop(&mut self) -> Result<Stopped> {
        if self.stopped {
            return Ok(Stopped::AlreadyGone);
        }
        let child = &mut self.child;
        let outcome = stop_group(self.pid, self.start, self.marker.as_deref(), || {
            let _ = child.try_wait();
        })
        .with_context(|| format!("stopping {} (pid {})", self.name, self.pid))?;
        self.stopped = true;
        Ok(outcome)
    }
}

/// Waits for a foreground child (a test run, the demo). When a stop is
/// requested, the child gets SIGTERM (it usually got the terminal's SIGINT
/// already), and SIGKILL if it is still running [`STOP_GRACE`] later.
pub(crate) fn wait_interruptible(child: &mut Child) -> Result<ExitStatus> {
    let mut terminated_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(status);
        }
        if interrupted() {
            match terminated_at {
                None => {
                    signal_pid(child.id(), "TERM")?;
                    terminated_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() > STOP_GRACE => {
                    child.kill().context("killing a child process")?;
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `cmd` to completion with its output in `log`; on failure the error
/// carries the log's tail.
pub(crate) fn run_logged(what: &str, mut cmd: Command, log: &Path) -> Result<()> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err =
        out.try_clone().with_context(|| format!("duplicating the handle of {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd.spawn().with_context(|| format!("{what}: starting {cmd:?}"))?;
    let status = wait_interruptible(&mut child)?;
    bail_if_interrupted()?;
    if !status.success() {
        bail!("{what} failed ({status}); last lines of {}:\n{}", log.display(), log_tail(log, 30));
    }
    Ok(())
}

/// The last `lines` lines of a log file (or why it cannot be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            tail.iter().map(|line| format!("    | {line}\n")).collect()
        }
        Err(error) => format!("    (cannot read {}: {error})\n", path.display()),
    }
}
