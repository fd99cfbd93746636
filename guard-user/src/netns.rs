//! The session's network namespace: loopback only, with the egress proxy listening inside it.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Brings `lo` up in the calling thread's network namespace (a new namespace starts with it
/// down, and without it even 127.0.0.1 does not exist).
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name is set below; the socket is
    // closed on every path.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        let r = (|| {
            if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })();
        libc::close(s);
        r
    }
}

/// Binds a TCP listener on 127.0.0.1:`port` inside the network namespace of process `pid`
/// (from a short-lived thread that joins it; the socket stays in that namespace).
pub fn listen_in(pid: u32, port: u16) -> std::io::Result<std::net::TcpListener> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd affects only this thread, which ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind(("127.0.0.1", port))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("listener thread panicked")))
    })
}

/// The system CA bundles that exist here (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine): the
/// session CA is added to each, inside the sandbox only.
pub fn system_bundles() -> Vec<PathBuf> {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_file())
    .collect()
}

/// Writes `dir/SESSION.ca-bundle.pem`: the system bundle `system` (if any) followed by the
/// session CA, root-owned, mode 0644. Clients in the sandbox are pointed at it, and it is bound
/// over the system bundles there.
pub fn write_bundle(
    dir: &Path,
    session: &str,
    system: Option<&Path>,
    ca_pem: &str,
) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let p = dir.join(format!("{session}.ca-bundle.pem"));
    let _ = std::fs::remove_file(&p);
    let mut text = match system {
        Some(s) => std::fs::read_to_string(s)?,
        None => String::new(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# Guard sandbox: this session's CA (TLS interception of inspected hosts)\n");
    text.push_str(ca_pem);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&p)?;
    f.write_all(text.as_bytes())?;
    Ok(p)
}

/// The environment that points clients at the proxy and the session's CA bundle.
pub fn proxy_env(port: u16, bundle: &Path) -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{port}");
    let mut v: Vec<(String, String)> = [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ]
    .iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    let b = bundle.display().to_string();
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        v.push((k.to_string(), b.clone()));
    }
    v
}

/// Variables the session's environment must not inherit in proxy or no-network mode: proxy
/// settings of the host (they would point past the proxy) and exceptions to the proxy.
pub fn dropped_env(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "https_proxy" | "http_proxy" | "all_proxy" | "no_proxy" | "ftp_proxy"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_points_every_client_at_the_proxy_and_bundle() {
        let e = proxy_env(3128, Path::new("/etc/ssl/certs/ca-certificates.crt"));
        let get = |k: &str| e.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("https_proxy"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("HTTP_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(
            get("AWS_CA_BUNDLE"),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
        assert!(dropped_env("NO_PROXY") && dropped_env("no_proxy") && !dropped_env("PATH"));
    }

    #[test]
    fn bundles_keep_the_system_roots_and_add_the_session_ca() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("sys.pem");
        std::fs::write(&sys, "SYSTEM").unwrap();
        let p = write_bundle(d.path(), "s1", Some(&sys), "SESSION\n").unwrap();
        let t = std::fs::read_to_string(p).unwrap();
        assert!(t.starts_with("SYSTEM\n") && t.ends_with("SESSION\n"));
    }
}
