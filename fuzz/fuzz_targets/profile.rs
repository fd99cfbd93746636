//! The profile parser: any bytes as a profile file, loaded with `extends` followed (into the
//! built-in profiles), and every error rendered (the renderer computes lines and columns from
//! byte offsets).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use guard_user::profile;
use libfuzzer_sys::fuzz_target;

/// A private file the input is written to (the parser reads profiles from files).
fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("guard-fuzz-profile-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d.join("p.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let p = scratch();
    if std::fs::write(p, data).is_err() {
        return;
    }
    let home = std::path::Path::new("/home/fuzz");
    match profile::load(&p.display().to_string(), home) {
        Ok(r) => {
            let _ = format!("{r:?}");
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.chain();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for off in [0, text.len() / 2, text.len()] {
            let _ = profile::line_col(text, off);
        }
    }
});
