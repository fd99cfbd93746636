//! Where the numbers come from: hardware, kernel, build, and how busy the machine was with other
//! work while the benchmark ran.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::bench::output_of;
use crate::report::Machine;

/// CPU time of every process, taken at the start of the run to tell afterwards how much of the
/// machine other work used.
pub struct LoadProbe {
    at: Instant,
    busy_ticks: u64,
    own_cpu_s: f64,
    procs: HashMap<u32, (String, u64)>,
}

/// Clock ticks per second of /proc.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Non-idle ticks of all CPUs (/proc/stat: user nice system idle iowait irq softirq steal).
fn busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// (comm, utime + stime) of every live process.
fn proc_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: the fields follow the last ')'
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // fields 14 and 15 of stat(5): utime, stime; f[0] is field 3
        let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        out.insert(pid, (comm, t(11) + t(12)));
    }
    out
}

/// CPU seconds used by this process and its waited-for descendants.
fn own_cpu_s() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills a zeroed rusage.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: ru is a valid rusage.
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            total += tv(ru.ru_utime) + tv(ru.ru_stime);
        }
    }
    total
}

impl LoadProbe {
    /// Takes the first snapshot.
    pub fn start() -> LoadProbe {
        LoadProbe {
            at: Instant::now(),
            busy_ticks: busy_ticks(),
            own_cpu_s: own_cpu_s(),
            procs: proc_ticks(),
        }
    }

    /// How much CPU other work used since [`LoadProbe::start`], in words.
    pub fn finish(&self, nproc: usize) -> String {
        let wall = self.at.elapsed().as_secs_f64();
        let hz = ticks_per_s();
        let busy = busy_ticks().saturating_sub(self.busy_ticks) as f64 / hz;
        let others = (busy - (own_cpu_s() - self.own_cpu_s)).max(0.0);
        let mut top: Vec<(String, f64)> = proc_ticks()
            .into_iter()
            .filter(|(pid, _)| *pid != std::process::id())
            .filter_map(|(pid, (comm, t))| {
                let (_, t0) = self.procs.get(&pid)?;
                let s = t.saturating_sub(*t0) as f64 / hz;
                (s / wall >= 0.05).then_some((comm, s / wall))
            })
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(3);
        let mut text = format!(
            "{:.2} of {nproc} CPUs used by other work on average during the run",
            if wall > 0.0 { others / wall } else { 0.0 }
        );
        if !top.is_empty() {
            let names: Vec<String> = top.iter().map(|(c, x)| format!("`{c}` {x:.2}")).collect();
            text.push_str(&format!(" (largest: {})", names.join(", ")));
        }
        text
    }
}

/// The machine, kernel and build the numbers come from.
pub fn describe(
    root: &Path,
    disk: &Path,
    logs: &Path,
    date: String,
    load: String,
) -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = output_of(Command::new("uname").arg("-r"))?;
    let rev = output_of(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(root),
    )
    .unwrap_or_else(|_| "unknown revision".into());
    let dirty = output_of(
        Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(root),
    )
    .is_ok_and(|s| !s.is_empty());
    let revision = if dirty {
        format!("`{rev}` with uncommitted changes")
    } else {
        format!("`{rev}`")
    };
    let disk_fs = output_of(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE,SOURCE", "--target"])
            .arg(disk),
    )
    .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" on "))
    .unwrap_or_else(|_| "unknown".into());
    Ok(Machine {
        cpu,
        nproc: nproc(),
        mem_gib: mem_kib / (1024.0 * 1024.0),
        kernel,
        date,
        revision,
        backend: backend_of(logs),
        disk_fs,
        load,
    })
}

/// `nproc`: CPUs this process may run on.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The `backend` field of a session_start record in the audit logs under `logs`.
fn backend_of(logs: &Path) -> String {
    const KEY: &str = "\"backend\":\"";
    let files = fs::read_dir(logs).into_iter().flatten().flatten();
    for f in files {
        let Ok(text) = fs::read_to_string(f.path()) else {
            continue;
        };
        if let Some(rest) = text.find(KEY).map(|at| &text[at + KEY.len()..]) {
            return rest.split('"').next().unwrap_or("unknown").to_string();
        }
    }
    "unknown".into()
}
