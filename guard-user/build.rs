//! Builds the eBPF object (`guard-ebpf`) and leaves it at `$OUT_DIR/guard-ebpf.o`, where
//! `src/exec.rs` embeds it with `aya::include_bytes_aligned!`.
//!
//! The eBPF crate needs the nightly toolchain named in `guard-ebpf/rust-toolchain.toml` (with
//! `rust-src`, for `-Z build-std=core`), `bpf-linker` on `PATH` and clang (for the CO-RE
//! accessors, see `guard-ebpf/build.rs`). When one is missing the build fails with a message
//! saying what to install: there is no way to build `sandbox` without its eBPF programs.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{self, Command},
};

/// Inputs of the eBPF build, relative to the workspace root. Directories are scanned recursively
/// by cargo.
const INPUTS: &[&str] = &[
    "guard-ebpf/Cargo.toml",
    "guard-ebpf/Cargo.lock",
    "guard-ebpf/build.rs",
    "guard-ebpf/rust-toolchain.toml",
    "guard-ebpf/.cargo/config.toml",
    "guard-ebpf/src",
    "guard-ebpf/c",
    "guard-common/Cargo.toml",
    "guard-common/src",
];

/// What the CI script and a developer have to run once.
const SETUP_HINT: &str = "set up the eBPF toolchain with:\n  \
     rustup toolchain install nightly --profile minimal --component rust-src\n  \
     cargo install bpf-linker --version 0.10.3 --locked\n  \
     apt-get install clang-19";

fn main() {
    let manifest_dir = PathBuf::from(env_or_fail("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env_or_fail("OUT_DIR"));
    let root = manifest_dir
        .parent()
        .unwrap_or_else(|| fail("guard-user has no parent directory"));
    let ebpf_dir = root.join("guard-ebpf");

    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    // Read by guard-ebpf/build.rs (which clang to use); passed through.
    println!("cargo:rerun-if-env-changed=CLANG");

    let toolchain = toolchain_of(&ebpf_dir);
    check_toolchain(&toolchain);

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        &toolchain,
        "cargo",
        "build",
        "--release",
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&ebpf_dir);
    clean_env(&mut cmd);

    let output = cmd.output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run `{}`: {e}\n{SETUP_HINT}",
            describe(&cmd)
        ))
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{stderr}");
        fail(&format!(
            "building the eBPF programs failed ({}); the output of `{}` in {} is above",
            output.status,
            describe(&cmd),
            ebpf_dir.display()
        ));
    }
    // Warnings of the eBPF build would be lost otherwise.
    for line in stderr.lines().filter(|l| l.starts_with("warning")) {
        println!("cargo:warning=guard-ebpf: {line}");
    }

    let object = target_dir.join("bpfel-unknown-none/release/guard-ebpf");
    let bytes = fs::read(&object).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read the eBPF object {}: {e}",
            object.display()
        ))
    });
    if !bytes.starts_with(b"\x7fELF") {
        fail(&format!("{} is not an ELF object", object.display()));
    }
    let dest = out_dir.join("guard-ebpf.o");
    fs::write(&dest, &bytes)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", dest.display())));
}

/// The toolchain named by `channel = "..."` in `guard-ebpf/rust-toolchain.toml`.
fn toolchain_of(ebpf_dir: &Path) -> String {
    let file = ebpf_dir.join("rust-toolchain.toml");
    let text = fs::read_to_string(&file)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", file.display())));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .next()
        .unwrap_or_else(|| fail(&format!("no `channel = \"...\"` in {}", file.display())))
}

/// Fails with a clear message unless the toolchain, its `rust-src` and `bpf-linker` are there.
fn check_toolchain(toolchain: &str) {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, "rustc", "--print", "sysroot"]);
    clean_env(&mut cmd);
    let sysroot = match cmd.output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => fail(&format!(
            "the Rust toolchain `{toolchain}` is not usable (`{}`: {}): {}\n{SETUP_HINT}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => fail(&format!(
            "cannot run rustup (`{}`): {e}\n{SETUP_HINT}",
            describe(&cmd)
        )),
    };
    let core_src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.is_file() {
        fail(&format!(
            "the `rust-src` component of the `{toolchain}` toolchain is missing ({} does not \
             exist)\n{SETUP_HINT}",
            core_src.display()
        ));
    }
    let linker_found = env::var_os("PATH")
        .map(|path| env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !linker_found {
        fail(&format!("`bpf-linker` is not on PATH\n{SETUP_HINT}"));
    }
}

/// Removes what the outer (stable, host) build puts into the environment and would leak into the
/// nightly eBPF build: compiler and wrapper overrides (clippy's driver), flags for the host
/// target, the selected toolchain, the outer target directory and the build-script variables.
/// Kept: `CARGO_HOME`, the jobserver (`CARGO_MAKEFLAGS`, so both builds share the job slots),
/// network, registry and terminal settings, and rustup's own settings.
fn clean_env(cmd: &mut Command) {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const DROP_EXACT: &[&str] = &[
        "TARGET",
        "HOST",
        "OUT_DIR",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "RUST_RECURSION_COUNT",
    ];
    for (key, _) in env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        let keep = KEEP
            .iter()
            .any(|k| name == *k || (k.ends_with('_') && name.starts_with(k)));
        // RUSTC covers RUSTC_WRAPPER, RUSTC_WORKSPACE_WRAPPER, RUSTC_LINKER, RUSTC_BOOTSTRAP;
        // rustup's own settings (home, auto-install) stay, except the selected toolchain.
        let leaks = name.starts_with("CARGO")
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || DROP_EXACT.contains(&name);
        if leaks && !keep {
            cmd.env_remove(OsStr::new(name));
        }
    }
}

/// The command line without the environment changes, for messages.
fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn env_or_fail(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(msg: &str) -> ! {
    eprintln!("error: guard-user/build.rs: {msg}");
    process::exit(1);
}
