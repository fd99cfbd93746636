//! What goes into the VM: statically linked test binaries of guard-user, the `sandbox` binary they
//! run, and the C helper programs of `tests/progs` (the VM has no compiler).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The target triple the static binaries are built for. Naming it explicitly keeps `RUSTFLAGS` off
/// build scripts and proc macros (which must stay dynamic) and puts the output in
/// `target/<triple>/`.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where libseccomp's static archive is (libseccomp-dev).
const LIBSECCOMP_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Extra link flags of helper programs; keep in step with `prog_libs` in tests/common/mod.rs.
const PROG_LIBS: &[(&str, &[&str])] = &[("uring_unlinkat", &["-luring"])];

/// A built test target.
#[derive(Debug, Clone)]
pub struct TestBin {
    /// The `[[test]]` name.
    pub name: String,
    /// The executable.
    pub path: PathBuf,
}

/// The build's results.
#[derive(Debug)]
pub struct Built {
    /// The `sandbox` binary; test binaries embed this absolute path (`CARGO_BIN_EXE_sandbox`).
    pub sandbox: PathBuf,
    /// The requested test binaries, in the order asked.
    pub tests: Vec<TestBin>,
}

/// `RUSTFLAGS="-C target-feature=+crt-static" cargo test -p guard-user --target TARGET --no-run
/// --test NAME...`, with libseccomp linked statically; the executables come from cargo's JSON.
pub fn build_tests(root: &Path, tests: &[String], release: bool) -> anyhow::Result<Built> {
    if std::env::consts::ARCH != "x86_64" {
        bail!(
            "the VM harness boots x86-64 kernels; this host is {}",
            std::env::consts::ARCH
        );
    }
    let archive = Path::new(LIBSECCOMP_DIR).join("libseccomp.a");
    if !archive.is_file() {
        bail!(
            "{} is missing: the static sandbox binary needs it (apt-get install libseccomp-dev)",
            archive.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.is_empty() {
        rustflags.push(' ');
    }
    rustflags.push_str("-C target-feature=+crt-static");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["test", "-p", "guard-user", "--target", TARGET, "--no-run"])
        .arg("--message-format=json-render-diagnostics");
    if release {
        cmd.arg("--release");
    }
    for t in tests {
        cmd.args(["--test", t]);
    }
    cmd.env("RUSTFLAGS", &rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("LIBSECCOMP_LINK_TYPE", "static")
        .env("LIBSECCOMP_LIB_PATH", LIBSECCOMP_DIR)
        .stdout(Stdio::piped());
    println!(
        "vm-test: RUSTFLAGS={rustflags:?} {}",
        super::shell_line(&cmd)
    );
    let mut child = cmd.spawn().context("run cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut sandbox = None;
    let mut found: Vec<TestBin> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is = |k: &str| kinds.iter().any(|v| v == k);
        if is("bin") && name == "sandbox" {
            sandbox = Some(PathBuf::from(exe));
        } else if is("test") && tests.iter().any(|t| t == name) {
            found.push(TestBin {
                name: name.to_owned(),
                path: PathBuf::from(exe),
            });
        }
    }
    let st = child.wait().context("wait for cargo")?;
    if !st.success() {
        bail!("building the static test binaries failed ({st})");
    }
    let sandbox = sandbox.context("cargo built no `sandbox` binary")?;
    let mut ordered = Vec::new();
    for t in tests {
        let bin = found
            .iter()
            .find(|b| &b.name == t)
            .with_context(|| format!("cargo reported no executable for test target {t}"))?;
        ordered.push(bin.clone());
    }
    for p in std::iter::once(&sandbox).chain(ordered.iter().map(|b| &b.path)) {
        ensure_static(p)?;
    }
    Ok(Built {
        sandbox,
        tests: ordered,
    })
}

/// Compiles every `tests/progs/*.c` with `cc -static` into `out` (skipping up-to-date ones);
/// returns the executables.
pub fn build_progs(root: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let src_dir = root.join("tests/progs");
    let mut srcs = Vec::new();
    if src_dir.is_dir() {
        for e in fs::read_dir(&src_dir).with_context(|| format!("read {}", src_dir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "c") {
                srcs.push(p);
            }
        }
    }
    srcs.sort();
    fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut bins = Vec::new();
    for src in srcs {
        let stem = src.file_stem().context("prog without a name")?;
        let bin = out.join(stem);
        if !newer(&src, &bin) {
            let st = Command::new("cc")
                .args(["-static", "-O2", "-pthread", "-o"])
                .arg(&bin)
                .arg(&src)
                .args(prog_libs(stem))
                .status()
                .context("run cc (apt-get install gcc)")?;
            if !st.success() {
                bail!(
                    "cc -static {} failed ({st}); static libraries come from libc6-dev and, for \
                     io_uring helpers, liburing-dev",
                    src.display()
                );
            }
        }
        ensure_static(&bin)?;
        bins.push(bin);
    }
    Ok(bins)
}

fn prog_libs(stem: &std::ffi::OsStr) -> &'static [&'static str] {
    PROG_LIBS
        .iter()
        .find(|(name, _)| stem == *name)
        .map_or(&[], |(_, libs)| libs)
}

/// True when `out` exists and is at least as new as `src`.
fn newer(src: &Path, out: &Path) -> bool {
    let m = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(src), m(out)), (Some(s), Some(o)) if o >= s)
}

/// Copies `src` to `dst` without debug info (`objcopy --strip-debug`; symbols stay, so
/// backtraces still name functions).
pub fn strip_copy(src: &Path, dst: &Path) -> anyhow::Result<()> {
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let st = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(dst)
        .status()
        .context("run objcopy (apt-get install binutils)")?;
    if !st.success() {
        bail!("objcopy --strip-debug {} failed ({st})", src.display());
    }
    Ok(())
}

/// Fails unless `path` is a static ELF executable: no `PT_INTERP`, so nothing needs a dynamic
/// loader or shared libraries in the VM (what `ldd` reports as "not a dynamic executable" or, for
/// static-pie, "statically linked").
pub fn ensure_static(path: &Path) -> anyhow::Result<()> {
    let mut head = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .take(1 << 16)
        .read_to_end(&mut head)
        .with_context(|| format!("read {}", path.display()))?;
    match has_interp(&head) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "{} is dynamically linked (it has a PT_INTERP program header): the VM has no shared \
             libraries",
            path.display()
        ),
        None => bail!("{} is not a 64-bit little-endian ELF file", path.display()),
    }
}

/// Whether an ELF64 image (its first bytes, program headers included) has a `PT_INTERP`; `None`
/// when it is not a readable ELF64 little-endian file.
fn has_interp(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_shell_is_dynamic_and_scripts_are_not_elf() {
        let sh = fs::read("/bin/sh").unwrap();
        assert_eq!(has_interp(&sh), Some(true));
        assert_eq!(has_interp(b"#!/bin/sh\n"), None);
    }
}
