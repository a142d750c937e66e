//! Checks for the host tools the emulators need (Node.js, Java, Python).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A host program one of the backends needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// Node.js runs kinesis-mock and kinesalite.
    Node,
    /// npm installs them.
    Npm,
    /// Java runs DynamoDB Local.
    Java,
    /// `javac` compiles LocalStack's no-op javaagent.
    Javac,
    /// `jar` packages it.
    Jar,
    /// Python runs LocalStack.
    Python,
}

impl Tool {
    /// The program name looked up on `PATH`.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Tool::Node => "node",
            Tool::Npm => "npm",
            Tool::Java => "java",
            Tool::Javac => "javac",
            Tool::Jar => "jar",
            Tool::Python => "python3",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Tool::Node => "Node.js",
            Tool::Npm => "npm",
            Tool::Java => "a Java runtime (17 or newer)",
            Tool::Javac | Tool::Jar => "a JDK (17 or newer)",
            Tool::Python => "Python 3 with venv",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Tool::Node | Tool::Npm => "apt-get install nodejs npm",
            Tool::Java | Tool::Javac | Tool::Jar => "apt-get install openjdk-17-jdk-headless",
            Tool::Python => "apt-get install python3 python3-venv",
        }
    }
}

/// The first executable called `program` on `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Fails with a message that names `who`, the missing program and how to install it.
pub(crate) fn require(who: &str, tools: &[Tool]) -> Result<()> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|tool| find_on_path(tool.program()).is_none())
        .map(|tool| {
            format!(
                "{who} needs {} (`{}`) on PATH: install it with `{}`",
                tool.description(),
                tool.program(),
                tool.install_hint()
            )
        })
        .collect();
    if missing.is_empty() { Ok(()) } else { bail!("{}", missing.join("\n")) }
}

/// `JAVA_HOME` of the `java` on `PATH` (the folder above its `bin/`), after
/// checking that it is Java 17 or newer.
pub(crate) fn java_home() -> Result<PathBuf> {
    let java = find_on_path("java").context("`java` is not on PATH")?;
    let real =
        std::fs::canonicalize(&java).with_context(|| format!("resolving {}", java.display()))?;
    let home = real
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not inside a <JAVA_HOME>/bin folder", real.display()))?
        .to_path_buf();
    let major = java_major()?;
    if major < 17 {
        bail!("DynamoDB Local needs Java 17 or newer; `java` on PATH is Java {major}");
    }
    Ok(home)
}

/// The major version of the `java` on `PATH` (`java -version` prints it on stderr).
fn java_major() -> Result<u32> {
    let out = Command::new("java").arg("-version").output().context("running `java -version`")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let quoted = text
        .split('"')
        .nth(1)
        .with_context(|| format!("cannot read a version from `java -version`: {text}"))?;
    let mut parts = quoted.split(['.', '-', '+', '_']);
    let first: u32 =
        parts.next().unwrap_or("").parse().with_context(|| format!("java version {quoted:?}"))?;
    // Java 8 and older print "1.8.0_…".
    if first == 1 {
        return parts
            .next()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("java version {quoted:?}"));
    }
    Ok(first)
}
