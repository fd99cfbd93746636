//! `cargo xtask install`: puts Guard on a systemd host: the binary, the units of
//! `dist/systemd/`, the shipped profiles in /etc/sandbox/profiles, the agent job directory,
//! and the groups `sandbox` (may run sessions without root) and `sandbox-approvers` (may decide
//! every session's holds).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Options of `cargo xtask install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Installation prefix of the binary and documentation.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage everything below this directory instead of `/` (for packaging); groups are then
    /// not created.
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Install this binary instead of building `cargo build --release -p guard-user`.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `path` below the destdir, if any.
fn staged(dest: Option<&Path>, path: &Path) -> PathBuf {
    match dest {
        Some(d) => d.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

fn install_file(src: &Path, dst: &Path, mode: u32, content: Option<&[u8]>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let bytes = match content {
        Some(c) => c.to_vec(),
        None => std::fs::read(src).with_context(|| format!("read {}", src.display()))?,
    };
    let tmp = dst.with_extension("xtask-new");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("install {}", dst.display()))?;
    println!("install: {}", dst.display());
    Ok(())
}

/// Installs a configuration file, keeping an existing one that differs (the new one goes next
/// to it as `NAME.new`).
fn install_config(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let new = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    match std::fs::read(dst) {
        Ok(old) if old == new => Ok(()),
        Ok(_) => {
            let mut n = dst.as_os_str().to_owned();
            n.push(".new");
            install_file(src, Path::new(&n), 0o644, Some(&new))?;
            println!(
                "install: kept the edited {} (the shipped one is next to it as .new)",
                dst.display()
            );
            Ok(())
        }
        Err(_) => install_file(src, dst, 0o644, Some(&new)),
    }
}

fn ensure_group(name: &str) -> anyhow::Result<()> {
    let have = Command::new("getent")
        .args(["group", name])
        .output()
        .context("getent group")?
        .status
        .success();
    if have {
        return Ok(());
    }
    let st = Command::new("groupadd")
        .args(["--system", name])
        .status()
        .context("groupadd")?;
    if !st.success() {
        bail!("groupadd --system {name} failed");
    }
    println!("install: created group {name}");
    Ok(())
}

/// Runs the installation.
pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let root = root();
    let dest = args.destdir.as_deref();
    if dest.is_none() && unsafe { libc::geteuid() } != 0 {
        bail!("installing into / needs root (or stage it with --destdir DIR)");
    }
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => {
            let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--release", "-p", "guard-user"])
                .current_dir(&root)
                .status()
                .context("cargo build")?;
            if !st.success() {
                bail!("cargo build --release -p guard-user failed");
            }
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("release/sandbox")
        }
    };
    let prefix = &args.prefix;
    if !prefix.is_absolute() {
        bail!("--prefix must be an absolute path");
    }
    let bin_dst = prefix.join("bin/sandbox");
    install_file(&bin, &staged(dest, &bin_dst), 0o755, None)?;
    install_file(
        &root.join("README.md"),
        &staged(dest, &prefix.join("share/doc/sandbox/README.md")),
        0o644,
        None,
    )?;
    // The units name /usr/local/bin/sandbox: rewritten for the prefix.
    let units = root.join("dist/systemd");
    for e in std::fs::read_dir(&units).with_context(|| format!("read {}", units.display()))? {
        let p = e?.path();
        let Some(name) = p.file_name() else { continue };
        let text = std::fs::read_to_string(&p)?;
        let text = text.replace("/usr/local", &prefix.display().to_string());
        install_file(
            &p,
            &staged(dest, &Path::new("/etc/systemd/system").join(name)),
            0o644,
            Some(text.as_bytes()),
        )?;
    }
    // Profiles and rule catalogues, looked up by name in /etc/sandbox/profiles.
    let etc = Path::new("/etc/sandbox/profiles");
    for sub in ["", "rules"] {
        let dir = root.join("profiles").join(sub);
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                if let Some(name) = p.file_name() {
                    install_config(&p, &staged(dest, &etc.join(sub).join(name)))?;
                }
            }
        }
    }
    let agents = staged(dest, Path::new("/etc/sandbox/agents"));
    std::fs::create_dir_all(&agents).with_context(|| format!("create {}", agents.display()))?;
    install_config(
        &root.join("dist/agents/example.env.sample"),
        &agents.join("example.env.sample"),
    )?;
    if dest.is_none() {
        ensure_group("sandbox")?;
        ensure_group("sandbox-approvers")?;
        println!(
            "install: done. Next: systemctl daemon-reload && systemctl enable --now sandbox.socket; add users who may run sessions to group sandbox and those who may approve to sandbox-approvers (usermod -aG sandbox USER), who then log in again"
        );
    } else {
        println!(
            "install: staged below {} (groups not created)",
            agents.display()
        );
    }
    Ok(())
}
