//! Shared harness for the privileged tests: they run the real `sandbox` binary against the real
//! kernel. Without root they skip with a reason, except under CI, where they fail.

#![allow(dead_code)]

pub mod load;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The uid/gid the sandboxed commands run as in tests (nobody).
pub const UID: u32 = 65534;

/// True when the test may run; false (after printing why) when it should skip.
/// Panics under CI: a privileged test must never silently skip there.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs root, and CI is set: refusing to skip");
    }
    eprintln!("SKIP: this test needs root (run the tests as root)");
    false
}

/// The sandbox binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sandbox")
}

/// A private world for one test: state dir, log dir, and a work dir owned by the test user.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub logs: PathBuf,
    pub work: PathBuf,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::Builder::new()
            .prefix("guard-test-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let base = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let state = base.join("state");
        let logs = base.join("logs");
        let work = base.join("work");
        std::fs::create_dir(&work).expect("mkdir work");
        chown(&work);
        World {
            tmp,
            state,
            logs,
            work,
        }
    }

    /// A command line for `sandbox SUBCOMMAND ...` in this world.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("SANDBOX_STATE_DIR", &self.state)
            .env("SANDBOX_LOG_DIR", &self.logs)
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID");
        c
    }

    /// Starts `sandbox run --user nobody --session S [--protect P]... EXTRA -- sh -c SCRIPT`.
    pub fn run(&self, session: &str, protect: &[&Path], extra: &[&str], script: &str) -> Running {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--user".into(),
            UID.to_string(),
            "--session".into(),
            session.into(),
        ];
        for p in protect {
            args.push("--protect".into());
            args.push(p.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&a, session)
    }

    /// Starts `sandbox ARGS...` (stdout and stderr collected) as session `session`.
    pub fn spawn(&self, args: &[&str], session: &str) -> Running {
        let child = self
            .cmd(args)
            .current_dir(&self.work)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sandbox");
        Running::new(child, session)
    }

    /// `sandbox pending --json`, parsed.
    pub fn pending(&self) -> Vec<Value> {
        let out = self.cmd(&["pending", "--json"]).output().expect("pending");
        assert!(
            out.status.success(),
            "pending failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("pending json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until a hold of `session` is pending; returns it.
    pub fn wait_hold(&self, session: &str, timeout: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(h) = self.pending().into_iter().find(|h| h["session"] == session) {
                return h;
            }
            assert!(
                t0.elapsed() < timeout,
                "no hold appeared for session {session} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Decides hold `id`: `approve` or `deny`, with extra options.
    pub fn decide(&self, verb: &str, id: &str, extra: &[&str]) {
        let mut a = vec![verb, id];
        a.extend_from_slice(extra);
        let out = self.cmd(&a).output().expect("decide");
        assert!(
            out.status.success(),
            "{verb} {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The audit log lines of a session.
    pub fn log(&self, session: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.logs.join(format!("{session}.jsonl")))
            .expect("read audit log");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit line"))
            .collect()
    }

    /// Makes a directory tree owned by the test user.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.work.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        chown_tree(&self.work);
        p
    }

    /// Writes a file owned by the test user.
    pub fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.work.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        chown_tree(&self.work);
        p
    }
}

/// Waits for the first hold of `session` and decides it (`approve` or `deny`); returns it.
pub fn decide_first(w: &World, session: &str, verb: &str) -> Value {
    let h = w.wait_hold(session, Duration::from_secs(120));
    w.decide(verb, h["id"].as_str().expect("hold id"), &[]);
    h
}

/// Runs `script` in a session protecting `prot` (with `extra` options), denying every hold
/// once as it comes; returns (the holds, the output).
pub fn deny_all(
    w: &World,
    extra: &[&str],
    session: &str,
    prot: &Path,
    script: &str,
) -> (Vec<Value>, Output) {
    decide_each(w, session, &[prot], extra, "deny", script)
}

/// Runs `script` in session `session` (protecting `protect`, with `extra` options), deciding
/// every hold with `verb` (scope once) as it comes; returns (the holds, the output).
pub fn decide_each(
    w: &World,
    session: &str,
    protect: &[&Path],
    extra: &[&str],
    verb: &str,
    script: &str,
) -> (Vec<Value>, Output) {
    let timeout = Duration::from_secs(120);
    let mut r = w.run(session, protect, extra, script);
    let mut seen = Vec::new();
    let t0 = Instant::now();
    loop {
        for h in w.pending().into_iter().filter(|h| h["session"] == session) {
            w.decide(
                verb,
                h["id"].as_str().expect("hold id"),
                &["--scope", "once"],
            );
            seen.push(h);
        }
        if r.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(t0.elapsed() < timeout, "session {session} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    (seen, r.finish(timeout))
}

/// A test-user-owned tree `tree/` of `n` files in 10 nested directories.
pub fn make_tree(w: &World, n: usize) -> PathBuf {
    let root = w.dir("tree");
    for d in 0..10 {
        let sub = root.join(format!("d{d}/inner"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for i in 0..n / 10 {
            std::fs::write(sub.join(format!("f{i}")), "x").expect("write");
        }
    }
    chown_tree(&root);
    root
}

/// Number of non-directories below `p`.
pub fn count_files(p: &Path) -> usize {
    std::fs::read_dir(p)
        .expect("read_dir")
        .flatten()
        .map(|e| {
            if e.file_type().expect("file type").is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// A TCP server on 127.0.0.1 (a free port) that accepts and closes connections, counting them.
pub fn counting_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("local addr").port();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    (port, n)
}

/// A running `sandbox run`; killed (with its whole session) if dropped unfinished.
pub struct Running {
    pub child: Child,
    pub session: String,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

fn reader(
    r: Option<impl std::io::Read + Send + 'static>,
) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

impl Running {
    /// Wraps a spawned `sandbox` whose stdout and stderr are piped.
    pub fn from_child(child: Child, session: &str) -> Running {
        Running::new(child, session)
    }

    fn new(mut child: Child, session: &str) -> Running {
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        Running {
            child,
            session: session.into(),
            out,
            err,
        }
    }

    /// Waits for the session to end (at most `timeout`, then kills it and fails).
    pub fn finish(mut self, timeout: Duration) -> Output {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self
                    .err
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                panic!(
                    "sandbox did not finish within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&err)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = self
            .out
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// stdout and stderr as text, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn chown(p: &Path) {
    std::os::unix::fs::lchown(p, Some(UID), Some(UID)).expect("chown");
}

pub fn chown_tree(p: &Path) {
    chown(p);
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).expect("read_dir").flatten() {
            chown_tree(&e.path());
        }
    }
}

/// Extra link flags of a helper program.
pub fn prog_libs(name: &str) -> &'static [&'static str] {
    match name {
        "uring_unlinkat" => &["-luring"],
        _ => &[],
    }
}

/// Compiles tests/progs/NAME.c once per test binary; returns the executable's path. Inside the
/// VM (no compiler there) the programs come prebuilt from `$GUARD_PROGS_DIR`.
pub fn prog(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("GUARD_PROGS_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(
            p.exists(),
            "{} is missing from GUARD_PROGS_DIR",
            p.display()
        );
        return p;
    }
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("guard-progs-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d
    });
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = dir.path().join(name);
    if !out.exists() {
        let src = Path::new("tests/progs").join(format!("{name}.c"));
        cc(&src, &out, prog_libs(name));
    }
    out
}

/// Compiles C file `src` (a path relative to the workspace root) to `out` with `-O2 -pthread`
/// and `extra` arguments (libraries, `-shared`, `-D...`); panics when it fails.
pub fn cc(src: &Path, out: &Path, extra: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(src);
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(out)
        .arg(&src)
        // After the source: libraries must follow what uses them.
        .args(extra)
        .status()
        .expect("run cc (install gcc)");
    assert!(st.success(), "compiling {} failed", src.display());
}

/// True when every program in `tools` is on PATH (and, for Python modules given as
/// `python3:MODULE`, importable); false (after printing why) when the test should skip.
/// Panics under CI: a test must never silently skip there.
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| match t.strip_prefix("python3:") {
            Some(module) => !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs {missing:?} (scripts/setup.sh installs them), and CI is set: refusing to skip");
    }
    eprintln!("SKIP: this test needs {missing:?} (run scripts/setup.sh)");
    false
}

/// True when BPF LSM programs load here (checked with `sandbox doctor`). Inside the test VM
/// (`GUARD_IN_VM`) a refusal is a failure; elsewhere the test skips with the reason, even under
/// CI: hosts like the CI machine refuse LSM programs, and CI runs these tests in the VMs
/// (`cargo xtask vm-test`).
pub fn lsm_available() -> bool {
    if !privileged() {
        return false;
    }
    let out = std::process::Command::new(bin())
        .args(["doctor", "--json"])
        .output()
        .expect("sandbox doctor");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if v["backend"] == "lsm" {
        return true;
    }
    if std::env::var_os("GUARD_IN_VM").is_some() {
        panic!(
            "BPF LSM programs do not load in the test VM: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("SKIP: this kernel refuses BPF LSM programs (run `cargo xtask vm-test`)");
    false
}
