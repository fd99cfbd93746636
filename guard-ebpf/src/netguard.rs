//! The race-free backstop of `hold_connect` with `--net host`: cgroup `connect4`/`connect6`
//! programs on the session's cgroup refuse (EPERM) every connect to a held endpoint, except the
//! one the supervisor makes on a process's behalf after a human approved it. The hold itself is
//! the seccomp notification on `connect` (the supervisor reads the address, holds, and performs
//! the approved connect on the process's socket); this program makes a rewritten address after
//! that check, or any path around the notification, fail instead of connecting.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};

use crate::maps::{HELD_CONNECT4, HELD_CONNECT6, NET_SUPERVISOR};

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
