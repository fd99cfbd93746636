//! Compiles the CO-RE accessors in `c/core_read.c` to LLVM bitcode and hands the bitcode to
//! bpf-linker, which links it into the eBPF object together with the Rust code.
//!
//! clang is found as `$CLANG`, else `clang-19`, else `clang`.

use std::{env, path::PathBuf, process::Command};

const SHIM: &str = "c/core_read.c";
/// The exec hold's reads (`guard_exec_hashes`), compiled the same way.
const EXEC_SHIM: &str = "c/exec_read.c";

fn main() {
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-changed={EXEC_SHIM}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let bitcode = out_dir.join("core_read.bc");

    let candidates: Vec<String> = match env::var("CLANG") {
        Ok(clang) => vec![clang],
        Err(_) => vec!["clang-19".into(), "clang".into()],
    };
    let mut last_err = None;
    for clang in &candidates {
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
        .arg(SHIM)
        .arg("-o")
        .arg(&bitcode);
        match cmd.status() {
            Ok(status) if status.success() => {
                println!("cargo:rustc-link-arg-bins={}", bitcode.display());
                // Kept global (BTF linkage global): the verifier checks a global function once
                // on its own rather than at every call (see guard_name_hashes).
                println!("cargo:rustc-link-arg-bins=--export=guard_name_hashes");
                compile_exec_shim(clang, &out_dir);
                return;
            }
            Ok(status) => fail(&format!(
                "`{cmd:?}` failed ({status}); see the compiler output above"
            )),
            Err(e) => last_err = Some(format!("{clang}: {e}")),
        }
    }
    fail(&format!(
        "no clang found to compile {SHIM} ({}); install clang (Debian: `apt-get install clang-19`) \
         or set CLANG to a clang binary",
        last_err.unwrap_or_default()
    ));
}

/// Compiles `EXEC_SHIM` with the clang that compiled `SHIM`, and links it in the same way.
fn compile_exec_shim(clang: &str, out_dir: &std::path::Path) {
    let bitcode = out_dir.join("exec_read.bc");
    let mut cmd = Command::new(clang);
    cmd.args([
        "--target=bpfel",
        "-O2",
        "-g",
        "-emit-llvm",
        "-c",
        "-Wall",
        "-Werror",
    ])
    .arg(EXEC_SHIM)
    .arg("-o")
    .arg(&bitcode);
    match cmd.status() {
        Ok(status) if status.success() => {
            println!("cargo:rustc-link-arg-bins={}", bitcode.display());
            // A global function, verified once on its own (see c/exec_read.c).
            println!("cargo:rustc-link-arg-bins=--export=guard_exec_hashes");
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
