#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `sandbox profile check` and `sandbox profile show` run as the real binary. No root needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shipped profiles.
const SHIPPED: &[&str] = &["default", "claude", "codex", "terraform", "readonly"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `sandbox profile ARGS` in `cwd`, with a private HOME and no sudo in sight.
fn profile(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("profile")
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("SUDO_USER")
        .env_remove("SUDO_UID")
        .output()
        .expect("run sandbox profile")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A scratch directory with the given files.
fn scratch(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

#[test]
fn every_shipped_profile_passes_check() {
    let home = tempfile::tempdir().unwrap();
    for name in SHIPPED {
        let file = format!("profiles/{name}.toml");
        let o = profile(&repo(), home.path(), &["check", &file]);
        assert_eq!(o.status.code(), Some(0), "{file}: {}", common::text(&o));
        assert_eq!(stdout(&o).trim(), format!("ok: {file}"));
    }
    // All at once, too.
    let files: Vec<String> = SHIPPED
        .iter()
        .map(|n| format!("profiles/{n}.toml"))
        .collect();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let o = profile(&repo(), home.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    assert_eq!(stdout(&o).lines().count(), SHIPPED.len());
}

#[test]
fn every_shipped_profile_shows_resolved_from_the_builtins() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap(); // no ./profiles here: the built-ins answer
    for name in SHIPPED {
        let o = profile(cwd.path(), home.path(), &["show", name]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", common::text(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("#   builtin:{name}\n")), "{out}");
        let parsed: toml::Table = toml::from_str(&out).expect("show prints TOML");
        assert!(parsed.contains_key("files"), "{out}");
        if *name != "default" {
            assert!(
                out.contains("#   builtin:default\n"),
                "{name} extends default"
            );
        }
    }
    let o = profile(cwd.path(), home.path(), &["show", "claude"]);
    let home_str = home.path().display().to_string();
    assert!(
        stdout(&o).contains(&format!("\"{home_str}/.claude\"")),
        "~ is the invoking user's home: {}",
        stdout(&o)
    );
}

#[test]
fn show_json_names_the_sources() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let o = profile(cwd.path(), home.path(), &["show", "terraform", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["name"], "terraform");
    assert_eq!(
        v["sources"],
        serde_json::json!(["builtin:default", "builtin:terraform"])
    );
    assert_eq!(v["network"]["mode"], "proxy");
    assert!(v["commands"]["hold"]
        .as_array()
        .unwrap()
        .contains(&"terraform|tofu destroy".into()));
}

#[test]
fn show_finds_profiles_in_the_lookup_order() {
    let home = tempfile::tempdir().unwrap();
    let user_dir = home.path().join(".config/sandbox/profiles");
    std::fs::create_dir_all(&user_dir).unwrap();
    std::fs::write(
        user_dir.join("mine.toml"),
        "extends = \"default\"\ndescription = \"from home\"\n",
    )
    .unwrap();
    // The user's own `default` extends the built-in one of the same name.
    std::fs::write(
        user_dir.join("default.toml"),
        "extends = \"default\"\n[files]\nprotect = [\"~/prod\"]\n",
    )
    .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let o = profile(cwd.path(), home.path(), &["show", "mine", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sources: Vec<String> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources.len(), 3, "{sources:?}");
    assert_eq!(sources[0], "builtin:default");
    assert!(sources[1].ends_with(".config/sandbox/profiles/default.toml"));
    assert!(sources[2].ends_with(".config/sandbox/profiles/mine.toml"));
    assert_eq!(v["description"], "from home");
    let prod = format!("{}/prod", home.path().display());
    assert!(v["files"]["protect"]
        .as_array()
        .unwrap()
        .contains(&prod.into()));

    // ./profiles comes first.
    std::fs::create_dir(cwd.path().join("profiles")).unwrap();
    std::fs::write(
        cwd.path().join("profiles/mine.toml"),
        "description = \"from cwd\"\n",
    )
    .unwrap();
    let o = profile(cwd.path(), home.path(), &["show", "mine", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["description"], "from cwd");
    assert_eq!(v["sources"], serde_json::json!(["./profiles/mine.toml"]));
}

#[test]
fn show_by_path_and_unknown_names() {
    let home = tempfile::tempdir().unwrap();
    let d = scratch(&[("p.toml", "extends = \"readonly\"\n")]);
    let o = profile(d.path(), home.path(), &["show", "p.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    assert!(stdout(&o).contains("read_only = [\"/\"]"), "{}", stdout(&o));
    let o = profile(d.path(), home.path(), &["show", "no-such-profile"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert!(stderr(&o).contains("no profile named \"no-such-profile\""));
}

/// Runs `profile check FILE` on one bad file; asserts exit 2 and `FILE:LINE:COL: ` in stderr.
fn assert_refused(files: &[(&str, &str)], check: &str, at: &str, says: &str) {
    let home = tempfile::tempdir().unwrap();
    let d = scratch(files);
    let o = profile(d.path(), home.path(), &["check", check]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("{at}: ")), "expected {at}: {err}");
    assert!(err.contains(says), "expected {says:?}: {err}");
    assert!(stdout(&o).is_empty(), "{}", common::text(&o));
}

#[test]
fn unknown_key_exits_2_with_file_line_col() {
    assert_refused(
        &[("bad.toml", "[files]\nprotect = [\"~/x\"]\nprotec = []\n")],
        "bad.toml",
        "bad.toml:3:1",
        "files.protec: unknown field `protec`",
    );
}

#[test]
fn wrong_type_exits_2_with_file_line_col() {
    assert_refused(
        &[("bad.toml", "[process]\nallow_io_uring = \"yes\"\n")],
        "bad.toml",
        "bad.toml:2:18",
        "process.allow_io_uring: invalid type",
    );
}

#[test]
fn extends_cycle_exits_2_with_file_line_col() {
    assert_refused(
        &[
            ("a.toml", "extends = \"./b.toml\"\n"),
            ("b.toml", "description = \"b\"\nextends = \"./a.toml\"\n"),
        ],
        "a.toml",
        "./b.toml:2:11",
        "extends: cycle: ",
    );
}

#[test]
fn bad_glob_exits_2_with_file_line_col() {
    assert_refused(
        &[("bad.toml", "[files]\nprotect = [\"**/*.db\", \"**/[x\"]\n")],
        "bad.toml",
        "bad.toml:2:23",
        "bad pattern",
    );
}

#[test]
fn check_reports_every_file_and_fails_if_one_is_bad() {
    let home = tempfile::tempdir().unwrap();
    let d = scratch(&[
        ("good.toml", "extends = \"default\"\n"),
        ("bad.toml", "[decisions]\ntimeout = \"soon\"\n"),
    ]);
    let o = profile(
        d.path(),
        home.path(),
        &["check", "good.toml", "bad.toml", "missing.toml"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert_eq!(stdout(&o), "ok: good.toml\n");
    let err = stderr(&o);
    assert!(err.contains("bad.toml:2:11: decisions.timeout: "), "{err}");
    assert!(err.contains("missing.toml: No such file"), "{err}");
}
