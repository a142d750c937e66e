//! The chaos run's child processes (proxies, producer, workers, verifier): spawned with
//! their output in log files, signalled by pid, and watched for their peak memory.
//!
//! Peak memory is `VmHWM` from `/proc/<pid>/status`, the kernel's high-water mark of the
//! resident set, sampled every [`SAMPLE_EVERY`] while the process lives (it cannot be read
//! once the process has exited, so the last fraction of a second of a run is not seen; a
//! peak is a high-water mark, so only growth in that last moment could be missed).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc;

/// How often peak memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Poll interval of the waits here.
const POLL: Duration = Duration::from_millis(50);

/// A process whose peak memory is watched.
#[derive(Debug, Clone)]
struct Watched {
    pid: u32,
    start: u64,
    peak_kib: u64,
}

/// One child process.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Its name in logs and the summary.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status, if it has exited (reaps it).
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status =
                self.child.try_wait().with_context(|| format!("checking on {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Waits until it exits, at most `limit`; `None` if it is still running then.
    pub(crate) fn wait_for(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            proc::bail_if_interrupted()?;
            std::thread::sleep(POLL);
        }
    }

    /// Sends a signal by name (`INT`, `TERM`) with the system `kill`, unless it has exited.
    pub(crate) fn signal(&mut self, signal: &str) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-s", signal, "--", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running `kill` (procps `kill` must be on PATH)")?;
        if !status.success() && self.try_wait()?.is_none() {
            bail!("could not send SIG{signal} to {} (pid {})", self.name, self.pid());
        }
        Ok(())
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.child.kill().with_context(|| format!("killing {}", self.name))?;
        let status = self.child.wait().with_context(|| format!("reaping {}", self.name))?;
        self.status = Some(status);
        Ok(status)
    }

    /// The last `lines` lines of its log, indented.
    pub(crate) fn tail(&self, lines: usize) -> String {
        proc::log_tail(&self.log, lines)
    }
}

/// Every child of the run, and the sampler of their peak memory. Dropping it kills what is
/// still running.
pub(crate) struct Procs {
    procs: Vec<Proc>,
    watched: Arc<Mutex<BTreeMap<String, Watched>>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

/// A handle to one child in [`Procs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(usize);

impl Procs {
    /// No children yet; starts the memory sampler.
    pub(crate) fn new() -> Self {
        let watched: Arc<Mutex<BTreeMap<String, Watched>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let watched = Arc::clone(&watched);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sample(&watched);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Self { procs: Vec::new(), watched, stop, sampler: Some(sampler) }
    }

    /// Watches the peak memory of a process this run did not start (an emulator).
    pub(crate) fn watch(&self, name: &str, pid: u32) {
        if let Some(start) = proc::start_ticks(pid) {
            lock(&self.watched).insert(name.to_owned(), Watched { pid, start, peak_kib: 0 });
            sample(&self.watched);
        }
    }

    /// Spawns `cmd` with stdin from `/dev/null` and stdout and stderr in `log`.
    pub(crate) fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<Id> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("duplicating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        self.start(name, cmd, log)
    }

    /// Spawns `cmd` with stderr in `log` and returns the first line it prints on stdout
    /// (`limits-proxy` prints its address there), waiting at most `limit` for it.
    pub(crate) fn spawn_first_line(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        limit: Duration,
    ) -> Result<(Id, String)> {
        let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let id = self.start(name, cmd, log)?;
        let stdout = self.procs[id.0].child.stdout.take().context("the child's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(limit) {
            Ok(Some(Ok(line))) => Ok((id, line.trim().to_owned())),
            _ => {
                let p = &mut self.procs[id.0];
                let _ = p.kill();
                bail!(
                    "{name} printed no address within {limit:?}; last lines of its log:\n{}",
                    p.tail(20)
                )
            }
        }
    }

    fn start(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<Id> {
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        if let Some(start) = proc::start_ticks(pid) {
            // A name used again (a restarted worker) gets a suffix.
            let mut key = name.to_owned();
            let mut n = 2;
            while lock(&self.watched).contains_key(&key) {
                key = format!("{name} #{n}");
                n += 1;
            }
            lock(&self.watched).insert(key, Watched { pid, start, peak_kib: 0 });
        }
        self.procs.push(Proc { name: name.to_owned(), child, log: log.to_owned(), status: None });
        Ok(Id(self.procs.len() - 1))
    }

    /// The child behind a handle.
    pub(crate) fn get(&mut self, id: Id) -> &mut Proc {
        &mut self.procs[id.0]
    }

    /// Samples peak memory now (before a kill, say).
    pub(crate) fn sample_now(&self) {
        sample(&self.watched);
    }

    /// Peak memory per process, in KiB, in name order.
    pub(crate) fn peaks(&self) -> Vec<(String, u64)> {
        sample(&self.watched);
        lock(&self.watched).iter().map(|(name, w)| (name.clone(), w.peak_kib)).collect()
    }

    /// Kills every child still running (SIGKILL) and stops the sampler.
    pub(crate) fn kill_all(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.try_wait() {
                eprintln!("chaos: killing {} (pid {}), still running", p.name, p.pid());
                let _ = p.kill();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `VmHWM` of every watched process that is still the process it was.
fn sample(watched: &Mutex<BTreeMap<String, Watched>>) {
    let mut watched = lock(watched);
    for w in watched.values_mut() {
        if !proc::is_same_process(w.pid, w.start) {
            continue;
        }
        if let Some(kib) = std::fs::read_to_string(format!("/proc/{}/status", w.pid))
            .ok()
            .and_then(|status| vm_hwm_kib(&status))
        {
            w.peak_kib = w.peak_kib.max(kib);
        }
    }
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in KiB.
pub(crate) fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_high_water_mark() {
        let status = "Name:\tx\nVmPeak:\t  200 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(12345));
        assert_eq!(vm_hwm_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn watches_a_child_and_reports_its_peak() {
        let mut procs = Procs::new();
        let log =
            std::env::temp_dir().join(format!("xtask-chaos-child-{}.log", std::process::id()));
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        let id = procs.spawn("sleeper", cmd, &log).unwrap();
        procs.sample_now();
        let peaks = procs.peaks();
        assert!(peaks.iter().any(|(name, kib)| name == "sleeper" && *kib > 0), "{peaks:?}");
        procs.get(id).kill().unwrap();
        assert!(procs.get(id).try_wait().unwrap().is_some());
        let _ = std::fs::remove_file(log);
    }
}
