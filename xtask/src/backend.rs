//! The backends the tests run against, and starting and stopping them.
//!
//! - `kinesis-mock` (default): LocalStack's own engines without LocalStack's
//!   gateway: kinesis-mock (npm `kinesis-local`, Node.js) for Kinesis and
//!   DynamoDB Local (Java) for DynamoDB, each on its own free port.
//! - `localstack`: LocalStack 4.7.0 on the host, one gateway port for both.
//! - `external`: nothing is started; the user's `AWS_*` variables say where to go.
//!
//! A started backend is a [`Running`]: it owns the server processes, writes
//! the state file and stops everything when it is dropped (unless detached).

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::runtime::Runtime;

use crate::layout::Layout;
use crate::proc::{self, Server, Stopped};
use crate::ready::{self, Service};
use crate::state::{self, Entries, Slot};
use crate::tools::{self, Tool};

/// Readiness limit of kinesis-mock and DynamoDB Local.
const ENGINES_READY_LIMIT: Duration = Duration::from_secs(60);
/// Readiness limit of LocalStack.
const LOCALSTACK_READY_LIMIT: Duration = Duration::from_secs(180);
/// Readiness limit of an external endpoint.
const EXTERNAL_READY_LIMIT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const READY_POLL: Duration = Duration::from_millis(200);
/// How long the short kinesis-mock operations (create, split, merge, ...) take.
const KINESIS_MOCK_DURATION: &str = "10ms";

/// Where the tests send their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Backend {
    /// kinesis-mock (npm kinesis-local 0.6.2) + DynamoDB Local (Java), on free loopback ports.
    #[default]
    KinesisMock,
    /// LocalStack 4.7.0 on the host (Python venv), one loopback port for both services.
    Localstack,
    /// Nothing is started: AWS_ENDPOINT_URL(_KINESIS/_DYNAMODB) and the user's credentials are used as they are.
    External,
}

impl Backend {
    /// The name used on the command line, in `KTK_BACKEND` and for log folders.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::KinesisMock => "kinesis-mock",
            Backend::Localstack => "localstack",
            Backend::External => "external",
        }
    }

    /// A longer description for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Backend::KinesisMock => "kinesis-mock + DynamoDB Local",
            Backend::Localstack => "LocalStack 4.7.0",
            Backend::External => "external endpoints",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What every command shares: the workspace layout and a Tokio runtime for the SDK.
pub(crate) struct Ctx {
    /// Workspace paths.
    pub(crate) layout: Layout,
    /// Runs the readiness probes.
    pub(crate) rt: Runtime,
}

/// How to start a backend.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StartOptions {
    /// Also start kinesalite (exported as `KTK_KINESALITE_ENDPOINT`).
    pub(crate) kinesalite: bool,
    /// The instance will be detached: it must own `.local/run/state.env`.
    pub(crate) detach: bool,
}

/// Variables removed from child processes for local backends, so that a
/// user's own AWS setup cannot leak into the tests.
const UNSET_FOR_LOCAL: &[&str] =
    &["AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"];

/// A started backend: its servers, its environment contract and its state file.
pub(crate) struct Running {
    backend: Backend,
    /// The environment contract (set for child processes, printed by `up`).
    env: Entries,
    /// Variables removed from child processes.
    unset: &'static [&'static str],
    /// Extra state-file lines (for example the kinesis-mock TLS endpoint).
    extra_state: Entries,
    servers: Vec<Server>,
    slot: Option<Slot>,
    log_dir: Option<PathBuf>,
    /// Set once stopped or detached: nothing left to do on drop.
    done: bool,
}

impl Running {
    /// Installs nothing; starts `backend` and waits until it answers.
    pub(crate) fn start(ctx: &Ctx, backend: Backend, options: StartOptions) -> Result<Self> {
        let mut running = Self {
            backend,
            env: Vec::new(),
            unset: &[],
            extra_state: Vec::new(),
            servers: Vec::new(),
            slot: None,
            log_dir: None,
            done: false,
        };
        if backend == Backend::External {
            running.start_external(ctx)?;
            return Ok(running);
        }
        match backend {
            Backend::KinesisMock => {
                tools::require("kinesis-mock + DynamoDB Local", &[Tool::Node, Tool::Java])?
            }
            // LocalStack runs kinesis-mock with the `node` on PATH; Java comes from its lib folder.
            Backend::Localstack => tools::require("LocalStack", &[Tool::Node])?,
            Backend::External => {}
        }
        if options.kinesalite {
            tools::require("kinesalite", &[Tool::Node])?;
        }
        let started = Instant::now();
        eprintln!("xtask: starting {}", backend.describe());
        // From here on, `running` stops whatever was spawned if anything fails.
        let run_dir = ctx.layout.run_dir();
        let slot = state::claim(&run_dir, options.detach)?;
        let log_dir = slot.log_dir(&run_dir, backend.name());
        running.slot = Some(slot);
        if log_dir.exists() {
            std::fs::remove_dir_all(&log_dir)
                .with_context(|| format!("clearing {}", log_dir.display()))?;
        }
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        running.log_dir = Some(log_dir.clone());
        running.unset = UNSET_FOR_LOCAL;

        // External was handled above: this is kinesis-mock or LocalStack.
        let (mut targets, limit) = if backend == Backend::Localstack {
            (running.spawn_localstack(&ctx.layout, &log_dir)?, LOCALSTACK_READY_LIMIT)
        } else {
            (running.spawn_engines(&ctx.layout, &log_dir)?, ENGINES_READY_LIMIT)
        };
        if options.kinesalite {
            targets.push(running.spawn_kinesalite(&ctx.layout, &log_dir)?);
        }
        running.wait_ready(&ctx.rt, &targets, limit)?;
        eprintln!(
            "xtask: {} ready in {:.1} s (logs in {})",
            backend.describe(),
            started.elapsed().as_secs_f64(),
            log_dir.display()
        );
        Ok(running)
    }

    /// The backend this instance runs.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Sets the environment contract on `cmd`.
    pub(crate) fn apply_env(&self, cmd: &mut Command) {
        for key in self.unset {
            cmd.env_remove(key);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
    }

    /// Shell lines that give a shell the environment contract (for `eval`).
    pub(crate) fn exports(&self) -> String {
        let mut text = String::new();
        if !self.unset.is_empty() {
            text.push_str(&format!("unset {}\n", self.unset.join(" ")));
        }
        for (key, value) in &self.env {
            text.push_str(&format!("export {key}={}\n", shell_quote(value)));
        }
        text
    }

    /// The state file this instance writes.
    pub(crate) fn state_file(&self) -> Option<&Path> {
        self.slot.as_ref().map(|slot| slot.state_file.as_path())
    }

    /// Fails if a server has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for server in &mut self.servers {
            if let Some(what) = server.exited() {
                bail!(
                    "{what}; last lines of {}:\n{}",
                    server.log().display(),
                    proc::log_tail(server.log(), 30)
                );
            }
        }
        Ok(())
    }

    /// Leaves the servers running after xtask exits; the state file says how to stop them.
    pub(crate) fn detach(mut self) -> Result<()> {
        self.write_state(true)?;
        self.done = true;
        Ok(())
    }

    /// Stops every server (SIGTERM to its process group, SIGKILL after a grace
    /// period) and removes the state file.
    pub(crate) fn stop(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut first_error = None;
        for server in self.servers.iter_mut().rev() {
            match server.stop() {
                Ok(outcome) => eprintln!(
                    "xtask: stopped {} (pid {}){}",
                    server.name(),
                    server.pid(),
                    stop_note(outcome)
                ),
                Err(error) => {
                    eprintln!("xtask: {error:#}");
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if let Some(slot) = &self.slot {
            state::remove_if_exists(&slot.state_file)?;
        }
        Ok(())
    }

    /// Records a freshly spawned server in the state file at once, so that
    /// `cargo xtask down` finds it even if xtask dies before readiness.
    fn add_server(&mut self, server: Server) -> Result<()> {
        self.servers.push(server);
        self.write_state(false)
    }

    fn write_state(&self, detached: bool) -> Result<()> {
        let Some(slot) = &self.slot else { return Ok(()) };
        let mut entries = state::owner_entries();
        entries.extend(self.env.iter().cloned());
        entries.extend(self.extra_state.iter().cloned());
        if let Some(dir) = &self.log_dir {
            entries.push(("RUN_DIR".to_owned(), dir.display().to_string()));
        }
        entries.push(("DETACHED".to_owned(), u8::from(detached).to_string()));
        let names: Vec<&str> = self.servers.iter().map(Server::name).collect();
        entries.push(("SERVERS".to_owned(), names.join(",")));
        for server in &self.servers {
            let key = state::key_of(server.name());
            entries.push((format!("PID_{key}"), server.pid().to_string()));
            entries.push((format!("START_{key}"), server.start().to_string()));
            if let Some(marker) = server.marker() {
                entries.push((format!("MARKER_{key}"), marker.to_owned()));
            }
        }
        state::write(&slot.state_file, &entries)
    }

    /// The contract lines every local backend exports.
    fn set_local_env(&mut self, kinesis: &str, dynamodb: &str) {
        self.env = vec![
            ("KTK_BACKEND".to_owned(), self.backend.name().to_owned()),
            ("AWS_ENDPOINT_URL_KINESIS".to_owned(), kinesis.to_owned()),
            ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), dynamodb.to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), ready::ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), ready::SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION".to_owned(), ready::REGION.to_owned()),
            // Older tools (boto3 before 1.35, the AWS CLI v1) only read AWS_DEFAULT_REGION.
            ("AWS_DEFAULT_REGION".to_owned(), ready::REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        ];
    }

    /// kinesis-mock and DynamoDB Local, each on its own free port.
    fn spawn_engines(&mut self, layout: &Layout, log_dir: &Path) -> Result<Vec<Target>> {
        // Both bind every interface (neither has a host option), so the ports must be free on all of them.
        let ports = pick_ports(&[
            PortSpec { var: "KTK_KINESIS_PORT", all_interfaces: true },
            PortSpec { var: "KTK_KINESIS_TLS_PORT", all_interfaces: true },
            PortSpec { var: "KTK_DYNAMODB_PORT", all_interfaces: true },
        ])?;
        let (kinesis_port, tls_port, dynamodb_port) = (ports[0], ports[1], ports[2]);
        let kinesis = format!("http://127.0.0.1:{kinesis_port}");
        let dynamodb = format!("http://127.0.0.1:{dynamodb_port}");
        self.set_local_env(&kinesis, &dynamodb);
        self.extra_state.push((
            "KINESIS_MOCK_TLS_ENDPOINT".to_owned(),
            format!("https://127.0.0.1:{tls_port}"),
        ));

        let package = layout.kinesis_mock_package();
        let mut cmd = Command::new("node");
        cmd.arg(package.join("main.js"))
            .current_dir(log_dir)
            .env("KINESIS_MOCK_PLAIN_PORT", kinesis_port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", tls_port.to_string())
            // Needed even for plain HTTP; otherwise it looks for ./server.json.
            .env("KINESIS_MOCK_CERT_PATH", package.join("server.json"))
            .env("LOG_LEVEL", env_or("KTK_KINESIS_MOCK_LOG_LEVEL", "WARN"))
            .env("SHARD_LIMIT", "10000")
            .env("ON_DEMAND_STREAM_COUNT_LIMIT", "1000")
            .env("SHOULD_PERSIST_DATA", "false")
            .env("AWS_REGION", ready::REGION)
            .env("AWS_ACCOUNT_ID", "000000000000")
            .env_remove("INITIALIZE_STREAMS");
        for variable in [
            "CREATE_STREAM_DURATION",
            "DELETE_STREAM_DURATION",
            "SPLIT_SHARD_DURATION",
            "MERGE_SHARDS_DURATION",
            "UPDATE_SHARD_COUNT_DURATION",
            "UPDATE_STREAM_MODE_DURATION",
            "REGISTER_STREAM_CONSUMER_DURATION",
            "DEREGISTER_STREAM_CONSUMER_DURATION",
            "START_STREAM_ENCRYPTION_DURATION",
            "STOP_STREAM_ENCRYPTION_DURATION",
        ] {
            cmd.env(variable, KINESIS_MOCK_DURATION);
        }
        self.add_server(Server::spawn(
            "kinesis-mock",
            cmd,
            &log_dir.join("kinesis-mock.log"),
            None,
        )?)?;

        let dist = layout.dynamodb_local_dist()?;
        let mut cmd = Command::new("java");
        cmd.arg(format!("-Djava.library.path={}", dist.join("DynamoDBLocal_lib").display()))
            .arg("-jar")
            .arg(dist.join("DynamoDBLocal.jar"))
            .args(["-inMemory", "-sharedDb", "-disableTelemetry", "-port"])
            .arg(dynamodb_port.to_string())
            .current_dir(log_dir);
        self.add_server(Server::spawn(
            "dynamodb-local",
            cmd,
            &log_dir.join("dynamodb-local.log"),
            None,
        )?)?;

        Ok(vec![
            Target { label: "kinesis-mock", service: Service::Kinesis, endpoint: kinesis },
            Target { label: "dynamodb-local", service: Service::DynamoDb, endpoint: dynamodb },
        ])
    }

    /// LocalStack on one loopback port, with its own FILESYSTEM_ROOT whose lib
    /// folder links to the seeded one.
    fn spawn_localstack(&mut self, layout: &Layout, log_dir: &Path) -> Result<Vec<Target>> {
        let port =
            pick_ports(&[PortSpec { var: "KTK_LOCALSTACK_PORT", all_interfaces: false }])?[0];
        let endpoint = format!("http://127.0.0.1:{port}");
        self.set_local_env(&endpoint, &endpoint);

        let fs_root = log_dir.join("fs");
        let var_lib = fs_root.join("var/lib/localstack");
        std::fs::create_dir_all(&var_lib)
            .with_context(|| format!("creating {}", var_lib.display()))?;
        std::os::unix::fs::symlink(layout.localstack_lib(), var_lib.join("lib"))
            .with_context(|| format!("linking {}", var_lib.join("lib").display()))?;
        let tmp = log_dir.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;

        let mut cmd = Command::new(layout.localstack_venv().join("bin/python"));
        cmd.args(["-m", "localstack.runtime.main"])
            .current_dir(log_dir)
            // This machine has /.dockerenv: without this LocalStack believes it is in its own
            // container, writes into system folders and wipes its temp folder.
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", &fs_root)
            .env("TMPDIR", &tmp)
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SERVICES", "kinesis,dynamodb")
            .env("EAGER_SERVICE_LOADING", "1")
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("PERSISTENCE", "0")
            .env("KINESIS_PERSISTENCE", "0")
            .env("KINESIS_LATENCY", "10")
            .env("KINESIS_SHARD_LIMIT", "10000")
            .env("KINESIS_ON_DEMAND_STREAM_COUNT_LIMIT", "1000")
            .env("LS_LOG", env_or("KTK_LOCALSTACK_LOG", "info"));
        for key in UNSET_FOR_LOCAL {
            cmd.env_remove(key);
        }
        // LocalStack starts kinesis-mock and DynamoDB Local in sessions of their own; their
        // command lines name files under FILESYSTEM_ROOT, which finds them if LocalStack dies first.
        let marker = format!("{}/", fs_root.display());
        self.add_server(Server::spawn(
            "localstack",
            cmd,
            &log_dir.join("localstack.log"),
            Some(marker),
        )?)?;

        Ok(vec![
            Target {
                label: "localstack (kinesis)",
                service: Service::Kinesis,
                endpoint: endpoint.clone(),
            },
            Target { label: "localstack (dynamodb)", service: Service::DynamoDb, endpoint },
        ])
    }

    /// kinesalite on a loopback port, through the wrapper written at install time.
    fn spawn_kinesalite(&mut self, layout: &Layout, log_dir: &Path) -> Result<Target> {
        let wrapper = layout.kinesalite_wrapper();
        if !wrapper.is_file() {
            bail!(
                "kinesalite is not installed ({} is missing): run `cargo xtask install --with-kinesalite`",
                wrapper.display()
            );
        }
        let port =
            pick_ports(&[PortSpec { var: "KTK_KINESALITE_PORT", all_interfaces: false }])?[0];
        let endpoint = format!("http://127.0.0.1:{port}");
        self.env.push(("KTK_KINESALITE_ENDPOINT".to_owned(), endpoint.clone()));
        let mut cmd = Command::new("node");
        cmd.arg(&wrapper)
            .arg(port.to_string())
            .env("KINESALITE_DIR", layout.kinesalite_prefix())
            .current_dir(log_dir);
        self.add_server(Server::spawn("kinesalite", cmd, &log_dir.join("kinesalite.log"), None)?)?;
        Ok(Target { label: "kinesalite", service: Service::Kinesis, endpoint })
    }

    /// `--backend external`: nothing to start; pass the user's variables
    /// through and check that both services answer.
    fn start_external(&mut self, ctx: &Ctx) -> Result<()> {
        self.env = vec![("KTK_BACKEND".to_owned(), Backend::External.name().to_owned())];
        let config = ctx.rt.block_on(ready::external_config());
        let describe = |service: &str| {
            std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|_| "the AWS default endpoint".to_owned())
        };
        eprintln!(
            "xtask: external backend: Kinesis at {}, DynamoDB at {}, region {}",
            describe("KINESIS"),
            describe("DYNAMODB"),
            config.region().map_or("(none)".to_owned(), ToString::to_string)
        );
        let deadline = Instant::now() + EXTERNAL_READY_LIMIT;
        for service in [Service::Kinesis, Service::DynamoDb] {
            loop {
                match ctx.rt.block_on(ready::probe(&config, service)) {
                    Ok(()) => break,
                    Err(error) if Instant::now() >= deadline => {
                        bail!(
                            "the external {service:?} endpoint does not answer ListStreams/ListTables: {error}"
                        )
                    }
                    Err(_) => {}
                }
                proc::bail_if_interrupted()?;
                std::thread::sleep(READY_POLL);
            }
        }
        Ok(())
    }

    /// Polls every target until it answers, a server exits, or `limit` passes.
    fn wait_ready(&mut self, rt: &Runtime, targets: &[Target], limit: Duration) -> Result<()> {
        let started = Instant::now();
        let mut pending: Vec<(&Target, aws_config::SdkConfig, String)> = targets
            .iter()
            .map(|target| {
                (
                    target,
                    rt.block_on(ready::local_config(&target.endpoint)),
                    String::from("no answer yet"),
                )
            })
            .collect();
        loop {
            let mut still = Vec::new();
            for (target, config, _) in pending.drain(..) {
                match rt.block_on(ready::probe(&config, target.service)) {
                    Ok(()) => eprintln!(
                        "xtask: {} answers at {} after {:.1} s",
                        target.label,
                        target.endpoint,
                        started.elapsed().as_secs_f64()
                    ),
                    Err(error) => still.push((target, config, error)),
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if let Err(error) = self.check_alive() {
                return Err(error.context(format!("{} did not start", self.backend.describe())));
            }
            proc::bail_if_interrupted()?;
            if started.elapsed() >= limit {
                let mut message =
                    format!("{} not ready after {} s:", self.backend.describe(), limit.as_secs());
                for (target, _, error) in &pending {
                    message
                        .push_str(&format!("\n  {} at {}: {error}", target.label, target.endpoint));
                }
                for server in &self.servers {
                    message.push_str(&format!(
                        "\nlast lines of {}:\n{}",
                        server.log().display(),
                        proc::log_tail(server.log(), 30)
                    ));
                }
                bail!("{message}");
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("xtask: could not stop {}: {error:#}", self.backend.describe());
        }
    }
}

fn stop_note(outcome: Stopped) -> &'static str {
    match outcome {
        Stopped::AlreadyGone => ", it had already exited",
        Stopped::Terminated => "",
        Stopped::Killed => ", with SIGKILL after the grace period",
    }
}

/// An endpoint to probe for readiness.
#[derive(Debug, Clone)]
struct Target {
    label: &'static str,
    service: Service,
    endpoint: String,
}

/// A port to choose: from the variable `var` if set, else a free one.
#[derive(Debug, Clone, Copy)]
struct PortSpec {
    var: &'static str,
    /// The server binds every interface, so the port must be free on 0.0.0.0.
    all_interfaces: bool,
}

/// Free ports, one per spec. Free ones are found by binding port 0 and all
/// listeners are held until every port is chosen, so the ports differ.
fn pick_ports(specs: &[PortSpec]) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for spec in specs {
        let host = if spec.all_interfaces { "0.0.0.0" } else { "127.0.0.1" };
        let wanted: u16 = match std::env::var(spec.var) {
            Ok(value) => value
                .trim()
                .parse()
                .with_context(|| format!("{}={value:?} is not a port number", spec.var))?,
            Err(_) => 0,
        };
        let listener = TcpListener::bind((host, wanted)).with_context(|| {
            if wanted == 0 {
                format!("finding a free port on {host}")
            } else {
                format!("port {wanted} from {} is not free on {host}", spec.var)
            }
        })?;
        let port = listener.local_addr().context("reading a bound port")?.port();
        ports.push(port);
        held.push(listener);
    }
    drop(held);
    Ok(ports)
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Quotes a value for a POSIX shell unless it only has harmless characters.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@,+=".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(shell_quote("http://127.0.0.1:4566"), "http://127.0.0.1:4566");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn picks_distinct_free_ports() {
        let specs = [
            PortSpec { var: "KTK_TEST_UNSET_PORT_A", all_interfaces: false },
            PortSpec { var: "KTK_TEST_UNSET_PORT_B", all_interfaces: true },
        ];
        let ports = pick_ports(&specs).expect("free ports");
        assert_eq!(ports.len(), 2);
        assert_ne!(ports[0], ports[1]);
    }
}
