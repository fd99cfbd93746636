#!/bin/busybox sh
# /init of the Guard test VM. A template: `cargo xtask vm-test` (xtask/src/vm.rs) replaces the
# slot line (at-sign RUN_TESTS at-sign) with one `run_test NAME PATH ARGS...` line per test binary.
#
# The host reads the serial console. This script prints, in order:
#   GUARD-VM-INIT: uptime=SECONDS           as soon as /proc is mounted (boot-to-init time)
#   GUARD-VM-TEST-START: NAME / GUARD-VM-TEST-END: NAME rc=N secs=S   around each test binary
#   GUARD-VM-RESULT: PASS  or  GUARD-VM-RESULT: FAIL <reason>          exactly once, then powers off
# A reason starting with "init:" means this script failed, not a test.
# Environment: the kernel passes the command line's KEY=VAL words (GUARD_VM_KERNEL, --env ...).

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

finish() {
    # A newline first: a kernel message may have left the console mid-line.
    echo
    echo "GUARD-VM-RESULT: $*"
    sync
    poweroff -f
    # Not reached. If it were, init exiting panics the kernel and QEMU (-no-reboot, panic=-1)
    # stops; the host then reports the panic.
    exit 1
}

uptime_s() {
    read -r up _ </proc/uptime
    echo "$up"
}

# mnt TYPE DIR [OPTIONS]
mnt() {
    mkdir -p "$2" || finish "FAIL init: cannot create $2"
    if [ -n "$3" ]; then
        mount -t "$1" -o "$3" "$1" "$2" || finish "FAIL init: cannot mount $1 on $2"
    else
        mount -t "$1" "$1" "$2" || finish "FAIL init: cannot mount $1 on $2"
    fi
}

mnt proc /proc
echo "GUARD-VM-INIT: uptime=$(uptime_s) kernel=$(uname -r)"
mnt sysfs /sys
mnt devtmpfs /dev
mnt devpts /dev/pts
mnt tmpfs /dev/shm mode=1777
mnt securityfs /sys/kernel/security
mnt bpf /sys/fs/bpf mode=700
mnt cgroup2 /sys/fs/cgroup
mnt tracefs /sys/kernel/tracing
mnt debugfs /sys/kernel/debug
mnt tmpfs /tmp mode=1777
mnt tmpfs /run mode=755

mkdir -p /etc /root /var/tmp
cat >/etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >/etc/group <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "127.0.0.1 localhost guard-vm" >/etc/hosts
hostname guard-vm
ip link set lo up || finish "FAIL init: cannot bring up lo"

echo "GUARD-VM-INFO: lsm=$(cat /sys/kernel/security/lsm) cpus=$(nproc) mem=$(free -m | awk '/Mem:/ {print $2}')M"

export CI=true GUARD_IN_VM=1 GUARD_PROGS_DIR=/guard/progs RUST_BACKTRACE=1

failed=""
# run_test NAME PATH ARGS...
run_test() {
    name=$1
    shift
    echo "GUARD-VM-TEST-START: $name"
    t0=$(uptime_s)
    (cd /tmp && exec "$@" </dev/null)
    rc=$?
    t1=$(uptime_s)
    echo "GUARD-VM-TEST-END: $name rc=$rc secs=$(awk "BEGIN { print $t1 - $t0 }")"
    [ "$rc" = 0 ] || failed="$failed $name(exit $rc)"
}

@RUN_TESTS@

echo "GUARD-VM-DONE: uptime=$(uptime_s)"
# For a look by hand (target/vm/boot-KERNEL.sh with GUARD_VM_SHELL=1 appended to -append): a shell
# on the console before powering off. Under the harness stdin is /dev/null and it ends at once.
if [ "$GUARD_VM_SHELL" = 1 ]; then
    echo "GUARD-VM-SHELL: exit the shell to power off"
    setsid cttyhack sh
fi
if [ -z "$failed" ]; then
    finish PASS
else
    finish "FAIL${failed}"
fi
