//! The pinned Debian kernels the VM tests boot: fetched once with `apt-get download`, unpacked with
//! `dpkg-deb -x`, and cached outside the repository (`~/.cache/guard/kernels/<release>/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// One pinned kernel package.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// Short name used on the command line, in logs and in `GUARD_VM_KERNEL` (`6.1`, `6.12`).
    pub label: &'static str,
    /// Debian package name.
    pub package: &'static str,
    /// Exact Debian package version.
    pub version: &'static str,
    /// Kernel release (`uname -r`): the image is `/boot/vmlinuz-<release>` in the package.
    pub release: &'static str,
    /// The Debian suite that carries the package (for messages).
    pub suite: &'static str,
}

/// The kernels of KERNEL-NOTES.md: 6.1 (Landlock ABI 2, no `file_truncate` hook) and 6.12.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "6.1",
        package: "linux-image-6.1.0-56-cloud-amd64",
        version: "6.1.192-2",
        release: "6.1.0-56-cloud-amd64",
        suite: "bookworm-security",
    },
    KernelSpec {
        label: "6.12",
        package: "linux-image-6.12.95+deb12-cloud-amd64",
        version: "6.12.95-1~bpo12+1",
        release: "6.12.95+deb12-cloud-amd64",
        suite: "bookworm-backports",
    },
];

/// Options the harness relies on being built in (`=y`): there is no initrd of modules, and the
/// init script mounts these file systems and the tests use these mechanisms.
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_BINFMT_ELF",
    "CONFIG_BINFMT_SCRIPT",
    "CONFIG_SERIAL_8250",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_ACPI",
    "CONFIG_PROC_FS",
    "CONFIG_SYSFS",
    "CONFIG_DEVTMPFS",
    "CONFIG_TMPFS",
    "CONFIG_CGROUPS",
    "CONFIG_SECURITYFS",
    "CONFIG_SECURITY_PATH",
    "CONFIG_SECURITY_LANDLOCK",
    "CONFIG_SECCOMP_FILTER",
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_LSM",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_NET",
    "CONFIG_UNIX",
    "CONFIG_INET",
];

/// What a machine needs so that `apt-get download` finds both kernels (and QEMU 10).
pub const APT_HINT: &str = "\
add the bookworm-backports suite to apt's sources (same mirror as bookworm) and update:
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
  Types: deb
  URIs: http://deb.debian.org/debian
  Suites: bookworm-backports
  Components: main
  Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
  EOF
  apt-get update
(scripts/setup.sh does this)";

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// The pinned package it came from.
    pub spec: KernelSpec,
    /// The bzImage.
    pub vmlinuz: PathBuf,
}

/// `$XDG_CACHE_HOME/guard` or `~/.cache/guard`.
pub fn cache_root() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("guard"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the kernel cache")?;
    Ok(PathBuf::from(home).join(".cache/guard"))
}

/// The cached kernel of `spec`, fetched and unpacked first if it is not cached yet.
pub fn ensure(spec: &KernelSpec, cache: &Path) -> anyhow::Result<KernelImage> {
    let dir = cache.join("kernels").join(spec.release);
    let meta = dir.join("meta");
    let vmlinuz = dir.join("vmlinuz");
    let want = meta_text(spec);
    let cached = fs::read_to_string(&meta).ok().as_deref() == Some(want.as_str());
    if !(cached && vmlinuz.is_file()) {
        fetch(spec, &dir)?;
    }
    let config = fs::read_to_string(dir.join("config"))
        .with_context(|| format!("read {}", dir.join("config").display()))?;
    let missing = missing_config(&config, REQUIRED_CONFIG);
    if !missing.is_empty() {
        bail!(
            "kernel {} ({}) does not have these built in (=y), which the VM harness needs without \
             an initrd of modules: {}",
            spec.label,
            spec.package,
            missing.join(", ")
        );
    }
    Ok(KernelImage {
        spec: *spec,
        vmlinuz,
    })
}

fn meta_text(spec: &KernelSpec) -> String {
    format!(
        "package={}\nversion={}\nrelease={}\n",
        spec.package, spec.version, spec.release
    )
}

/// Downloads the pinned package into a scratch directory, checks it, keeps `vmlinuz` and `config`,
/// and moves the result to `dir` (so an interrupted fetch never looks cached).
fn fetch(spec: &KernelSpec, dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().context("kernel cache dir has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let tmp = parent.join(format!(".fetch-{}-{}", spec.release, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let result = fetch_into(spec, &tmp).and_then(|()| {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("remove stale {}", dir.display()))?;
        }
        fs::rename(&tmp, dir)
            .with_context(|| format!("move {} to {}", tmp.display(), dir.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn fetch_into(spec: &KernelSpec, tmp: &Path) -> anyhow::Result<()> {
    let pinned = format!("{}={}", spec.package, spec.version);
    println!(
        "vm-test: fetching kernel {} ({pinned}) into {}",
        spec.label,
        tmp.display()
    );
    let out = Command::new("apt-get")
        .args(["download", "-q", &pinned])
        .current_dir(tmp)
        .output()
        .context("run apt-get (a Debian machine is needed to fetch the kernels)")?;
    if !out.status.success() {
        let policy = Command::new("apt-cache")
            .args(["policy", spec.package])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        bail!(
            "apt-get download {pinned} failed ({}):\n{}\napt-cache policy {}:\n{}\n\
             the package comes from {}; if apt does not know it, {APT_HINT}\n\
             if apt offers only another version, the pin in xtask/src/vm/kernel.rs needs updating \
             (check the new kernel's Landlock ABI and hooks before bumping it)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            spec.package,
            if policy.trim().is_empty() {
                "  (apt knows no such package)"
            } else {
                policy.trim_end()
            },
            spec.suite,
        );
    }
    let deb = single_deb(tmp)?;
    let fields = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .args(["Package", "Version"])
        .output()
        .context("run dpkg-deb")?;
    if !fields.status.success() {
        bail!(
            "dpkg-deb -f {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&fields.stderr).trim()
        );
    }
    let fields = String::from_utf8_lossy(&fields.stdout).into_owned();
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let (package, version) = (field("Package"), field("Version"));
    if package != spec.package || version != spec.version {
        bail!(
            "{} is {package} {version}, not the pinned {} {}",
            deb.display(),
            spec.package,
            spec.version
        );
    }
    let root = tmp.join("root");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .context("run dpkg-deb -x")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed ({st})", deb.display());
    }
    let boot = root.join("boot");
    for (from, to) in [("vmlinuz", "vmlinuz"), ("config", "config")] {
        let src = boot.join(format!("{from}-{}", spec.release));
        fs::copy(&src, tmp.join(to)).with_context(|| {
            format!(
                "{} has no {} (is the release {} right?)",
                deb.display(),
                src.strip_prefix(&root).unwrap_or(&src).display(),
                spec.release
            )
        })?;
    }
    fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    fs::remove_file(&deb).with_context(|| format!("remove {}", deb.display()))?;
    fs::write(tmp.join("meta"), meta_text(spec)).context("write kernel meta")?;
    Ok(())
}

fn single_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut debs = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            debs.push(p);
        }
    }
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one .deb in {} after apt-get download, found {debs:?}",
            dir.display()
        ),
    }
}

/// The options of `want` that `config` (a kernel `.config`) does not set to `y`.
fn missing_config<'a>(config: &str, want: &[&'a str]) -> Vec<&'a str> {
    want.iter()
        .copied()
        .filter(|opt| {
            !config
                .lines()
                .any(|l| l.strip_prefix(opt).is_some_and(|rest| rest == "=y"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_wants_built_in_not_modules() {
        let cfg = "CONFIG_A=y\nCONFIG_AB=m\n# CONFIG_C is not set\nCONFIG_D=y\n";
        assert_eq!(
            missing_config(
                cfg,
                &["CONFIG_A", "CONFIG_AB", "CONFIG_C", "CONFIG_D", "CONFIG_E"]
            ),
            vec!["CONFIG_AB", "CONFIG_C", "CONFIG_E"]
        );
    }

    #[test]
    fn releases_match_package_names_and_labels() {
        for k in KERNELS {
            assert_eq!(k.package, format!("linux-image-{}", k.release));
            assert!(k.release.starts_with(&format!("{}.", k.label)), "{k:?}");
        }
    }
}
