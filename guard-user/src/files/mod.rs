//! File holds: which paths are protected, and the seccomp backend that holds operations on them.
//!
//! Protection is decided on canonical paths (as the kernel reports them for a process's
//! directory handles) and, for files with more than one hard link, on (device, inode).

pub mod landlock;
pub mod lsm;
pub mod resolve;
pub mod seccomp;
pub mod supervise;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors while preparing file protection.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A `--protect` path could not be resolved.
    #[error("cannot protect {path}: {source}")]
    Protect {
        /// The path as given.
        path: PathBuf,
        /// Why it could not be resolved.
        #[source]
        source: std::io::Error,
    },
    /// Landlock could not be set up.
    #[error("landlock: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    /// Opening a path for a Landlock rule failed.
    #[error("landlock rule for {path}: {source}")]
    LandlockPath {
        /// The path of the rule.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: ::landlock::PathFdError,
    },
    /// Landlock is not fully enforced by this kernel.
    #[error("landlock is not fully enforced by this kernel ({0}); refusing to run unguarded")]
    LandlockPartial(String),
    /// Building or loading the seccomp filter failed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A system call failed while installing the guard.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// How a path relates to the protected roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Not protected, and the sandbox may change it on its own (Landlock allows it).
    Free,
    /// An unprotected entry directly inside a directory that contains a protected root.
    /// Landlock forbids the sandbox to remove or rename it, so the supervisor does it.
    InAncestorDir,
    /// The path is a (proper) ancestor directory of protected root `n`.
    AncestorOfRoot(usize),
    /// The path is protected root `n` or lies below it.
    Protected(usize),
}

/// Canonicalizes `paths` (each must exist), sorted and without repeats.
fn canonical(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FilesError> {
    let mut roots = paths
        .iter()
        .map(|p| {
            std::fs::canonicalize(p).map_err(|source| FilesError::Protect {
                path: p.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    roots.sort();
    roots.dedup();
    Ok(roots)
}

/// `roots` plus every other path under which the mounts of this mount namespace show a root's
/// directory (see [`aliases`]), sorted and without repeats: the seccomp backend's checks and
/// Landlock's rules go by path, so a bind mount of a protected tree (made before the session:
/// inside, `mount` is refused and mounts do not propagate) would otherwise be an unprotected
/// second name for it.
fn with_aliases(roots: &[PathBuf]) -> Vec<PathBuf> {
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    };
    let mut all = roots.to_vec();
    all.extend(aliases(roots, &crate::mountinfo::own(), &same));
    all.sort();
    all.dedup();
    all
}

/// Other paths showing the directory of a root (or a part of it), from `mounts`: for a root
/// R on mount M (the last mount whose mount point is R's longest prefix), R is directory
/// `M.root + (R - M.point)` of its file system; every other mount N of the same device shows it
/// at `N.point + (that - N.root)` when N shows a directory above it, and shows part of it at
/// `N.point` when N shows a directory below it. A first-kind alias counts only when `same` says
/// it is the root's own directory (nothing mounted over it).
fn aliases(
    roots: &[PathBuf],
    mounts: &[crate::mountinfo::Mount],
    same: &dyn Fn(&Path, &Path) -> bool,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in roots {
        let Some((mi, m)) = mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| r.starts_with(&m.point))
            .max_by_key(|(i, m)| (m.point.components().count(), *i))
        else {
            continue;
        };
        let Ok(rel) = r.strip_prefix(&m.point) else {
            continue;
        };
        let in_fs = m.root.join(rel);
        for (ni, n) in mounts.iter().enumerate() {
            if ni == mi || n.dev != m.dev {
                continue;
            }
            if let Ok(below) = in_fs.strip_prefix(&n.root) {
                // (join("") would add a trailing '/': roots are plain paths.)
                let alias = if below.as_os_str().is_empty() {
                    n.point.clone()
                } else {
                    n.point.join(below)
                };
                if alias != *r && same(&alias, r) {
                    out.push(alias);
                }
            } else if n.root.starts_with(&in_fs) {
                out.push(n.point.clone());
            }
        }
    }
    out
}

/// True when `b` is an absolute path whose components are exactly its `/`-separated parts: no
/// empty or `.` part, no trailing `/` (as the kernel names a directory handle, and such a name
/// joined with plain names).
fn plain_abs(b: &[u8]) -> bool {
    if b == b"/" {
        return true;
    }
    b.first() == Some(&b'/')
        && b[1..]
            .split(|&c| c == b'/')
            .all(|c| !c.is_empty() && c != b".")
}

/// True when plain absolute `path` is `root` or lies below it (`root` plain too).
fn under(path: &[u8], root: &[u8]) -> bool {
    path.starts_with(root) && (path.len() == root.len() || root == b"/" || path[root.len()] == b'/')
}

/// Every proper ancestor of `roots`.
pub(crate) fn ancestors_of(roots: &[PathBuf]) -> HashSet<PathBuf> {
    roots
        .iter()
        .flat_map(|r| r.ancestors().skip(1).map(Path::to_path_buf))
        .collect()
}

/// Files at or below `root` (symbolic links not followed) with more than one hard link.
pub(crate) fn multi_linked(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if md.nlink() > 1 {
            out.push((p, md));
        }
    }
    out
}

/// The protected roots of a session.
#[derive(Debug)]
pub struct Protection {
    roots: Vec<PathBuf>,
    /// The roots that are bind-mount aliases of the given ones (see [`with_aliases`]).
    aliases: Vec<PathBuf>,
    /// Proper ancestors of the roots: directories whose direct entries Landlock cannot grant.
    ancestors: HashSet<PathBuf>,
    /// Protected inodes with more than one hard link: (st_dev, st_ino) -> root index.
    linked: Mutex<HashMap<(u64, u64), usize>>,
    /// Name patterns (`**/*.tfstate`, `**/.git`): they protect matching paths anywhere, so
    /// Landlock grants nothing and the supervisor performs every removal itself.
    patterns: Option<crate::profile::PatternSet>,
    /// `protect_writes`: what no write-open may reach without a decision.
    writes: Option<Writes>,
}

/// The write-protected part of a session (`files.protect_writes`).
#[derive(Debug)]
pub struct Writes {
    /// Canonical write-protected roots.
    roots: Vec<PathBuf>,
    /// Proper ancestors of those roots: their new entries get no Landlock write grant.
    ancestors: HashSet<PathBuf>,
    /// Name patterns: with them Landlock grants no write anywhere, so the supervisor performs
    /// every write-open itself.
    patterns: Option<crate::profile::PatternSet>,
}

impl Writes {
    /// The canonical write-protected roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Proper ancestors of the write-protected roots.
    pub fn ancestors(&self) -> impl Iterator<Item = &Path> {
        self.ancestors.iter().map(PathBuf::as_path)
    }

    /// True when name patterns write-protect paths anywhere (Landlock grants no write).
    pub fn has_patterns(&self) -> bool {
        self.patterns.is_some()
    }

    /// The write-protecting name patterns as written.
    pub fn pattern_strings(&self) -> Vec<String> {
        self.patterns
            .as_ref()
            .map(|p| p.patterns().to_vec())
            .unwrap_or_default()
    }
}

/// How a write-open (or creation) of a path is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteClass {
    /// Landlock lets the process write there on its own.
    Free,
    /// Not protected, but Landlock has no grant for it: the supervisor opens it for the process.
    Perform,
    /// Write-protected: held. The index is the protected root it lies in (or the pattern root).
    Held(usize),
}

impl Protection {
    /// Canonicalizes `paths` (each must exist) and drops roots nested inside other roots.
    #[cfg(test)]
    pub fn new(paths: &[PathBuf]) -> Result<Self, FilesError> {
        Self::with_patterns(paths, None)
    }

    /// Canonicalizes `paths` (each must exist), drops roots nested inside other roots and adds
    /// their bind-mount aliases; with name patterns.
    pub fn with_patterns(
        paths: &[PathBuf],
        patterns: Option<crate::profile::PatternSet>,
    ) -> Result<Self, FilesError> {
        let given = canonical(paths)?;
        let roots = with_aliases(&given);
        let outer: Vec<PathBuf> = roots
            .iter()
            .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
            .cloned()
            .collect();
        let aliases = outer
            .iter()
            .filter(|r| !given.contains(r))
            .cloned()
            .collect();
        let ancestors = ancestors_of(&outer);
        let prot = Protection {
            roots: outer,
            aliases,
            ancestors,
            linked: Mutex::new(HashMap::new()),
            patterns: patterns.filter(|p| !p.is_empty()),
            writes: None,
        };
        prot.scan_links();
        Ok(prot)
    }

    /// Adds write protection (`files.protect_writes`): every path must exist and must also be
    /// protected (a protected root or below one), and the patterns must be among the
    /// protection's patterns.
    pub fn with_writes(
        mut self,
        paths: &[PathBuf],
        patterns: Option<crate::profile::PatternSet>,
    ) -> Result<Self, FilesError> {
        let patterns = patterns.filter(|p| !p.is_empty());
        if paths.is_empty() && patterns.is_none() {
            return Ok(self);
        }
        let roots = with_aliases(&canonical(paths)?);
        let ancestors = ancestors_of(&roots);
        self.writes = Some(Writes {
            roots,
            ancestors,
            patterns,
        });
        Ok(self)
    }

    /// The write protection, if any.
    pub fn writes(&self) -> Option<&Writes> {
        self.writes.as_ref()
    }

    /// How a write-open of canonical `path` (existing or about to be created) is treated.
    pub fn classify_write(&self, path: &Path) -> WriteClass {
        let Some(w) = &self.writes else {
            return WriteClass::Free;
        };
        let held = w.roots.iter().any(|r| path.starts_with(r))
            || w.patterns.as_ref().is_some_and(|p| p.covers(path));
        if held {
            let root = self
                .roots
                .iter()
                .position(|r| path.starts_with(r))
                .unwrap_or(self.roots.len());
            return WriteClass::Held(root);
        }
        if w.patterns.is_some() {
            return WriteClass::Perform;
        }
        if w.roots.iter().any(|r| r.starts_with(path)) {
            // An ancestor directory itself: opening it for writing fails on its own.
            return WriteClass::Free;
        }
        match path.parent() {
            Some(parent) if w.ancestors.contains(parent) => WriteClass::Perform,
            _ => WriteClass::Free,
        }
    }

    /// True when protected root `i` (or the pattern root) contains write-protected data.
    pub fn root_has_writes(&self, i: usize) -> bool {
        let Some(w) = &self.writes else {
            return false;
        };
        match self.roots.get(i) {
            Some(r) => w.patterns.is_some() || w.roots.iter().any(|x| x.starts_with(r)),
            None => w.patterns.is_some(),
        }
    }

    /// What write-protects `path`, for people.
    pub fn describe_write(&self, path: &Path) -> String {
        match &self.writes {
            Some(w) => match w.roots.iter().find(|r| path.starts_with(r)) {
                Some(r) => format!("protect_writes {}", r.display()),
                None => match &w.patterns {
                    Some(p) => format!("protect_writes pattern {}", p.patterns().join(", ")),
                    None => "protect_writes".into(),
                },
            },
            None => "protect_writes".into(),
        }
    }

    /// The canonical protected roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// True when nothing is protected.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.patterns.is_none()
    }

    /// True when name patterns protect paths anywhere (the supervisor performs every removal).
    pub fn has_patterns(&self) -> bool {
        self.patterns.is_some()
    }

    /// The protecting name patterns as written (`protect` and `protect_writes` ones).
    pub fn pattern_strings(&self) -> Vec<String> {
        self.patterns
            .as_ref()
            .map(|p| p.patterns().to_vec())
            .unwrap_or_default()
    }

    /// The pseudo root index of pattern matches (one past the real roots).
    pub fn pattern_root(&self) -> usize {
        self.roots.len()
    }

    /// What protects root index `i`, for people: the root's path or the patterns.
    pub fn describe_root(&self, i: usize) -> String {
        match (self.roots.get(i), &self.patterns) {
            (Some(r), _) => format!("protect {}", r.display()),
            (None, Some(p)) => format!("protect pattern {}", p.patterns().join(", ")),
            (None, None) => "protect".into(),
        }
    }

    /// Proper ancestors of the protected roots.
    pub fn ancestors(&self) -> impl Iterator<Item = &Path> {
        self.ancestors.iter().map(PathBuf::as_path)
    }

    /// The roots that are other names (bind mounts) of the protected paths given.
    pub fn aliases(&self) -> &[PathBuf] {
        &self.aliases
    }

    /// Classifies a canonical absolute path.
    pub fn classify(&self, path: &Path) -> Class {
        use std::os::unix::ffi::OsStrExt;
        let b = path.as_os_str().as_bytes();
        if !plain_abs(b) {
            return self.classify_components(path);
        }
        // Byte comparisons: for a plain absolute path they are the component comparisons of
        // `classify_components` (the roots are canonical, hence plain), without parsing.
        if let Some(i) = self
            .roots
            .iter()
            .position(|r| under(b, r.as_os_str().as_bytes()))
        {
            return Class::Protected(i);
        }
        if let Some(p) = &self.patterns {
            if p.covers(path) {
                return Class::Protected(self.roots.len());
            }
        }
        if let Some(i) = self
            .roots
            .iter()
            .position(|r| under(r.as_os_str().as_bytes(), b))
        {
            return Class::AncestorOfRoot(i);
        }
        let parent = match b.iter().rposition(|&c| c == b'/') {
            _ if b.len() == 1 => None,
            Some(0) => Some(&b[..1]),
            Some(i) => Some(&b[..i]),
            None => None,
        };
        match parent {
            Some(parent)
                if self
                    .ancestors
                    .contains(Path::new(std::ffi::OsStr::from_bytes(parent))) =>
            {
                Class::InAncestorDir
            }
            _ if self.patterns.is_some() => Class::InAncestorDir,
            _ => Class::Free,
        }
    }

    /// [`Protection::classify`] by path components, for paths that are not plain.
    fn classify_components(&self, path: &Path) -> Class {
        if let Some(i) = self.roots.iter().position(|r| path.starts_with(r)) {
            return Class::Protected(i);
        }
        if let Some(p) = &self.patterns {
            if p.covers(path) {
                return Class::Protected(self.roots.len());
            }
        }
        if let Some(i) = self.roots.iter().position(|r| r.starts_with(path)) {
            return Class::AncestorOfRoot(i);
        }
        match path.parent() {
            Some(parent) if self.ancestors.contains(parent) => Class::InAncestorDir,
            // With patterns Landlock grants nothing: the supervisor performs every removal.
            _ if self.patterns.is_some() => Class::InAncestorDir,
            _ => Class::Free,
        }
    }

    /// The root an inode with several links belongs to, if it is protected.
    pub fn linked_root(&self, dev: u64, ino: u64) -> Option<usize> {
        let map = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(dev, ino)).copied()
    }

    /// True when some protected inode has several links (so unprotected paths need an inode check).
    pub fn has_linked(&self) -> bool {
        let map = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        !map.is_empty()
    }

    /// Every recorded multi-link protected inode: ((st_dev, st_ino), root index).
    pub fn linked_entries(&self) -> Vec<((u64, u64), usize)> {
        let map = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Records that inode (dev, ino) of root `root` now has another link.
    pub fn add_linked(&self, dev: u64, ino: u64, root: usize) {
        let mut map = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((dev, ino), root);
    }

    /// Records every file below the roots that already has more than one hard link.
    fn scan_links(&self) {
        for (i, r) in self.roots.iter().enumerate() {
            for (_, md) in multi_linked(r) {
                self.add_linked(md.dev(), md.ino(), i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prot(roots: &[&str]) -> Protection {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        let ancestors = ancestors_of(&roots);
        Protection {
            roots,
            aliases: Vec::new(),
            ancestors,
            linked: Mutex::new(HashMap::new()),
            patterns: None,
            writes: None,
        }
    }

    #[test]
    fn bind_mounts_of_a_root_or_of_a_directory_above_or_below_it_are_aliases() {
        let mi = "\
22 1 254:1 / / rw - ext4 /dev/vda rw
30 22 0:30 / /tmp rw - tmpfs tmpfs rw
40 30 0:30 /w/p /tmp/w/alias rw - tmpfs tmpfs rw
41 22 0:30 /w /mnt/whole\\040dir rw - tmpfs tmpfs rw
42 22 0:30 /w/p/sub /srv/sub rw - tmpfs tmpfs rw
43 22 0:30 /w/other /srv/other rw - tmpfs tmpfs rw
44 22 254:1 /tmp/w/p /srv/disk rw - ext4 /dev/vda rw
";
        let mi = &crate::mountinfo::parse(mi);
        let roots = [PathBuf::from("/tmp/w/p")];
        let all = |_: &Path, _: &Path| true;
        assert_eq!(
            aliases(&roots, mi, &all),
            [
                PathBuf::from("/tmp/w/alias"),
                PathBuf::from("/mnt/whole dir/p"),
                PathBuf::from("/srv/sub"),
            ]
        );
        // An alias path that is not the root's directory (something mounted over it) is not.
        let none = |_: &Path, _: &Path| false;
        assert_eq!(aliases(&roots, mi, &none), [PathBuf::from("/srv/sub")]);
        // The root on its alias mount: the original path is found the other way round.
        let from_alias = aliases(&[PathBuf::from("/tmp/w/alias/x")], mi, &all);
        assert!(
            from_alias.contains(&PathBuf::from("/tmp/w/p/x")),
            "{from_alias:?}"
        );
        // Nothing else of the device: no alias.
        assert!(aliases(&[PathBuf::from("/tmp/w/q")], mi, &all)
            .iter()
            .all(|a| a.ends_with("q")));
    }

    #[test]
    fn a_bind_mount_alias_in_this_namespace_is_protected_too() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "needs root");
            eprintln!("SKIP: needs root (mount)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p");
        let alias = d.path().join("alias");
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::create_dir_all(&alias).unwrap();
        // In a mount namespace of its own (a thread's): nothing leaks to the host.
        let (p2, alias2) = (p.clone(), alias.clone());
        let got = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            nix::mount::mount(
                Some(&p2),
                &alias2,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
            let prot = Protection::new(std::slice::from_ref(&p2)).unwrap();
            let alias = std::fs::canonicalize(&alias2).unwrap();
            (
                prot.classify(&alias.join("f")),
                prot.classify(&alias),
                prot.roots().to_vec(),
                prot.aliases() == [alias.clone()],
            )
        })
        .join()
        .unwrap();
        assert_eq!(got.0, Class::Protected(0), "{:?}", got.2);
        assert!(matches!(got.1, Class::Protected(_)), "{:?}", got.2);
        assert!(got.3, "the alias is recorded as one: {:?}", got.2);
    }

    #[test]
    fn classify_by_bytes_agrees_with_classify_by_components() {
        let paths = [
            "/",
            "/home",
            "/home/u",
            "/home/u/prod",
            "/home/u/prod/a/b",
            "/home/u/production",
            "/home/u/prod.x",
            "/home/u/notes.txt",
            "/home/u/.git",
            "/home/u/.git/x",
            "/tmp",
            "/tmp/x",
            "/srv",
            "/srv/x",
            "/srv/a/b/c",
            "/h",
            "/home/v/x",
            "/x.tfstate",
            "/a/b/x.tfstate",
            "/a/b.tfstate/c",
            // not plain: the component path
            "/home//u/prod",
            "/home/u/prod/",
            "/home/./u/prod/x",
            "//home/u",
            "/home/u/../u/prod",
        ];
        let root_sets: &[&[&str]] = &[&["/home/u/prod"], &["/home/u/prod", "/srv/a"], &["/"], &[]];
        for roots in root_sets {
            for patterns in [None, Some(&["**/.git", "*.tfstate"][..])] {
                let mut p = prot(roots);
                p.patterns = patterns.map(|x| crate::profile::PatternSet::new(x).unwrap());
                for path in paths {
                    let path = Path::new(path);
                    assert_eq!(
                        p.classify(path),
                        p.classify_components(path),
                        "{roots:?} {patterns:?} {}",
                        path.display()
                    );
                }
            }
        }
        assert!(plain_abs(b"/") && plain_abs(b"/a/b") && plain_abs(b"/a/.b"));
        assert!(!plain_abs(b"a/b") && !plain_abs(b"/a/") && !plain_abs(b"/a//b"));
        assert!(!plain_abs(b"/a/./b") && !plain_abs(b"") && !plain_abs(b"/."));
    }

    #[test]
    fn paths_below_a_root_are_protected() {
        let p = prot(&["/home/u/prod"]);
        assert_eq!(p.classify(Path::new("/home/u/prod")), Class::Protected(0));
        assert_eq!(
            p.classify(Path::new("/home/u/prod/a/b")),
            Class::Protected(0)
        );
        assert_eq!(
            p.classify(Path::new("/home/u/production")),
            Class::InAncestorDir
        );
    }

    #[test]
    fn ancestors_and_their_entries_are_told_apart() {
        let p = prot(&["/home/u/prod"]);
        assert_eq!(p.classify(Path::new("/home/u")), Class::AncestorOfRoot(0));
        assert_eq!(p.classify(Path::new("/home")), Class::AncestorOfRoot(0));
        assert_eq!(
            p.classify(Path::new("/home/u/notes.txt")),
            Class::InAncestorDir
        );
        assert_eq!(p.classify(Path::new("/tmp")), Class::InAncestorDir);
        assert_eq!(p.classify(Path::new("/tmp/x")), Class::Free);
        assert_eq!(p.classify(Path::new("/home/v/x")), Class::Free);
    }

    #[test]
    fn nested_roots_keep_the_outermost() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outer = dir.path().join("a");
        let inner = outer.join("b");
        std::fs::create_dir_all(&inner).unwrap_or_else(|e| panic!("{e}"));
        let p = Protection::new(&[inner.clone(), outer.clone()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.roots().len(), 1);
        assert!(p.roots()[0].ends_with("a"));
        assert!(matches!(
            p.classify(&p.roots()[0].join("b/c")),
            Class::Protected(0)
        ));
    }

    #[test]
    fn write_protection_holds_its_roots_and_performs_new_entries_of_ancestors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("proj/src")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(base.join("proj/app.db"), b"").unwrap_or_else(|e| panic!("{e}"));
        let db = base.join("proj/app.db");
        let p = Protection::new(&[base.join("proj")])
            .and_then(|p| p.with_writes(std::slice::from_ref(&db), None))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.classify_write(&db), WriteClass::Held(0));
        assert_eq!(
            p.classify_write(&base.join("proj/app.db-journal")),
            WriteClass::Perform
        );
        assert_eq!(
            p.classify_write(&base.join("proj/src/x.c")),
            WriteClass::Free
        );
        assert_eq!(p.classify_write(&base.join("proj")), WriteClass::Free);
        assert_eq!(
            p.classify_write(Path::new("/no-such-dir/x")),
            WriteClass::Free
        );
        // A new entry of an ancestor (the temporary directory is below /tmp).
        assert_eq!(p.classify_write(&base.join("x")), WriteClass::Perform);
        assert!(p.describe_write(&db).starts_with("protect_writes "));
        // Without protect_writes nothing is write-held.
        let q = Protection::new(&[base.join("proj")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.classify_write(&db), WriteClass::Free);
    }

    #[test]
    fn write_patterns_hold_matches_and_perform_everything_else() {
        let pats = crate::profile::PatternSet::new(&["**/*.sqlite".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let p = Protection::with_patterns(&[], Some(pats.clone()))
            .and_then(|p| p.with_writes(&[], Some(pats)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.classify_write(Path::new("/w/a/b.sqlite")),
            WriteClass::Held(p.pattern_root())
        );
        assert_eq!(
            p.classify_write(Path::new("/w/a/b.txt")),
            WriteClass::Perform
        );
    }

    #[test]
    fn missing_protect_path_is_an_error() {
        let e = Protection::new(&[PathBuf::from("/nonexistent/guard-test")]);
        assert!(matches!(e, Err(FilesError::Protect { .. })));
    }

    #[test]
    fn existing_hard_links_below_a_root_are_recorded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("p");
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("f"), b"x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::hard_link(root.join("f"), dir.path().join("l")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("g"), b"y").unwrap_or_else(|e| panic!("{e}"));
        let p = Protection::new(std::slice::from_ref(&root)).unwrap_or_else(|e| panic!("{e}"));
        let md = std::fs::metadata(dir.path().join("l")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.linked_root(md.dev(), md.ino()), Some(0));
        let md = std::fs::metadata(root.join("g")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.linked_root(md.dev(), md.ino()), None);
    }
}
