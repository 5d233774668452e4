//! What the real-client tests (`clients.rs`, `lmtp_load.rs`) share: the external programs
//! scripts/peers.sh installs (found through its env file's variables, else on the PATH),
//! the `mailvault` binary started as a child process on free local ports over a local
//! directory or an S3 server of scripts/s3-servers.sh, and the test corpus.
//!
//! A missing program or S3 server skips a test with a printed reason, and fails it when
//! `MAILVAULT_REQUIRE_PEERS=1` / `MAILVAULT_REQUIRE_S3=1` (scripts/test.sh sets both).
#![allow(dead_code)] // each test binary uses a part

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The server binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mailvault");
/// The password of every test account.
pub const PASSWORD: &str = "correct horse battery staple";

/// Environment of every `mailvault` command of one server (the S3 settings).
pub type Env = Vec<(String, String)>;

/// `name`'s path: `$MAILVAULT_PEER_<NAME>` (written by scripts/peers.sh), else `name` on
/// the PATH (`python` stands for `python3`).
fn find_tool(name: &str) -> Option<PathBuf> {
    let var = format!("MAILVAULT_PEER_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&var) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let exe = if name == "python" { "python3" } else { name };
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin".into(), "/sbin".into()]);
    dirs.into_iter().map(|d| d.join(exe)).find(|p| p.is_file())
}

/// The paths of `names` (e.g. `["swaks", "curl"]`), or `None` after printing why the test
/// skips; panics instead when `MAILVAULT_REQUIRE_PEERS=1`.
pub fn tools(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().flatten().collect());
    }
    let why = format!(
        "{test}: {missing:?} not installed (run `bash scripts/peers.sh install` and source \
         the file `bash scripts/peers.sh env` prints)"
    );
    assert!(
        std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() != Ok("1"),
        "MAILVAULT_REQUIRE_PEERS=1 but {why}"
    );
    eprintln!("SKIPPED {why}");
    None
}

/// A user of the Dovecot instance that scripts/peers.sh starts.
pub struct DovecotUser {
    /// Dovecot's IMAP port on 127.0.0.1.
    pub port: u16,
    /// The login name.
    pub user: String,
    /// The password.
    pub password: String,
    /// The user's mail folder.
    pub home: String,
}

/// Which user of the Dovecot instance a test takes: each test that changes a user's
/// mailboxes has its own, so that tests running at once do not meet.
#[derive(Clone, Copy, Debug)]
pub enum DovecotPick {
    /// The first user (`import imap`).
    First,
    /// The second user (the modified UTF-7 test).
    Second,
    /// The last user (the differential test).
    Last,
}

/// The Dovecot user `pick`, or `None` after printing why the test skips (the instance
/// is not configured or not listening); panics instead when `MAILVAULT_REQUIRE_PEERS=1`.
pub fn dovecot(test: &str, pick: DovecotPick) -> Option<DovecotUser> {
    let skip = |why: String| {
        assert!(
            std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "MAILVAULT_REQUIRE_PEERS=1 but {why}"
        );
        eprintln!("SKIPPED {why}");
        None
    };
    let port = std::env::var("MAILVAULT_DOVECOT_IMAP_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let users = std::env::var("MAILVAULT_DOVECOT_USERS").ok();
    let dir = std::env::var("MAILVAULT_DOVECOT_DIR").ok();
    let (Some(port), Some(users), Some(dir)) = (port, users, dir) else {
        return skip(format!(
            "{test}: MAILVAULT_DOVECOT_IMAP_PORT / _USERS / _DIR are not set (run `bash \
             scripts/peers.sh start` and source the file `bash scripts/peers.sh env` prints)"
        ));
    };
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return skip(format!("{test}: nothing listens on Dovecot's port {port}"));
    }
    let mut pairs = users.split_whitespace();
    let pair = match pick {
        DovecotPick::First => pairs.next(),
        DovecotPick::Second => pairs.nth(1),
        DovecotPick::Last => pairs.last(),
    };
    let (user, password) = pair
        .and_then(|u| u.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .expect("MAILVAULT_DOVECOT_USERS holds user:password pairs");
    let home = format!("{dir}/mail/{user}");
    Some(DovecotUser {
        port,
        user,
        password,
        home,
    })
}

/// A Dovecot instance of scripts/peers.sh without mail_crypt (its Maildir files are
/// readable: `export.rs`, `import.rs` compare them with an export), in a folder and on ports
/// of its own; stopped on drop.
pub struct PlainDovecot {
    state: tempfile::TempDir,
    /// IMAP port on 127.0.0.1.
    pub imap: u16,
    /// LMTP port on 127.0.0.1.
    pub lmtp: u16,
}

impl PlainDovecot {
    fn script(&self, command: &str) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers.sh"))
            .arg(command)
            .env("MAILVAULT_PEERS_STATE", self.state.path())
            .env("MAILVAULT_DOVECOT_IMAP_PORT", self.imap.to_string())
            .env("MAILVAULT_DOVECOT_LMTP_PORT", self.lmtp.to_string())
            .env("MAILVAULT_DOVECOT_CRYPT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/peers.sh")
    }

    /// Started, or `None` (skip, printed) when scripts/peers.sh cannot start it; panics
    /// instead when `MAILVAULT_REQUIRE_PEERS=1`.
    pub fn start(test: &str) -> Option<Self> {
        let dovecot = PlainDovecot {
            state: tempfile::tempdir().expect("a folder"),
            imap: free_port(),
            lmtp: free_port(),
        };
        let out = dovecot.script("start");
        if out.status.success() {
            return Some(dovecot);
        }
        let why = format!(
            "{test}: scripts/peers.sh cannot start a plain Dovecot ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "MAILVAULT_REQUIRE_PEERS=1 but {why}"
        );
        eprintln!("SKIPPED {why}");
        None
    }

    /// The Maildir (Maildir++ tree) Dovecot keeps for `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.state
            .path()
            .join("dovecot/mail")
            .join(user)
            .join("Maildir")
    }
}

impl Drop for PlainDovecot {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// Where a server stores mail.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// A local directory.
    Local,
    /// Garage (scripts/s3-servers.sh).
    Garage,
    /// moto_server (scripts/s3-servers.sh).
    Moto,
}

impl Backend {
    /// The store URL and the server's environment, or `None` (skip, printed) when the S3
    /// server is not configured; panics instead when `MAILVAULT_REQUIRE_S3=1`.
    fn store(self, test: &str) -> Option<(String, Env)> {
        let name = match self {
            Backend::Local => return Some(("store".into(), Vec::new())),
            Backend::Garage => "GARAGE",
            Backend::Moto => "MOTO",
        };
        let var = |field: &str| std::env::var(format!("MAILVAULT_S3_{name}_{field}")).ok();
        let Some(endpoint) = var("ENDPOINT") else {
            assert!(
                std::env::var("MAILVAULT_REQUIRE_S3").as_deref() != Ok("1"),
                "MAILVAULT_REQUIRE_S3=1 but MAILVAULT_S3_{name}_ENDPOINT is not set"
            );
            eprintln!("SKIPPED {test} on {name}: MAILVAULT_S3_{name}_ENDPOINT is not set");
            return None;
        };
        let need =
            |field: &str| var(field).unwrap_or_else(|| panic!("MAILVAULT_S3_{name}_{field}"));
        let store = format!("s3://{}", need("BUCKET"));
        Some((
            store,
            vec![
                ("AWS_ENDPOINT".into(), endpoint),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
                ("AWS_REGION".into(), need("REGION")),
                ("AWS_ACCESS_KEY_ID".into(), need("ACCESS_KEY_ID")),
                ("AWS_SECRET_ACCESS_KEY".into(), need("SECRET_ACCESS_KEY")),
            ],
        ))
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Runs `cmd`, panicking with its output unless it succeeds; its stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs the Python script `tests/<script>` of this crate with `python` and `args`
/// (stdin closed), prints its standard output, and fails unless it succeeded, with
/// `what`, the script's output and `logs` (the servers' logs, read only on failure).
/// Returns the script's standard output.
pub fn run_script<S: AsRef<std::ffi::OsStr>>(
    python: &Path,
    script: &str,
    args: &[S],
    what: &str,
    logs: impl FnOnce() -> String,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = output(Command::new(python).arg(&path).args(args));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{what} ({script}: {}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    stdout
}

/// Runs `cmd` (stdin closed) and collects its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// One `mailvault serve` process with its folder, config and accounts; killed on drop.
pub struct MailServer {
    /// The test's folder (config, directory, local store, logs).
    pub dir: tempfile::TempDir,
    /// IMAP port on [`MailServer::host`].
    pub imap: u16,
    /// The IMAP listeners' address: 127.0.0.1, or 127.0.0.2 for a TLS server
    /// ([`MailServer::create_tls`]).
    pub host: &'static str,
    /// IMAPS port on [`MailServer::host`] of a TLS server.
    pub imaps: Option<u16>,
    /// The self-signed certificate (PEM) of a TLS server, its clients' trust anchor.
    pub cert: Option<PathBuf>,
    /// LMTP port on 127.0.0.1.
    pub lmtp: u16,
    /// LMTP on a unix socket (in the test's folder).
    pub lmtp_socket: PathBuf,
    /// The store, as the config names it (absolute for a local directory).
    pub store: String,
    config: PathBuf,
    env: Env,
    child: Option<Child>,
    starts: u32,
}

impl MailServer {
    /// A deployment on `backend` with `accounts` (password [`PASSWORD`]), not started; `None`
    /// (skip) when the backend is not configured.
    pub fn create(test: &str, backend: Backend, accounts: &[&str]) -> Option<Self> {
        Self::create_with(test, backend, accounts, None)
    }

    /// Like [`MailServer::create`], with TLS: a throwaway self-signed certificate made by
    /// `openssl` (`openssl`'s path given) for `localhost`, 127.0.0.1 and 127.0.0.2,
    /// `tls_cert` / `tls_key` set, IMAP (STARTTLS) and IMAPS listening on 127.0.0.2: a
    /// client on 127.0.0.1 is then not on the server's own address (no password before
    /// STARTTLS), one bound to 127.0.0.2 is.
    pub fn create_tls(
        test: &str,
        backend: Backend,
        accounts: &[&str],
        openssl: &Path,
    ) -> Option<Self> {
        Self::create_with(test, backend, accounts, Some(openssl))
    }

    fn create_with(
        test: &str,
        backend: Backend,
        accounts: &[&str],
        openssl: Option<&Path>,
    ) -> Option<Self> {
        let (store, env) = backend.store(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (imap, lmtp) = (free_port(), free_port());
        let config = dir.path().join("mailvault.toml");
        let lmtp_socket = dir.path().join("lmtp.sock");
        let (host, imaps, cert, tls) = match openssl {
            None => ("127.0.0.1", None, None, String::new()),
            Some(openssl) => {
                let imaps = free_port();
                run_ok(
                    Command::new(openssl)
                        .current_dir(dir.path())
                        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
                        .args(["-keyout", "key.pem", "-out", "cert.pem", "-subj"])
                        .args(["/CN=localhost", "-addext"])
                        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2"),
                );
                (
                    "127.0.0.2",
                    Some(imaps),
                    Some(dir.path().join("cert.pem")),
                    format!(
                        "imaps_listen = \"127.0.0.2:{imaps}\"\n\
                         tls_cert = \"cert.pem\"\n\
                         tls_key = \"key.pem\"\n"
                    ),
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "store = \"{store}\"\n\
                 directory = \"directory\"\n\
                 imap_listen = \"{host}:{imap}\"\n\
                 lmtp_listen = \"127.0.0.1:{lmtp}\"\n\
                 lmtp_socket = \"lmtp.sock\"\n\
                 {tls}\
                 [kdf]\nm_kib = 1024\nt = 1\np = 1\n"
            ),
        )
        .expect("write the config");
        let store = match backend {
            Backend::Local => dir.path().join(&store).to_string_lossy().into_owned(),
            _ => store,
        };
        let server = MailServer {
            store,
            dir,
            imap,
            host,
            imaps,
            cert,
            lmtp,
            lmtp_socket,
            config,
            env,
            child: None,
            starts: 0,
        };
        server.command(&["init"]);
        let password = server.dir.path().join("password");
        std::fs::write(&password, format!("{PASSWORD}\n")).expect("password file");
        for name in accounts {
            let mut cmd = Command::new(BIN);
            cmd.args(["account", "create", "--config"])
                .arg(&server.config)
                .args(["--name", name, "--password-file"])
                .arg(&password)
                .envs(server.env.iter().cloned());
            run_ok(&mut cmd);
        }
        Some(server)
    }

    fn command(&self, args: &[&str]) {
        self.run(args, &[]);
    }

    /// Runs `mailvault <args> --config <config> <more>` with the server's environment;
    /// its stdout (panics unless it succeeds).
    pub fn run(&self, args: &[&str], more: &[&std::ffi::OsStr]) -> Vec<u8> {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .args(more)
            .envs(self.env.iter().cloned());
        run_ok(&mut cmd)
    }

    /// Runs `mailvault <args> --config <config> --name <name> --password-file <a file
    /// holding PASSWORD>` (an operator job: import, export) with the server's environment
    /// and stdin closed; its output, whatever its exit status.
    pub fn account_job(&self, args: &[&str], name: &str) -> Output {
        let password = self.dir.path().join("password");
        self.job(
            args,
            name,
            &["--password-file".as_ref(), password.as_os_str()],
        )
    }

    /// Runs `mailvault <args> --config <config> --name <name>` given no secret (an
    /// import into a hardened account) with the server's environment and stdin closed;
    /// its output, whatever its exit status.
    pub fn keyless_job(&self, args: &[&str], name: &str) -> Output {
        self.job(args, name, &[])
    }

    fn job(&self, args: &[&str], name: &str, more: &[&std::ffi::OsStr]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--name", name])
            .args(more)
            .envs(self.env.iter().cloned());
        output(&mut cmd)
    }

    /// The environment of the server's commands (the S3 settings).
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The log file of start number `n` (1-based).
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("server-{n}.log"))
    }

    /// Every log of this server so far, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                format!(
                    "--- server log {n} ---\n{}",
                    std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Starts `mailvault serve` and waits until its TCP ports accept connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already started");
        self.starts += 1;
        let log = self.log_path(self.starts);
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("MAILVAULT_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ports = vec![(self.host, self.imap), ("127.0.0.1", self.lmtp)];
        ports.extend(self.imaps.map(|port| (self.host, port)));
        for (host, port) in ports {
            while TcpStream::connect((host, port)).is_err() {
                if let Ok(Some(status)) = self.child.as_mut().expect("child").try_wait() {
                    panic!(
                        "the server exited ({status}) before listening on {port}:\n{}",
                        self.logs()
                    );
                }
                assert!(Instant::now() < deadline, "nothing listens on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL (no shutdown of any kind) and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `mailvault companion` process on a device folder of its own: the account `name`
/// enrolled at `server` in key model 1 (`account enroll`, `device init` on the device,
/// `account accept` of the public keys it printed), IMAP on 127.0.0.1 for the device's
/// mail client, the server's bucket read and written directly. Killed on drop.
pub struct CompanionProcess {
    /// The device's folder (key file, local directory, config, logs), apart from the
    /// server's.
    pub dir: tempfile::TempDir,
    /// IMAP port on 127.0.0.1.
    pub imap: u16,
    /// The login of the device's mail client.
    pub login: String,
    /// The epoch public keys the device printed (`<epoch> <hex>` lines).
    pub public_keys: String,
    config: PathBuf,
    env: Env,
    child: Option<Child>,
}

impl CompanionProcess {
    /// Enrolls `name` at `server` and sets up the device (not started). The client's
    /// password is [`PASSWORD`].
    pub fn enroll(server: &MailServer, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let enrollment = server.dir.path().join(format!("{name}.enrollment"));
        server.run(
            &["account", "enroll", "--name", name],
            &["--out".as_ref(), enrollment.as_os_str()],
        );
        let public_keys = String::from_utf8(run_ok(
            Command::new(BIN)
                .args(["device", "init", "--store", &server.store, "--local"])
                .arg(dir.path().join("local"))
                .arg("--enrollment")
                .arg(&enrollment)
                .arg("--device-key")
                .arg(dir.path().join("device.key"))
                .envs(server.env().iter().cloned()),
        ))
        .expect("UTF-8 public keys");
        // The enrollment holds the account secret: gone once the device is set up.
        std::fs::remove_file(&enrollment).expect("remove the enrollment");
        let keys_file = dir.path().join("public-keys");
        std::fs::write(&keys_file, &public_keys).expect("write the public keys");
        server.run(
            &["account", "accept", "--name", name],
            &["--public-keys".as_ref(), keys_file.as_os_str()],
        );
        let imap = free_port();
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).expect("password");
        let config = dir.path().join("companion.toml");
        std::fs::write(
            &config,
            format!(
                "store = \"{}\"\nlocal = \"local\"\ndevice_key = \"device.key\"\n\
                 imap_listen = \"127.0.0.1:{imap}\"\nlogin = \"{name}\"\n\
                 password_file = \"password\"\n",
                server.store
            ),
        )
        .expect("write the companion config");
        CompanionProcess {
            dir,
            imap,
            login: name.to_string(),
            public_keys,
            config,
            env: server.env().clone(),
            child: None,
        }
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("companion.log")
    }

    /// The companion's log, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "--- companion log ---\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        )
    }

    /// Starts `mailvault companion` and waits until its IMAP port accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already started");
        let child = Command::new(BIN)
            .args(["companion", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("MAILVAULT_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log_path()).expect("log file"))
            .spawn()
            .expect("start the companion");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.imap)).is_err() {
            if let Ok(Some(status)) = self.child.as_mut().expect("child").try_wait() {
                panic!("the companion exited ({status}):\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "the companion does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the process (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CompanionProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One IMAP LOGIN on `port` of 127.0.0.1 over a plain connection: the tagged reply line.
pub fn imap_login(port: u16, user: &str, password: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to IMAP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("* OK"), "greeting {line:?}");
    (&stream)
        .write_all(format!("a1 LOGIN \"{user}\" \"{password}\"\r\n").as_bytes())
        .expect("send LOGIN");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a reply");
        if line.starts_with("a1 ") || line.is_empty() {
            return line.trim_end().to_string();
        }
    }
}

/// The real-mail corpus of the library's tests (`tests/corpus/mail-parser/*/*.eml`), as
/// (name, bytes), sorted by name.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    let mut out = Vec::new();
    for group in std::fs::read_dir(&root).expect("the corpus folder") {
        let group = group.expect("corpus entry").path();
        if !group.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&group).expect("a corpus group") {
            let file = file.expect("corpus file").path();
            if file.extension().is_some_and(|e| e == "eml") {
                let name = format!(
                    "{}/{}",
                    group.file_name().expect("name").to_string_lossy(),
                    file.file_name().expect("name").to_string_lossy()
                );
                out.push((name, std::fs::read(&file).expect("read a corpus file")));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 100, "the corpus has {} messages", out.len());
    out
}

/// `bytes` with every line ending CRLF (a lone LF becomes CRLF) and a final CRLF: what an
/// SMTP/LMTP client sends and what IMAP returns.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A message as IMAP's BODY[] serves it: [`crlf`], and each NUL byte as 0x80 (a literal
/// carries no NUL, RFC 9051 4.3 `CHAR8`; Dovecot does the same for delivered mail). The
/// size is that of [`crlf`].
pub fn as_served(bytes: &[u8]) -> Vec<u8> {
    crlf(bytes)
        .into_iter()
        .map(|b| if b == 0 { 0x80 } else { b })
        .collect()
}

/// `bytes` with CRLF line endings turned into LF (how a Maildir holds a message).
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
