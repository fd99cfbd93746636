//! The proxy workload of `cargo xtask bench`: HTTPS requests to a local origin
//! (`progs/https_server.py`), straight from the host and from inside `sandbox run` through the
//! session proxy, once tunnelled (an allowed host) and once TLS-intercepted and classified (an
//! inspected host, with the `cloud-deletes` catalogue loaded). Nothing is held: the requests are
//! plain GETs, the cost measured is the proxy's on untrapped traffic.
//!
//! Latency: one curl process per variant sends the requests one after another over one
//! keep-alive connection; curl's `time_total` of each transfer is a sample (the first few, which
//! include connecting, are dropped). Throughput: a 64 MiB download, curl's `speed_download`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::Check;

/// DESIGN.md: untrapped HTTPS requests add under 1 ms at the median.
const ADDED_TARGET_MS: f64 = 1.0;
/// Samples dropped at the start of each latency run (connection set-up, warm-up).
const WARMUP: usize = 5;

/// What the proxy workload produced for the report.
pub struct Outcome {
    /// A markdown section (heading included).
    pub section: String,
    /// Targets.
    pub checks: Vec<Check>,
    /// (what, command line).
    pub commands: Vec<(String, String)>,
}

struct Origin {
    child: Child,
    port: u16,
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(dir: &Path, script: &str) -> Result<()> {
    let o = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !o.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// CA and `localhost` certificate for the origin, with openssl.
fn certificates(dir: &Path) -> Result<()> {
    sh(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=bench CA' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null")?;
    sh(dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null")?;
    fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    sh(dir, "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext 2>/dev/null")?;
    sh(dir, "chmod 0644 ca.pem srv.pem")
}

fn start_origin(root: &Path, dir: &Path) -> Result<Origin> {
    let port_file = dir.join("port");
    let child = Command::new("python3")
        .arg(root.join("xtask/progs/https_server.py"))
        .arg(dir.join("srv.pem"))
        .arg(dir.join("srv.key"))
        .arg(&port_file)
        .stdout(Stdio::null())
        .spawn()
        .context("starting python3 xtask/progs/https_server.py")?;
    let t0 = Instant::now();
    loop {
        if let Ok(p) = fs::read_to_string(&port_file) {
            return Ok(Origin {
                child,
                port: p.trim().parse().context("origin port")?,
            });
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the HTTPS origin did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How one variant runs curl.
struct Way {
    name: &'static str,
    /// `sandbox run` options before `--`; `None`: curl on the host, straight to the origin.
    sandbox: Option<Vec<String>>,
    /// curl trusts the origin's CA itself (direct and tunnelled); intercepted, it trusts the
    /// session bundle the sandbox sets up.
    cacert: bool,
}

fn curl_cmd(sandbox: &Path, base: &Path, dir: &Path, way: &Way, curl_args: &[String]) -> Command {
    let mut args: Vec<String> = Vec::new();
    if way.cacert {
        args.push("--cacert".into());
        args.push(dir.join("ca.pem").display().to_string());
    }
    args.extend(curl_args.iter().cloned());
    match &way.sandbox {
        None => {
            let mut c = Command::new("curl");
            c.arg("--noproxy").arg("*").args(&args);
            c
        }
        Some(opts) => {
            let mut c = Command::new(sandbox);
            c.env("SANDBOX_STATE_DIR", base.join("state"))
                .env("SANDBOX_LOG_DIR", base.join("logs"))
                .args(["run", "--user", "nobody", "--quiet"])
                .args(opts)
                .arg("--")
                .arg("curl")
                .args(&args);
            c
        }
    }
}

fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        let a = a.to_string_lossy();
        if a.len() > 60 {
            s.push_str(" …");
            break;
        }
        s.push(' ');
        s.push_str(&a);
    }
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the proxy workload. `base` is the scratch directory (root, 0755).
pub fn run(root: &Path, sandbox: &Path, base: &Path, requests: usize) -> Result<Outcome> {
    let dir = base.join("proxy");
    fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    let origin = start_origin(root, &dir)?;
    let profile = dir.join("inspect.toml");
    fs::write(
        &profile,
        format!(
            "[network]\ninspect = [\"localhost\"]\nhold = [\"cloud-deletes\"]\nupstream_ca = [\"{}\"]\n",
            dir.join("ca.pem").display()
        ),
    )?;
    let ways = [
        Way {
            name: "direct",
            sandbox: None,
            cacert: true,
        },
        Way {
            name: "tunnelled (allow)",
            sandbox: Some(vec!["--allow-host".into(), "localhost".into()]),
            cacert: true,
        },
        Way {
            name: "intercepted (inspect)",
            sandbox: Some(vec!["--profile".into(), profile.display().to_string()]),
            cacert: false,
        },
    ];
    let small = format!("https://localhost:{}/small", origin.port);
    let big = format!("https://localhost:{}/big", origin.port);
    let mut commands = Vec::new();
    let mut lat: Vec<(f64, f64, usize)> = Vec::new(); // median, p90 (ms), samples
    let mut tput: Vec<f64> = Vec::new(); // MB/s
    for way in &ways {
        let mut args: Vec<String> = vec!["-sS".into(), "-w".into(), "%{time_total}\\n".into()];
        for _ in 0..requests + WARMUP {
            args.push("-o".into());
            args.push("/dev/null".into());
            args.push(small.clone());
        }
        let mut c = curl_cmd(sandbox, base, &dir, way, &args);
        commands.push((format!("proxy latency, {}", way.name), show(&c)));
        let o = c.output().context("curl")?;
        if !o.status.success() {
            bail!(
                "proxy latency, {}: curl failed: {}",
                way.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .skip(WARMUP)
            .map(|s| s * 1000.0)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        lat.push((percentile(&v, 0.5), percentile(&v, 0.9), v.len()));

        let args: Vec<String> = [
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download}\\n",
            &big,
            "-o",
            "/dev/null",
            &big,
            "-o",
            "/dev/null",
            &big,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut c = curl_cmd(sandbox, base, &dir, way, &args);
        commands.push((format!("proxy throughput, {}", way.name), show(&c)));
        let o = c.output().context("curl")?;
        if !o.status.success() {
            bail!(
                "proxy throughput, {}: curl failed: {}",
                way.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let mut v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|b| b / 1e6)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        tput.push(percentile(&v, 0.5));
    }
    drop(origin);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Proxy\n\n\
         HTTPS GETs of 256 bytes to a local origin (`xtask/progs/https_server.py`, Python, HTTP/1.1 \
         keep-alive), {requests} per variant over one connection (the first {WARMUP} dropped); \
         curl's `time_total` per request. Throughput: median of three 64 MiB downloads. \
         *Intercepted* is the worst case: TLS terminated with the session CA, every request \
         classified against `cloud-deletes`, and TLS again to the origin.\n\n\
         | variant | median ms | p90 ms | added at the median | throughput MB/s | vs direct |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (i, way) in ways.iter().enumerate() {
        let (m, p90, _) = lat[i];
        let _ = writeln!(
            s,
            "| {} | {m:.3} | {p90:.3} | {} | {:.0} | {} |",
            way.name,
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:+.3} ms", m - lat[0].0)
            },
            tput[i],
            if i == 0 {
                "-".to_string()
            } else {
                format!("{:.2}x", tput[i] / tput[0])
            },
        );
    }
    let mut checks = Vec::new();
    for (i, way) in ways.iter().enumerate().skip(1) {
        let added = lat[i].0 - lat[0].0;
        checks.push(Check {
            target: format!(
                "proxy, {}: untrapped HTTPS adds < {ADDED_TARGET_MS} ms at the median",
                way.name
            ),
            measured: format!("{added:+.3} ms ({:.3} vs {:.3} ms)", lat[i].0, lat[0].0),
            met: added < ADDED_TARGET_MS,
        });
    }
    Ok(Outcome {
        section: s,
        checks,
        commands,
    })
}
