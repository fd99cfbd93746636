//! The race-free backstop of `hold_connect` with `--net host`: cgroup `connect4`/`connect6`
//! programs on the session's cgroup refuse (EPERM) every connect to a held endpoint, except the
//! one the supervisor makes on a process's behalf after a human approved it. The hold itself is
//! the seccomp notification on `connect` (the supervisor reads the address, holds, and performs
//! the approved connect on the process's socket); this program makes a rewritten address after
//! that check, or any path around the notification, fail instead of connecting.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
    },
    macros::{cgroup_sock_addr, lsm},
    maps::lpm_trie::Key,
    programs::{LsmContext, SockAddrContext},
};
use guard_common::files::{InodeKey, CONNECT_ROOT, OP_CONNECT, SESSION_CONNECT_HOLD};

use crate::files::{hold_key, Match};
use crate::maps::{HELD_CONNECT4, HELD_CONNECT6, NET_SUPERVISOR, SESSION_CGROUPS};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Allowed (the kernel goes on with the connect).
const ALLOW: i32 = 1;
/// Refused: the connect fails with EPERM.
const REFUSE: i32 = 0;

fn from_supervisor() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    matches!(NET_SUPERVISOR.get(0), Some(&s) if s != 0 && s == tgid)
}

/// IPv4: the key is the port (network order) followed by the address (network order); the
/// prefix length covers the port and the network part.
#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid bpf_sock_addr; user_port and user_ip4 are readable as
    // 4-byte fields in connect4 programs.
    let (port, ip) = unsafe { ((*ctx.sock_addr).user_port, (*ctx.sock_addr).user_ip4) };
    let p = (port as u16).to_ne_bytes();
    let a = ip.to_ne_bytes();
    let key = Key::new(48, [p[0], p[1], a[0], a[1], a[2], a[3]]);
    if HELD_CONNECT4.get(&key).is_some() && !from_supervisor() {
        return REFUSE;
    }
    ALLOW
}

/// IPv6: the port followed by the 16 address bytes.
#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as above; user_ip6 is four 4-byte words in network order.
    let (port, ip) = unsafe { ((*ctx.sock_addr).user_port, (*ctx.sock_addr).user_ip6) };
    let p = (port as u16).to_ne_bytes();
    let mut data = [0u8; 18];
    data[0] = p[0];
    data[1] = p[1];
    let mut i = 0;
    while i < 4 {
        let w = ip[i].to_ne_bytes();
        data[2 + i * 4] = w[0];
        data[3 + i * 4] = w[1];
        data[4 + i * 4] = w[2];
        data[5 + i * 4] = w[3];
        i += 1;
    }
    let key = Key::new(144, data);
    if HELD_CONNECT6.get(&key).is_some() && !from_supervisor() {
        return REFUSE;
    }
    ALLOW
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)` (BPF LSM
/// backend): a connect of a session task to a held endpoint is held like a file operation (see
/// `files::hold_key`). The address is the kernel's copy, so nothing can change it after the
/// look; io_uring workers get EPERM.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    // SAFETY: a helper without arguments; the map value is copied out.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    if !matches!(unsafe { SESSION_CGROUPS.get(cg) }, Some(&f) if f & SESSION_CONNECT_HOLD != 0) {
        return 0;
    }
    let addr: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    if addr.is_null() || len < 16 {
        return 0;
    }
    let mut b = [0u8; 24];
    // SAFETY: reads 16 bytes of the kernel's sockaddr copy (addrlen >= 16) into `b`.
    if unsafe { bpf_probe_read_kernel(b.as_mut_ptr().cast(), 16, addr.cast()) } != 0 {
        return 0;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let mut data = [0u8; 18];
    data[0] = b[2];
    data[1] = b[3];
    let (matched, fam) = if family == AF_INET {
        data[2] = b[4];
        data[3] = b[5];
        data[4] = b[6];
        data[5] = b[7];
        let key = Key::new(48, [data[0], data[1], data[2], data[3], data[4], data[5]]);
        (HELD_CONNECT4.get(&key).is_some(), 4)
    } else if family == AF_INET6 && len >= 24 {
        // SAFETY: as above, 24 bytes (sockaddr_in6 up to the end of the address).
        if unsafe { bpf_probe_read_kernel(b.as_mut_ptr().cast(), 24, addr.cast()) } != 0 {
            return 0;
        }
        let mut i = 0;
        while i < 16 {
            data[2 + i] = b[8 + i];
            i += 1;
        }
        (HELD_CONNECT6.get(Key::new(144, data)).is_some(), 6)
    } else {
        (false, 0)
    };
    if !matched {
        return 0;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        lo[i] = data[2 + i];
        hi[i] = data[10 + i];
        i += 1;
    }
    let k = InodeKey {
        dev: (fam << 16) | u16::from_ne_bytes([data[0], data[1]]) as u32,
        _pad: 0,
        ino: u64::from_ne_bytes(lo) ^ u64::from_ne_bytes(hi).rotate_left(1),
    };
    let m = Match {
        root: CONNECT_ROOT,
        depth: fam,
        flags: 0,
    };
    hold_key(OP_CONNECT, k, m, |rec| {
        // SAFETY: rec points to a reserved record; names[0] has room for 18 bytes.
        unsafe {
            let n = addr_of_mut!((*rec).names[0]) as *mut u8;
            let mut i = 0;
            while i < 18 {
                *n.add(i) = data[i];
                i += 1;
            }
            (*rec).names_len = 1;
        }
    })
}
