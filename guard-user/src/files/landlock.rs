//! Landlock rules that make protected trees non-removable for the sandbox.
//!
//! Landlock can only grant, so "everything except the protected trees" is built by granting the
//! removal rights on every sibling along the path from `/` down to each protected root. Entries
//! directly inside an ancestor of a root get no grant; the supervisor handles those itself.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use landlock::{
    AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};

use super::{Class, FilesError, Protection};

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// A directory: remove, truncate and reparent anything below it.
    Tree,
    /// A single non-directory: truncate it.
    File,
    /// Open for writing anything at or below it (`protect_writes` sessions only).
    Write,
}

/// The rights the sandbox's Landlock domain handles (everything else is left to DAC).
fn handled(write: bool) -> BitFlags<AccessFs> {
    let mut h = AccessFs::RemoveFile | AccessFs::RemoveDir | AccessFs::Truncate | AccessFs::Refer;
    if write {
        h |= AccessFs::WriteFile;
    }
    h
}

/// The Landlock rules of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Whether writes are handled (`protect_writes`): then anything without a `Write` grant
    /// cannot be opened for writing by the sandbox.
    pub write: bool,
    /// The grants, sorted by path.
    pub grants: Vec<(PathBuf, Grant)>,
}

/// Lists the rules: every entry of every ancestor directory that is neither a protected root nor
/// an ancestor of one (removal), and likewise for the write-protected roots (writing). With name
/// patterns the corresponding grants are left out: the supervisor performs those operations.
/// Symbolic links are skipped (a rule would follow them).
pub fn rules(prot: &Protection) -> Rules {
    let mut out = Vec::new();
    if !prot.has_patterns() {
        for dir in prot.ancestors() {
            for (path, ft) in entries(dir) {
                if prot.classify(&path) != Class::InAncestorDir {
                    continue;
                }
                let grant = if ft.is_dir() {
                    Grant::Tree
                } else {
                    Grant::File
                };
                out.push((path, grant));
            }
        }
    }
    let write = prot.writes().is_some();
    if let Some(w) = prot.writes().filter(|w| !w.has_patterns()) {
        for dir in w.ancestors() {
            for (path, _) in entries(dir) {
                let inside_or_above = w
                    .roots()
                    .iter()
                    .any(|r| path.starts_with(r) || r.starts_with(&path));
                if !inside_or_above {
                    out.push((path, Grant::Write));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Rules { write, grants: out }
}

/// The entries of `dir` a rule can name: directories, files and special files (no symlinks).
fn entries(dir: &std::path::Path) -> Vec<(PathBuf, std::fs::FileType)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let ft = e.file_type().ok()?;
            let ok = ft.is_dir()
                || ft.is_file()
                || ft.is_fifo()
                || ft.is_socket()
                || ft.is_char_device()
                || ft.is_block_device();
            ok.then(|| (e.path(), ft))
        })
        .collect()
}

/// A Landlock ruleset ready to be applied (created as root, applied after privileges are dropped).
pub struct Prepared(landlock::RulesetCreated);

/// Creates the ruleset and adds the rules. Fails when Landlock is missing: never runs unguarded.
pub fn prepare(rules: &Rules) -> Result<Prepared, FilesError> {
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled(rules.write))?
        .create()?;
    let file_rights: BitFlags<AccessFs> = AccessFs::Truncate.into();
    for (path, grant) in &rules.grants {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // An entry removed since it was listed needs no grant.
            Err(_) if std::fs::symlink_metadata(path).is_err() => continue,
            Err(source) => {
                return Err(FilesError::LandlockPath {
                    path: path.clone(),
                    source,
                })
            }
        };
        let rights = match grant {
            Grant::Tree => handled(false),
            Grant::File => file_rights,
            Grant::Write => AccessFs::WriteFile.into(),
        };
        rs = rs.add_rule(PathBeneath::new(fd, rights))?;
    }
    Ok(Prepared(rs))
}

impl Prepared {
    /// Restricts the calling thread (and what it executes). Needs no_new_privs or CAP_SYS_ADMIN.
    pub fn apply(self) -> Result<(), FilesError> {
        let status = self.0.restrict_self()?;
        if status.ruleset != RulesetStatus::FullyEnforced {
            return Err(FilesError::LandlockPartial(format!("{:?}", status.ruleset)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_cover_siblings_but_not_roots_or_ancestors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("a/prot/x")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("a/other")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(base.join("a/file"), b"").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/", base.join("a/link")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("b")).unwrap_or_else(|e| panic!("{e}"));
        let p = Protection::new(&[base.join("a/prot")]).unwrap_or_else(|e| panic!("{e}"));
        let g = rules(&p).grants;
        assert!(g.contains(&(base.join("a/other"), Grant::Tree)));
        assert!(g.contains(&(base.join("a/file"), Grant::File)));
        assert!(g.contains(&(base.join("b"), Grant::Tree)));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a/link")));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a/prot")));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a")));
        assert!(!g.iter().any(|(p, _)| base.join("a/prot").starts_with(p)));
        assert!(!g.iter().any(|(_, g)| *g == Grant::Write));
    }

    #[test]
    fn write_grants_cover_everything_but_write_roots_and_their_ancestors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("p/keys")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("p/src")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(base.join("p/app.db"), b"").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(base.join("p/notes"), b"").unwrap_or_else(|e| panic!("{e}"));
        let db = base.join("p/app.db");
        let p = Protection::new(&[base.join("p/keys"), db.clone()])
            .and_then(|p| p.with_writes(std::slice::from_ref(&db), None))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = rules(&p);
        assert!(r.write);
        let w = |path: PathBuf| r.grants.contains(&(path, Grant::Write));
        // Removal-only roots stay writable; siblings too.
        assert!(w(base.join("p/keys")));
        assert!(w(base.join("p/src")));
        assert!(w(base.join("p/notes")));
        // The write root and its ancestors get no write grant.
        assert!(!w(db.clone()));
        assert!(!w(base.join("p")));
        assert!(!r
            .grants
            .iter()
            .any(|(g, k)| *k == Grant::Write && db.starts_with(g)));
    }
}
