//! Guard's kernel-side programs.
//!
//! Built by `guard-user/build.rs` for `bpfel-unknown-none` and embedded in the `sandbox` binary,
//! which loads it with aya.
#![no_std]
#![no_main]
// `atomic_xadd`: the one atomic read-modify-write the programs need (see files.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod exec;
mod files;
mod kernel;
mod maps;
mod netguard;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a program the verifier accepted: it rejects code that can get here.
    loop {}
}

/// GPL-compatible, as the tracing helpers (`bpf_probe_read_kernel`, ...) require.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
