//! Profiles: what a session's agent may see, write, run and reach, and the risk statement it
//! works under.
//!
//! A profile is a TOML file (`profiles/README.md` documents every key). This module parses it
//! (`deny_unknown_fields` everywhere), validates every value with the file, line, column and key
//! of the mistake, follows `extends` (with cycle detection), merges the chain and resolves it
//! against the invoking user's home directory into a [`Resolved`] profile. Enforcing the sections
//! is the business of the modules that guard each thing (`files`, `launch`, ...).
//!
//! Merge rules, applied from the farthest ancestor to the named profile:
//! - scalars (`description`, `decisions.*`, `process.allow_io_uring`, `network.mode`,
//!   `network.unknown_hosts`, `limits.pids`) override when set;
//! - lists append (duplicates dropped, first position kept);
//! - `[risk]` is replaced as a whole when the profile has the table (a risk statement is about
//!   one task: half of an inherited one would mislead);
//! - `files.read_only`, `files.hidden` and `files.writable` say one thing per path: naming a path
//!   removes it from the other two inherited lists (so `writable` can give back a hidden path);
//! - `process.allow_syscalls` / `deny_syscalls` likewise: the later profile wins for a syscall;
//! - `process.env_pass` wins over `env_drop` (and over [`DEFAULT_ENV_DROP`]) whatever the order.

// `allow`, not `expect`: how much of the API is used differs between the binary and its tests,
// and shrinks as the enforcement half of the profiles issue wires it into `sandbox run`.
#![allow(
    dead_code,
    reason = "the resolved profile's API is consumed by the enforcement wiring that follows"
)]

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use crate::hold::Scope;

/// The profiles compiled into the binary (from `profiles/*.toml`), by name.
pub const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../../profiles/default.toml")),
    ("claude", include_str!("../../profiles/claude.toml")),
    ("codex", include_str!("../../profiles/codex.toml")),
    ("terraform", include_str!("../../profiles/terraform.toml")),
    ("readonly", include_str!("../../profiles/readonly.toml")),
];

/// Environment variables every loaded profile drops (cloud credentials), before its own
/// `env_drop`; `env_pass` keeps them. Not part of [`Resolved::empty`].
pub const DEFAULT_ENV_DROP: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "CLOUDSDK_AUTH_ACCESS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "ARM_CLIENT_SECRET",
    "ARM_ACCESS_KEY",
];

/// How deep an `extends` chain may go (a safety net; cycles are detected on their own).
const MAX_DEPTH: usize = 32;

/// Where one profile file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk, as it was found (`./profiles/x.toml`, `/etc/sandbox/profiles/x.toml`, ...).
    File(PathBuf),
    /// A profile compiled into the binary; shown as `builtin:NAME`.
    Builtin(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Builtin(n) => write!(f, "builtin:{n}"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A place in a profile (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub source: Source,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.source, self.line, self.col)
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A name that is neither a plain profile name nor a path.
    #[error("{name:?} is not a profile name (letters, digits, '.', '_', '-'; a path contains '/' or ends with .toml)")]
    BadName {
        /// What was given.
        name: String,
    },
    /// No profile of that name in any lookup place.
    #[error("no profile named {name:?} (looked in {})", looked.join(", "))]
    NotFound {
        /// The name.
        name: String,
        /// Every place looked at, in order.
        looked: Vec<String>,
    },
    /// A profile file that exists but could not be read.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A mistake in a profile: bad TOML, an unknown key, a wrong type or value, an `extends`
    /// cycle. The message comes from the TOML parser or from this module's checks.
    #[error("{at}: {}{message}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Invalid {
        /// Where.
        at: Location,
        /// The dotted key the mistake is in, when known (`files.protect`).
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The profile named by `extends` could not be found or read.
    #[error("{at}: extends {name:?}")]
    Extends {
        /// Where the `extends` value is.
        at: Location,
        /// The name or path it gives.
        name: String,
        /// Why it could not be followed.
        #[source]
        source: Box<ProfileError>,
    },
    /// The merged name patterns could not be compiled together (each one compiled alone).
    #[error("compiling the name patterns")]
    Patterns(#[source] globset::Error),
    /// Neither SUDO_USER's home nor $HOME is known.
    #[error("cannot tell the invoking user's home directory: {why}")]
    NoHome {
        /// Why.
        why: String,
    },
}

impl ProfileError {
    /// The error and its causes on one line (`a: b: c`), as `sandbox profile check` prints it.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The file format, as written. Values that need checking keep their span for the error message.

type Str = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    description: Option<String>,
    extends: Option<Str>,
    risk: Option<RawRisk>,
    #[serde(default)]
    decisions: RawDecisions,
    #[serde(default)]
    files: RawFiles,
    #[serde(default)]
    process: RawProcess,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    commands: RawCommands,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    pids: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNotify {
    webhook: Option<Str>,
    webhook_secret_file: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRisk {
    must_survive: Vec<Str>,
    rollback: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDecisions {
    timeout: Option<Str>,
    default_scope: Option<Scope>,
    self_approve: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFiles {
    protect: Vec<Str>,
    protect_writes: Vec<Str>,
    read_only: Vec<Str>,
    hidden: Vec<Str>,
    writable: Vec<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawProcess {
    allow_syscalls: Vec<Str>,
    deny_syscalls: Vec<Str>,
    allow_io_uring: Option<bool>,
    env_pass: Vec<Str>,
    env_drop: Vec<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNetwork {
    mode: Option<NetMode>,
    allow: Vec<Str>,
    inspect: Vec<Str>,
    hold: Vec<Str>,
    hold_connect: Vec<Str>,
    unknown_hosts: Option<UnknownHosts>,
    upstream_ca: Vec<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCommands {
    hold: Vec<Str>,
}

// ---------------------------------------------------------------------------------------------
// The resolved profile.

/// How the session reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// No network at all (a network namespace with only loopback).
    None,
    /// Only through the session's egress proxy.
    Proxy,
    /// The host's network, unfiltered.
    Host,
}

/// What the proxy does with a host in neither `allow` nor `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHosts {
    /// Refuse the connection.
    Deny,
    /// Hold the connection until a human decides.
    Hold,
}

/// The risk statement: shown at session start, written to the audit log, readable by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Risk {
    /// What must survive the session, in the user's words.
    pub must_survive: Vec<String>,
    /// How to undo damage, in the user's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

impl Risk {
    /// True when the profile states no risk at all.
    pub fn is_empty(&self) -> bool {
        self.must_survive.is_empty() && self.rollback.is_none()
    }
}

/// How holds are decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decisions {
    /// How long a hold waits before it is denied; `None`: the command line's (or built-in) default.
    #[serde(
        serialize_with = "ser_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The scope a decision gets when the human names none; `None`: the built-in default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_scope: Option<Scope>,
    /// Whether the session's own user may decide its holds (`None`: no, the default). Members
    /// of the approvers group and root always may.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_approve: Option<bool>,
}

/// The smallest and largest `limits.pids` (a session needs its init, the command and a few
/// helpers; Linux's own `pid_max` cannot exceed 2^22).
pub const PIDS_RANGE: std::ops::RangeInclusive<u32> = 8..=4_194_304;

/// The pids limit of a session whose profile sets none (and of `sandbox run` without a profile).
pub const DEFAULT_PIDS: u32 = 4096;

/// Resource limits of the whole session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// At most this many tasks (processes and threads) in the session at once; `None`: the
    /// built-in [`DEFAULT_PIDS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Limits {
    /// The pids limit in force: the profile's, else [`DEFAULT_PIDS`].
    pub fn pids(&self) -> u32 {
        self.pids.unwrap_or(DEFAULT_PIDS)
    }
}

/// The files section, resolved: `~` expanded, literal paths apart from compiled name patterns.
///
/// Literal paths are absolute and lexically normal (no `.`, `..` or trailing `/`); they are not
/// canonicalized (they need not exist). A literal directory stands for its whole tree.
#[derive(Debug, Clone, Default)]
pub struct ResolvedFiles {
    /// Delete / rename away / truncate is held (files, or whole trees).
    pub protect_paths: Vec<PathBuf>,
    /// Same, for paths matching a name pattern (a matching directory stands for its tree).
    pub protect_patterns: PatternSet,
    /// Any write-open is held too, on top of what `protect` holds.
    pub protect_writes_paths: Vec<PathBuf>,
    /// Same, for paths matching a name pattern.
    pub protect_writes_patterns: PatternSet,
    /// Mounted read-only.
    pub read_only: Vec<PathBuf>,
    /// Not visible at all (an empty tmpfs or /dev/null over them).
    pub hidden: Vec<PathBuf>,
    /// Writable, also inside a read-only tree.
    pub writable: Vec<PathBuf>,
}

impl ResolvedFiles {
    /// True when deleting, renaming away or truncating `path` is held: it is, or is inside, a
    /// `protect` or `protect_writes` path, or it or one of its ancestors matches a pattern.
    /// `path` should be absolute and canonical.
    pub fn protects(&self, path: &Path) -> bool {
        self.protects_writes(path)
            || within_any(path, &self.protect_paths)
            || self.protect_patterns.covers(path)
    }

    /// True when any write-open of `path` is held (`protect_writes`).
    pub fn protects_writes(&self, path: &Path) -> bool {
        within_any(path, &self.protect_writes_paths) || self.protect_writes_patterns.covers(path)
    }

    /// True when no list has anything.
    pub fn is_empty(&self) -> bool {
        self.protect_paths.is_empty()
            && self.protect_patterns.is_empty()
            && self.protect_writes_paths.is_empty()
            && self.protect_writes_patterns.is_empty()
            && self.read_only.is_empty()
            && self.hidden.is_empty()
            && self.writable.is_empty()
    }
}

fn within_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

impl Serialize for ResolvedFiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        fn both(paths: &[PathBuf], pats: &PatternSet) -> Vec<String> {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .chain(pats.patterns().iter().cloned())
                .collect()
        }
        fn strs(paths: &[PathBuf]) -> Vec<String> {
            paths.iter().map(|p| p.display().to_string()).collect()
        }
        let mut st = s.serialize_struct("files", 5)?;
        st.serialize_field(
            "protect",
            &both(&self.protect_paths, &self.protect_patterns),
        )?;
        st.serialize_field(
            "protect_writes",
            &both(&self.protect_writes_paths, &self.protect_writes_patterns),
        )?;
        st.serialize_field("read_only", &strs(&self.read_only))?;
        st.serialize_field("hidden", &strs(&self.hidden))?;
        st.serialize_field("writable", &strs(&self.writable))?;
        st.end()
    }
}

/// Compiled name patterns (globs): a pattern with a `/` matches the whole path, one without
/// matches the file name in any directory (`*.tfstate` is `**/*.tfstate`). `*` and `?` do not
/// cross `/`; `**` does.
#[derive(Debug, Clone)]
pub struct PatternSet {
    patterns: Vec<String>,
    set: GlobSet,
    /// When every pattern is a name (`NAME`, `*.tfstate`, `**/.git`: no `/` but a leading
    /// `**/`), the same globs over a single name: [`PatternSet::covers`] then matches each
    /// component of the path once instead of the whole path of every ancestor.
    names: Option<GlobSet>,
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet {
            patterns: Vec::new(),
            set: GlobSet::empty(),
            names: None,
        }
    }
}

/// The name glob of a pattern that matches a single path component anywhere (`NAME`,
/// `**/NAME`), if it is one.
fn name_glob(pattern: &str) -> Option<&str> {
    if pattern.starts_with('/') {
        return None;
    }
    let rest = pattern.strip_prefix("**/").unwrap_or(pattern);
    (!rest.is_empty() && !rest.contains('/') && !rest.contains("**")).then_some(rest)
}

impl PartialEq for PatternSet {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl PatternSet {
    /// Compiles `patterns` (already `~`-expanded).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternSet, globset::Error> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(compile_glob(p.as_ref())?);
        }
        let names = match patterns
            .iter()
            .map(|p| name_glob(p.as_ref()))
            .collect::<Option<Vec<&str>>>()
        {
            Some(names) if !names.is_empty() => {
                let mut nb = GlobSetBuilder::new();
                for n in names {
                    nb.add(GlobBuilder::new(n).literal_separator(true).build()?);
                }
                Some(nb.build()?)
            }
            _ => None,
        };
        Ok(PatternSet {
            patterns: patterns.iter().map(|p| p.as_ref().to_owned()).collect(),
            set: b.build()?,
            names,
        })
    }

    /// The patterns as written (after `~` expansion).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when `path` itself (absolute, canonical) matches a pattern.
    pub fn matches(&self, path: &Path) -> bool {
        self.set.is_match(path)
    }

    /// True when `path` or one of its ancestors matches: what a pattern naming a directory
    /// (`**/.git`) protects.
    pub fn covers(&self, path: &Path) -> bool {
        match &self.names {
            Some(names) => path.iter().any(|c| c != "/" && names.is_match(c)),
            None => path.ancestors().any(|a| self.set.is_match(a)),
        }
    }

    /// [`PatternSet::covers`] the slow way (every ancestor against the whole-path globs), for
    /// tests of the fast one.
    #[cfg(test)]
    fn covers_by_ancestors(&self, path: &Path) -> bool {
        path.ancestors().any(|a| self.set.is_match(a))
    }
}

fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    let anchored = if pattern.starts_with('/') || pattern.starts_with("**") {
        pattern.to_owned()
    } else {
        format!("**/{pattern}")
    };
    GlobBuilder::new(&anchored).literal_separator(true).build()
}

/// True when `entry` is a name pattern rather than a literal path.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?', '[', '{'])
}

/// The process section: seccomp adjustments and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Syscalls allowed on top of the baseline.
    pub allow_syscalls: Vec<String>,
    /// Syscalls refused (EPERM) on top of the baseline.
    pub deny_syscalls: Vec<String>,
    /// io_uring may be set up (it is refused by default: seccomp cannot see its operations).
    pub allow_io_uring: bool,
    /// Variables kept even when `env_drop` names them (names, or `PREFIX*`).
    pub env_pass: Vec<String>,
    /// Variables removed from the command's environment (names, or `PREFIX*`, or `*`).
    pub env_drop: Vec<String>,
}

impl Process {
    /// True when the variable `name` reaches the command: `env_pass` wins over `env_drop`.
    pub fn keeps_env(&self, name: &str) -> bool {
        env_matches(&self.env_pass, name) || !env_matches(&self.env_drop, name)
    }
}

fn env_matches(list: &[String], name: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The network section (parsed and validated; enforced by the network guard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// `None`: the command line's (or built-in) default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetMode>,
    /// Hosts the proxy lets through (lower case; `*.example.com`, `*`, or an IP address).
    pub allow: Vec<String>,
    /// Hosts whose TLS is intercepted so requests can be matched against `hold`.
    pub inspect: Vec<String>,
    /// Rule catalogues (`profiles/rules/NAME.toml`) whose requests are held.
    pub hold: Vec<String>,
    /// `host:port`, `cidr:port`, `[v6]:port`: connecting there is held.
    pub hold_connect: Vec<String>,
    /// What happens to other hosts; `None`: the built-in default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_hosts: Option<UnknownHosts>,
    /// CA certificates (PEM files) the proxy trusts for upstream TLS besides the system roots
    /// (a private endpoint's own CA).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_ca: Vec<PathBuf>,
}

/// Where holds and decisions are announced besides the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Notify {
    /// An http(s) URL that gets a signed JSON POST for each new hold and each decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A file holding the HMAC-SHA256 key that signs the webhook's bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
}

/// The commands section, enforced by the exec guard (`crate::commands`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Commands {
    /// Command patterns whose execution is held, in canonical form (see `crate::commands`).
    pub hold: Vec<String>,
}

/// A fully resolved profile: the `extends` chain merged, `~` expanded, everything validated.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The name or path it was loaded by (empty for [`Resolved::empty`]).
    pub name: String,
    /// The files merged, the farthest ancestor first, the named profile last.
    pub sources: Vec<Source>,
    /// One line about what the profile is for.
    pub description: Option<String>,
    /// The risk statement.
    pub risk: Risk,
    /// How holds are decided.
    pub decisions: Decisions,
    /// What may be seen and written, and what is protected.
    pub files: ResolvedFiles,
    /// Seccomp adjustments and environment.
    pub process: Process,
    /// Network (validated, not yet enforced).
    pub network: Network,
    /// Held commands.
    pub commands: Commands,
    /// Webhook and other announcements.
    pub notify: Notify,
    /// Resource limits of the session.
    pub limits: Limits,
}

#[derive(Serialize)]
struct View<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    risk: &'a Risk,
    decisions: &'a Decisions,
    files: &'a ResolvedFiles,
    process: &'a Process,
    network: &'a Network,
    commands: &'a Commands,
    notify: &'a Notify,
    limits: &'a Limits,
}

#[derive(Serialize)]
struct JsonView<'a> {
    name: &'a str,
    sources: &'a [Source],
    #[serde(flatten)]
    view: View<'a>,
}

impl Resolved {
    /// A profile with nothing in it: no protection, no restriction, no risk statement, and no
    /// [`DEFAULT_ENV_DROP`]. Not the `default` profile.
    pub fn empty() -> Resolved {
        Resolved::default()
    }

    fn view(&self) -> View<'_> {
        View {
            description: self.description.as_deref(),
            risk: &self.risk,
            decisions: &self.decisions,
            files: &self.files,
            process: &self.process,
            network: &self.network,
            commands: &self.commands,
            notify: &self.notify,
            limits: &self.limits,
        }
    }

    /// The profile as TOML, itself a valid profile without `extends`, preceded by comments
    /// naming its sources.
    pub fn to_toml(&self) -> String {
        let mut out = format!("# profile {:?}, resolved from (base first):\n", self.name);
        for s in &self.sources {
            out.push_str(&format!("#   {s}\n"));
        }
        match toml::to_string_pretty(&self.view()) {
            Ok(body) => out.push_str(&body),
            // Serializing plain strings, lists and tables cannot fail; say so if it ever does.
            Err(e) => out.push_str(&format!("# cannot show as TOML: {e}\n")),
        }
        out
    }

    fn json_view(&self) -> JsonView<'_> {
        JsonView {
            name: &self.name,
            sources: &self.sources,
            view: self.view(),
        }
    }

    /// The profile as one JSON object: `name`, `sources`, then the sections as in a file
    /// (for the audit log).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.json_view()).unwrap_or(serde_json::Value::Null)
    }

    /// [`Resolved::to_json`] as indented text, keys in file order.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.json_view()).unwrap_or_else(|_| "null".into())
    }
}

fn ser_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// A duration the way profiles write it (`10m`, `30s`, `1500ms`), exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        let s = ms / 1000;
        if s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Loads the profile `name_or_path` and everything it extends, for a user whose home is `home`.
///
/// A PATH (it contains `/` or ends with `.toml`) is read as it is. A NAME is looked up in
/// `./profiles/NAME.toml`, `HOME/.config/sandbox/profiles/NAME.toml`,
/// `/etc/sandbox/profiles/NAME.toml`, then the built-in profiles.
pub fn load(name_or_path: &str, home: &Path) -> Result<Resolved, ProfileError> {
    Lookup::standard(home).load(name_or_path, home)
}

/// The home directory of the invoking user: SUDO_USER's when running as root under sudo, else
/// `$HOME`, else the password database's entry for the real uid.
pub fn invoking_home() -> Result<PathBuf, ProfileError> {
    if nix::unistd::geteuid().is_root() {
        if let Some(name) = std::env::var("SUDO_USER").ok().filter(|n| n != "root") {
            // Fail closed: falling back to root's home would protect the wrong files.
            return match nix::unistd::User::from_name(&name) {
                Ok(Some(u)) => Ok(u.dir),
                Ok(None) => Err(ProfileError::NoHome {
                    why: format!("SUDO_USER {name:?} is not in the password database"),
                }),
                Err(e) => Err(ProfileError::NoHome {
                    why: format!("looking up SUDO_USER {name:?}: {e}"),
                }),
            };
        }
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(u)) => Ok(u.dir),
        _ => Err(ProfileError::NoHome {
            why: "no $HOME and no password entry for this uid".into(),
        }),
    }
}

/// True when `s` names a file rather than a profile.
fn is_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".toml")
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName { name: name.into() })
    }
}

/// One profile file's text, with where it came from.
struct Doc {
    source: Source,
    text: String,
    /// What identifies it for cycle detection (canonical path, or the built-in name).
    id: String,
}

impl Doc {
    fn file(path: PathBuf, text: String) -> Doc {
        let id = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string();
        Doc {
            source: Source::File(path),
            text,
            id,
        }
    }

    fn builtin(name: &'static str, text: &'static str) -> Doc {
        Doc {
            source: Source::Builtin(name),
            text: text.into(),
            id: format!("builtin:{name}"),
        }
    }

    fn read(path: &Path) -> Result<Doc, ProfileError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Doc::file(path.to_path_buf(), t)),
            Err(source) => Err(ProfileError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The file name without `.toml`, which is the name it is looked up by.
    fn stem(&self) -> Option<&str> {
        match &self.source {
            Source::Builtin(n) => Some(n),
            Source::File(p) => p.file_stem().and_then(|s| s.to_str()),
        }
    }

    fn location(&self, offset: usize) -> Location {
        let (line, col) = line_col(&self.text, offset);
        Location {
            source: self.source.clone(),
            line,
            col,
        }
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            at: self.location(span.start),
            key: key_at(&self.text, span.start),
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The dotted key whose name or value contains byte `offset` (`files.protect`), if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    key_in(doc.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn key_in(table: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in table {
        path.push(k.get_ref().to_string());
        if k.span().contains(&offset) {
            return true;
        }
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            if key_in(t, offset, path) {
                return true;
            }
        }
        if v.span().contains(&offset) {
            return true;
        }
        path.pop();
    }
    false
}

/// Where named profiles are looked up.
struct Lookup {
    dirs: Vec<PathBuf>,
    builtins: bool,
}

/// One validated profile file.
#[derive(Debug, Default)]
struct Layer {
    description: Option<String>,
    extends: Option<(String, Range<usize>)>,
    risk: Option<Risk>,
    decisions: Decisions,
    protect: Vec<Entry>,
    protect_writes: Vec<Entry>,
    read_only: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    process: Process,
    allow_io_uring: Option<bool>,
    network: Network,
    commands: Commands,
    notify: Notify,
    limits: Limits,
}

/// A `protect` / `protect_writes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Path(PathBuf),
    Pattern(String),
}

impl Lookup {
    fn standard(home: &Path) -> Lookup {
        Lookup {
            dirs: vec![
                PathBuf::from("./profiles"),
                home.join(".config/sandbox/profiles"),
                PathBuf::from("/etc/sandbox/profiles"),
            ],
            builtins: true,
        }
    }

    /// Every place `name` is looked for, in order, and the docs found there. `Err` for a file
    /// that exists but cannot be read: a profile that might shadow another is not skipped.
    fn candidates(&self, name: &str) -> Result<(Vec<String>, Vec<Doc>), ProfileError> {
        let mut looked = Vec::new();
        let mut found = Vec::new();
        for d in &self.dirs {
            let p = d.join(format!("{name}.toml"));
            looked.push(p.display().to_string());
            match std::fs::metadata(&p) {
                Ok(_) => found.push(Doc::read(&p)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ProfileError::Read { path: p, source }),
            }
        }
        if self.builtins {
            looked.push("the built-in profiles".into());
            if let Some((n, t)) = BUILTINS.iter().find(|(n, _)| *n == name) {
                found.push(Doc::builtin(n, t));
            }
        }
        Ok((looked, found))
    }

    /// Finds profile `name`. When `after` is the profile asking for its own name (a user's
    /// `default.toml` that extends `default`), the search goes on past it.
    fn find(&self, name: &str, after: Option<&Doc>) -> Result<Doc, ProfileError> {
        check_name(name)?;
        let (looked, mut found) = self.candidates(name)?;
        if let Some(me) = after.filter(|d| d.stem() == Some(name)) {
            if let Some(i) = found.iter().position(|d| d.id == me.id) {
                found.drain(..=i);
            }
        }
        if found.is_empty() {
            return Err(ProfileError::NotFound {
                name: name.into(),
                looked,
            });
        }
        Ok(found.remove(0))
    }

    fn load(&self, name_or_path: &str, home: &Path) -> Result<Resolved, ProfileError> {
        let mut doc = if is_path(name_or_path) {
            Doc::read(Path::new(name_or_path))?
        } else {
            self.find(name_or_path, None)?
        };
        // The chain, the named profile first.
        let mut chain: Vec<(Source, Layer)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let layer = parse_layer(&doc, home)?;
            seen.push(doc.id.clone());
            let next = match &layer.extends {
                None => None,
                Some((target, span)) => {
                    let wrap = |e: ProfileError| ProfileError::Extends {
                        at: doc.location(span.start),
                        name: target.clone(),
                        source: Box::new(e),
                    };
                    let next = if is_path(target) {
                        let p = match &doc.source {
                            // Relative to the extending file's directory.
                            Source::File(f) => match f.parent() {
                                Some(d) if !d.as_os_str().is_empty() => d.join(target),
                                _ => PathBuf::from(target),
                            },
                            Source::Builtin(_) => PathBuf::from(target),
                        };
                        Doc::read(&p).map_err(wrap)?
                    } else {
                        self.find(target, Some(&doc)).map_err(wrap)?
                    };
                    if let Some(i) = seen.iter().position(|id| *id == next.id) {
                        let mut names: Vec<&str> = seen[i..].iter().map(String::as_str).collect();
                        names.push(&next.id);
                        return Err(
                            doc.error(span.clone(), format!("cycle: {}", names.join(" -> ")))
                        );
                    }
                    if seen.len() >= MAX_DEPTH {
                        return Err(doc.error(
                            span.clone(),
                            format!("extends chain longer than {MAX_DEPTH} profiles"),
                        ));
                    }
                    Some(next)
                }
            };
            chain.push((doc.source.clone(), layer));
            match next {
                Some(n) => doc = n,
                None => break,
            }
        }
        let mut m = Merge::new(name_or_path);
        for (source, layer) in chain.into_iter().rev() {
            m.apply(source, layer);
        }
        m.finish()
    }
}

/// Parses and validates one profile file (without following `extends`).
fn parse_layer(doc: &Doc, home: &Path) -> Result<Layer, ProfileError> {
    let raw: RawProfile = toml::from_str(&doc.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        doc.error(span, e.message().trim_end())
    })?;
    let mut l = Layer {
        description: raw.description,
        ..Layer::default()
    };
    if let Some(ext) = raw.extends {
        let t = ext.get_ref().trim();
        if !is_path(t) {
            check_name(t).map_err(|e| doc.error(ext.span(), e.to_string()))?;
        }
        l.extends = Some((t.to_owned(), ext.span()));
    }

    if let Some(r) = raw.risk {
        let mut risk = Risk::default();
        for s in &r.must_survive {
            push_unique(&mut risk.must_survive, non_empty(doc, s)?);
        }
        if let Some(rb) = &r.rollback {
            risk.rollback = Some(non_empty(doc, rb)?);
        }
        l.risk = Some(risk);
    }

    if let Some(t) = &raw.decisions.timeout {
        let d = crate::hold::parse_duration(t.get_ref()).map_err(|e| doc.error(t.span(), e))?;
        l.decisions.timeout = Some(d);
    }
    l.decisions.default_scope = raw.decisions.default_scope;
    l.decisions.self_approve = raw.decisions.self_approve;

    // Files. Access lists say one thing per path within a file.
    let f = &raw.files;
    for s in &f.protect {
        push_unique(&mut l.protect, file_entry(doc, s, home, true)?);
    }
    for s in &f.protect_writes {
        push_unique(&mut l.protect_writes, file_entry(doc, s, home, true)?);
    }
    let mut access: Vec<(PathBuf, &'static str)> = Vec::new();
    for (list, name, out) in [
        (&f.read_only, "read_only", &mut l.read_only),
        (&f.hidden, "hidden", &mut l.hidden),
        (&f.writable, "writable", &mut l.writable),
    ] {
        for s in list {
            let Entry::Path(p) = file_entry(doc, s, home, false)? else {
                continue;
            };
            if let Some((_, other)) = access.iter().find(|(q, o)| *q == p && *o != name) {
                return Err(doc.error(
                    s.span(),
                    format!("{} is also in files.{other}: a path is in one of read_only, hidden, writable", p.display()),
                ));
            }
            access.push((p.clone(), name));
            push_unique(out, p);
        }
    }

    // Process.
    let p = &raw.process;
    for s in &p.allow_syscalls {
        push_unique(&mut l.process.allow_syscalls, syscall(doc, s)?);
    }
    for s in &p.deny_syscalls {
        let name = syscall(doc, s)?;
        if l.process.allow_syscalls.contains(&name) {
            return Err(doc.error(
                s.span(),
                format!("{name} is in both allow_syscalls and deny_syscalls"),
            ));
        }
        push_unique(&mut l.process.deny_syscalls, name);
    }
    l.allow_io_uring = p.allow_io_uring;
    for s in &p.env_pass {
        push_unique(&mut l.process.env_pass, env_name(doc, s)?);
    }
    for s in &p.env_drop {
        push_unique(&mut l.process.env_drop, env_name(doc, s)?);
    }

    // Network.
    let n = &raw.network;
    l.network.mode = n.mode;
    l.network.unknown_hosts = n.unknown_hosts;
    for s in &n.allow {
        push_unique(&mut l.network.allow, host_pattern(doc, s)?);
    }
    for s in &n.inspect {
        push_unique(&mut l.network.inspect, host_pattern(doc, s)?);
    }
    for s in &n.hold {
        push_unique(&mut l.network.hold, catalogue_name(doc, s)?);
    }
    for s in &n.hold_connect {
        push_unique(&mut l.network.hold_connect, connect_target(doc, s)?);
    }
    for s in &n.upstream_ca {
        let Entry::Path(p) = file_entry(doc, s, home, false)? else {
            return Err(doc.error(
                s.span(),
                "network.upstream_ca takes file paths, not patterns",
            ));
        };
        push_unique(&mut l.network.upstream_ca, p);
    }

    // Commands.
    for s in &raw.commands.hold {
        // Checked now (line and column); kept in canonical form, `~` expanded at run time.
        let p = crate::commands::Pattern::parse(s.get_ref(), home)
            .map_err(|e| doc.error(s.span(), e.to_string()))?;
        push_unique(&mut l.commands.hold, p.text().to_string());
    }

    // Notify.
    if let Some(u) = &raw.notify.webhook {
        let url = u.get_ref().trim();
        let ok = url.parse::<http::Uri>().is_ok_and(|p| {
            matches!(p.scheme_str(), Some("http" | "https"))
                && p.host().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            return Err(doc.error(u.span(), format!("{url:?} is not an http(s) URL")));
        }
        l.notify.webhook = Some(url.to_string());
    }
    if let Some(f) = &raw.notify.webhook_secret_file {
        let Entry::Path(p) = file_entry(doc, f, home, false)? else {
            return Err(doc.error(f.span(), "notify.webhook_secret_file takes a file path"));
        };
        l.notify.webhook_secret_file = Some(p);
    }
    // Limits.
    if let Some(n) = &raw.limits.pids {
        let v = *n.get_ref();
        match u32::try_from(v).ok().filter(|v| PIDS_RANGE.contains(v)) {
            Some(v) => l.limits.pids = Some(v),
            None => {
                return Err(doc.error(
                    n.span(),
                    format!(
                        "{v} is outside {}..={} (tasks of the whole session)",
                        PIDS_RANGE.start(),
                        PIDS_RANGE.end()
                    ),
                ))
            }
        }
    }
    if l.notify.webhook.is_some() != l.notify.webhook_secret_file.is_some() {
        let span = raw
            .notify
            .webhook
            .as_ref()
            .or(raw.notify.webhook_secret_file.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(doc.error(
            span,
            "notify.webhook and notify.webhook_secret_file go together (bodies are always signed)",
        ));
    }
    Ok(l)
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

fn non_empty(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let t = s.get_ref().trim();
    if t.is_empty() {
        return Err(doc.error(s.span(), "empty string"));
    }
    Ok(t.to_owned())
}

/// Expands a leading `~` or `~/` to `home` (pure: no lookup of anything). `~user` is refused;
/// anything else is returned as it is.
pub fn expand_tilde(entry: &str, home: &Path) -> Result<PathBuf, String> {
    if entry == "~" {
        return Ok(home.to_path_buf());
    }
    if let Some(rest) = entry.strip_prefix("~/") {
        return Ok(home.join(rest.trim_start_matches('/')));
    }
    if entry.starts_with('~') {
        return Err(format!(
            "{entry:?}: only ~ and ~/ are expanded (to the invoking user's home)"
        ));
    }
    Ok(PathBuf::from(entry))
}

/// An absolute path without `.` or `..` components or a trailing `/`.
fn normal_path(p: &Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!(
            "{:?} is not absolute: write /..., ~/..., or a pattern such as **/NAME",
            p.display().to_string()
        ));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                return Err(format!(
                    "{:?}: '..' is not allowed",
                    p.display().to_string()
                ))
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

fn file_entry(
    doc: &Doc,
    s: &Str,
    home: &Path,
    patterns_allowed: bool,
) -> Result<Entry, ProfileError> {
    let raw = s.get_ref().trim();
    let err = |m: String| doc.error(s.span(), m);
    if raw.is_empty() {
        return Err(err("empty path".into()));
    }
    if !home.is_absolute() && raw.starts_with('~') {
        return Err(err(format!(
            "{raw:?}: the home directory {:?} is not absolute",
            home.display().to_string()
        )));
    }
    if is_pattern(raw) {
        if !patterns_allowed {
            return Err(err(format!(
                "{raw:?}: patterns are only allowed in files.protect and files.protect_writes"
            )));
        }
        let pat = if raw == "~" || raw.starts_with("~/") {
            let h = home
                .to_str()
                .ok_or_else(|| err("the home directory is not valid UTF-8".into()))?;
            format!("{}{}", globset::escape(h.trim_end_matches('/')), &raw[1..])
        } else if raw.starts_with('~') {
            return Err(err(format!(
                "{raw:?}: only ~ and ~/ are expanded (to the invoking user's home)"
            )));
        } else {
            raw.to_owned()
        };
        if pat.split('/').any(|c| c == "..") {
            return Err(err(format!("{raw:?}: '..' is not allowed")));
        }
        compile_glob(&pat).map_err(|e| err(format!("bad pattern {raw:?}: {}", glob_reason(&e))))?;
        return Ok(Entry::Pattern(pat));
    }
    let p = expand_tilde(raw, home).map_err(&err)?;
    Ok(Entry::Path(normal_path(&p).map_err(err)?))
}

/// globset's message without the pattern it repeats.
fn glob_reason(e: &globset::Error) -> String {
    e.kind().to_string()
}

fn syscall(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let name = s.get_ref().trim();
    let plausible = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plausible || libseccomp::ScmpSyscall::from_name(name).is_err() {
        return Err(doc.error(
            s.span(),
            format!("{name:?} is not a system call of this architecture"),
        ));
    }
    Ok(name.to_owned())
}

fn env_name(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let v = s.get_ref().trim();
    let base = v.strip_suffix('*').unwrap_or(v);
    let ok = (v == "*" || !base.is_empty())
        && !base.starts_with(|c: char| c.is_ascii_digit())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(doc.error(
            s.span(),
            format!("{v:?} is not a variable name, PREFIX*, or *"),
        ));
    }
    Ok(v.to_owned())
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn host_pattern(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let h = s.get_ref().trim().to_ascii_lowercase();
    let ok =
        h == "*" || h.parse::<IpAddr>().is_ok() || is_hostname(h.strip_prefix("*.").unwrap_or(&h));
    if !ok {
        return Err(doc.error(
            s.span(),
            format!("{h:?} is not a host, *.DOMAIN, * or an IP address"),
        ));
    }
    Ok(h)
}

fn catalogue_name(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let n = s.get_ref().trim();
    let ok = n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(doc.error(
            s.span(),
            format!("{n:?} is not a rule catalogue name (lower-case letters, digits, '-', '_')"),
        ));
    }
    Ok(n.to_owned())
}

/// Checks `host:port`, `cidr:port`, `[ipv6]:port` or `[ipv6/prefix]:port`.
fn parse_connect(t: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or("an IPv6 address is written [ADDR]:PORT")?;
        let (addr, prefix) = match h.split_once('/') {
            Some((a, n)) => (a, Some(n)),
            None => (h, None),
        };
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        check_prefix(prefix, 128)?;
        (None, p)
    } else {
        let (h, p) = t.rsplit_once(':').ok_or("missing :PORT")?;
        (Some(h), p)
    };
    if let Some(h) = host {
        let (addr, prefix) = match h.split_once('/') {
            Some((a, n)) => (a, Some(n)),
            None => (h, None),
        };
        if addr.contains(':') {
            return Err("write an IPv6 address in brackets: [ADDR]:PORT".into());
        }
        if addr.parse::<std::net::Ipv4Addr>().is_ok() {
            check_prefix(prefix, 32)?;
        } else if prefix.is_some() || !is_hostname(addr) {
            return Err(format!(
                "{addr:?} is not a host name, an IPv4 address or a CIDR"
            ));
        }
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port (1-65535)")),
    }
}

fn check_prefix(prefix: Option<&str>, max: u8) -> Result<(), String> {
    match prefix {
        None => Ok(()),
        Some(n) => match n.parse::<u8>() {
            Ok(v) if v <= max => Ok(()),
            _ => Err(format!("{n:?} is not a prefix length (0-{max})")),
        },
    }
}

fn connect_target(doc: &Doc, s: &Str) -> Result<String, ProfileError> {
    let t = s.get_ref().trim().to_ascii_lowercase();
    parse_connect(&t).map_err(|m| doc.error(s.span(), format!("{t:?}: {m}")))?;
    Ok(t)
}

/// Merges layers, the farthest ancestor first.
struct Merge {
    r: Resolved,
    protect: Vec<String>,
    protect_writes: Vec<String>,
}

impl Merge {
    fn new(name: &str) -> Merge {
        let mut r = Resolved {
            name: name.into(),
            ..Resolved::default()
        };
        r.process.env_drop = DEFAULT_ENV_DROP.iter().map(|s| (*s).to_owned()).collect();
        Merge {
            r,
            protect: Vec::new(),
            protect_writes: Vec::new(),
        }
    }

    fn apply(&mut self, source: Source, l: Layer) {
        let r = &mut self.r;
        r.sources.push(source);
        if l.description.is_some() {
            r.description = l.description;
        }
        if let Some(risk) = l.risk {
            r.risk = risk;
        }
        if l.decisions.timeout.is_some() {
            r.decisions.timeout = l.decisions.timeout;
        }
        if l.decisions.default_scope.is_some() {
            r.decisions.default_scope = l.decisions.default_scope;
        }
        if l.decisions.self_approve.is_some() {
            r.decisions.self_approve = l.decisions.self_approve;
        }
        for (entries, paths, pats) in [
            (l.protect, &mut r.files.protect_paths, &mut self.protect),
            (
                l.protect_writes,
                &mut r.files.protect_writes_paths,
                &mut self.protect_writes,
            ),
        ] {
            for e in entries {
                match e {
                    Entry::Path(p) => push_unique(paths, p),
                    Entry::Pattern(p) => push_unique(pats, p),
                }
            }
        }
        let f = &mut r.files;
        for p in l.read_only {
            f.hidden.retain(|q| *q != p);
            f.writable.retain(|q| *q != p);
            push_unique(&mut f.read_only, p);
        }
        for p in l.hidden {
            f.read_only.retain(|q| *q != p);
            f.writable.retain(|q| *q != p);
            push_unique(&mut f.hidden, p);
        }
        for p in l.writable {
            f.read_only.retain(|q| *q != p);
            f.hidden.retain(|q| *q != p);
            push_unique(&mut f.writable, p);
        }
        let pr = &mut r.process;
        for s in l.process.allow_syscalls {
            pr.deny_syscalls.retain(|x| *x != s);
            push_unique(&mut pr.allow_syscalls, s);
        }
        for s in l.process.deny_syscalls {
            pr.allow_syscalls.retain(|x| *x != s);
            push_unique(&mut pr.deny_syscalls, s);
        }
        if let Some(b) = l.allow_io_uring {
            pr.allow_io_uring = b;
        }
        for s in l.process.env_pass {
            push_unique(&mut pr.env_pass, s);
        }
        for s in l.process.env_drop {
            push_unique(&mut pr.env_drop, s);
        }
        let n = &mut r.network;
        if l.network.mode.is_some() {
            n.mode = l.network.mode;
        }
        if l.network.unknown_hosts.is_some() {
            n.unknown_hosts = l.network.unknown_hosts;
        }
        for (from, to) in [
            (l.network.allow, &mut n.allow),
            (l.network.inspect, &mut n.inspect),
            (l.network.hold, &mut n.hold),
            (l.network.hold_connect, &mut n.hold_connect),
            (l.commands.hold, &mut r.commands.hold),
        ] {
            for s in from {
                push_unique(to, s);
            }
        }
        for p in l.network.upstream_ca {
            push_unique(&mut n.upstream_ca, p);
        }
        if l.notify.webhook.is_some() {
            r.notify = l.notify;
        }
        if l.limits.pids.is_some() {
            r.limits.pids = l.limits.pids;
        }
    }

    fn finish(mut self) -> Result<Resolved, ProfileError> {
        self.r.files.protect_patterns =
            PatternSet::new(&self.protect).map_err(ProfileError::Patterns)?;
        self.r.files.protect_writes_patterns =
            PatternSet::new(&self.protect_writes).map_err(ProfileError::Patterns)?;
        Ok(self.r)
    }
}

// ---------------------------------------------------------------------------------------------
// `sandbox profile ...`

/// `sandbox profile ...`
#[derive(Debug, clap::Subcommand)]
pub enum ProfileCmd {
    /// Check profile files (and what they extend); exit status 2 if any is invalid.
    Check {
        /// Profile files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Show a profile fully resolved, with the files it came from.
    Show {
        /// A profile name (looked up) or a path (contains '/' or ends with .toml).
        #[arg(value_name = "NAME|PATH")]
        name: String,
        /// One JSON object instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `sandbox profile ...`; returns the exit status (2 for an invalid profile).
pub fn cmd_profile(cmd: &ProfileCmd) -> u8 {
    let home = match invoking_home() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sandbox: {}", e.chain());
            return 2;
        }
    };
    match cmd {
        ProfileCmd::Check { files } => {
            let mut status = 0;
            for f in files {
                // A FILE is always a file, even without '/' or .toml.
                let path = if is_path(f) {
                    f.clone()
                } else {
                    format!("./{f}")
                };
                match load(&path, &home) {
                    Ok(_) => {
                        let _ = writeln!(std::io::stdout().lock(), "ok: {f}");
                    }
                    Err(e) => {
                        eprintln!("{}", e.chain());
                        status = 2;
                    }
                }
            }
            status
        }
        ProfileCmd::Show { name, json } => match load(name, &home) {
            Ok(r) => {
                let text = if *json {
                    r.to_json_pretty()
                } else {
                    r.to_toml()
                };
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
                0
            }
            Err(e) => {
                eprintln!("sandbox: {}", e.chain());
                2
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    /// A directory of profile files, looked up before the built-ins.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new(files: &[(&str, &str)]) -> Dir {
            let d = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(d.path().join(name), text).unwrap();
            }
            Dir(d)
        }

        fn path(&self, name: &str) -> String {
            self.0.path().join(name).display().to_string()
        }

        fn load(&self, name_or_path: &str) -> Result<Resolved, ProfileError> {
            let lookup = Lookup {
                dirs: vec![self.0.path().to_path_buf()],
                builtins: true,
            };
            lookup.load(name_or_path, Path::new(HOME))
        }
    }

    /// Loads one profile text from `p.toml`.
    fn load_text(text: &str) -> Result<Resolved, ProfileError> {
        let d = Dir::new(&[("p.toml", text)]);
        let p = d.path("p.toml");
        d.load(&p)
    }

    /// The error of an invalid profile text, with the temporary directory cut off.
    fn error_of(text: &str) -> String {
        let e = load_text(text).unwrap_err().chain();
        let i = e.find("p.toml").expect("error names the file");
        e[i..].to_owned()
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn every_builtin_profile_loads() {
        let lookup = Lookup {
            dirs: vec![],
            builtins: true,
        };
        for (name, _) in BUILTINS {
            let r = lookup.load(name, Path::new(HOME)).unwrap();
            assert_eq!(r.sources.last(), Some(&Source::Builtin(name)));
            assert!(r.description.is_some(), "{name} has a description");
        }
    }

    #[test]
    fn default_profile_protects_keys_git_and_state_and_hides_credentials() {
        let r = Lookup {
            dirs: vec![],
            builtins: true,
        }
        .load("default", Path::new(HOME))
        .unwrap();
        let f = &r.files;
        assert!(f.protects(Path::new("/home/u/.ssh/id_ed25519")));
        assert!(f.protects(Path::new("/home/u/.kube/config")));
        assert!(f.protects(Path::new("/work/repo/.git/HEAD")));
        assert!(f.protects(Path::new("/work/infra/terraform.tfstate")));
        assert!(f.protects(Path::new("/work/infra/terraform.tfstate.backup")));
        assert!(!f.protects(Path::new("/work/repo/src/main.rs")));
        assert!(!f.protects(Path::new("/work/infra/.terraform.tfstate.lock.info")));
        assert!(f
            .hidden
            .contains(&PathBuf::from("/home/u/.aws/credentials")));
        assert!(!r.process.keeps_env("AWS_SECRET_ACCESS_KEY"));
        assert!(r.process.keeps_env("PATH"));
        assert_eq!(r.decisions.timeout, Some(Duration::from_secs(600)));
        assert_eq!(r.limits.pids, Some(DEFAULT_PIDS));
    }

    #[test]
    fn limits_pids_is_checked_overridden_and_defaulted() {
        assert_eq!(Resolved::empty().limits.pids(), DEFAULT_PIDS);
        assert_eq!(
            load_text("[limits]\npids = 300\n").unwrap().limits.pids(),
            300
        );
        assert_eq!(
            error_of("[limits]\npids = 2\n"),
            "p.toml:2:8: limits.pids: 2 is outside 8..=4194304 (tasks of the whole session)"
        );
        assert!(error_of("[limits]\npids = -1\n").contains("outside"));
        assert!(error_of("[limits]\npids = 99999999999\n").contains("outside"));
        assert!(error_of("[limits]\npids = \"many\"\n").starts_with("p.toml:2:8:"));
        assert!(error_of("[limits]\nprocs = 5\n").contains("unknown field"));
        // A later profile overrides; one that says nothing keeps the inherited value.
        let d = Dir::new(&[
            ("base.toml", "[limits]\npids = 100\n"),
            ("mid.toml", "extends = \"base.toml\"\n"),
            ("top.toml", "extends = \"mid.toml\"\n[limits]\npids = 50\n"),
        ]);
        assert_eq!(d.load(&d.path("mid.toml")).unwrap().limits.pids, Some(100));
        let top = d.load(&d.path("top.toml")).unwrap();
        assert_eq!(top.limits.pids, Some(50));
        assert!(top.to_toml().contains("[limits]\npids = 50"));
    }

    #[test]
    fn terraform_gives_credentials_back_and_holds_destroy() {
        let r = Lookup {
            dirs: vec![],
            builtins: true,
        }
        .load("terraform", Path::new(HOME))
        .unwrap();
        assert_eq!(
            r.sources,
            vec![Source::Builtin("default"), Source::Builtin("terraform")]
        );
        let creds = PathBuf::from("/home/u/.aws/credentials");
        assert!(!r.files.hidden.contains(&creds));
        assert!(r.files.writable.contains(&creds));
        assert!(r.process.keeps_env("AWS_SECRET_ACCESS_KEY"));
        assert!(r
            .commands
            .hold
            .contains(&"terraform|tofu destroy".to_owned()));
        assert!(r
            .commands
            .hold
            .contains(&"terraform|tofu state rm|push".to_owned()));
        assert_eq!(r.network.mode, Some(NetMode::Proxy));
        assert_eq!(r.network.hold, vec!["cloud-deletes"]);
    }

    #[test]
    fn extends_appends_lists_overrides_scalars_and_replaces_risk() {
        let d = Dir::new(&[
            (
                "base.toml",
                r#"
description = "base"
[risk]
must_survive = ["the db"]
rollback = "snapshot"
[decisions]
timeout = "10m"
default_scope = "once"
self_approve = true
[files]
protect = ["/data", "**/*.db"]
read_only = ["/etc"]
hidden = ["/secret"]
[process]
deny_syscalls = ["ptrace"]
allow_io_uring = true
env_drop = ["TOKEN_*"]
[network]
mode = "none"
allow = ["a.example"]
[commands]
hold = ["dropdb"]
"#,
            ),
            (
                "child.toml",
                r#"
extends = "base"
[risk]
must_survive = ["the bucket"]
[decisions]
timeout = "30s"
[files]
protect = ["/data", "/more", "**/*.sqlite"]
writable = ["/secret"]
[process]
allow_syscalls = ["ptrace"]
env_pass = ["TOKEN_KEEP"]
[network]
mode = "proxy"
allow = ["b.example", "a.example"]
[commands]
hold = ["kubectl   delete"]
"#,
            ),
        ]);
        let r = d.load("child").unwrap();
        assert_eq!(r.sources.len(), 2);
        assert!(matches!(&r.sources[0], Source::File(p) if p.ends_with("base.toml")));
        assert_eq!(r.description.as_deref(), Some("base"), "inherited scalar");
        assert_eq!(r.risk.must_survive, vec!["the bucket"]);
        assert_eq!(r.risk.rollback, None, "[risk] is replaced as a whole");
        assert_eq!(r.decisions.timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.decisions.default_scope, Some(Scope::Once));
        assert_eq!(
            r.decisions.self_approve,
            Some(true),
            "inherited self_approve"
        );
        assert_eq!(r.files.protect_paths, paths(&["/data", "/more"]));
        assert_eq!(
            r.files.protect_patterns.patterns(),
            ["**/*.db", "**/*.sqlite"]
        );
        assert_eq!(r.files.read_only, paths(&["/etc"]));
        assert!(r.files.hidden.is_empty(), "writable took /secret back");
        assert_eq!(r.files.writable, paths(&["/secret"]));
        assert_eq!(r.process.allow_syscalls, vec!["ptrace"]);
        assert!(r.process.deny_syscalls.is_empty(), "the later profile wins");
        assert!(r.process.allow_io_uring);
        assert!(!r.process.keeps_env("TOKEN_X"));
        assert!(r.process.keeps_env("TOKEN_KEEP"), "env_pass wins");
        assert!(!r.process.keeps_env("AZURE_CLIENT_SECRET"), "default drop");
        assert_eq!(r.network.mode, Some(NetMode::Proxy));
        assert_eq!(r.network.allow, vec!["a.example", "b.example"]);
        assert_eq!(r.commands.hold, vec!["dropdb", "kubectl delete"]);
    }

    #[test]
    fn an_empty_risk_table_clears_the_inherited_one() {
        let d = Dir::new(&[
            ("base.toml", "[risk]\nmust_survive = [\"x\"]\n"),
            ("child.toml", "extends = \"base\"\n[risk]\n"),
            ("silent.toml", "extends = \"base\"\n"),
        ]);
        assert!(d.load("child").unwrap().risk.is_empty());
        assert_eq!(d.load("silent").unwrap().risk.must_survive, vec!["x"]);
    }

    #[test]
    fn extends_cycle_is_refused_and_named() {
        let d = Dir::new(&[
            ("a.toml", "extends = \"b\"\n"),
            ("b.toml", "# b\n\nextends = \"a\"\n"),
        ]);
        let e = d.load("a").unwrap_err().chain();
        assert!(e.contains("b.toml:3:11: extends: cycle: "), "{e}");
        let (a, b) = (d.path("a.toml"), d.path("b.toml"));
        assert!(e.ends_with(&format!("{a} -> {b} -> {a}")), "{e}");
    }

    #[test]
    fn a_profile_extending_itself_is_a_cycle() {
        let d = Dir::new(&[("self.toml", "extends = \"./self.toml\"\n")]);
        let e = d.load(&d.path("self.toml")).unwrap_err().chain();
        assert!(e.contains("self.toml:1:11: extends: cycle"), "{e}");
    }

    #[test]
    fn a_profile_extending_its_own_name_extends_the_next_one_found() {
        let d = Dir::new(&[(
            "default.toml",
            "extends = \"default\"\ndescription = \"mine\"\n",
        )]);
        let r = d.load("default").unwrap();
        assert_eq!(r.sources[0], Source::Builtin("default"));
        assert_eq!(r.description.as_deref(), Some("mine"));
        assert!(r.files.protects(Path::new("/home/u/.ssh")));
    }

    #[test]
    fn a_missing_parent_is_reported_at_the_extends_line() {
        let e = error_of("description = \"x\"\nextends = \"nope\"\n");
        assert!(
            e.starts_with("p.toml:2:11: extends \"nope\": no profile named \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_reported_with_line_column_and_key() {
        let e = error_of("[files]\nprotect = []\nprotecc = [\"/x\"]\n");
        assert!(
            e.starts_with("p.toml:3:1: files.protecc: unknown field `protecc`"),
            "{e}"
        );
        let e = error_of("descripton = \"x\"\n");
        assert!(
            e.starts_with("p.toml:1:1: descripton: unknown field"),
            "{e}"
        );
        let e = error_of("[filez]\n");
        assert!(e.starts_with("p.toml:1:2: filez: unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported_with_line_column_and_key() {
        let e = error_of("[process]\nallow_io_uring = \"yes\"\n");
        assert_eq!(
            e,
            "p.toml:2:18: process.allow_io_uring: invalid type: string \"yes\", expected a boolean"
        );
        let e = error_of("[files]\nprotect = \"/x\"\n");
        assert!(
            e.starts_with("p.toml:2:11: files.protect: invalid type"),
            "{e}"
        );
        let e = error_of("[files]\nprotect = [\"/x\", 3]\n");
        assert!(
            e.starts_with("p.toml:2:18: files.protect: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn bad_glob_is_reported_at_the_pattern() {
        let e = error_of("[files]\nprotect = [\n  \"/ok\",\n  \"**/[abc.txt\",\n]\n");
        assert!(
            e.starts_with("p.toml:4:3: files.protect: bad pattern \"**/[abc.txt\""),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_is_reported_at_the_value() {
        let e = error_of("[decisions]\ntimeout = \"10 minutes\"\n");
        assert!(e.starts_with("p.toml:2:11: decisions.timeout: "), "{e}");
        let e = error_of("[decisions]\ntimeout = \"0s\"\n");
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn bad_scope_is_refused() {
        let e = error_of("[decisions]\ndefault_scope = \"forever\"\n");
        assert!(
            e.starts_with("p.toml:2:17: decisions.default_scope: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn bad_syscall_is_refused() {
        let e = error_of("[process]\ndeny_syscalls = [\"ptrace\", \"nosuchcall\"]\n");
        assert!(
            e.starts_with(
                "p.toml:2:28: process.deny_syscalls: \"nosuchcall\" is not a system call"
            ),
            "{e}"
        );
        let e =
            error_of("[process]\nallow_syscalls = [\"ptrace\"]\ndeny_syscalls = [\"ptrace\"]\n");
        assert!(
            e.contains("in both allow_syscalls and deny_syscalls"),
            "{e}"
        );
        assert!(load_text("[process]\nallow_syscalls = [\"io_uring_setup\", \"bpf\"]\n").is_ok());
    }

    #[test]
    fn syntax_errors_have_a_location_too() {
        let e = error_of("x = \n");
        assert!(e.starts_with("p.toml:1:"), "{e}");
    }

    #[test]
    fn tilde_expands_to_the_given_home_only() {
        let h = Path::new("/home/u");
        assert_eq!(expand_tilde("~", h).unwrap(), PathBuf::from("/home/u"));
        assert_eq!(
            expand_tilde("~/.ssh", h).unwrap(),
            PathBuf::from("/home/u/.ssh")
        );
        assert_eq!(
            expand_tilde("/etc/~x", h).unwrap(),
            PathBuf::from("/etc/~x")
        );
        assert!(expand_tilde("~root/.ssh", h).is_err());
        let r =
            load_text("[files]\nprotect = [\"~/.ssh/\", \"~/x/./y\", \"~/**/*.pem\"]\n").unwrap();
        assert_eq!(
            r.files.protect_paths,
            paths(&["/home/u/.ssh", "/home/u/x/y"])
        );
        assert_eq!(r.files.protect_patterns.patterns(), ["/home/u/**/*.pem"]);
        assert!(r.files.protects(Path::new("/home/u/a/b.pem")));
        assert!(!r.files.protects(Path::new("/home/v/a/b.pem")));
    }

    #[test]
    fn a_home_with_glob_characters_is_escaped_in_patterns() {
        let d = Dir::new(&[("p.toml", "[files]\nprotect = [\"~/*.db\"]\n")]);
        let lookup = Lookup {
            dirs: vec![],
            builtins: false,
        };
        let r = lookup
            .load(&d.path("p.toml"), Path::new("/home/[odd]"))
            .unwrap();
        assert!(r
            .files
            .protect_patterns
            .matches(Path::new("/home/[odd]/x.db")));
        assert!(!r.files.protect_patterns.matches(Path::new("/home/o/x.db")));
    }

    #[test]
    fn relative_paths_dotdot_and_tilde_user_are_refused() {
        assert!(error_of("[files]\nprotect = [\"prod\"]\n").contains("not absolute"));
        assert!(error_of("[files]\nread_only = [\"/a/../b\"]\n").contains("'..'"));
        assert!(error_of("[files]\nhidden = [\"~bob/x\"]\n").contains("only ~ and ~/"));
        assert!(error_of("[files]\nhidden = [\"\"]\n").contains("empty path"));
    }

    #[test]
    fn patterns_only_in_protect_lists() {
        let e = error_of("[files]\nhidden = [\"**/.env\"]\n");
        assert!(e.starts_with("p.toml:2:11: files.hidden: "), "{e}");
        assert!(e.contains("patterns are only allowed"), "{e}");
    }

    #[test]
    fn one_access_list_per_path_within_a_file() {
        let e = error_of("[files]\nread_only = [\"/a\"]\nwritable = [\"/a/\"]\n");
        assert!(
            e.starts_with("p.toml:3:13: files.writable: /a is also in files.read_only"),
            "{e}"
        );
    }

    #[test]
    fn tfstate_pattern_matches_in_any_directory_only_that_name() {
        let p = PatternSet::new(&["**/*.tfstate"]).unwrap();
        assert!(p.matches(Path::new("/a/b/x.tfstate")));
        assert!(p.matches(Path::new("/x.tfstate")));
        assert!(!p.matches(Path::new("/a/x.txt")));
        assert!(!p.matches(Path::new("/a/x.tfstate.backup")));
        // Without a slash: the file name, in any directory.
        let p = PatternSet::new(&["*.tfstate"]).unwrap();
        assert!(p.matches(Path::new("/a/b/x.tfstate")));
        assert!(!p.matches(Path::new("/a/x.txt")));
    }

    #[test]
    fn git_pattern_matches_the_directory_and_covers_its_tree() {
        let p = PatternSet::new(&["**/.git"]).unwrap();
        assert!(p.matches(Path::new("/r/.git")));
        assert!(p.matches(Path::new("/home/u/src/proj/.git")));
        assert!(!p.matches(Path::new("/r/.gitignore")));
        assert!(
            !p.matches(Path::new("/r/.git/objects/ab/cdef")),
            "matches is exact"
        );
        assert!(
            p.covers(Path::new("/r/.git/objects/ab/cdef")),
            "covers the tree"
        );
        assert!(p.covers(Path::new("/r/.git")));
        assert!(!p.covers(Path::new("/r/src/git/x")));
    }

    #[test]
    fn covers_by_names_agrees_with_covers_by_ancestors() {
        let sets: &[&[&str]] = &[
            &["**/.git", "**/*.tfstate", "**/*.tfstate.backup"],
            &[".git"],
            &["*.tfstate", "db.sqlite?", "[ab].key"],
            &["**/.git", "backups/*.tar"],
            &["/srv/**/db.sqlite"],
        ];
        let paths = [
            "/",
            "/.git",
            "/r/.git",
            "/r/.git/objects/ab/cdef",
            "/r/.gitignore",
            "/r/src/git/x",
            "/a/x.tfstate",
            "/a/x.tfstate/inner",
            "/a/x.tfstate.backup",
            "/a/x.tfstate.bak",
            "/a/db.sqlite3",
            "/a/db.sqlite",
            "/a/a.key/x",
            "/a/c.key",
            "/x/backups/1.tar",
            "/x/backups/sub/1.tar",
            "/srv/a/db.sqlite",
            "/home/u/.git/../x",
            "/home/u/./.git",
        ];
        for patterns in sets {
            let p = PatternSet::new(patterns).unwrap();
            let fast = patterns.iter().all(|x| name_glob(x).is_some());
            assert_eq!(p.names.is_some(), fast, "{patterns:?}");
            for path in paths {
                assert_eq!(
                    p.covers(Path::new(path)),
                    p.covers_by_ancestors(Path::new(path)),
                    "{patterns:?} on {path}"
                );
            }
        }
    }

    #[test]
    fn star_does_not_cross_directories_but_double_star_does() {
        let p = PatternSet::new(&["/home/*/prod"]).unwrap();
        assert!(p.matches(Path::new("/home/u/prod")));
        assert!(!p.matches(Path::new("/home/u/x/prod")));
        let p = PatternSet::new(&["/srv/**/db.sqlite", "backups/*.tar"]).unwrap();
        assert!(p.matches(Path::new("/srv/a/b/db.sqlite")));
        assert!(p.matches(Path::new("/srv/db.sqlite")));
        assert!(
            p.matches(Path::new("/x/backups/1.tar")),
            "a relative pattern floats"
        );
        assert!(PatternSet::default().is_empty());
        assert!(!PatternSet::default().covers(Path::new("/")));
    }

    #[test]
    fn literal_protect_paths_cover_their_tree_only() {
        let r =
            load_text("[files]\nprotect = [\"/data\"]\nprotect_writes = [\"/db/app.sqlite\"]\n")
                .unwrap();
        let f = &r.files;
        assert!(f.protects(Path::new("/data")));
        assert!(f.protects(Path::new("/data/x/y")));
        assert!(!f.protects(Path::new("/database")));
        assert!(
            f.protects(Path::new("/db/app.sqlite")),
            "protect_writes implies protect"
        );
        assert!(f.protects_writes(Path::new("/db/app.sqlite")));
        assert!(!f.protects_writes(Path::new("/data/x")));
    }

    #[test]
    fn env_names_and_prefixes() {
        assert!(error_of("[process]\nenv_drop = [\"A-B\"]\n").contains("not a variable name"));
        assert!(error_of("[process]\nenv_pass = [\"1X\"]\n").contains("not a variable name"));
        let r =
            load_text("[process]\nenv_drop = [\"*\"]\nenv_pass = [\"PATH\", \"LC_*\"]\n").unwrap();
        assert!(r.process.keeps_env("PATH"));
        assert!(r.process.keeps_env("LC_ALL"));
        assert!(!r.process.keeps_env("HOME"));
    }

    #[test]
    fn network_values_are_validated() {
        let ok = r#"
[network]
mode = "proxy"
allow = ["API.Anthropic.com", "*.example.com", "*", "10.1.2.3", "::1"]
inspect = ["*.amazonaws.com"]
hold = ["cloud-deletes"]
hold_connect = ["10.0.0.5:5432", "10.0.0.0/8:22", "[::1]:80", "[fd00::/8]:443", "db.internal:5432"]
unknown_hosts = "hold"
"#;
        let r = load_text(ok).unwrap();
        assert_eq!(r.network.allow[0], "api.anthropic.com");
        assert_eq!(r.network.unknown_hosts, Some(UnknownHosts::Hold));
        for (bad, why) in [
            ("mode = \"vpn\"", "unknown variant"),
            ("allow = [\"a b\"]", "not a host"),
            ("allow = [\"*.\"]", "not a host"),
            ("hold = [\"../x\"]", "not a rule catalogue name"),
            ("hold_connect = [\"10.0.0.5\"]", "missing :PORT"),
            ("hold_connect = [\"10.0.0.5:0\"]", "not a port"),
            ("hold_connect = [\"10.0.0.0/33:1\"]", "prefix length"),
            ("hold_connect = [\"::1:80\"]", "brackets"),
            ("unknown_hosts = \"allow\"", "unknown variant"),
        ] {
            let e = error_of(&format!("[network]\n{bad}\n"));
            assert!(e.starts_with("p.toml:2:"), "{bad}: {e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn notify_takes_an_http_url_and_a_secret_file() {
        let r = load_text(
            "[notify]\nwebhook = \"https://hooks.example.com/guard\"\nwebhook_secret_file = \"/etc/sandbox/hook.key\"\n",
        )
        .unwrap();
        assert_eq!(
            r.notify.webhook.as_deref(),
            Some("https://hooks.example.com/guard")
        );
        assert_eq!(
            r.notify.webhook_secret_file.as_deref(),
            Some(Path::new("/etc/sandbox/hook.key"))
        );
        let e = error_of("[notify]\nwebhook = \"ftp://x\"\nwebhook_secret_file = \"/k\"\n");
        assert!(
            e.starts_with("p.toml:2:") && e.contains("not an http(s) URL"),
            "{e}"
        );
        let e = error_of("[notify]\nwebhook = \"https://x/\"\n");
        assert!(e.contains("go together"), "{e}");
        let e = error_of("[notify]\nhook = \"https://x/\"\n");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn command_patterns_must_not_be_empty() {
        let e = error_of("[commands]\nhold = [\"rm -rf\", \"  \"]\n");
        assert!(
            e.starts_with("p.toml:2:19: commands.hold: empty command pattern"),
            "{e}"
        );
    }

    #[test]
    fn names_with_slashes_or_dots_first_are_not_names() {
        assert!(check_name("claude").is_ok());
        assert!(check_name("my-profile.v2").is_ok());
        assert!(check_name("..").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        let d = Dir::new(&[]);
        assert!(matches!(d.load("nope"), Err(ProfileError::NotFound { .. })));
        assert!(matches!(d.load("a b"), Err(ProfileError::BadName { .. })));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("é = 1\nx", 3), (1, 3));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn durations_show_as_written() {
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn shown_toml_is_a_profile_that_resolves_the_same() {
        let d = Dir::new(&[]);
        let lookup = Lookup {
            dirs: vec![],
            builtins: true,
        };
        for (name, _) in BUILTINS {
            let r = lookup.load(name, Path::new(HOME)).unwrap();
            let shown = r.to_toml();
            assert!(shown.starts_with(&format!("# profile \"{name}\"")));
            let p = d.0.path().join(format!("{name}.shown.toml"));
            std::fs::write(&p, &shown).unwrap();
            let again = lookup
                .load(&p.display().to_string(), Path::new(HOME))
                .unwrap_or_else(|e| panic!("{name}: {}\n{shown}", e.chain()));
            assert_eq!(again.files.protect_paths, r.files.protect_paths, "{name}");
            assert_eq!(
                again.files.protect_patterns, r.files.protect_patterns,
                "{name}"
            );
            assert_eq!(again.files.hidden, r.files.hidden, "{name}");
            assert_eq!(again.files.writable, r.files.writable, "{name}");
            assert_eq!(again.process, r.process, "{name}");
            assert_eq!(again.network, r.network, "{name}");
            assert_eq!(again.commands, r.commands, "{name}");
            assert_eq!(again.risk, r.risk, "{name}");
            assert_eq!(again.decisions, r.decisions, "{name}");
        }
    }

    #[test]
    fn json_names_the_sources() {
        let r = Lookup {
            dirs: vec![],
            builtins: true,
        }
        .load("claude", Path::new(HOME))
        .unwrap();
        let j = r.to_json();
        assert_eq!(j["name"], "claude");
        assert_eq!(j["sources"][0], "builtin:default");
        assert_eq!(j["sources"][1], "builtin:claude");
        assert_eq!(j["network"]["allow"][0], "api.anthropic.com");
        assert!(j["files"]["writable"]
            .as_array()
            .unwrap()
            .contains(&"/home/u/.claude".into()));
    }

    #[test]
    fn empty_profile_has_nothing() {
        let r = Resolved::empty();
        assert!(r.sources.is_empty());
        assert!(r.files.is_empty());
        assert!(r.risk.is_empty());
        assert!(r.process.keeps_env("AWS_SECRET_ACCESS_KEY"));
        assert_eq!(r.decisions, Decisions::default());
    }
}
