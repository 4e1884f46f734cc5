//! The components as operating-system processes, supervised as a kubelet
//! supervises containers: what exits by itself (a crash point, a deposed
//! leader) comes back after a second; what the fault plan kills or freezes
//! comes back when the plan says.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `sparkcap-scheduler run` flags for tests: a 4 s lease (a standby takes
/// over within seconds), 1 s metering, metrics on any free port. Follow
/// with `--identity <name>`.
pub const FAST_SCHEDULER_ARGS: [&str; 13] = [
    "run",
    "--lease-namespace",
    "sparkcap-system",
    "--lease-seconds",
    "4",
    "--renew-deadline-seconds",
    "3",
    "--retry-seconds",
    "1",
    "--meter-seconds",
    "1",
    "--metrics-addr",
    "127.0.0.1:0",
];

/// How long a process that exited by itself stays down (a kubelet's first back-off).
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// The sparkcap binary `name`, built next to the running executable (the
/// test binaries live one level below, in `deps/`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dirs = exe.ancestors().skip(1).take(2);
    for d in dirs {
        let bin = d.join(name);
        if bin.exists() {
            return Ok(bin);
        }
    }
    anyhow::bail!(
        "{name} is not built next to {}: build the workspace's binaries with the fault points \
         (cargo build -p sparkcap-scheduler -p sparkcap-webhook -p sparkcap-testkit; cargo test --workspace does)",
        exe.display()
    )
}

/// One supervised process.
#[derive(Debug)]
pub struct Proc {
    /// Its name in reports and log files.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// When it comes back, while it is down.
    restart_at: Option<Instant>,
    paused: bool,
    generation: u32,
    /// Times started.
    pub starts: u32,
    /// Exits it made by itself, with their status.
    pub exits: Vec<ExitStatus>,
}

impl Proc {
    /// A process of `program args`, its output appended to `<dir>/<name>.log`.
    pub fn new(name: &str, program: PathBuf, args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: dir.join(format!("{name}.log")),
            child: None,
            restart_at: None,
            paused: false,
            generation: 0,
            starts: 0,
            exits: Vec::new(),
        }
    }

    /// The name it goes by now: `name`, or `name-N` once it came back as
    /// a new pod (see [`Proc::kill`]). An argument `{identity}` is replaced by it.
    pub fn identity(&self) -> String {
        match self.generation {
            0 => self.name.clone(),
            g => format!("{}-{g}", self.name),
        }
    }

    /// Starts it.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let identity = self.identity();
        let args = self
            .args
            .iter()
            .map(|a| if a == "{identity}" { identity.as_str() } else { a });
        let child = Command::new(&self.program)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} ({}): {e}", self.name, self.program.display()))?;
        self.child = Some(child);
        self.restart_at = None;
        self.paused = false;
        self.starts += 1;
        Ok(())
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is up and not frozen.
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// SIGKILL now; back after `down_for`, as the same pod (a container
    /// restart) or, `rescheduled`, as a new one with a new identity.
    pub fn kill(&mut self, down_for: Duration, rescheduled: bool) {
        if rescheduled {
            self.generation += 1;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
        self.restart_at = Some(Instant::now() + down_for);
    }

    /// SIGSTOP: frozen, as a process starved of CPU or a VM paused.
    pub fn pause(&mut self) {
        if self.signal("-STOP") {
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if self.signal("-CONT") {
            self.paused = false;
        }
    }

    fn signal(&self, sig: &str) -> bool {
        self.pid().is_some_and(|pid| {
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Notices an exit it made by itself (scheduling its restart) and
    /// restarts it when due. Returns the exit, once, when it happens.
    pub fn supervise(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let mut exited = None;
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            self.child = None;
            self.exits.push(status);
            self.restart_at = Some(Instant::now() + RESTART_DELAY);
            exited = Some(status);
        }
        if self.child.is_none() && self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.start()?;
        }
        Ok(exited)
    }

    /// Everything it printed, over all its lives.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The crash points it died at, in order.
    pub fn crash_points_hit(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| l.split("crash point ").nth(1)?.strip_suffix(" armed: aborting here"))
            .map(str::to_owned)
            .collect()
    }

    /// Stops it for good.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.restart_at = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free local port (bound and released; good enough on a test machine).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a `sparkcap-webhook serve` process listens (free local ports),
/// and the serving certificate from a test CA it was given (written into a
/// directory): what the fault harness and the supervision tests start.
#[derive(Debug, Clone)]
pub struct WebhookAddrs {
    /// The HTTPS admission address.
    pub listen: String,
    /// The plain /healthz, /readyz, /metrics address.
    pub ops: String,
    crt: String,
    key: String,
}

impl WebhookAddrs {
    /// Two free ports and a certificate for 127.0.0.1 and localhost from
    /// `ca`, written into `dir`.
    pub fn new(ca: &crate::tls::TestCa, dir: &Path) -> anyhow::Result<Self> {
        let cert = ca.issue(&["127.0.0.1", "localhost"]);
        let (crt, key) = (dir.join("webhook.crt"), dir.join("webhook.key"));
        std::fs::write(&crt, &cert.cert_pem)?;
        std::fs::write(&key, &cert.key_pem)?;
        Ok(Self {
            listen: format!("127.0.0.1:{}", free_port()?),
            ops: format!("127.0.0.1:{}", free_port()?),
            crt: crt.display().to_string(),
            key: key.display().to_string(),
        })
    }

    /// `serve` on these addresses with this certificate, without the REST
    /// API, then `extra`.
    pub fn serve_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "serve",
            "--listen",
            &self.listen,
            "--ops-listen",
            &self.ops,
            "--api-listen",
            "off",
            "--tls-cert",
            &self.crt,
            "--tls-key",
            &self.key,
        ];
        args.extend_from_slice(extra);
        args
    }
}
