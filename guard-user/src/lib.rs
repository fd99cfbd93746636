//! Only for the fuzz targets in `fuzz/`: the same modules as the `sandbox` binary, exposed to a
//! library when built with `--cfg fuzzing` (as `cargo fuzz` does). In every other build this
//! library is empty, so `cargo build` and `cargo test` compile the modules once, for the binary.

#![cfg_attr(fuzzing, allow(dead_code, unused_imports))]

#[cfg(fuzzing)]
mod audit;
#[cfg(fuzzing)]
mod cgroup;
#[cfg(fuzzing)]
mod commands;
#[cfg(fuzzing)]
pub mod control;
#[cfg(fuzzing)]
mod daemon;
#[cfg(fuzzing)]
mod doctor;
#[cfg(fuzzing)]
mod exec;
#[cfg(fuzzing)]
mod files;
#[cfg(fuzzing)]
pub mod hold;
#[cfg(fuzzing)]
mod launch;
#[cfg(fuzzing)]
mod mountinfo;
#[cfg(fuzzing)]
mod netguard;
#[cfg(fuzzing)]
mod netns;
#[cfg(fuzzing)]
mod notify;
#[cfg(fuzzing)]
mod peer;
#[cfg(fuzzing)]
pub mod profile;
#[cfg(fuzzing)]
pub mod proxy;
#[cfg(fuzzing)]
mod report;
#[cfg(fuzzing)]
mod serve;
#[cfg(fuzzing)]
mod stop;
#[cfg(fuzzing)]
mod watch;
