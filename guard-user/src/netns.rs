//! The session's network namespace: loopback only, with the egress proxy listening inside it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// Binds TCP listeners on `addrs` inside the network namespace of process `pid` (from a
/// short-lived thread that joins it; the sockets stay in that namespace). An IPv4 address that
/// is not a loopback address is first added to `lo` there (as `lo:N`), so that a client in the
/// sandbox connecting to it reaches the listener.
pub fn listen_in(pid: u32, addrs: &[SocketAddr]) -> std::io::Result<Vec<std::net::TcpListener>> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd affects only this thread, which ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut alias = 0;
            let mut out = Vec::new();
            for a in addrs {
                match a.ip() {
                    IpAddr::V4(ip) if !ip.is_loopback() => {
                        alias += 1;
                        add_lo_alias(alias, ip)?;
                    }
                    IpAddr::V6(ip) if !ip.is_loopback() => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::Unsupported,
                            format!("{ip}: only loopback IPv6 addresses can be forwarded"),
                        ));
                    }
                    _ => {}
                }
                let l = std::net::TcpListener::bind(a)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("bind {a}: {e}")))?;
                out.push(l);
            }
            Ok(out)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("listener thread panicked")))
    })
}

/// Adds `ip/32` to `lo` as the alias `lo:N` (SIOCSIFADDR on an alias label).
fn add_lo_alias(n: u32, ip: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: socket/ioctl on a zeroed ifreq whose name and address are set below; the socket is
    // closed on every path.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = (|| {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            let name = format!("lo:{n}\0");
            for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *d = b as libc::c_char;
            }
            let set = |ifr: &mut libc::ifreq, req, addr: Ipv4Addr| {
                let sin =
                    &mut ifr.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in;
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
                if libc::ioctl(s, req, ifr as *mut libc::ifreq) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(&mut ifr, libc::SIOCSIFADDR, ip)?;
            set(&mut ifr, libc::SIOCSIFNETMASK, Ipv4Addr::BROADCAST)?;
            Ok(())
        })();
        libc::close(s);
        r
    }
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
