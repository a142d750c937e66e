//! The state file: which servers run, their PIDs and their endpoints.
//!
//! `.local/run/state.env` holds `KEY=VALUE` lines. It belongs to one running
//! instance (a detached `up`, or a foreground `up`, `test` or `demo` while it
//! runs); `cargo xtask down` stops the process groups it lists. If another
//! live instance already holds it (someone else runs `cargo xtask test` in the
//! same workspace), a new instance writes `state-<xtask pid>.env` instead and
//! logs into its own folder, so that two runs never clobber each other.
//!
//! Keys: the environment contract (`KTK_BACKEND`, `AWS_ENDPOINT_URL_*`, ...),
//! `XTASK_PID`/`XTASK_START` (the owning xtask process), `RUN_DIR`, `DETACHED`,
//! `SERVERS` (comma-separated names) and for each server `PID_<NAME>` and
//! `START_<NAME>` (its start time in clock ticks, to recognise a recycled PID),
//! and `MARKER_<NAME>` when the server's children leave its process group.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::proc;

/// Ordered `KEY=VALUE` entries.
pub(crate) type Entries = Vec<(String, String)>;

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub(crate) fn parse(text: &str) -> Entries {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The value of `key`, if present.
pub(crate) fn get<'a>(entries: &'a Entries, key: &str) -> Option<&'a str> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Reads a state file.
pub(crate) fn read(path: &Path) -> Result<Entries> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text))
}

/// Replaces a state file's content (through a temporary file and a rename).
pub(crate) fn write(path: &Path, entries: &Entries) -> Result<()> {
    let mut text = String::from(
        "# written by `cargo xtask`; `cargo xtask down` stops the process groups listed here\n",
    );
    for (key, value) in entries {
        text.push_str(key);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    let tmp = path.with_extension("env.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The key suffix of a server name: `kinesis-mock` becomes `KINESIS_MOCK`.
pub(crate) fn key_of(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect()
}

/// A server listed in a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Its name (`kinesis-mock`, `dynamodb-local`, `localstack`, `kinesalite`).
    pub(crate) name: String,
    /// Its PID, which is also its process group id.
    pub(crate) pid: u32,
    /// Its start time in clock ticks since boot.
    pub(crate) start: u64,
    /// Command-line marker of its children outside its process group.
    pub(crate) marker: Option<String>,
}

/// The servers a state file lists.
pub(crate) fn servers(entries: &Entries) -> Vec<Listed> {
    let Some(names) = get(entries, "SERVERS") else { return Vec::new() };
    names
        .split(',')
        .filter(|name| !name.is_empty())
        .filter_map(|name| {
            let key = key_of(name);
            let pid = get(entries, &format!("PID_{key}"))?.parse().ok()?;
            let start = get(entries, &format!("START_{key}"))?.parse().ok()?;
            let marker = get(entries, &format!("MARKER_{key}")).map(str::to_owned);
            Some(Listed { name: name.to_owned(), pid, start, marker })
        })
        .collect()
}

/// Whether anything a state file names still runs: its owning xtask or a server group.
fn is_live(entries: &Entries) -> bool {
    let owner = get(entries, "XTASK_PID")
        .and_then(|pid| pid.parse::<u32>().ok())
        .zip(get(entries, "XTASK_START").and_then(|start| start.parse::<u64>().ok()));
    if owner.is_some_and(|(pid, start)| proc::is_same_process(pid, start)) {
        return true;
    }
    servers(entries).iter().any(|server| proc::group_alive(server.pid, server.start))
}

/// The state file and log folder one running instance owns.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The state file (`state.env`, or `state-<pid>.env` when that one is taken).
    pub(crate) state_file: PathBuf,
    /// Whether this is the primary `state.env`.
    pub(crate) primary: bool,
}

impl Slot {
    /// The log folder for `backend` that goes with this slot.
    pub(crate) fn log_dir(&self, run_dir: &Path, backend: &str) -> PathBuf {
        if self.primary {
            run_dir.join(backend)
        } else {
            run_dir.join(format!("{backend}-{}", std::process::id()))
        }
    }
}

/// The owner lines every state file starts with.
pub(crate) fn owner_entries() -> Entries {
    let pid = std::process::id();
    vec![
        ("XTASK_PID".to_owned(), pid.to_string()),
        ("XTASK_START".to_owned(), proc::start_ticks(pid).unwrap_or(0).to_string()),
    ]
}

/// Claims `state.env` in `run_dir` if no live instance holds it (a stale one
/// is removed); otherwise a `state-<pid>.env` of our own. With
/// `require_primary`, a taken `state.env` is an error instead.
pub(crate) fn claim(run_dir: &Path, require_primary: bool) -> Result<Slot> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let primary = run_dir.join("state.env");
    for _ in 0..3 {
        match OpenOptions::new().write(true).create_new(true).open(&primary) {
            Ok(mut file) => {
                let mut text = String::new();
                for (key, value) in owner_entries() {
                    text.push_str(&format!("{key}={value}\n"));
                }
                file.write_all(text.as_bytes())
                    .with_context(|| format!("writing {}", primary.display()))?;
                return Ok(Slot { state_file: primary, primary: true });
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                // A file being written right now may still be empty: it counts as live
                // only through its owner, so give the writer a moment.
                let entries = read(&primary).unwrap_or_default();
                if entries.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let again = read(&primary).unwrap_or_default();
                    if !again.is_empty() && is_live(&again) {
                        break;
                    }
                } else if is_live(&entries) {
                    break;
                }
                remove_if_exists(&primary)?;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating {}", primary.display()));
            }
        }
    }
    if require_primary {
        anyhow::bail!(
            "{} lists servers that are still running: stop them with `cargo xtask down` first",
            primary.display()
        );
    }
    let own = run_dir.join(format!("state-{}.env", std::process::id()));
    write(&own, &owner_entries())?;
    Ok(Slot { state_file: own, primary: false })
}

/// All state files in `run_dir`: `state.env` first, then `state-<pid>.env`.
pub(crate) fn all_state_files(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let primary = run_dir.join("state.env");
    if primary.is_file() {
        files.push(primary);
    }
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(error).with_context(|| format!("reading {}", run_dir.display())),
    };
    let mut others = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", run_dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("state-") && name.ends_with(".env") {
            others.push(entry.path());
        }
    }
    others.sort();
    files.extend(others);
    Ok(files)
}

/// Removes a file, ignoring that it does not exist.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lists_servers() {
        let text = "# comment\nKTK_BACKEND=kinesis-mock\n\nSERVERS=kinesis-mock,dynamodb-local\n\
                    PID_KINESIS_MOCK=10\nSTART_KINESIS_MOCK=5\nPID_DYNAMODB_LOCAL=11\nSTART_DYNAMODB_LOCAL=6\n";
        let entries = parse(text);
        assert_eq!(get(&entries, "KTK_BACKEND"), Some("kinesis-mock"));
        assert_eq!(
            servers(&entries),
            vec![
                Listed { name: "kinesis-mock".into(), pid: 10, start: 5, marker: None },
                Listed { name: "dynamodb-local".into(), pid: 11, start: 6, marker: None },
            ]
        );
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let entries = parse("A=b=c\n");
        assert_eq!(get(&entries, "A"), Some("b=c"));
    }

    #[test]
    fn key_of_upper_cases_and_replaces_dashes() {
        assert_eq!(key_of("kinesis-mock"), "KINESIS_MOCK");
    }
}
