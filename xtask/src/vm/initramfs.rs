//! A minimal writer of initramfs archives (cpio "newc", uncompressed: the kernel always reads it,
//! and TCG is slow at gunzip). Written here rather than with `cpio` so device nodes need no root
//! and nothing beyond Rust is required.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// One archive member.
#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32 },
    File { src: PathBuf, mode: u32 },
    Data { bytes: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32, mode: u32 },
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// The members of an archive, by path (without the leading `/`). Parents are added as needed and
/// sort before their children.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    /// A directory (mode 0755 unless given otherwise later).
    pub fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        self.put(path, Entry::Dir { mode: 0o755 })
    }

    /// A file copied from the host when the archive is written.
    pub fn file(&mut self, path: &str, src: &Path, mode: u32) -> anyhow::Result<()> {
        self.put(
            path,
            Entry::File {
                src: src.to_owned(),
                mode,
            },
        )
    }

    /// A file with the given contents.
    pub fn data(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> anyhow::Result<()> {
        self.put(
            path,
            Entry::Data {
                bytes: bytes.into(),
                mode,
            },
        )
    }

    /// A character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> anyhow::Result<()> {
        self.put(path, Entry::CharDev { major, minor, mode })
    }

    fn put(&mut self, path: &str, entry: Entry) -> anyhow::Result<()> {
        let rel = normalize(path)?;
        let mut parent = String::new();
        for comp in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => bail!("initramfs: {parent} is not a directory (adding {rel})"),
            }
        }
        match (self.entries.get(&rel), &entry) {
            (Some(Entry::Dir { .. }), Entry::Dir { .. }) | (None, _) => {}
            (Some(_), _) => bail!("initramfs: {rel} added twice"),
        }
        self.entries.insert(rel, entry);
        Ok(())
    }

    /// Writes the archive to `out`; returns its size in bytes.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let f = File::create(out).with_context(|| format!("create {}", out.display()))?;
        let mut w = Counter {
            inner: BufWriter::new(f),
            n: 0,
        };
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            match entry {
                Entry::Dir { mode } => header(&mut w, ino, S_IFDIR | mode, 2, 0, (0, 0), name)?,
                Entry::CharDev { major, minor, mode } => {
                    header(&mut w, ino, S_IFCHR | mode, 1, 0, (*major, *minor), name)?;
                }
                Entry::Data { bytes, mode } => {
                    header(
                        &mut w,
                        ino,
                        S_IFREG | mode,
                        1,
                        bytes.len() as u64,
                        (0, 0),
                        name,
                    )?;
                    w.write_all(bytes)?;
                    pad(&mut w)?;
                }
                Entry::File { src, mode } => {
                    let mut f =
                        File::open(src).with_context(|| format!("open {}", src.display()))?;
                    let len = f.metadata()?.len();
                    header(&mut w, ino, S_IFREG | mode, 1, len, (0, 0), name)?;
                    let copied = io::copy(&mut f, &mut w)
                        .with_context(|| format!("copy {}", src.display()))?;
                    if copied != len {
                        bail!("{} changed size while being archived", src.display());
                    }
                    pad(&mut w)?;
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        w.inner.flush()?;
        Ok(w.n)
    }
}

/// `path` without leading or doubled slashes; refuses `.`/`..` and empty paths.
fn normalize(path: &str) -> anyhow::Result<String> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() || comps.iter().any(|c| *c == "." || *c == "..") {
        bail!("initramfs: bad path {path:?}");
    }
    Ok(comps.join("/"))
}

struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Pads to a multiple of 4 bytes, as newc wants after the name and after the data.
fn pad<W: Write>(w: &mut Counter<W>) -> io::Result<()> {
    let k = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..k])
}

/// A newc header and the name (owner root, mtime 0 for reproducible archives).
fn header<W: Write>(
    w: &mut Counter<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
    name: &str,
) -> anyhow::Result<()> {
    let size = u32::try_from(size).context("initramfs member larger than 4 GiB")?;
    let namesize = u32::try_from(name.len() + 1).context("name too long")?;
    let fields = [
        ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn parents_come_first_and_conflicts_are_refused() {
        let mut a = Initramfs::new();
        a.data("/a/b/c", "x", 0o644).unwrap();
        a.dir("a/b").unwrap();
        assert!(a.data("a/b", "y", 0o644).is_err());
        assert!(a.data("a/b/c/d", "y", 0o644).is_err());
        assert!(a.data("../x", "y", 0o644).is_err());
        let names: Vec<&String> = a.entries.keys().collect();
        assert_eq!(names, ["a", "a/b", "a/b/c"]);
    }

    /// Extracts with busybox's cpio (an independent reader) when it is installed.
    #[test]
    fn busybox_cpio_reads_the_archive_back() {
        if !Path::new("/bin/busybox").exists() {
            eprintln!("SKIP: no /bin/busybox");
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let src = dir.join("src");
        std::fs::write(&src, b"hello world").unwrap();
        let mut a = Initramfs::new();
        a.file("bin/hello", &src, 0o755).unwrap();
        a.data("etc/odd-length-name.txt", "abc", 0o600).unwrap();
        a.dir("empty").unwrap();
        let cpio = dir.join("a.cpio");
        let n = a.write(&cpio).unwrap();
        assert_eq!(n % 4, 0);
        let st = Command::new("/bin/busybox")
            .args(["cpio", "-i", "-d", "-F"])
            .arg(&cpio)
            .current_dir(dir.join("out"))
            .status()
            .unwrap();
        assert!(st.success());
        let out = dir.join("out");
        assert_eq!(
            std::fs::read(out.join("bin/hello")).unwrap(),
            b"hello world"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("etc/odd-length-name.txt")).unwrap(),
            "abc"
        );
        assert!(out.join("empty").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
