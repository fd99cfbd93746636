//! The proxy workload of `cargo xtask bench`: HTTPS requests to a local origin
//! (`progs/https_server.py`), straight from the host and from inside `sandbox run` through the
//! session proxy, once tunnelled (an allowed host) and once TLS-intercepted and classified (an
//! inspected host, with the `cloud-deletes` catalogue loaded). Nothing is held: the requests are
//! plain GETs, the cost measured is the proxy's on untrapped traffic.
//!
//! Latency: one curl process per variant sends the requests one after another over one
//! keep-alive connection; curl's `time_total` of each transfer is a sample (the first few, which
//! include connecting, are dropped). Throughput: a 64 MiB download, curl's `speed_download`.
//!
//! Server-sent events: the origin streams events a fixed gap apart, each carrying the
//! CLOCK_MONOTONIC time it was sent; `progs/sse_client.py` (inside the sandbox for the proxied
//! variants) notes when each arrived, on the same clock (no time namespace in a session). The
//! difference is the per-event delay, which shows a proxy that buffers a streamed response.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::{percentile, Check, Outcome};

/// DESIGN.md: untrapped HTTPS requests add under 1 ms at the median.
const ADDED_TARGET_MS: f64 = 1.0;
/// Samples dropped at the start of each latency run (connection set-up, warm-up).
const WARMUP: usize = 5;

/// Python for the SSE client: the system's, which uid 65534 can run (a python3 earlier in
/// root's PATH may live under /root, 0700).
const PYTHON: &str = "/usr/bin/python3";

/// How much of the streamed-events workload to run.
pub struct Sse {
    /// Streams per variant (alternating between variants).
    pub streams: usize,
    /// Events per stream.
    pub events: usize,
    /// Gap between events.
    pub gap_ms: u64,
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

/// `sandbox run --user nobody --quiet OPTS -- PROG ARGS` with the scratch state and log dirs.
fn sandboxed(sandbox: &Path, base: &Path, opts: &[String], prog: &str, args: &[String]) -> Command {
    let mut c = Command::new(sandbox);
    c.env("SANDBOX_STATE_DIR", base.join("state"))
        .env("SANDBOX_LOG_DIR", base.join("logs"))
        .args(["run", "--user", "nobody", "--quiet"])
        .args(opts)
        .arg("--")
        .arg(prog)
        .args(args);
    c
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
        Some(opts) => sandboxed(sandbox, base, opts, "curl", &args),
    }
}

/// `c` as a shell command line for the report: `$BASE` for the scratch directory `base`,
/// `$PORT` for the origin's port, and a run of repeated `-o /dev/null URL` as one with a count.
fn show(c: &Command, root: &Path, base: &Path, port: u16) -> String {
    let word = |w: &str| {
        crate::bench::shell_word(w, base, root)
            .replace(&format!("localhost:{port}"), "localhost:$PORT")
    };
    let mut words: Vec<String> = c
        .get_envs()
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                word(&v?.to_string_lossy())
            ))
        })
        .collect();
    words.push(word(&c.get_program().to_string_lossy()));
    let args: Vec<String> = c.get_args().map(|a| word(&a.to_string_lossy())).collect();
    let mut i = 0;
    while i < args.len() {
        let triple = args.get(i..i + 3);
        let mut n = 1;
        while triple.is_some() && args.get(i + 3 * n..i + 3 * n + 3) == triple {
            n += 1;
        }
        match triple {
            Some(t) if n > 1 => {
                words.push(format!("{} (x{n})", t.join(" ")));
                i += 3 * n;
            }
            _ => {
                words.push(args[i].clone());
                i += 1;
            }
        }
    }
    words.join(" ")
}

/// Runs `c` (recording it as `what`, shown by `show`) and returns the numbers it printed, one
/// per line, in order.
fn curl_numbers(
    mut c: Command,
    what: &str,
    commands: &mut Vec<(String, String)>,
    show: impl Fn(&Command) -> String,
) -> Result<Vec<f64>> {
    commands.push((what.to_string(), show(&c)));
    let o = c.output().context("curl")?;
    if !o.status.success() {
        bail!(
            "{what}: curl failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect())
}

/// Runs the proxy workload. `base` is the scratch directory (root, 0755).
pub fn run(
    root: &Path,
    sandbox: &Path,
    base: &Path,
    requests: usize,
    sse: &Sse,
) -> Result<Outcome> {
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
        let mut v = curl_numbers(
            curl_cmd(sandbox, base, &dir, way, &args),
            &format!("proxy latency, {}", way.name),
            &mut commands,
            |c| show(c, root, base, origin.port),
        )?;
        v.drain(..WARMUP.min(v.len()));
        let mut v: Vec<f64> = v.into_iter().map(|s| s * 1000.0).collect();
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
        let mut v: Vec<f64> = curl_numbers(
            curl_cmd(sandbox, base, &dir, way, &args),
            &format!("proxy throughput, {}", way.name),
            &mut commands,
            |c| show(c, root, base, origin.port),
        )?
        .into_iter()
        .map(|b| b / 1e6)
        .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        tput.push(percentile(&v, 0.5));
    }
    let mut out = Outcome::default();
    let streamed = if Path::new(PYTHON).is_file() {
        Some(sse_runs(
            root,
            sandbox,
            base,
            &ways,
            origin.port,
            sse,
            &mut commands,
        )?)
    } else {
        out.notes.push(format!(
            "proxy, server-sent events: skipped, {PYTHON} (for the client inside the sandbox) \
             does not exist."
        ));
        None
    };
    drop(origin);

    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Proxy\n\n\
         HTTPS GETs of 256 bytes to a local origin (`xtask/progs/https_server.py`, Python, HTTP/1.1 \
         keep-alive, TCP_NODELAY), {requests} per variant over one connection (the first {WARMUP} dropped); \
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
    if let Some(delays) = streamed {
        let _ = writeln!(
            s,
            "\nServer-sent events: the origin streams {} events {} ms apart (HTTP/1.1 chunked, \
             `text/event-stream`, TCP_NODELAY), {} stream(s) per variant, alternating; each \
             event carries its send time, the client (`xtask/progs/sse_client.py`, Python) notes \
             its arrival, both on CLOCK_MONOTONIC. Per-event delay = arrival − send.\n\n\
             | variant | events | p50 ms | p99 ms | max ms | added at the median |\n\
             |---|---:|---:|---:|---:|---:|",
            sse.events, sse.gap_ms, sse.streams
        );
        let p50 = |v: &[f64]| percentile(v, 0.5);
        for (i, way) in ways.iter().enumerate() {
            let v = &delays[i];
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} |",
                way.name,
                v.len(),
                p50(v),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN),
                if i == 0 {
                    "-".to_string()
                } else {
                    format!("{:+.3} ms", p50(v) - p50(&delays[0]))
                },
            );
        }
        for (i, way) in ways.iter().enumerate().skip(1) {
            let added = p50(&delays[i]) - p50(&delays[0]);
            checks.push(Check {
                target: format!(
                    "proxy, {}: a streamed (SSE) event is delayed < {ADDED_TARGET_MS} ms more \
                     than direct, at the median",
                    way.name
                ),
                measured: format!(
                    "{added:+.3} ms ({:.3} vs {:.3} ms; p99 {:.3} vs {:.3} ms)",
                    p50(&delays[i]),
                    p50(&delays[0]),
                    percentile(&delays[i], 0.99),
                    percentile(&delays[0], 0.99)
                ),
                met: added < ADDED_TARGET_MS,
            });
        }
    }
    out.sections.push(s);
    out.checks = checks;
    out.commands = commands;
    Ok(out)
}

/// The streamed-events part: per-event delays (ms, ascending) of each way.
fn sse_runs(
    root: &Path,
    sandbox: &Path,
    base: &Path,
    ways: &[Way],
    port: u16,
    sse: &Sse,
    commands: &mut Vec<(String, String)>,
) -> Result<Vec<Vec<f64>>> {
    let dir = base.join("proxy");
    // a copy uid 65534 can read (the workspace may not be reachable for it)
    let client = dir.join("sse_client.py");
    fs::copy(root.join("xtask/progs/sse_client.py"), &client)
        .context("copying xtask/progs/sse_client.py")?;
    let url = format!(
        "https://localhost:{port}/sse?n={}&gap_ms={}",
        sse.events, sse.gap_ms
    );
    let cmd = |way: &Way| {
        let mut words = vec![client.display().to_string(), url.clone()];
        if way.cacert {
            words.push(dir.join("ca.pem").display().to_string());
        }
        match &way.sandbox {
            None => {
                let mut c = Command::new(PYTHON);
                c.args(&words);
                for k in ["https_proxy", "HTTPS_PROXY"] {
                    c.env_remove(k);
                }
                c
            }
            Some(opts) => sandboxed(sandbox, base, opts, PYTHON, &words),
        }
    };
    for way in ways {
        commands.push((
            format!("proxy SSE, {}", way.name),
            show(&cmd(way), root, base, port),
        ));
    }
    let mut delays: Vec<Vec<f64>> = ways.iter().map(|_| Vec::new()).collect();
    eprint!("proxy SSE: ");
    for rep in 0..sse.streams {
        for i in 0..ways.len() {
            let k = (rep + i) % ways.len();
            let o = cmd(&ways[k])
                .stdin(Stdio::null())
                .output()
                .context("running the SSE client")?;
            if !o.status.success() {
                bail!(
                    "proxy SSE, {}: the client failed ({}): {}",
                    ways[k].name,
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&o.stdout);
            let got: Vec<f64> = text
                .lines()
                .filter_map(|l| {
                    let (sent, recv) = l.split_once(' ')?;
                    let (sent, recv) =
                        (sent.parse::<i64>().ok()?, recv.trim().parse::<i64>().ok()?);
                    Some((recv - sent) as f64 / 1e6)
                })
                .collect();
            if got.len() != sse.events {
                bail!(
                    "proxy SSE, {}: {} of {} events arrived",
                    ways[k].name,
                    got.len(),
                    sse.events
                );
            }
            delays[k].extend(got);
        }
        eprint!(".");
    }
    eprintln!(" done");
    for v in &mut delays {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    Ok(delays)
}
