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
}

/// The rights the sandbox's Landlock domain handles (everything else is left to DAC).
fn handled() -> BitFlags<AccessFs> {
    AccessFs::RemoveFile | AccessFs::RemoveDir | AccessFs::Truncate | AccessFs::Refer
}

/// Lists the rules: every entry of every ancestor directory that is neither a protected root nor
/// an ancestor of one. Symbolic links are skipped (a rule would follow them).
pub fn grants(prot: &Protection) -> Vec<(PathBuf, Grant)> {
    let mut out = Vec::new();
    for dir in prot.ancestors() {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if prot.classify(&path) != Class::InAncestorDir {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_symlink() {
                continue;
            }
            let grant = if ft.is_dir() {
                Grant::Tree
            } else if ft.is_file()
                || ft.is_fifo()
                || ft.is_socket()
                || ft.is_char_device()
                || ft.is_block_device()
            {
                Grant::File
            } else {
                continue;
            };
            out.push((path, grant));
        }
    }
    out.sort();
    out
}

/// A Landlock ruleset ready to be applied (created as root, applied after privileges are dropped).
pub struct Prepared(landlock::RulesetCreated);

/// Creates the ruleset and adds the rules. Fails when Landlock is missing: never runs unguarded.
pub fn prepare(grants: &[(PathBuf, Grant)]) -> Result<Prepared, FilesError> {
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled())?
        .create()?;
    let file_rights: BitFlags<AccessFs> = AccessFs::Truncate.into();
    for (path, grant) in grants {
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
            Grant::Tree => handled(),
            Grant::File => file_rights,
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
        let g = grants(&p);
        assert!(g.contains(&(base.join("a/other"), Grant::Tree)));
        assert!(g.contains(&(base.join("a/file"), Grant::File)));
        assert!(g.contains(&(base.join("b"), Grant::Tree)));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a/link")));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a/prot")));
        assert!(!g.iter().any(|(p, _)| p == &base.join("a")));
        assert!(!g.iter().any(|(p, _)| base.join("a/prot").starts_with(p)));
    }
}
