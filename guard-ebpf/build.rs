//! Compiles the C shims (the CO-RE accessors in `c/core_read.c`, the exec hold's reads in
//! `c/exec_read.c`) to LLVM bitcode and hands the bitcode to bpf-linker, which links it into the
//! eBPF object together with the Rust code.
//!
//! clang is found as `$CLANG`, else `clang-19`, else `clang`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Each shim and its global functions: kept global (BTF linkage global) so the verifier checks
/// each once on its own rather than at every call (see the functions' comments).
const SHIMS: &[(&str, &str)] = &[
    ("c/core_read.c", "guard_name_hashes"),
    ("c/exec_read.c", "guard_exec_hashes"),
];

fn main() {
    for (shim, _) in SHIMS {
        println!("cargo:rerun-if-changed={shim}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let candidates: Vec<String> = match env::var("CLANG") {
        Ok(clang) => vec![clang],
        Err(_) => vec!["clang-19".into(), "clang".into()],
    };
    // The first clang that runs compiles every shim.
    let mut last_err = None;
    for clang in &candidates {
        if let Err(e) = Command::new(clang).arg("--version").output() {
            last_err = Some(format!("{clang}: {e}"));
            continue;
        }
        for (shim, export) in SHIMS {
            compile(clang, shim, &out_dir);
            println!("cargo:rustc-link-arg-bins=--export={export}");
        }
        return;
    }
    fail(&format!(
        "no clang found to compile {} ({}); install clang (Debian: `apt-get install clang-19`) \
         or set CLANG to a clang binary",
        SHIMS[0].0,
        last_err.unwrap_or_default()
    ));
}

/// Compiles `shim` to bitcode in `out_dir` and links it into the eBPF object.
fn compile(clang: &str, shim: &str, out_dir: &Path) {
    let name = Path::new(shim).file_stem().unwrap_or_default();
    let bitcode = out_dir.join(name).with_extension("bc");
    let mut cmd = Command::new(clang);
    cmd.args([
        "--target=bpfel",
        "-O2",
        // Debug info describes the accessed structures: bpf-linker turns it into the BTF
        // that the CO-RE relocation records refer to.
        "-g",
        "-emit-llvm",
        "-c",
        "-Wall",
        "-Werror",
    ])
    .arg(shim)
    .arg("-o")
    .arg(&bitcode);
    match cmd.status() {
        Ok(status) if status.success() => {
            println!("cargo:rustc-link-arg-bins={}", bitcode.display());
        }
        Ok(status) => fail(&format!(
            "`{cmd:?}` failed ({status}); see the compiler output above"
        )),
        Err(e) => fail(&format!("{clang}: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: guard-ebpf: {msg}");
    std::process::exit(1);
}
