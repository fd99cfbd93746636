//! Exec observer: every exec of a task in a watched cgroup, with its argument vector.
//!
//! The kernel side is `tp_btf/sched_process_exec` in `guard-ebpf` (built by `build.rs` and
//! embedded here). It runs after the new image is in place and before its first instruction,
//! looks the task's cgroup v2 id up in `SESSION_CGROUPS` and, for a watched cgroup, writes an
//! [`ExecRecord`] into the `EXEC_EVENTS` ring buffer.

// Not used by `main` yet; the supervisor will own an `ExecObserver` per host.
#![allow(dead_code)]

use std::{
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::Path,
};

use aya::{
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError},
    Btf, BtfError, Ebpf, EbpfError, EbpfLoader,
};
use guard_common::exec::{
    exec_name_hash, ExecRecord, SessionFlags, EXEC_ARGS_LEN, EXEC_FILENAME_LEN, EXEC_SCRIPT,
    EXEC_STOPPED, SESSION_HOLDS_COMMANDS,
};
use serde::Serialize;

/// The eBPF object with all of Guard's kernel-side programs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf.o"));

/// Name of the exec program in the object, and of the tracepoint it attaches to.
const EXEC_PROGRAM: &str = "sched_process_exec";
/// Name of the program that keeps a process stopped for a check from being continued by the
/// kernel (`signal_generate`), and of its tracepoint.
const SIGNAL_PROGRAM: &str = "signal_generate";
/// The observer's programs, in the order of [`Preloaded::links`]. The signal program is
/// attached first: from the moment the exec program can stop a process, it is in place.
pub const PROGRAMS: [&str; 2] = [SIGNAL_PROGRAM, EXEC_PROGRAM];
/// Map of watched cgroups (cgroup id to [`SessionFlags`]).
const SESSION_CGROUPS: &str = "SESSION_CGROUPS";
/// Ring buffer of [`ExecRecord`]s.
const EXEC_EVENTS: &str = "EXEC_EVENTS";
/// Per-CPU count of records dropped because the ring buffer was full.
const EXEC_LOST: &str = "EXEC_LOST";
/// Hashes of the program names `[commands] hold` names.
const HELD_NAMES: &str = "HELD_NAMES";
/// Processes stopped at exec for a check.
const HELD_PIDS: &str = "HELD_PIDS";

/// The processes the exec program stopped for a check (`HELD_PIDS`): shared by the exec thread
/// and the command guard.
pub type HeldPids = HashMap<MapData, u32, u32>;

/// Errors of the exec observer.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The kernel's type information is needed to attach and to relocate field offsets.
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] BtfError),
    /// The object could not be parsed or its maps could not be created.
    #[error("cannot load the eBPF object")]
    Load(#[source] EbpfError),
    /// The embedded object lacks a program or map this module expects (a build mix-up).
    #[error("the eBPF object has no {kind} named `{name}`")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// The missing name.
        name: &'static str,
    },
    /// The kernel refused the program (verifier, permissions) or the attachment.
    #[error("cannot load or attach the eBPF program `{name}`")]
    Program {
        /// Program name.
        name: &'static str,
        /// What the kernel or aya said.
        #[source]
        source: ProgramError,
    },
    /// A map has an unexpected type, or a map operation failed.
    #[error("eBPF map `{name}`")]
    Map {
        /// Map name.
        name: &'static str,
        /// The map error.
        #[source]
        source: MapError,
    },
}

/// The loaded and attached exec observer. Dropping it detaches the program.
pub struct ExecObserver {
    /// Watched cgroups.
    sessions: HashMap<MapData, u64, SessionFlags>,
    /// Events from the kernel.
    events: RingBuf<MapData>,
    /// Dropped events, per CPU.
    lost: PerCpuArray<MapData, u64>,
    /// Held program names.
    names: HashMap<MapData, u64, u32>,
    /// Stopped processes; taken once by [`ExecObserver::take_held_pids`].
    held: Option<HeldPids>,
    /// The flags cgroups are watched with ([`ExecObserver::hold_names`] adds
    /// `SESSION_HOLDS_COMMANDS`).
    flags: SessionFlags,
    /// Owns the program and its link; declared last so the maps above are closed first.
    _keep: Keep,
}

/// What keeps the program attached.
enum Keep {
    /// The object loaded here (its link detaches when dropped).
    Ebpf(Ebpf),
    /// Links loaded ahead of time by `sandbox daemon` (each detaches when its last fd closes).
    Links(Vec<OwnedFd>),
}

/// An exec observer loaded and attached ahead of time (`sandbox daemon` keeps one spare, so a
/// session started through it does not pay for loading): the link and the maps as file
/// descriptors, handed to the session process, which builds its [`ExecObserver`] from them
/// ([`ExecObserver::from_preloaded`]). Each is used by one session only.
#[derive(Debug)]
pub struct Preloaded {
    /// The programs' links (BPF_RAW_TRACEPOINT_OPEN), in [`PROGRAMS`] order: attached while
    /// they are open.
    pub links: Vec<OwnedFd>,
    /// The maps, in [`PRELOADED_MAPS`] order.
    pub maps: Vec<OwnedFd>,
}

/// The maps of a [`Preloaded`] observer, in order.
pub const PRELOADED_MAPS: [&str; 5] = [
    SESSION_CGROUPS,
    EXEC_EVENTS,
    EXEC_LOST,
    HELD_NAMES,
    HELD_PIDS,
];

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> ExecError {
    move |source| ExecError::Program { name, source }
}

/// A program of a loaded object (one of [`PROGRAMS`]), loaded into the kernel (not attached).
fn loaded_program<'e>(
    ebpf: &'e mut Ebpf,
    btf: &Btf,
    name: &'static str,
) -> Result<&'e mut BtfTracePoint, ExecError> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(ExecError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(program_err(name))?;
    program.load(name, btf).map_err(program_err(name))?;
    Ok(program)
}

/// Attaches a loaded tp_btf program where its BTF says (what aya's attach does) and returns
/// the link's fd, to hand on (BPF_RAW_TRACEPOINT_OPEN with no name).
fn raw_tracepoint_open(program: &BtfTracePoint, name: &'static str) -> Result<OwnedFd, ExecError> {
    let prog_fd = program.fd().map_err(program_err(name))?.as_fd().as_raw_fd();
    let mut attr = [0u64; 3];
    attr[1] = prog_fd as u32 as u64;
    // SAFETY: a bpf(2) call with a zeroed, correctly sized attribute block.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            17, // BPF_RAW_TRACEPOINT_OPEN
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(program_err(name)(ProgramError::SyscallError(
            aya::sys::SyscallError {
                call: "bpf_raw_tracepoint_open",
                io_error: std::io::Error::last_os_error(),
            },
        )));
    }
    // SAFETY: the kernel made this fd for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl ExecObserver {
    /// Loads the exec program into the kernel and attaches it to `sched_process_exec`.
    ///
    /// Needs root (`CAP_BPF` and `CAP_PERFMON`). No cgroup is watched yet: see
    /// [`ExecObserver::watch_cgroup`].
    pub fn load() -> Result<Self, ExecError> {
        let btf = Btf::from_sys_fs().map_err(ExecError::Btf)?;
        Self::load_with(&btf)
    }

    /// [`ExecObserver::load`] with the kernel's BTF already parsed (parsing it costs tens of
    /// milliseconds: do it once per run).
    pub fn load_with(btf: &Btf) -> Result<Self, ExecError> {
        Self::load_then(|| Ok(btf))
    }

    /// [`ExecObserver::load`], asking for the kernel's BTF only when the program is loaded, after
    /// the object is (aya's loader parses the kernel's BTF itself for the object's relocations:
    /// the caller can parse its own copy meanwhile, on another thread).
    pub fn load_then<'a>(
        btf: impl FnOnce() -> Result<&'a Btf, ExecError>,
    ) -> Result<Self, ExecError> {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(ExecError::Load)?;
        let btf = btf()?;

        for name in PROGRAMS {
            loaded_program(&mut ebpf, btf, name)?
                .attach()
                .map_err(program_err(name))?;
        }

        let sessions = HashMap::try_from(take_map(&mut ebpf, SESSION_CGROUPS)?)
            .map_err(map_err(SESSION_CGROUPS))?;
        let events =
            RingBuf::try_from(take_map(&mut ebpf, EXEC_EVENTS)?).map_err(map_err(EXEC_EVENTS))?;
        let lost =
            PerCpuArray::try_from(take_map(&mut ebpf, EXEC_LOST)?).map_err(map_err(EXEC_LOST))?;

        let names =
            HashMap::try_from(take_map(&mut ebpf, HELD_NAMES)?).map_err(map_err(HELD_NAMES))?;
        let held =
            HashMap::try_from(take_map(&mut ebpf, HELD_PIDS)?).map_err(map_err(HELD_PIDS))?;

        Ok(Self {
            sessions,
            events,
            lost,
            names,
            held: Some(held),
            flags: 0,
            _keep: Keep::Ebpf(ebpf),
        })
    }

    /// Loads the object and the program and attaches it, for a session to come; returns the
    /// link and the maps as file descriptors (the object itself is dropped).
    pub fn preload(btf: &Btf) -> Result<Preloaded, ExecError> {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(ExecError::Load)?;
        let mut links = Vec::new();
        for name in PROGRAMS {
            let program = loaded_program(&mut ebpf, btf, name)?;
            links.push(raw_tracepoint_open(program, name)?);
        }
        let mut maps = Vec::new();
        for name in PRELOADED_MAPS {
            let m = ebpf
                .map(name)
                .ok_or(ExecError::Missing { kind: "map", name })?;
            let data = match m {
                aya::maps::Map::HashMap(d)
                | aya::maps::Map::RingBuf(d)
                | aya::maps::Map::PerCpuArray(d) => d,
                _ => {
                    return Err(ExecError::Map {
                        name,
                        source: MapError::InvalidMapType { map_type: 0 },
                    })
                }
            };
            maps.push(data.fd().as_fd().try_clone_to_owned().map_err(|e| {
                map_err(name)(MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error: e,
                }))
            })?);
        }
        Ok(Preloaded { links, maps })
    }

    /// The observer of a [`Preloaded`] set (in the session process).
    pub fn from_preloaded(p: Preloaded) -> Result<Self, ExecError> {
        let mut maps = p.maps.into_iter();
        let mut next = |name: &'static str| -> Result<MapData, ExecError> {
            let fd = maps
                .next()
                .ok_or(ExecError::Missing { kind: "map", name })?;
            MapData::from_fd(fd).map_err(map_err(name))
        };
        let sessions = HashMap::try_from(aya::maps::Map::HashMap(next(SESSION_CGROUPS)?))
            .map_err(map_err(SESSION_CGROUPS))?;
        let events = RingBuf::try_from(aya::maps::Map::RingBuf(next(EXEC_EVENTS)?))
            .map_err(map_err(EXEC_EVENTS))?;
        let lost = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(next(EXEC_LOST)?))
            .map_err(map_err(EXEC_LOST))?;
        let names = HashMap::try_from(aya::maps::Map::HashMap(next(HELD_NAMES)?))
            .map_err(map_err(HELD_NAMES))?;
        let held = HashMap::try_from(aya::maps::Map::HashMap(next(HELD_PIDS)?))
            .map_err(map_err(HELD_PIDS))?;
        Ok(Self {
            sessions,
            events,
            lost,
            names,
            held: Some(held),
            flags: 0,
            _keep: Keep::Links(p.links),
        })
    }

    /// Reports execs of tasks in the cgroup with this cgroup v2 id (see [`cgroup_id_of`]).
    ///
    /// Only tasks directly in that cgroup are reported, not those in its descendants.
    pub fn watch_cgroup(&mut self, cgroup_id: u64) -> Result<(), ExecError> {
        self.sessions
            .insert(cgroup_id, self.flags, 0)
            .map_err(map_err(SESSION_CGROUPS))
    }

    /// Stops, at exec, every program known by one of these names (the last component of the
    /// path given to exec, of a script's interpreter, or of the executable file itself; only
    /// the first `EXEC_NAME_LEN` bytes count): it runs no instruction until the user side sends
    /// SIGCONT (see `commands::guard`). A script whose own file (a symbolic link's target) has
    /// such a name is stopped too, and so is one whose file the kernel side could not name.
    /// Call before [`ExecObserver::watch_cgroup`].
    pub fn hold_names<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ExecError> {
        for n in names {
            self.names
                .insert(exec_name_hash(n.as_bytes()), 1, 0)
                .map_err(map_err(HELD_NAMES))?;
            self.flags |= SESSION_HOLDS_COMMANDS;
        }
        Ok(())
    }

    /// The map of stopped processes, for the command guard (once; `None` after).
    pub fn take_held_pids(&mut self) -> Option<HeldPids> {
        self.held.take()
    }

    /// Stops reporting execs in this cgroup. Unwatching a cgroup that is not watched is not an
    /// error.
    pub fn unwatch_cgroup(&mut self, cgroup_id: u64) -> Result<(), ExecError> {
        match self.sessions.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(map_err(SESSION_CGROUPS)(source)),
        }
    }

    /// The ring buffer's file descriptor: readable (`POLLIN`) when events are waiting. Call
    /// [`ExecObserver::drain`] then.
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Hands every event that is waiting to `f`, without blocking.
    pub fn drain(&mut self, f: &mut dyn FnMut(ExecEvent)) {
        while let Some(item) = self.events.next() {
            match ExecEvent::decode(&item) {
                Some(event) => f(event),
                None => tracing::warn!(len = item.len(), "malformed exec record skipped"),
            }
        }
    }

    /// Number of exec events the kernel side dropped because the ring buffer was full.
    pub fn lost_events(&self) -> Result<u64, ExecError> {
        let per_cpu = self.lost.get(&0, 0).map_err(map_err(EXEC_LOST))?;
        Ok(per_cpu.iter().sum())
    }
}

/// Wraps a map error with the map's name.
fn map_err(name: &'static str) -> impl Fn(MapError) -> ExecError {
    move |source| ExecError::Map { name, source }
}

/// Takes a map out of the object, so that the observer can own it next to the object.
fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ExecError> {
    ebpf.take_map(name)
        .ok_or(ExecError::Missing { kind: "map", name })
}

/// One exec in a watched cgroup.
#[derive(Debug, Clone, Serialize)]
pub struct ExecEvent {
    /// Process id after the exec.
    pub pid: u32,
    /// Thread id that called exec (after the exec the kernel makes it the process's only thread,
    /// so it equals `pid`).
    pub tid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    /// Real user id after the exec.
    pub uid: u32,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// The path passed to exec (not resolved; truncated to 255 bytes; lossy UTF-8).
    pub filename: String,
    /// The new image's argument vector (lossy UTF-8), as far as it was captured: the kernel side
    /// reads at most the first 512 bytes of the argument area.
    pub argv: Vec<String>,
    /// True when the argument area was larger than what was captured: then the last element of
    /// `argv` may be cut short and further arguments are missing.
    pub argv_truncated: bool,
    /// The kernel side stopped the process for a check (a held program name).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// A script was run: `argv` starts with its interpreter, then the script's path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub script: bool,
}

impl ExecEvent {
    /// Decodes a ring buffer item; `None` when it is too short to be an [`ExecRecord`].
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<ExecRecord>() {
            return None;
        }
        // SAFETY: the length was checked; `ExecRecord` is `repr(C)` of integers and byte arrays
        // (`aya::Pod`), so any bytes are a valid value; the read tolerates any alignment.
        let record: ExecRecord = unsafe { bytes.as_ptr().cast::<ExecRecord>().read_unaligned() };
        Some(Self::from_record(&record))
    }

    /// Builds the event from the kernel's record, never trusting its lengths beyond the arrays.
    fn from_record(record: &ExecRecord) -> Self {
        let filename_len = (record.filename_len as usize).min(EXEC_FILENAME_LEN);
        let filename = &record.filename[..filename_len];
        let filename = filename.split(|&b| b == 0).next().unwrap_or_default();

        let args_len = (record.args_len as usize).min(EXEC_ARGS_LEN);
        Self {
            pid: record.pid,
            tid: record.tid,
            ppid: record.ppid,
            uid: record.uid,
            cgroup_id: record.cgroup_id,
            filename: String::from_utf8_lossy(filename).into_owned(),
            argv: split_args(&record.args[..args_len]),
            argv_truncated: u64::from(record.args_total_len) > args_len as u64,
            stopped: record.flags & EXEC_STOPPED != 0,
            script: record.flags & EXEC_SCRIPT != 0,
        }
    }
}

/// Splits the argument area (NUL-terminated strings back to back) into arguments. Empty
/// arguments are kept; a last string without its NUL (cut off by the capture limit) is kept too.
fn split_args(area: &[u8]) -> Vec<String> {
    if area.is_empty() {
        return Vec::new();
    }
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    area.split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The cgroup v2 id of the cgroup at `path` (a directory under the cgroup2 mount): its inode
/// number, which is what `bpf_get_current_cgroup_id` returns for tasks in it.
pub fn cgroup_id_of(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(filename: &[u8], args: &[u8], args_total_len: u32) -> ExecRecord {
        let mut rec = ExecRecord::ZERO;
        rec.pid = 42;
        rec.tid = 42;
        rec.ppid = 1;
        rec.uid = 1000;
        rec.cgroup_id = 7;
        rec.filename[..filename.len()].copy_from_slice(filename);
        rec.filename_len = filename.len() as u32;
        let n = args.len().min(EXEC_ARGS_LEN);
        rec.args[..n].copy_from_slice(&args[..n]);
        rec.args_len = n as u32;
        rec.args_total_len = args_total_len;
        rec
    }

    fn bytes_of(rec: &ExecRecord) -> Vec<u8> {
        // SAFETY: `ExecRecord` has no padding, so all its bytes are initialised.
        unsafe {
            std::slice::from_raw_parts(
                (rec as *const ExecRecord).cast::<u8>(),
                size_of::<ExecRecord>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn complete_argv_is_split_at_nuls() {
        let args = b"/bin/echo\0hello\0world\0";
        let ev = ExecEvent::from_record(&record(b"/bin/echo", args, args.len() as u32));
        assert_eq!(ev.filename, "/bin/echo");
        assert_eq!(ev.argv, ["/bin/echo", "hello", "world"]);
        assert!(!ev.argv_truncated);
        assert_eq!(
            (ev.pid, ev.tid, ev.ppid, ev.uid, ev.cgroup_id),
            (42, 42, 1, 1000, 7)
        );
    }

    #[test]
    fn empty_arguments_are_kept() {
        let args = b"prog\0\0x\0\0";
        let ev = ExecEvent::from_record(&record(b"prog", args, args.len() as u32));
        assert_eq!(ev.argv, ["prog", "", "x", ""]);
    }

    #[test]
    fn argv_cut_at_the_capture_limit_is_marked_truncated() {
        let mut args = b"terraform\0destroy\0".to_vec();
        args.resize(EXEC_ARGS_LEN + 100, b'a');
        let ev = ExecEvent::from_record(&record(b"/usr/bin/terraform", &args, args.len() as u32));
        assert!(ev.argv_truncated);
        assert_eq!(ev.argv.len(), 3);
        assert_eq!(ev.argv[..2], ["terraform", "destroy"]);
        assert_eq!(
            ev.argv[2].len(),
            EXEC_ARGS_LEN - b"terraform\0destroy\0".len()
        );
    }

    #[test]
    fn unreadable_argv_is_empty_and_truncated() {
        let ev = ExecEvent::from_record(&record(b"/bin/true", b"", 30));
        assert!(ev.argv.is_empty());
        assert!(ev.argv_truncated);
    }

    #[test]
    fn lengths_beyond_the_arrays_are_clamped() {
        let mut rec = record(b"/bin/true", b"true\0", 5);
        rec.filename_len = u32::MAX;
        rec.args_len = u32::MAX;
        let ev = ExecEvent::from_record(&rec);
        assert_eq!(ev.filename, "/bin/true");
        assert!(!ev.argv_truncated);
        // "true", then one empty argument per NUL left of the 512 bytes once the last is dropped.
        assert_eq!(ev.argv.len(), 1 + EXEC_ARGS_LEN - 5);
        assert_eq!(ev.argv[0], "true");
    }

    #[test]
    fn decode_reads_unaligned_records_and_rejects_short_ones() {
        let rec = record(b"/bin/ls", b"ls\0-l\0", 6);
        let mut buf = vec![0u8];
        buf.extend(bytes_of(&rec));
        let ev = ExecEvent::decode(&buf[1..]).unwrap();
        assert_eq!(ev.argv, ["ls", "-l"]);
        assert!(ExecEvent::decode(&buf[1..buf.len() - 1]).is_none());
    }

    #[test]
    fn held_name_keys_are_fnv1a_of_the_first_15_bytes() {
        // FNV-1a 64 of "a" (the published test vector).
        assert_eq!(exec_name_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            exec_name_hash(b"terraform\0junk"),
            exec_name_hash(b"terraform")
        );
        // What the kernel keeps of a long name in comm: the first 15 bytes.
        assert_eq!(
            exec_name_hash(b"kubectl-delete-all-things"),
            exec_name_hash(b"kubectl-delete-")
        );
        assert_ne!(exec_name_hash(b"terraform"), exec_name_hash(b"terraform1"));
    }

    #[test]
    fn stop_and_script_flags_are_decoded() {
        let mut rec = record(
            b"/w/bin/terraform",
            b"/bin/sh\0/w/bin/terraform\0plan\0",
            30,
        );
        assert!(!ExecEvent::from_record(&rec).stopped);
        rec.flags = EXEC_STOPPED | EXEC_SCRIPT;
        let ev = ExecEvent::from_record(&rec);
        assert!(ev.stopped && ev.script);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["stopped"], true);
        rec.flags = 0;
        let json = serde_json::to_value(ExecEvent::from_record(&rec)).unwrap();
        assert!(json.get("stopped").is_none() && json.get("script").is_none());
    }

    #[test]
    fn cgroup_id_is_the_directory_inode() {
        let dir = tempfile::tempdir().unwrap();
        let ino = std::fs::metadata(dir.path()).unwrap().ino();
        assert_eq!(cgroup_id_of(dir.path()).unwrap(), ino);
        assert!(cgroup_id_of(&dir.path().join("missing")).is_err());
    }

    /// Privileged tests: need root and a cgroup v2 hierarchy.
    mod privileged {
        use std::{
            ffi::CString,
            os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
            path::PathBuf,
            process::{Command, Stdio},
            time::{Duration, Instant},
        };

        use super::super::*;

        /// Returns false (after saying why) when the test cannot run here; panics instead when
        /// `CI` is set, because CI must run every test.
        fn can_run(name: &str) -> bool {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                return true;
            }
            let reason = format!("{name}: needs root to load eBPF programs and create cgroups");
            assert!(
                std::env::var_os("CI").is_none(),
                "{reason} (CI is set, so this fails)"
            );
            eprintln!("skipped: {reason}");
            false
        }

        /// The cgroup2 mount point, from /proc/self/mountinfo.
        fn cgroup2_mount() -> PathBuf {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            info.lines()
                .find_map(|line| {
                    let (left, right) = line.split_once(" - ")?;
                    let fstype = right.split_whitespace().next()?;
                    if fstype != "cgroup2" {
                        return None;
                    }
                    left.split_whitespace().nth(4).map(PathBuf::from)
                })
                .expect("no cgroup2 mount in /proc/self/mountinfo")
        }

        /// A leaf cgroup, removed on drop.
        struct Leaf(PathBuf);

        impl Leaf {
            fn create() -> Self {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                let path =
                    cgroup2_mount().join(format!("guard-test-exec-{}-{nanos}", std::process::id()));
                std::fs::create_dir(&path).unwrap();
                Self(path)
            }

            /// A command that moves itself into this cgroup before it execs.
            fn command(&self, program: &str, args: &[&str]) -> Command {
                let procs =
                    CString::new(self.0.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
                let mut cmd = Command::new(program);
                cmd.args(args).stdout(Stdio::null());
                // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // "0" moves the writing process.
                        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                        let err = std::io::Error::last_os_error();
                        libc::close(fd);
                        if n != 1 {
                            return Err(err);
                        }
                        Ok(())
                    })
                };
                cmd
            }
        }

        impl Drop for Leaf {
            fn drop(&mut self) {
                // The last task may take a moment to leave after it was reaped.
                for _ in 0..50 {
                    if std::fs::remove_dir(&self.0).is_ok() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                eprintln!("cannot remove test cgroup {}", self.0.display());
            }
        }

        fn run(mut cmd: Command) -> u32 {
            let mut child = cmd.spawn().unwrap();
            let pid = child.id();
            assert!(child.wait().unwrap().success());
            pid
        }

        /// Collects events until `done` says so or `timeout` has passed.
        fn collect_until(
            obs: &mut ExecObserver,
            timeout: Duration,
            done: impl Fn(&[ExecEvent]) -> bool,
        ) -> Vec<ExecEvent> {
            let deadline = Instant::now() + timeout;
            let mut events = Vec::new();
            loop {
                obs.drain(&mut |ev| events.push(ev));
                if done(&events) || Instant::now() >= deadline {
                    return events;
                }
                let mut pfd = libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&obs.ring_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 50) };
            }
        }

        #[test]
        fn exec_in_watched_cgroup_is_reported_with_argv_and_others_are_not() {
            if !can_run("exec_in_watched_cgroup_is_reported_with_argv_and_others_are_not") {
                return;
            }
            let leaf = Leaf::create();
            let cgroup_id = cgroup_id_of(&leaf.0).unwrap();

            let started = Instant::now();
            let mut obs = ExecObserver::load().unwrap();
            eprintln!("load and attach: {:?}", started.elapsed());
            obs.watch_cgroup(cgroup_id).unwrap();

            // Outside the leaf first: had it been reported, it would come before the inside one.
            let mut outside = Command::new("/bin/echo");
            outside
                .args(["outside", "the", "leaf"])
                .stdout(Stdio::null());
            run(outside);
            let pid = run(leaf.command("/bin/echo", &["hello", "world"]));

            let is_ours = |ev: &ExecEvent| ev.pid == pid;
            let events = collect_until(&mut obs, Duration::from_secs(2), |evs| {
                evs.iter().any(is_ours)
            });
            let ev = events.iter().find(|ev| is_ours(ev)).unwrap_or_else(|| {
                panic!("no exec event for pid {pid} within 2 s; got {events:?}")
            });
            assert_eq!(ev.argv, ["/bin/echo", "hello", "world"]);
            assert!(!ev.argv_truncated);
            assert_eq!(ev.filename, "/bin/echo");
            assert_eq!(ev.tid, pid);
            assert_eq!(ev.ppid, std::process::id());
            assert_eq!(ev.uid, 0);
            assert_eq!(ev.cgroup_id, cgroup_id);
            assert!(
                events.iter().all(|ev| ev.cgroup_id == cgroup_id),
                "exec outside the watched cgroup reported: {events:?}"
            );

            // An argument area over the capture limit arrives cut, and says so.
            let long = "x".repeat(1000);
            let pid = run(leaf.command("/bin/echo", &[long.as_str()]));
            let events = collect_until(&mut obs, Duration::from_secs(2), |evs| {
                evs.iter().any(|ev| ev.pid == pid)
            });
            let ev = events
                .iter()
                .find(|ev| ev.pid == pid)
                .expect("no event for the long exec");
            assert!(ev.argv_truncated);
            assert_eq!(ev.argv[0], "/bin/echo");
            assert_eq!(ev.argv[1], long[..EXEC_ARGS_LEN - "/bin/echo\0".len()]);

            // After unwatching, execs in the leaf are no longer reported.
            obs.unwatch_cgroup(cgroup_id).unwrap();
            obs.unwatch_cgroup(cgroup_id).unwrap();
            let pid = run(leaf.command("/bin/echo", &["unwatched"]));
            let events = collect_until(&mut obs, Duration::from_millis(300), |_| false);
            assert!(
                events.iter().all(|ev| ev.pid != pid),
                "exec in an unwatched cgroup reported: {events:?}"
            );
            assert_eq!(obs.lost_events().unwrap(), 0);
        }
    }
}
