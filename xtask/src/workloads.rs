//! Generated inputs of the benchmark workloads: a git work tree full of untracked and ignored
//! files (for `git clean -fdx`), a C project with a Makefile (for `make -j2`) and a
//! dependency-free Rust crate (for `cargo build --offline`).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Untracked files of a git tree: `out/dAA/dBB/fCCC`, and as many ignored `build/dAA/dBB/fCCC.o`.
pub const GIT_TOP: usize = 10;
/// Subdirectories per top directory of a git tree.
pub const GIT_SUB: usize = 10;
/// Files per subdirectory of a git tree.
pub const GIT_FILES: usize = 100;
/// Number of units (`src/uNNN.c`) of the C project.
pub const C_UNITS: usize = 200;
/// Modules of the Rust crate.
pub const RUST_MODULES: usize = 10;
/// Functions per module of the Rust crate (about 20 lines each).
pub const RUST_FNS: usize = 23;

/// `chown uid:uid` of `p`.
fn own(p: &Path, uid: Option<u32>) -> Result<()> {
    if let Some(u) = uid {
        chown(p, Some(u), Some(u)).with_context(|| format!("chown {}", p.display()))?;
    }
    Ok(())
}

/// Writes `text` to `dir/rel`, creating parents (owned by `uid` if given).
fn put(dir: &Path, rel: &str, text: &str, uid: Option<u32>) -> Result<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        let mut missing = Vec::new();
        let mut d = parent;
        while !d.exists() {
            missing.push(d.to_path_buf());
            d = d.parent().context("no parent")?;
        }
        for m in missing.iter().rev() {
            fs::create_dir(m).with_context(|| format!("creating {}", m.display()))?;
            own(m, uid)?;
        }
    }
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    own(&p, uid)
}

fn run(cmd: &mut Command) -> Result<()> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// A git repository at `dir` (which must not exist) with a few committed files, all owned by
/// `uid`: the template that [`git_tree`] copies.
pub fn git_template(dir: &Path, uid: u32) -> Result<()> {
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("README.md", "# bench\n"),
        (".gitignore", "build/\n*.o\n"),
        ("Makefile", "all:\n\t@true\n"),
        ("src/main.c", "int main(void) { return 0; }\n"),
        ("src/util.c", "int util(int x) { return x + 1; }\n"),
        ("src/util.h", "int util(int x);\n"),
        ("docs/notes.txt", "notes\n"),
    ];
    for (rel, text) in files {
        put(dir, rel, text, None)?;
    }
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(dir).args(args);
        c
    };
    run(&mut git(&["init", "-q", "-b", "main"]))?;
    run(&mut git(&["add", "-A"]))?;
    run(&mut git(&[
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@localhost",
        "commit",
        "-qm",
        "initial",
    ]))?;
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(dir))
}

/// Copies `template` to `tree` and fills it with untracked and ignored files, all owned by `uid`.
pub fn git_tree(template: &Path, tree: &Path, uid: u32) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(template).arg(tree))?;
    for top in ["out", "build"] {
        let ext = if top == "build" { ".o" } else { "" };
        let t = tree.join(top);
        fs::create_dir(&t).with_context(|| format!("creating {}", t.display()))?;
        own(&t, Some(uid))?;
        for a in 0..GIT_TOP {
            crate::bench::check_interrupted()?;
            let da = t.join(format!("d{a:02}"));
            fs::create_dir(&da)?;
            own(&da, Some(uid))?;
            for b in 0..GIT_SUB {
                let db = da.join(format!("d{b:02}"));
                fs::create_dir(&db)?;
                own(&db, Some(uid))?;
                for f in 0..GIT_FILES {
                    let p = db.join(format!("f{f:03}{ext}"));
                    fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
                    own(&p, Some(uid))?;
                }
            }
        }
    }
    Ok(())
}

/// True if `tree` looks as `git clean -fdx` leaves it: committed files there, the rest gone.
pub fn git_cleaned(tree: &Path) -> bool {
    tree.join("README.md").is_file()
        && tree.join("src/util.h").is_file()
        && !tree.join("out").exists()
        && !tree.join("build").exists()
}

/// One unit of the C project.
fn c_unit(i: usize) -> String {
    format!(
        "#include \"units.h\"\n\n\
         static unsigned mix_{i}(unsigned x)\n{{\n\tx ^= x >> 16;\n\tx *= 0x7feb352dU;\n\
         \tx ^= x >> 15;\n\tx *= 0x846ca68bU;\n\treturn x ^ (x >> 16);\n}}\n\n\
         static unsigned fold_{i}(const unsigned *v, int n)\n{{\n\tunsigned acc = {i}U;\n\
         \tfor (int k = 0; k < n; k++)\n\t\tacc = mix_{i}(acc + v[k]);\n\treturn acc;\n}}\n\n\
         unsigned unit_{i}(unsigned x)\n{{\n\tunsigned v[16];\n\
         \tfor (int k = 0; k < 16; k++)\n\t\tv[k] = mix_{i}(x + (unsigned)k * {i}U);\n\
         \tswitch (x % 4) {{\n\tcase 0: return fold_{i}(v, 16);\n\
         \tcase 1: return fold_{i}(v, 8) ^ x;\n\tcase 2: return fold_{i}(v + 4, 12) + {i}U;\n\
         \tdefault: return mix_{i}(fold_{i}(v, 4));\n\t}}\n}}\n"
    )
}

/// The Makefile of the C project: objects and the program in `$(O)` (a fresh directory per run).
pub const MAKEFILE: &str = "CC = cc\nCFLAGS = -O2 -Wall\nO = obj\n\
SRCS = $(wildcard src/*.c)\nOBJS = $(patsubst src/%.c,$(O)/%.o,$(SRCS))\n\n\
$(O)/prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n\
$(O)/%.o: src/%.c src/units.h | $(O)\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n\
$(O):\n\tmkdir -p $(O)\n";

/// The C project at `dir`: `C_UNITS` units, a `main.c` calling them all, and [`MAKEFILE`],
/// owned by `uid`.
pub fn c_project(dir: &Path, uid: u32) -> Result<()> {
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    own(dir, Some(uid))?;
    let mut header = String::from("#pragma once\n");
    let mut main = String::from(
        "#include <stdio.h>\n#include \"units.h\"\n\nint main(void)\n{\n\tunsigned x = 1;\n",
    );
    for i in 0..C_UNITS {
        let _ = writeln!(header, "unsigned unit_{i}(unsigned x);");
        let _ = writeln!(main, "\tx = unit_{i}(x);");
        put(dir, &format!("src/u{i:03}.c"), &c_unit(i), Some(uid))?;
    }
    main.push_str("\tprintf(\"%u\\n\", x);\n\treturn 0;\n}\n");
    put(dir, "src/units.h", &header, Some(uid))?;
    put(dir, "src/main.c", &main, Some(uid))?;
    put(dir, "Makefile", MAKEFILE, Some(uid))
}

/// One module of the Rust crate.
fn rust_module(m: usize) -> String {
    let mut s = format!(
        "//! Generated module {m}.\n\n\
         /// State of module {m}.\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq)]\n\
         pub struct State{m} {{\n    pub a: u64,\n    pub b: u64,\n}}\n\n\
         /// One step.\n\
         pub trait Step{m} {{\n    fn step(&mut self, k: u64) -> u64;\n}}\n\n\
         impl Step{m} for State{m} {{\n    fn step(&mut self, k: u64) -> u64 {{\n        \
         self.a = self.a.rotate_left(5) ^ k;\n        self.b = self.b.wrapping_add(self.a);\n        \
         self.b\n    }}\n}}\n"
    );
    for j in 0..RUST_FNS {
        let _ = write!(
            s,
            "\n/// Function {j}.\npub fn f{j}(x: u64) -> u64 {{\n    \
             let mut s = State{m} {{ a: x, b: {j} }};\n    let mut acc = 0u64;\n    \
             for k in 0..{n} {{\n        acc = acc.wrapping_add(s.step(k));\n        \
             if acc % 3 == 0 {{\n            acc ^= 0x9e37_79b9;\n        }} else {{\n            \
             acc = acc.rotate_right({r});\n        }}\n    }}\n    match acc % 4 {{\n        \
             0 => acc,\n        1 => acc.wrapping_mul({j1}),\n        2 => acc ^ x,\n        \
             _ => acc.wrapping_sub({j}),\n    }}\n}}\n",
            n = j % 7 + 3,
            r = j % 13 + 1,
            j1 = j + 1,
        );
    }
    s.push_str(
        "\n/// All functions in a chain.\npub fn run(x: u64) -> u64 {\n    let mut v = x;\n",
    );
    for j in 0..RUST_FNS {
        let _ = writeln!(s, "    v = f{j}(v);");
    }
    s.push_str("    v\n}\n");
    s
}

/// The Rust crate at `dir` (library with `RUST_MODULES` modules and a binary; its own
/// workspace, no dependencies). Returns its number of lines.
pub fn rust_crate(dir: &Path) -> Result<usize> {
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut lines = 0;
    let mut write = |rel: &str, text: &str| {
        lines += text.lines().count();
        put(dir, rel, text, None)
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"benchcrate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         # not part of any workspace above it\n[workspace]\n",
    )?;
    let mut lib = String::from("//! Generated crate for `cargo xtask bench`.\n\n");
    for m in 0..RUST_MODULES {
        let _ = writeln!(lib, "pub mod m{m:02};");
        write(&format!("src/m{m:02}.rs"), &rust_module(m))?;
    }
    lib.push_str(
        "\n/// Every module in a chain.\npub fn run(x: u64) -> u64 {\n    let mut v = x;\n",
    );
    for m in 0..RUST_MODULES {
        let _ = writeln!(lib, "    v = m{m:02}::run(v);");
    }
    lib.push_str("    v\n}\n");
    write("src/lib.rs", &lib)?;
    write(
        "src/main.rs",
        "fn main() {\n    println!(\"{}\", benchcrate::run(7));\n}\n",
    )?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_crate_has_about_five_thousand_lines() {
        let per_module = rust_module(0).lines().count();
        let total = per_module * RUST_MODULES;
        assert!((4500..6000).contains(&total), "{total} lines");
    }

    #[test]
    fn makefile_builds_into_the_object_directory() {
        assert!(MAKEFILE.contains("$(O)/prog: $(OBJS)"));
        // recipes start with a tab
        assert!(MAKEFILE.contains("\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"));
    }

    #[test]
    fn git_tree_counts_twenty_thousand_files() {
        assert_eq!(2 * GIT_TOP * GIT_SUB * GIT_FILES, 20_000);
    }
}
