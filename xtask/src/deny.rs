//! `cargo deny check` without network access to GitHub: advisories, licenses, bans and
//! sources of the whole dependency graph, as `deny.toml` sets them.
//!
//! cargo-deny is installed from crates.io on first use (`cargo install --locked`, a pinned
//! version) into `.local/cargo-deny/`. The RustSec advisory database comes from the snapshot
//! vendored in `deny/advisory-db.tar.gz` (see `deny/README.md`): it is unpacked into
//! `.local/advisory-dbs/`, where `deny.toml`'s `db-path` points, and cargo-deny runs with
//! `--offline` (after `cargo fetch --locked` has downloaded every crate of the graph from
//! crates.io, so that its `cargo metadata --offline` finds them). Offline, cargo-deny needs
//! no git repository, only the `crates/` folder and the modification time of
//! `.git/FETCH_HEAD`, which it takes as the time of the last fetch and compares with
//! `maximum-db-staleness`. That time is set to the snapshot's commit time, so the staleness
//! limit measures the age of the snapshot itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::layout::{self, Layout};
use crate::proc;

/// The cargo-deny release installed into `.local/cargo-deny/` (needs rustc 1.88 or newer).
pub(crate) const CARGO_DENY_VERSION: &str = "0.20.2";

/// The folder cargo-deny 0.20 reads the database of `db-urls`' only entry from, under
/// `db-path`: the URL's last path segment, a dash and the XxHash64 (seed `0xca80de71`) of the
/// lowercased URL `https://github.com/rustsec/advisory-db`. A cargo-deny upgrade that
/// changes this scheme shows up as "failed to get 'FETCH_HEAD' metadata" naming the folder
/// it looked for.
const ADVISORY_DB_FOLDER: &str = "advisory-db-3157b0e258782691";

/// `cargo xtask deny`, and the step of `cargo xtask test`: install cargo-deny if needed, lay
/// out the advisory snapshot, run `cargo deny check` on the workspace.
pub(crate) fn check(layout: &Layout) -> Result<()> {
    let cargo_deny = install(layout)?;
    let snapshot = Snapshot::read(&layout.root().join("deny/advisory-db.snapshot"))?;
    unpack_advisory_db(layout, &snapshot)?;
    let started = Instant::now();
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut fetch = Command::new(program);
    fetch.args(["fetch", "--locked", "--quiet"]).current_dir(layout.root());
    let mut child = fetch.spawn().context("starting `cargo fetch --locked`")?;
    let status = proc::wait_interruptible(&mut child)?;
    proc::bail_if_interrupted()?;
    if !status.success() {
        bail!("`cargo fetch --locked` failed ({status})");
    }
    let mut cmd = Command::new(&cargo_deny);
    cmd.arg("--manifest-path")
        .arg(layout.root().join("Cargo.toml"))
        .args(["--offline", "--locked", "--config"])
        .arg(layout.root().join("deny.toml"))
        .arg("check")
        // `db-path` in deny.toml is relative to the workspace root.
        .current_dir(layout.root());
    eprintln!(
        "xtask: cargo deny check (cargo-deny {CARGO_DENY_VERSION}, advisory-db {} of {})",
        &snapshot.commit[..12],
        snapshot.committed
    );
    let mut child = cmd.spawn().with_context(|| format!("starting {}", cargo_deny.display()))?;
    let status = proc::wait_interruptible(&mut child)?;
    proc::bail_if_interrupted()?;
    if !status.success() {
        bail!(
            "`cargo deny check` failed ({status}): see its diagnostics above; deny/README.md says \
             what to do about an advisory, a license or a banned crate"
        );
    }
    eprintln!("xtask: cargo deny check passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Installs cargo-deny [`CARGO_DENY_VERSION`] into `.local/cargo-deny/` unless it is there;
/// returns the path of the binary.
fn install(layout: &Layout) -> Result<PathBuf> {
    let root = layout.local().join("cargo-deny");
    let binary = root.join("bin").join("cargo-deny");
    if installed_version(&binary).as_deref() == Some(CARGO_DENY_VERSION) {
        return Ok(binary);
    }
    std::fs::create_dir_all(layout.local())
        .with_context(|| format!("creating {}", layout.local().display()))?;
    let started = Instant::now();
    let log = layout.local().join("cargo-deny.install.log");
    eprintln!(
        "xtask: installing cargo-deny {CARGO_DENY_VERSION} into {} (builds from source, takes \
         several minutes; log in {})",
        root.display(),
        log.display()
    );
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.args(["install", "cargo-deny", "--locked", "--force", "--version", CARGO_DENY_VERSION])
        .arg("--root")
        .arg(&root)
        // Build in a folder of its own, not in the workspace's target/ (CARGO_TARGET_DIR
        // would put the build there and leave it behind).
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(layout.local());
    proc::run_logged(&format!("cargo install cargo-deny {CARGO_DENY_VERSION}"), cmd, &log)?;
    match installed_version(&binary) {
        Some(version) if version == CARGO_DENY_VERSION => {}
        other => bail!(
            "{} reports version {other:?} after installing cargo-deny {CARGO_DENY_VERSION}",
            binary.display()
        ),
    }
    eprintln!(
        "xtask: installed cargo-deny {CARGO_DENY_VERSION} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// The version `binary --version` prints (`cargo-deny 0.20.2`), if it runs.
fn installed_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| text.split_whitespace().nth(1).map(str::to_owned)).flatten()
}

/// `deny/advisory-db.snapshot`: which advisory-db commit the vendored archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// The full commit id.
    commit: String,
    /// The commit time as git prints it (`%cI`), for messages.
    committed: String,
    /// The commit time in seconds since the Unix epoch (`%ct`).
    committed_unix: u64,
}

impl Snapshot {
    fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Parses `key = "value"` lines; `#` starts a comment line.
    fn parse(text: &str) -> Result<Self> {
        let value = |key: &str| -> Result<String> {
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .with_context(|| format!("no `{key} = ...` line"))
        };
        let commit = value("commit")?;
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("commit {commit:?} is not a 40-digit commit id");
        }
        let committed_unix = value("committed-unix")?;
        let committed_unix = committed_unix
            .parse()
            .with_context(|| format!("committed-unix {committed_unix:?} is not a number"))?;
        Ok(Self { commit, committed: value("committed")?, committed_unix })
    }

    /// The spec recorded in the install marker of the unpacked database.
    fn spec(&self) -> String {
        format!("advisory-db {} {}", self.commit, self.committed_unix)
    }
}

/// Unpacks `deny/advisory-db.tar.gz` into `.local/advisory-dbs/<ADVISORY_DB_FOLDER>/` unless
/// that snapshot is there already, and writes the `.git/FETCH_HEAD` cargo-deny dates the
/// database by.
fn unpack_advisory_db(layout: &Layout, snapshot: &Snapshot) -> Result<()> {
    let dir = layout.local().join("advisory-dbs").join(ADVISORY_DB_FOLDER);
    let spec = snapshot.spec();
    if layout::is_installed(&dir, &spec) && dir.join(".git/FETCH_HEAD").is_file() {
        return Ok(());
    }
    let archive = layout.root().join("deny/advisory-db.tar.gz");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join(".git"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Command::new("tar");
    cmd.arg("-xzf").arg(&archive).arg("-C").arg(&dir);
    let log = layout.local().join("advisory-db.unpack.log");
    proc::run_logged(&format!("unpacking {}", archive.display()), cmd, &log)?;
    if !dir.join("crates").is_dir() {
        bail!("{} has no crates/ folder: is it an advisory-db archive?", archive.display());
    }
    let fetch_head = dir.join(".git/FETCH_HEAD");
    std::fs::write(
        &fetch_head,
        format!(
            "{}\t\tbranch 'main' of https://github.com/RustSec/advisory-db (vendored snapshot)\n",
            snapshot.commit
        ),
    )
    .with_context(|| format!("writing {}", fetch_head.display()))?;
    let fetched = SystemTime::UNIX_EPOCH + Duration::from_secs(snapshot.committed_unix);
    std::fs::File::options()
        .write(true)
        .open(&fetch_head)
        .and_then(|file| file.set_modified(fetched))
        .with_context(|| format!("dating {} to the snapshot", fetch_head.display()))?;
    layout::mark_installed(&dir, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_file_names_commit_and_time() {
        let text = "# comment = ignored\ncommit = \"bf5c0d245a92671908518d7e765914d437954ed6\"\n\
                    committed = \"2026-08-21T08:28:40+02:00\"\ncommitted-unix = 1787293720\n";
        let snapshot = Snapshot::parse(text).unwrap();
        assert_eq!(snapshot.commit, "bf5c0d245a92671908518d7e765914d437954ed6");
        assert_eq!(snapshot.committed, "2026-08-21T08:28:40+02:00");
        assert_eq!(snapshot.committed_unix, 1_787_293_720);
        assert!(Snapshot::parse("commit = \"abc\"\ncommitted-unix = 1").is_err());
        assert!(Snapshot::parse("committed-unix = 1").is_err());
    }

    #[test]
    fn the_vendored_snapshot_file_parses() {
        let layout = Layout::discover().unwrap();
        let snapshot = Snapshot::read(&layout.root().join("deny/advisory-db.snapshot")).unwrap();
        assert!(layout.root().join("deny/advisory-db.tar.gz").is_file());
        assert!(snapshot.committed.len() >= 10, "{snapshot:?}");
    }
}
