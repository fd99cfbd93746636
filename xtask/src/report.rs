//! Statistics and the markdown of `cargo xtask bench` (the table on stdout and
//! `docs/BENCHMARKS.md`).

use std::fmt::Write as _;
use std::time::Duration;

/// One way of running a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The command alone, spawned as uid/gid 65534.
    Bare,
    /// Under `notify_floor`: the same seccomp filter, every notification answered CONTINUE.
    Floor,
    /// Under `sandbox run`.
    Sandbox,
    /// Under `bwrap --dev-bind / /` (a peer).
    Bwrap,
    /// Under `firejail --quiet --noprofile`, spawned as root (a peer).
    Firejail,
    /// Under `srt` (Anthropic's sandbox-runtime; a peer).
    Srt,
}

impl Variant {
    /// Column heading.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Floor => "floor",
            Variant::Sandbox => "sandbox",
            Variant::Bwrap => "bwrap",
            Variant::Firejail => "firejail",
            Variant::Srt => "srt",
        }
    }
}

/// Summary of the samples of one variant.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Median (mean of the two middle samples for an even count).
    pub median: Duration,
    /// Fastest sample.
    pub min: Duration,
    /// Slowest sample.
    pub max: Duration,
    /// Number of samples.
    pub n: usize,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let mut s = samples.to_vec();
        s.sort();
        let n = s.len();
        let (first, last) = (s.first()?, s.last()?);
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        Some(Stats {
            median,
            min: *first,
            max: *last,
            n,
        })
    }
}

/// One line of the results table: a workload, what was timed, and each variant's numbers.
#[derive(Debug)]
pub struct Row {
    /// Workload name (with the file system where it matters).
    pub workload: String,
    /// What the numbers time ("whole run", "rm -rf only", ...).
    pub timed: &'static str,
    /// The variants measured, in column order.
    pub cells: Vec<(Variant, Stats)>,
}

impl Row {
    /// The numbers of one variant.
    pub fn get(&self, v: Variant) -> Option<&Stats> {
        self.cells.iter().find(|(w, _)| *w == v).map(|(_, s)| s)
    }

    /// Ratio of medians `a / b`.
    pub fn ratio(&self, a: Variant, b: Variant) -> Option<f64> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        let b = b.median.as_secs_f64();
        (b > 0.0).then(|| a.median.as_secs_f64() / b)
    }
}

/// A performance target from DESIGN.md or the issue, checked against a measurement.
#[derive(Debug)]
pub struct Check {
    /// The target, in words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether the measurement meets the target.
    pub met: bool,
}

/// What a workload with its own section (proxy, holds, memory) gives the report.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Markdown sections (heading included).
    pub sections: Vec<String>,
    /// Targets.
    pub checks: Vec<Check>,
    /// (what, command line).
    pub commands: Vec<(String, String)>,
    /// Remarks (what was skipped, and why).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Adds `other` to this one.
    pub fn extend(&mut self, other: Outcome) {
        self.sections.extend(other.sections);
        self.checks.extend(other.checks);
        self.commands.extend(other.commands);
        self.notes.extend(other.notes);
    }
}

/// The `p` quantile (0..=1, nearest rank) of ascending `sorted`; NaN if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where the numbers were taken.
#[derive(Debug)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// `nproc`.
    pub nproc: usize,
    /// MemTotal in GiB.
    pub mem_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// When the run started (UTC).
    pub date: String,
    /// Git revision of the workspace.
    pub revision: String,
    /// File-hold backend reported in the sandbox's audit log.
    pub backend: String,
    /// File system type and source of the on-disk scratch directory.
    pub disk_fs: String,
    /// How much other work ran on the machine meanwhile.
    pub load: String,
}

/// Everything `docs/BENCHMARKS.md` shows.
#[derive(Debug)]
pub struct Report {
    /// `--quick` run.
    pub quick: bool,
    /// Where.
    pub machine: Machine,
    /// The results.
    pub rows: Vec<Row>,
    /// Targets and whether they are met.
    pub checks: Vec<Check>,
    /// (what, command line) of every measured command.
    pub commands: Vec<(String, String)>,
    /// Remarks (skipped peers, ...).
    pub notes: Vec<String>,
    /// Further sections of the document (markdown, heading included), after the results.
    pub sections: Vec<String>,
    /// Wall time of the whole benchmark.
    pub elapsed: Duration,
}

const COLUMNS: [Variant; 6] = [
    Variant::Bare,
    Variant::Floor,
    Variant::Sandbox,
    Variant::Bwrap,
    Variant::Firejail,
    Variant::Srt,
];

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}x"))
}

/// The results table (medians and ratios of medians).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | timed | n | bare | floor | sandbox | bwrap | firejail | srt | sandbox/bare | floor/bare | sandbox/floor |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in rows {
        let n = row.cells.iter().map(|(_, st)| st.n).max().unwrap_or(0);
        let _ = write!(s, "| {} | {} | {n} |", row.workload, row.timed);
        for v in COLUMNS {
            let cell = row
                .get(v)
                .map_or_else(|| "–".to_string(), |st| ms(st.median));
            let _ = write!(s, " {cell} |");
        }
        let _ = writeln!(
            s,
            " {} | {} | {} |",
            ratio(row.ratio(Variant::Sandbox, Variant::Bare)),
            ratio(row.ratio(Variant::Floor, Variant::Bare)),
            ratio(row.ratio(Variant::Sandbox, Variant::Floor)),
        );
    }
    s
}

fn spread(rows: &[Row]) -> String {
    let mut s = String::from(
        "| workload | timed | variant | median | min | max | n |\n|---|---|---|--:|--:|--:|--:|\n",
    );
    for row in rows {
        for (v, st) in &row.cells {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.workload,
                row.timed,
                v.name(),
                ms(st.median),
                ms(st.min),
                ms(st.max),
                st.n
            );
        }
    }
    s
}

/// The target checks as a table.
pub fn checks(checks: &[Check]) -> String {
    let mut s = String::from("| target | measured | met |\n|---|---|---|\n");
    for c in checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.target,
            c.measured,
            if c.met { "yes" } else { "**no**" }
        );
    }
    s
}

/// The whole of `docs/BENCHMARKS.md`.
pub fn document(r: &Report) -> String {
    let m = &r.machine;
    let mode = if r.quick {
        "`cargo xtask bench --quick` (fewer repetitions: a smoke test, not a reference)"
    } else {
        "`cargo xtask bench`"
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks\n\n\
         Generated by {mode} on {date}; do not edit by hand, rerun it (as root) instead. The run took \
         {secs:.0} s.\n",
        date = m.date,
        secs = r.elapsed.as_secs_f64(),
    );
    let _ = writeln!(
        s,
        "## Machine\n\n\
         - CPU: {cpu}, {nproc} CPUs (`nproc`)\n\
         - Memory: {mem:.1} GiB\n\
         - Kernel: {kernel} (`uname -r`)\n\
         - Guard: {rev}, file-hold backend `{backend}` (from the audit log)\n\
         - Disk scratch file system: {disk}\n\
         - Other load: {load} (from /proc; the more, the noisier the numbers)\n",
        cpu = m.cpu,
        nproc = m.nproc,
        mem = m.mem_gib,
        kernel = m.kernel,
        rev = m.revision,
        backend = m.backend,
        disk = m.disk_fs,
        load = m.load,
    );
    let _ = writeln!(
        s,
        "## Results\n\n\
         Medians of wall times; ratios are ratios of medians. Variants run alternately within each \
         repetition (the order rotates), so drift hits all of them alike.\n\n\
         - **bare**: the command alone, spawned as uid/gid 65534.\n\
         - **floor**: the command under `notify_floor` (`xtask/progs/notify_floor.c`): the same \
         seccomp filter as the sandbox's file hold, and a supervisor that answers every \
         notification with CONTINUE at once, with the synchronous wake-up (`-s`, \
         SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) the sandbox's supervisor also asks for. What the \
         sandbox costs above it is its own work.\n\
         - **sandbox**: the command under `sandbox run`.\n\
         - peers, where installed (`scripts/install-bench-peers.sh`) and working, for start-up and \
         `rm -rf`: **bwrap** (`bwrap --dev-bind / /`), **firejail** (`firejail --quiet \
         --noprofile`) and **srt** (Anthropic's sandbox-runtime). None of them holds anything: \
         they show what plain namespace sandboxes cost.\n\
         - *whole run* times the spawned command from spawn to exit (for the sandbox: set-up, \
         supervision and tear-down included); *rm -rf only*, *git clean only*, *build only* and \
         *loop only* are timed inside, by `xtask timeit`, so they exclude the sandbox's start and \
         stop.\n\n{}",
        table(&r.rows)
    );
    if !r.notes.is_empty() {
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
        s.push('\n');
    }
    for sec in &r.sections {
        let _ = writeln!(s, "{sec}");
    }
    let _ = writeln!(
        s,
        "## Targets\n\nFrom DESIGN.md \"Performance targets\" and the issue \"Benchmarks\". Why each missed target is missed: `PERFORMANCE.md` (written by hand).\n\n{}",
        checks(&r.checks)
    );
    let _ = writeln!(s, "## Spread\n\n{}", spread(&r.rows));
    let _ = writeln!(
        s,
        "## Commands\n\n\
         `$BASE` is a scratch directory `target/bench.<pid>` (root, 0755), removed after the \
         run; paths without a leading `/` are relative to the workspace root; `NNN` stands for \
         the number of the run (each run has its own tree, object or target directory). The \
         tmpfs is mounted by xtask for the unlink workload and unmounted after it. Before the \
         timed runs of the unlink workloads, xtask creates one tree per run: for `rm -rf`, 100 \
         directories x 500 empty files; for `git clean`, a copy of a git repository with 7 \
         committed files plus 10,000 untracked (`out/`) and 10,000 ignored (`build/`) empty files \
         in 2 levels of directories; all owned by uid 65534. It calls sync(2) before each of \
         those runs. The C project (200 units of about 40 lines, `main.c`, a Makefile building \
         into `$(O)`) and the Rust crate (10 modules, no dependencies, its own workspace) are \
         generated by `xtask/src/workloads.rs`; each build starts from an empty object or target \
         directory, after one untimed warm-up build. The cargo build runs as root on both sides \
         (the toolchain is under /root, 0700). Bare, bwrap and srt runs are spawned by xtask \
         directly with uid/gid 65534 (except the cargo build) and no supplementary groups; they \
         are shown here as the equivalent `setpriv` command. Firejail runs are spawned as root.\n"
    );
    for (what, cmd) in &r.commands {
        let _ = writeln!(s, "- {what}:\n  ```sh\n  {cmd}\n  ```");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_mean_of_middle_pair() {
        let ms = |v: u64| Duration::from_millis(v);
        let st = Stats::of(&[ms(4), ms(1), ms(3), ms(2)]);
        assert_eq!(st.map(|s| s.median), Some(Duration::from_micros(2500)));
        assert_eq!(st.map(|s| (s.min, s.max, s.n)), Some((ms(1), ms(4), 4)));
    }

    #[test]
    fn stats_of_nothing_is_none() {
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn document_has_sections_notes_checks_and_commands() {
        let st = Stats::of(&[Duration::from_millis(10)]).unwrap();
        let r = Report {
            quick: true,
            machine: Machine {
                cpu: "cpu".into(),
                nproc: 2,
                mem_gib: 1.0,
                kernel: "k".into(),
                date: "d".into(),
                revision: "r".into(),
                backend: "seccomp".into(),
                disk_fs: "ext4".into(),
                load: "none".into(),
            },
            rows: vec![Row {
                workload: "w".into(),
                timed: "whole run",
                cells: vec![(Variant::Bare, st), (Variant::Srt, st)],
            }],
            checks: vec![Check {
                target: "t".into(),
                measured: "m".into(),
                met: false,
            }],
            commands: vec![("what".into(), "cmd --flag".into())],
            notes: vec!["srt skipped".into()],
            sections: vec!["## Hold latency\n".into()],
            elapsed: Duration::from_secs(1),
        };
        let d = document(&r);
        for part in [
            "| w | whole run | 1 | 10.0 ms | – | – | – | – | 10.0 ms |",
            "- srt skipped",
            "## Hold latency",
            "| t | m | **no** |",
            "- what:\n  ```sh\n  cmd --flag\n  ```",
        ] {
            assert!(d.contains(part), "{part:?} missing from\n{d}");
        }
    }

    #[test]
    fn table_shows_dash_for_missing_variants() {
        let st = Stats::of(&[Duration::from_millis(10)]).unwrap();
        let rows = [Row {
            workload: "w".into(),
            timed: "whole run",
            cells: vec![(Variant::Bare, st), (Variant::Sandbox, st)],
        }];
        let t = table(&rows);
        assert!(
            t.contains("| w | whole run | 1 | 10.0 ms | – | 10.0 ms | – | – | – | 1.00x | – | – |")
        );
    }
}
