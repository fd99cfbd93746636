//! `hold_connect` with `--net host`: which endpoints are held, and the cgroup `connect4` /
//! `connect6` backstop that refuses them to everything but the supervisor (see
//! `guard-ebpf/src/netguard.rs`). The hold itself is the seccomp notification on `connect`
//! (`files/supervise.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Btf, Ebpf, EbpfLoader};

/// One held endpoint: a network (an address is a /32 or /128) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Network address.
    pub net: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Whether `a` is this endpoint (an IPv4-mapped IPv6 address counts as the IPv4 address).
    pub fn matches(&self, a: &SocketAddr) -> bool {
        if a.port() != self.port {
            return false;
        }
        let ip = match a.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = match self.net {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        match (self.net, self.len == full) {
            (IpAddr::V4(a), true) => write!(f, "{a}:{}", self.port),
            (IpAddr::V4(a), false) => write!(f, "{a}/{}:{}", self.len, self.port),
            (IpAddr::V6(a), true) => write!(f, "[{a}]:{}", self.port),
            (IpAddr::V6(a), false) => write!(f, "[{a}/{}]:{}", self.len, self.port),
        }
    }
}

/// Parses a profile's `hold_connect` entry (`host:port`, `a.b.c.d[/len]:port`,
/// `[v6[/len]]:port`; already validated by the profile loader). A host name is resolved now, to
/// every address it has.
pub fn endpoints(entry: &str) -> Result<Vec<Endpoint>, String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        rest.split_once("]:")
            .ok_or_else(|| format!("{entry}: expected [ADDR]:PORT"))?
    } else {
        entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry}: expected HOST:PORT"))?
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{entry}: bad port {port:?}"))?;
    let (addr, len) = match host.split_once('/') {
        Some((a, n)) => (
            a,
            Some(
                n.parse::<u8>()
                    .map_err(|_| format!("{entry}: bad prefix length"))?,
            ),
        ),
        None => (host, None),
    };
    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
        return Ok(vec![Endpoint {
            net: IpAddr::V4(ip),
            len: len.unwrap_or(32).min(32),
            port,
        }]);
    }
    if let Ok(ip) = addr.parse::<Ipv6Addr>() {
        return Ok(vec![Endpoint {
            net: IpAddr::V6(ip),
            len: len.unwrap_or(128).min(128),
            port,
        }]);
    }
    let resolved: Vec<Endpoint> = (addr, port)
        .to_socket_addrs()
        .map_err(|e| format!("{entry}: cannot resolve {addr}: {e}"))?
        .map(|a| Endpoint {
            net: a.ip(),
            len: if a.is_ipv4() { 32 } else { 128 },
            port,
        })
        .collect();
    if resolved.is_empty() {
        return Err(format!("{entry}: {addr} has no address"));
    }
    Ok(resolved)
}

/// Error loading the backstop.
#[derive(Debug, thiserror::Error)]
pub enum NetGuardError {
    /// Loading the object.
    #[error("load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program.
    #[error("program {0}: {1}")]
    Program(&'static str, aya::programs::ProgramError),
    /// A map.
    #[error("map {0}: {1}")]
    Map(&'static str, String),
    /// The cgroup directory.
    #[error("open {0}: {1}")]
    Cgroup(String, std::io::Error),
}

/// Writes the held endpoints into the object's `HELD_CONNECT4`/`HELD_CONNECT6` tries (used by
/// the cgroup backstop and by the LSM `socket_connect` hook).
pub fn fill_held(ebpf: &mut Ebpf, held: &[Endpoint]) -> Result<(), NetGuardError> {
    let mut v4: LpmTrie<&mut MapData, [u8; 6], u8> = LpmTrie::try_from(
        ebpf.map_mut("HELD_CONNECT4")
            .ok_or(NetGuardError::Map("HELD_CONNECT4", "missing".into()))?,
    )
    .map_err(|e| NetGuardError::Map("HELD_CONNECT4", e.to_string()))?;
    for e in held {
        if let IpAddr::V4(a) = e.net {
            let p = e.port.to_be_bytes();
            let o = a.octets();
            let k = Key::new(16 + e.len as u32, [p[0], p[1], o[0], o[1], o[2], o[3]]);
            v4.insert(&k, 1, 0)
                .map_err(|x| NetGuardError::Map("HELD_CONNECT4", x.to_string()))?;
        }
    }
    let mut v6: LpmTrie<&mut MapData, [u8; 18], u8> = LpmTrie::try_from(
        ebpf.map_mut("HELD_CONNECT6")
            .ok_or(NetGuardError::Map("HELD_CONNECT6", "missing".into()))?,
    )
    .map_err(|e| NetGuardError::Map("HELD_CONNECT6", e.to_string()))?;
    for e in held {
        // An IPv4 endpoint is also reachable as an IPv4-mapped IPv6 address.
        let (addr, len) = match e.net {
            IpAddr::V6(a) => (a, e.len as u32),
            IpAddr::V4(a) => (a.to_ipv6_mapped(), 96 + e.len as u32),
        };
        let mut data = [0u8; 18];
        data[..2].copy_from_slice(&e.port.to_be_bytes());
        data[2..].copy_from_slice(&addr.octets());
        v6.insert(&Key::new(16 + len, data), 1, 0)
            .map_err(|x| NetGuardError::Map("HELD_CONNECT6", x.to_string()))?;
    }
    Ok(())
}

/// The endpoint of an `OP_CONNECT` hold record's `names[0]` (port, then address) for family 4
/// or 6.
pub fn record_endpoint(family: u32, b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    match family {
        4 => {
            let a: [u8; 4] = b.get(2..6)?.try_into().ok()?;
            Some(SocketAddr::from((a, port)))
        }
        6 => {
            let a: [u8; 16] = b.get(2..18)?.try_into().ok()?;
            Some(SocketAddr::from((a, port)))
        }
        _ => None,
    }
}

/// Loads `connect4` and `connect6` into the kernel; attaches them to `cgroup` when given.
fn load_programs(ebpf: &mut Ebpf, cgroup: Option<&std::fs::File>) -> Result<(), NetGuardError> {
    for name in ["connect4", "connect6"] {
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(NetGuardError::Map(name, "program missing".into()))?
            .try_into()
            .map_err(|e| NetGuardError::Program(name, e))?;
        p.load().map_err(|e| NetGuardError::Program(name, e))?;
        if let Some(dir) = cgroup {
            p.attach(dir, CgroupAttachMode::Single)
                .map_err(|e| NetGuardError::Program(name, e))?;
        }
    }
    Ok(())
}

/// Whether this kernel loads the backstop's cgroup programs (loads them, attaches nothing).
pub fn probe() -> Result<(), NetGuardError> {
    let btf = Btf::from_sys_fs().map_err(|e| NetGuardError::Map("btf", e.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(crate::exec::EBPF_OBJECT)?;
    load_programs(&mut ebpf, None)
}

/// The loaded and attached backstop of one session (detached when dropped).
pub struct ConnectGuard {
    _ebpf: Ebpf,
}

impl ConnectGuard {
    /// Loads `connect4`/`connect6`, fills the held endpoints and the supervisor's pid, and
    /// attaches both to the session cgroup at `cgroup`.
    pub fn load(
        btf: &Btf,
        cgroup: &Path,
        held: &[Endpoint],
        supervisor: u32,
    ) -> Result<ConnectGuard, NetGuardError> {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(crate::exec::EBPF_OBJECT)?;
        fill_held(&mut ebpf, held)?;
        {
            let mut sup: Array<&mut MapData, u32> = Array::try_from(
                ebpf.map_mut("NET_SUPERVISOR")
                    .ok_or(NetGuardError::Map("NET_SUPERVISOR", "missing".into()))?,
            )
            .map_err(|e| NetGuardError::Map("NET_SUPERVISOR", e.to_string()))?;
            sup.set(0, supervisor, 0)
                .map_err(|e| NetGuardError::Map("NET_SUPERVISOR", e.to_string()))?;
        }
        let dir = std::fs::File::open(cgroup)
            .map_err(|e| NetGuardError::Cgroup(cgroup.display().to_string(), e))?;
        load_programs(&mut ebpf, Some(&dir))?;
        Ok(ConnectGuard { _ebpf: ebpf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_match() {
        let e = endpoints("10.0.0.5:5432").unwrap();
        assert_eq!(e.len(), 1);
        assert!(e[0].matches(&"10.0.0.5:5432".parse().unwrap()));
        assert!(e[0].matches(&"[::ffff:10.0.0.5]:5432".parse().unwrap()));
        assert!(!e[0].matches(&"10.0.0.5:5433".parse().unwrap()));
        assert!(!e[0].matches(&"10.0.0.6:5432".parse().unwrap()));
        let c = endpoints("10.20.0.0/16:3306").unwrap();
        assert!(c[0].matches(&"10.20.255.1:3306".parse().unwrap()));
        assert!(!c[0].matches(&"10.21.0.1:3306".parse().unwrap()));
        assert_eq!(c[0].to_string(), "10.20.0.0/16:3306");
        let v6 = endpoints("[fd00::/8]:443").unwrap();
        assert!(v6[0].matches(&"[fd12::1]:443".parse().unwrap()));
        assert!(!v6[0].matches(&"[fe80::1]:443".parse().unwrap()));
        assert_eq!(
            record_endpoint(4, &[0x15, 0x38, 10, 0, 0, 5]),
            Some("10.0.0.5:5432".parse().unwrap())
        );
        assert_eq!(record_endpoint(5, &[0; 18]), None);
        let h = endpoints("localhost:80").unwrap();
        assert!(h.iter().any(|e| e.net.is_loopback()));
        assert!(endpoints("no-port").is_err());
        let all = endpoints("0.0.0.0/0:22").unwrap();
        assert!(all[0].matches(&"1.2.3.4:22".parse().unwrap()));
    }
}
