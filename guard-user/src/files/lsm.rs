//! The BPF LSM backend of the file hold.
//!
//! The kernel resolves the inode, so there is nothing to race: LSM hooks (`path_unlink`,
//! `path_rmdir`, `path_rename`, `path_truncate`, `file_truncate` where the kernel has it,
//! `path_link`) stop a thread that is about to destroy a protected object (SIGSTOP and
//! -ERESTARTNOINTR) and report the hold on a ring buffer. A decision is written to the
//! `DECISIONS` map for that exact hold and the process is continued: the restarted call finds it
//! and goes on or fails with EPERM. Standing per-process decisions live in the kernel too
//! (`STANDING`), so `rm -rf` of a protected tree costs one decision and no further round trips.

use std::collections::HashMap as StdHashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, MapError, RingBuf};
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader};
use guard_common::files::{
    Decision, HoldRecord, InodeKey, StandingKey, CFG_PATTERNS, CFG_WRITE_PATTERNS, CONFIG_FLAGS,
    CONFIG_PATTERN_ROOT, CONNECT_ROOT, HOLD_ANCESTOR, HOLD_LINK, HOLD_RENAME_TARGET,
    HOLD_WRITE_ROOT, MAX_NAMES, MAX_ROOTS, MAX_SUFFIXES, NAME_LEN, OP_CONNECT, OP_CREATE,
    OP_RENAME, OP_RMDIR, OP_TRUNCATE, OP_UNLINK, OP_WRITE, PATTERN_LEN, PAT_EXACT, PAT_GIT,
    PAT_SUFFIX, PAT_WRITE_EXACT, PAT_WRITE_SUFFIX, SESSION_CONNECT_HOLD, SESSION_FILE_HOLD,
    SESSION_WRITE_HOLD, VERDICT_ALLOW, VERDICT_DENY,
};

use super::Protection;
use crate::hold::{HoldBackend, HoldInfo, Holds, ProcKey, Scope, Verdict};
use crate::report::Reporter;

/// The LSM hooks of the file hold; `file_truncate` exists from Linux 6.2 on.
const HOOKS: &[&str] = &[
    "path_unlink",
    "path_rmdir",
    "path_rename",
    "path_truncate",
    "path_link",
    "file_truncate",
];
/// Hooks that may be missing on older kernels.
const OPTIONAL_HOOKS: &[&str] = &["file_truncate"];
/// The hooks of `files.protect_writes` (attached only when a session has it).
const WRITE_HOOKS: &[&str] = &["file_open", "path_mknod"];
/// `WRITE_DIRS` value bit: another hard link of a write-protected file.
const WRITE_LINK: u32 = 1 << 16;

/// How the LSM programs match a name pattern: the whole name, or a suffix starting with '.'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// `**/NAME` or `NAME`: a file or directory called exactly NAME.
    Exact(String),
    /// `**/*.SUFFIX` or `*.SUFFIX`: a name ending in `.SUFFIX` (the string starts with '.').
    Suffix(String),
}

/// The LSM form of a `protect` / `protect_writes` pattern, or why the LSM programs cannot
/// match it (the seccomp backend matches any glob).
pub fn name_pattern(p: &str) -> Result<NamePattern, String> {
    let name = p.strip_prefix("**/").unwrap_or(p);
    let unsupported = || {
        format!(
            "name pattern {p:?}: the LSM backend matches only NAME, *.SUFFIX (up to {MAX_SUFFIXES} dots) and the same after **/, up to {PATTERN_LEN} bytes"
        )
    };
    let meta = |s: &str| s.contains(['*', '?', '[', ']', '{', '}', '\\', '/']);
    if name.is_empty() || name.len() > PATTERN_LEN {
        return Err(unsupported());
    }
    if let Some(suffix) = name.strip_prefix('*') {
        if !suffix.starts_with('.') || meta(suffix) || suffix.matches('.').count() > MAX_SUFFIXES {
            return Err(unsupported());
        }
        return Ok(NamePattern::Suffix(suffix.to_string()));
    }
    if meta(name) {
        return Err(unsupported());
    }
    Ok(NamePattern::Exact(name.to_string()))
}

/// Checks that the LSM programs can match every pattern of `prot` (see [`name_pattern`]).
pub fn check_patterns(prot: &Protection) -> Result<(), String> {
    let writes = prot
        .writes()
        .map(|w| w.pattern_strings())
        .unwrap_or_default();
    for p in prot.pattern_strings().iter().chain(&writes) {
        name_pattern(p)?;
    }
    Ok(())
}

/// Errors of the LSM backend.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// No BTF.
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] BtfError),
    /// Object load failed.
    #[error("cannot load the eBPF object")]
    Load(#[source] EbpfError),
    /// A program or map is missing from the object.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The kernel refused an LSM program.
    #[error("the kernel refused the BPF LSM program `{name}` (is `bpf` in the lsm= boot parameter? some hosts refuse LSM programs even then)")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map `{name}`")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: MapError,
    },
    /// Too many protected roots.
    #[error(
        "the LSM backend supports at most {MAX_ROOTS} protected roots (name patterns count as one)"
    )]
    TooManyRoots,
    /// A name pattern the programs cannot match.
    #[error("{0}")]
    Pattern(String),
    /// Setting up the connect hold.
    #[error("hold_connect: {0}")]
    Connect(String),
    /// stat of a protected path failed.
    #[error("stat {path}: {source}")]
    Stat {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> LsmError {
    move |source| LsmError::Map { name, source }
}

/// Converts a userspace `st_dev` to the kernel's `s_dev` encoding.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | minor
}

fn load_object(btf: &Btf) -> Result<Ebpf, LsmError> {
    EbpfLoader::new()
        .btf(Some(btf))
        .load(crate::exec::EBPF_OBJECT)
        .map_err(LsmError::Load)
}

fn hook_exists(btf: &Btf, hook: &str) -> bool {
    btf.id_by_type_name_kind(&format!("bpf_lsm_{hook}"), aya_obj::btf::BtfKind::Func)
        .is_ok()
}

/// Whether this kernel loads BPF LSM programs: tries to load one (the lsm list proves nothing).
pub fn probe() -> Result<(), LsmError> {
    let btf = Btf::from_sys_fs().map_err(LsmError::Btf)?;
    probe_with(&btf)
}

/// [`probe`] with the kernel's BTF already parsed.
pub fn probe_with(btf: &Btf) -> Result<(), LsmError> {
    let mut ebpf = load_object(btf)?;
    let p: &mut Lsm = ebpf
        .program_mut("path_unlink")
        .ok_or(LsmError::Missing("program path_unlink"))?
        .try_into()
        .map_err(|source| LsmError::Program {
            name: "path_unlink",
            source,
        })?;
    p.load("path_unlink", btf)
        .map_err(|source| LsmError::Program {
            name: "path_unlink",
            source,
        })
}

/// [`probe_with`], remembered for the rest of this boot in `<state dir>/lsm-probe` (whether a
/// kernel loads LSM programs does not change while it runs, and probing costs a whole object
/// load). Returns the refusal as text.
pub fn probe_cached<'a>(
    state: &std::path::Path,
    btf: impl FnOnce() -> Result<&'a Btf, String>,
) -> Result<(), String> {
    if let Some(r) = cached_probe(state) {
        return r;
    }
    let r = btf().and_then(|btf| {
        probe_with(btf).map_err(|e| format!("{e}: {}", crate::launch::error_chain(&e)))
    });
    record_probe(state, &r);
    r
}

/// [`probe_with`] for `--backend lsm`, skipped when this boot's probe succeeded already (a
/// refusal is probed again, for its full error).
pub fn probe_explicit(state: &std::path::Path, btf: &Btf) -> Result<(), LsmError> {
    if let Some(Ok(())) = cached_probe(state) {
        return Ok(());
    }
    let r = probe_with(btf);
    record_probe(
        state,
        &r.as_ref()
            .map(|_| ())
            .map_err(|e| format!("{e}: {}", crate::launch::error_chain(e))),
    );
    r
}

fn boot_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    boot.trim().to_string()
}

/// This boot's probe result from `<state dir>/lsm-probe`, if recorded.
fn cached_probe(state: &std::path::Path) -> Option<Result<(), String>> {
    let boot = boot_id();
    let text = std::fs::read_to_string(state.join("lsm-probe")).ok()?;
    let mut lines = text.splitn(2, '\n');
    if boot.is_empty() || lines.next() != Some(boot.as_str()) {
        return None;
    }
    let rest = lines.next().unwrap_or("").trim_end();
    Some(if rest == "ok" {
        Ok(())
    } else {
        Err(rest.to_string())
    })
}

fn record_probe(state: &std::path::Path, r: &Result<(), String>) {
    let boot = boot_id();
    if !boot.is_empty() {
        let text = format!(
            "{boot}\n{}\n",
            r.as_ref().err().map(String::as_str).unwrap_or("ok")
        );
        let _ = std::fs::write(state.join("lsm-probe"), text);
    }
}

/// A thread stopped on a hold.
#[derive(Debug)]
pub struct LsmPending {
    tid: u32,
    pid: u32,
    seq: u64,
}

struct Maps {
    /// Operations the hooks refused because they could not report the hold.
    refused: Array<MapData, u64>,
    sessions: HashMap<MapData, u64, u32>,
    dirs: HashMap<MapData, InodeKey, u32>,
    inodes: HashMap<MapData, InodeKey, u32>,
    ancestors: HashMap<MapData, InodeKey, u32>,
    decisions: HashMap<MapData, u32, Decision>,
    standing: HashMap<MapData, StandingKey, u32>,
}

/// The LSM file hold of one session.
pub struct LsmSupervisor {
    session: String,
    prot: Arc<Protection>,
    holds: Holds<LsmPending>,
    report: Arc<Reporter>,
    maps: Mutex<Maps>,
    events: Mutex<RingBuf<MapData>>,
    /// `REFUSED` as last reported.
    refused_seen: std::sync::atomic::AtomicU64,
    ancestor_paths: StdHashMap<(u32, u64), PathBuf>,
    /// Owns the programs and links; last, so maps close first.
    _ebpf: Ebpf,
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, LsmError> {
    let m = ebpf.take_map(name).ok_or(LsmError::Missing(name))?;
    f(m).map_err(map_err(name))
}

fn key(path: &std::path::Path) -> Result<InodeKey, LsmError> {
    let md = std::fs::symlink_metadata(path).map_err(|source| LsmError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(InodeKey {
        dev: kernel_dev(md.dev()),
        _pad: 0,
        ino: md.ino(),
    })
}

/// Writes the name patterns (`NAME_PATTERNS`) and the settings (`CONFIG`) of the programs.
fn fill_patterns(ebpf: &mut Ebpf, prot: &Protection) -> Result<(), LsmError> {
    let mut names: HashMap<&mut MapData, u64, u32> = HashMap::try_from(
        ebpf.map_mut("NAME_PATTERNS")
            .ok_or(LsmError::Missing("NAME_PATTERNS"))?,
    )
    .map_err(map_err("NAME_PATTERNS"))?;
    let mut bits: StdHashMap<u64, u32> = StdHashMap::new();
    let mut cfg = 0;
    let writes = prot
        .writes()
        .map(|w| w.pattern_strings())
        .unwrap_or_default();
    for (list, exact, suffix, flag) in [
        (prot.pattern_strings(), PAT_EXACT, PAT_SUFFIX, CFG_PATTERNS),
        (
            writes,
            PAT_WRITE_EXACT,
            PAT_WRITE_SUFFIX,
            CFG_WRITE_PATTERNS,
        ),
    ] {
        for p in &list {
            let (h, b) = match name_pattern(p).map_err(LsmError::Pattern)? {
                // git manages its own repository: the programs let git itself through.
                NamePattern::Exact(n) if n == ".git" && exact == PAT_EXACT => (
                    guard_common::files::name_hash(n.as_bytes()),
                    exact | PAT_GIT,
                ),
                NamePattern::Exact(n) => (guard_common::files::name_hash(n.as_bytes()), exact),
                NamePattern::Suffix(s) => (guard_common::files::name_hash(s.as_bytes()), suffix),
            };
            *bits.entry(h).or_default() |= b;
            cfg |= flag;
        }
    }
    for (h, b) in bits {
        names.insert(h, b, 0).map_err(map_err("NAME_PATTERNS"))?;
    }
    let mut config: aya::maps::Array<&mut MapData, u32> =
        aya::maps::Array::try_from(ebpf.map_mut("CONFIG").ok_or(LsmError::Missing("CONFIG"))?)
            .map_err(map_err("CONFIG"))?;
    config
        .set(CONFIG_FLAGS, cfg, 0)
        .map_err(map_err("CONFIG"))?;
    config
        .set(CONFIG_PATTERN_ROOT, prot.pattern_root() as u32, 0)
        .map_err(map_err("CONFIG"))?;
    Ok(())
}

/// Mount points strictly below `root` (their file systems' roots end a `d_parent` walk).
fn mounts_below(root: &std::path::Path) -> Vec<PathBuf> {
    crate::mountinfo::own()
        .into_iter()
        .map(|m| m.point)
        .filter(|m| m != root && m.starts_with(root))
        .collect()
}

impl LsmSupervisor {
    /// Loads and attaches the LSM programs and registers the session's cgroup and protection.
    pub fn load(
        session: &str,
        prot: Arc<Protection>,
        report: Arc<Reporter>,
        cgroup_id: u64,
        btf: &Btf,
        connect: &[crate::netguard::Endpoint],
    ) -> Result<Self, LsmError> {
        let pattern_slot = usize::from(prot.has_patterns());
        if prot.roots().len() + pattern_slot > MAX_ROOTS as usize
            || prot.writes().is_some_and(|w| w.roots().len() > 255)
        {
            return Err(LsmError::TooManyRoots);
        }
        check_patterns(&prot).map_err(LsmError::Pattern)?;
        let mut ebpf = load_object(btf)?;
        let write_hooks = if prot.writes().is_some() {
            WRITE_HOOKS
        } else {
            &[]
        };
        for &hook in HOOKS.iter().chain(write_hooks) {
            if OPTIONAL_HOOKS.contains(&hook) && !hook_exists(btf, hook) {
                tracing::info!(hook, "LSM hook not in this kernel; skipped");
                continue;
            }
            let err = |source| LsmError::Program { name: hook, source };
            let p: &mut Lsm = ebpf
                .program_mut(hook)
                .ok_or(LsmError::Missing("an LSM program"))?
                .try_into()
                .map_err(err)?;
            p.load(hook, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        if !connect.is_empty() {
            let hook = "socket_connect";
            let err = |source| LsmError::Program { name: hook, source };
            let p: &mut Lsm = ebpf
                .program_mut(hook)
                .ok_or(LsmError::Missing("program socket_connect"))?
                .try_into()
                .map_err(err)?;
            p.load(hook, btf).map_err(err)?;
            p.attach().map_err(err)?;
            crate::netguard::fill_held(&mut ebpf, connect)
                .map_err(|e| LsmError::Connect(e.to_string()))?;
        }
        {
            let name = "sched_process_exit";
            let err = |source| LsmError::Program { name, source };
            let p: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(LsmError::Missing(name))?
                .try_into()
                .map_err(err)?;
            p.load(name, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        let mut maps = Maps {
            refused: take(&mut ebpf, "REFUSED", Array::try_from)?,
            sessions: take(&mut ebpf, "SESSION_CGROUPS", HashMap::try_from)?,
            dirs: take(&mut ebpf, "PROT_DIRS", HashMap::try_from)?,
            inodes: take(&mut ebpf, "PROT_INODES", HashMap::try_from)?,
            ancestors: take(&mut ebpf, "PROT_ANCESTORS", HashMap::try_from)?,
            decisions: take(&mut ebpf, "DECISIONS", HashMap::try_from)?,
            standing: take(&mut ebpf, "STANDING", HashMap::try_from)?,
        };
        let events = take(&mut ebpf, "HOLD_EVENTS", RingBuf::try_from)?;
        let mut ancestor_paths = StdHashMap::new();
        for (i, r) in prot.roots().iter().enumerate() {
            let i = i as u32;
            let k = key(r)?;
            // A bind-mount alias of a root (see files::aliases) is the same directory: the
            // hooks go by inode and need it once.
            if maps.dirs.get(&k, 0).is_ok() {
                continue;
            }
            maps.dirs.insert(k, i, 0).map_err(map_err("PROT_DIRS"))?;
            for m in mounts_below(r) {
                if let Ok(k) = key(&m) {
                    maps.dirs.insert(k, i, 0).map_err(map_err("PROT_DIRS"))?;
                }
            }
            let mut a = r.parent();
            while let Some(p) = a {
                let k = key(p)?;
                maps.ancestors
                    .insert(k, i, 0)
                    .map_err(map_err("PROT_ANCESTORS"))?;
                ancestor_paths.insert((k.dev, k.ino), p.to_path_buf());
                a = p.parent();
            }
        }
        fill_patterns(&mut ebpf, &prot)?;
        if let Some(w) = prot.writes() {
            let mut write_dirs: HashMap<MapData, InodeKey, u32> =
                take(&mut ebpf, "WRITE_DIRS", HashMap::try_from)?;
            for (wi, wr) in w.roots().iter().enumerate() {
                let outer = prot
                    .roots()
                    .iter()
                    .position(|r| wr.starts_with(r))
                    .unwrap_or(prot.pattern_root()) as u32;
                let v = outer | (wi as u32) << 8;
                write_dirs
                    .insert(key(wr)?, v, 0)
                    .map_err(map_err("WRITE_DIRS"))?;
                for m in mounts_below(wr) {
                    if let Ok(k) = key(&m) {
                        write_dirs.insert(k, v, 0).map_err(map_err("WRITE_DIRS"))?;
                    }
                }
                // Files with other hard links: writing through another name is held too.
                for (_, md) in super::multi_linked(wr)
                    .into_iter()
                    .filter(|(_, m)| m.is_file())
                {
                    let k = InodeKey {
                        dev: kernel_dev(md.dev()),
                        _pad: 0,
                        ino: md.ino(),
                    };
                    write_dirs
                        .insert(k, outer | WRITE_LINK, 0)
                        .map_err(map_err("WRITE_DIRS"))?;
                }
            }
        }
        for ((dev, ino), root) in prot.linked_entries() {
            let k = InodeKey {
                dev: kernel_dev(dev),
                _pad: 0,
                ino,
            };
            maps.inodes
                .insert(k, root as u32, 0)
                .map_err(map_err("PROT_INODES"))?;
        }
        let mut flags = SESSION_FILE_HOLD;
        if !connect.is_empty() {
            flags |= SESSION_CONNECT_HOLD;
        }
        if prot.writes().is_some() {
            flags |= SESSION_WRITE_HOLD;
        }
        maps.sessions
            .insert(cgroup_id, flags, 0)
            .map_err(map_err("SESSION_CGROUPS"))?;
        Ok(LsmSupervisor {
            session: session.to_string(),
            prot,
            holds: Holds::default(),
            report,
            maps: Mutex::new(maps),
            events: Mutex::new(events),
            refused_seen: std::sync::atomic::AtomicU64::new(0),
            ancestor_paths,
            _ebpf: ebpf,
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads hold events until `stop` is set.
    pub fn run(&self, stop: &crate::stop::Stop) {
        let fd = {
            let ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
            ev.as_fd().as_raw_fd()
        };
        while !stop.is_set() {
            stop.wait(Some(fd), Duration::from_secs(1));
            let mut recs = Vec::new();
            {
                let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(item) = ev.next() {
                    if item.len() >= std::mem::size_of::<HoldRecord>() {
                        // SAFETY: HoldRecord is Pod and the item is at least its size.
                        recs.push(unsafe {
                            std::ptr::read_unaligned(item.as_ptr() as *const HoldRecord)
                        });
                    }
                }
            }
            for r in recs {
                self.on_hold(&r);
            }
            self.report_refused();
        }
        self.report_refused();
    }

    /// Puts the operations the hooks refused unreported (ring buffer full) in the audit log.
    fn report_refused(&self) {
        use std::sync::atomic::Ordering;
        let Ok(total) = self.maps().refused.get(&0, 0) else {
            return;
        };
        let seen = self.refused_seen.swap(total, Ordering::SeqCst);
        if total > seen {
            self.report.refused_unreported(total - seen, total);
        }
    }

    fn describe(&self, r: &HoldRecord) -> (String, PathBuf) {
        let names = |arr: &[[u8; NAME_LEN]; MAX_NAMES], n: u32| -> Vec<String> {
            arr.iter()
                .take((n as usize).min(MAX_NAMES))
                .map(|b| {
                    let end = b.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
                    String::from_utf8_lossy(&b[..end]).into_owned()
                })
                .collect()
        };
        let own = names(&r.names, r.names_len);
        let write_root = (r.flags & HOLD_WRITE_ROOT != 0)
            .then(|| {
                self.prot
                    .writes()
                    .and_then(|w| w.roots().get((r.flags >> 8 & 0xff) as usize).cloned())
            })
            .flatten();
        let pattern = r.root as usize == self.prot.pattern_root();
        let root = write_root
            .or_else(|| self.prot.roots().get(r.root as usize).cloned())
            .unwrap_or_default();
        let path = if pattern {
            // Matched by name: the path is what the names say (cut after MAX_NAMES levels).
            PathBuf::from(full_path(&own, r.dev))
        } else if r.flags & HOLD_ANCESTOR != 0 {
            self.ancestor_paths
                .get(&(r.dev, r.ino))
                .cloned()
                .unwrap_or_else(|| root.clone())
        } else if r.flags & HOLD_LINK == 0 && (r.depth as usize) < own.len() {
            let mut p = root.clone();
            for n in own[..r.depth as usize].iter().rev() {
                p.push(n);
            }
            p
        } else {
            PathBuf::from(full_path(&own, r.dev))
        };
        let mut target = path.display().to_string();
        if r.flags & HOLD_LINK != 0 {
            target.push_str(&format!(" (another link of a file in {})", root.display()));
        }
        if r.op == OP_RENAME {
            let other = partial_path(&names(&r.other_names, r.other_len));
            target = if r.flags & HOLD_RENAME_TARGET != 0 {
                format!("{other} -> {target}")
            } else {
                format!("{target} -> {other}")
            };
        }
        (target, path)
    }

    fn on_hold(&self, r: &HoldRecord) {
        if r.op == OP_CONNECT {
            let ep = crate::netguard::record_endpoint(r.depth, &r.names[0]);
            let target = ep.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
            return self.admit(
                r,
                "connect",
                target.clone(),
                "network.hold_connect".into(),
                PathBuf::from(format!("/connect/{target}")),
                CONNECT_ROOT as usize,
            );
        }
        let kind = match r.op {
            OP_UNLINK => "unlink",
            OP_RMDIR => "rmdir",
            OP_RENAME => "rename",
            OP_TRUNCATE => "truncate",
            OP_WRITE | OP_CREATE => "write",
            _ => "unknown",
        };
        let (target, path) = self.describe(r);
        let root = r.root as usize;
        let rule = if kind == "write" {
            self.prot.describe_write(&path)
        } else {
            self.prot.describe_root(root)
        };
        self.admit(r, kind, target, rule, path, root);
    }

    /// Records a hold (or applies a standing decision to it).
    fn admit(
        &self,
        r: &HoldRecord,
        kind: &'static str,
        target: String,
        rule: String,
        path: PathBuf,
        root: usize,
    ) {
        let info = HoldInfo {
            id: crate::hold::new_id(),
            session: self.session.clone(),
            pid: r.pid,
            ns_pid: crate::files::supervise::ns_pid_of(r.tid),
            comm: std::fs::read_to_string(format!("/proc/{}/comm", r.tid))
                .unwrap_or_default()
                .trim()
                .to_string(),
            cmdline: crate::files::supervise::cmdline_of(r.pid),
            kind,
            target,
            rule,
            detail: None,
            since: crate::audit::rfc3339_micros(std::time::SystemTime::now()),
            started: Some(Instant::now()),
            proc_key: ProcKey::of(r.tid),
            root: Some(root),
            path: Some(path),
        };
        let p = LsmPending {
            tid: r.tid,
            pid: r.pid,
            seq: r.seq,
        };
        self.hold_or_carry_out(info, p);
    }

    /// Stops holding for this session (the cgroup is about to go).
    pub fn unregister(&self, cgroup_id: u64) {
        let _ = self.maps().sessions.remove(&cgroup_id);
    }
}

/// The path of an object from its dentry names (innermost first) on the file system with kernel
/// device `dev`: the names stop at that file system's root, so a complete list is prefixed with
/// where it is mounted (its first mount of its own root, from /proc/self/mountinfo).
fn full_path(names: &[String], dev: u32) -> String {
    let p = partial_path(names);
    if p.starts_with('…') {
        return p;
    }
    match mount_point_of(dev) {
        Some(m) if m != std::path::Path::new("/") => format!("{}{p}", m.display()),
        _ => p,
    }
}

/// Where the root of the file system with kernel device `dev` is mounted.
fn mount_point_of(dev: u32) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (maj, min) = f.get(2)?.split_once(':')?;
        let kdev = (maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?;
        let mount = f.get(4)?;
        (kdev == dev && f.get(3) == Some(&"/")).then(|| PathBuf::from(mount))
    })
}

/// A path from the dentry names of a hold record (innermost first). When the walk reached its
/// file system's root (named "/") the path is complete from there; otherwise it starts with "…".
fn partial_path(names: &[String]) -> String {
    let complete = names.last().is_some_and(|n| n == "/");
    let mut s = String::from(if complete { "" } else { "…" });
    for n in names.iter().rev().filter(|n| n.as_str() != "/") {
        s.push('/');
        s.push_str(n);
    }
    s
}

/// Waits until thread `tid` is stopped (state T or t), at most `max`.
fn wait_stopped(tid: u32, max: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < max {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
            return;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("");
        if state == "T" || state == "t" || state == "X" || state == "Z" {
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

impl HoldBackend for LsmSupervisor {
    type Op = LsmPending;

    fn holds(&self) -> &Holds<LsmPending> {
        &self.holds
    }

    fn reporter(&self) -> &Reporter {
        &self.report
    }

    /// Writes the decision for the thread's hold and continues the process once it has stopped.
    fn carry_out(&self, p: LsmPending, v: Verdict) {
        let verdict = if v == Verdict::Allow {
            VERDICT_ALLOW
        } else {
            VERDICT_DENY
        };
        let d = Decision {
            seq: p.seq,
            verdict,
            _pad: 0,
        };
        if let Err(e) = self.maps().decisions.insert(p.tid, d, 0) {
            tracing::error!(error = %e, tid = p.tid, "cannot write a decision; the thread stays held");
            return;
        }
        // A SIGCONT that overtook the hook's SIGSTOP would cancel it; wait for the stop first.
        wait_stopped(p.tid, Duration::from_secs(2));
        // SAFETY: plain kill.
        unsafe { libc::kill(p.pid as i32, libc::SIGCONT) };
    }

    /// A per-process decision without an end stands in the kernel: later operations of the
    /// process on the same root need no round trip at all.
    fn stand(&self, first: &HoldInfo, verdict: Verdict, scope: Scope, duration: Option<Duration>) {
        if scope != Scope::Process || duration.is_some() {
            return;
        }
        if let Some(root) = first.root {
            let k = StandingKey {
                tgid: first.pid,
                root: root as u32,
            };
            let val = if verdict == Verdict::Allow {
                VERDICT_ALLOW
            } else {
                VERDICT_DENY
            };
            if let Err(e) = self.maps().standing.insert(k, val, 0) {
                tracing::warn!(error = %e, "standing decision kept in user space only");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn name_patterns_the_programs_can_match() {
        assert_eq!(
            name_pattern("**/.git"),
            Ok(NamePattern::Exact(".git".into()))
        );
        assert_eq!(
            name_pattern("*.tfstate.backup"),
            Ok(NamePattern::Suffix(".tfstate.backup".into()))
        );
        for bad in [
            "**/*.tfstate*",
            "/abs/x",
            "**/a/b",
            "x?",
            "*tfstate",
            "**/*.a.b.c.d.e",
        ] {
            assert!(name_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suffix_hashes_are_steps_of_the_whole_names_backward_hash() {
        use guard_common::files::{name_hash, NAME_HASH_BASIS, NAME_HASH_PRIME};
        // What the kernel side computes: one backward scan, a suffix's hash at each dot.
        let name = b"x.tfstate.backup";
        let mut h = NAME_HASH_BASIS;
        let mut at_dots = Vec::new();
        for &c in name.iter().rev() {
            h = (h ^ c as u64).wrapping_mul(NAME_HASH_PRIME);
            if c == b'.' {
                at_dots.push(h);
            }
        }
        assert_eq!(h, name_hash(name));
        assert_eq!(
            at_dots,
            [name_hash(b".backup"), name_hash(b".tfstate.backup")]
        );
    }

    #[test]
    fn partial_paths_are_outermost_first_and_marked_when_cut() {
        assert_eq!(partial_path(&v(&["f", "b", "a", "/"])), "/a/b/f");
        assert_eq!(partial_path(&v(&["f", "b", "a"])), "…/a/b/f");
        assert_eq!(partial_path(&v(&["f"])), "…/f");
    }
}
