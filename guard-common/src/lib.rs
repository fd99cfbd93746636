//! Types shared by the kernel side (`guard-ebpf`) and the user side (`guard-user`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, made of fixed-size arrays and integers with explicit
//! padding, so that the eBPF program and the user side agree on the layout byte for byte.
#![no_std]

pub mod exec;
pub mod files;
