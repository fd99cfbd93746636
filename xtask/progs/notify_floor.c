/*
 * notify_floor: the cost floor of a seccomp user-notification supervisor.
 *
 * Runs a command under a seccomp filter that sends the same system calls as Guard's file hold
 * (guard-user/src/files/seccomp.rs) to a listener, and answers every notification at once with
 * SECCOMP_USER_NOTIF_FLAG_CONTINUE. No path resolution, no policy, no logging: whatever the real
 * supervisor costs above this program is its own work. Built and run by `cargo xtask bench`.
 *
 * Usage (as root): notify_floor [-p] [-s] CMD [ARGS...]
 *   -p  wait with poll() before each RECV (as a supervisor with an event loop does)
 *   -s  set SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on the listener (Linux 6.6+)
 * The command runs as uid/gid 65534 with no supplementary groups; the exit status is the
 * command's (128 + signal if it was killed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "notify_floor: unsupported architecture"
#endif

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

#define NOBODY 65534
#define MAX_INSNS 96

static struct sock_filter prog[MAX_INSNS];
static unsigned n_insns;

static void die(const char *what) {
    fprintf(stderr, "notify_floor: %s: %s\n", what, strerror(errno));
    exit(125);
}

static void emit(struct sock_filter insn) {
    if (n_insns == MAX_INSNS) {
        fprintf(stderr, "notify_floor: filter too long\n");
        exit(125);
    }
    prog[n_insns++] = insn;
}

/* if (nr == NR) return ACTION; */
static void ret_if_nr(long nr, unsigned action) {
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action));
}

/* if (nr == NR) { return (args[arg] & O_TRUNC) ? USER_NOTIF : ALLOW; } (A still holds nr after) */
static void notify_if_trunc(long nr, unsigned arg) {
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 5));
    /* low 32 bits of the argument (little-endian); O_TRUNC has no bit in the high half */
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                      offsetof(struct seccomp_data, args) + 8 * arg));
    emit((struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, O_TRUNC));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, O_TRUNC, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

/* The same decisions as Guard's filter: foreign arch and x32 -> EPERM, io_uring -> EPERM, the
 * file-destroying calls -> USER_NOTIF, open/openat with O_TRUNC -> USER_NOTIF, the rest ALLOW. */
static void build_filter(void) {
    const unsigned eperm = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, eperm));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, eperm));
#endif
    static const long held[] = {
#ifdef __NR_unlink
        __NR_unlink,
#endif
        __NR_unlinkat,
#ifdef __NR_rmdir
        __NR_rmdir,
#endif
#ifdef __NR_rename
        __NR_rename,
#endif
#ifdef __NR_renameat
        __NR_renameat,
#endif
        __NR_renameat2,   __NR_truncate, __NR_ftruncate,
#ifdef __NR_creat
        __NR_creat,
#endif
        __NR_openat2,
#ifdef __NR_link
        __NR_link,
#endif
        __NR_linkat,
    };
    for (size_t i = 0; i < sizeof held / sizeof held[0]; i++)
        ret_if_nr(held[i], SECCOMP_RET_USER_NOTIF);
#ifdef __NR_open
    notify_if_trunc(__NR_open, 1);
#endif
    notify_if_trunc(__NR_openat, 2);
    ret_if_nr(__NR_io_uring_setup, eperm);
    ret_if_nr(__NR_io_uring_enter, eperm);
    ret_if_nr(__NR_io_uring_register, eperm);
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

static int install_filter(void) {
    struct sock_fprog fprog = {.len = (unsigned short)n_insns, .filter = prog};
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                      SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                      &fprog);
    if (fd < 0 && errno == EINVAL) /* kernels before 5.19 */
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
    if (fd < 0)
        die("seccomp(SET_MODE_FILTER, NEW_LISTENER)");
    return (int)fd;
}

static void send_fd(int sock, int fd) {
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (sendmsg(sock, &msg, 0) != 1)
        die("sendmsg(listener)");
}

static int recv_fd(int sock) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0)
        die("recvmsg(listener)");
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (n != 1 || c == NULL || c->cmsg_type != SCM_RIGHTS) {
        fprintf(stderr, "notify_floor: the child sent no listener\n");
        exit(125);
    }
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

static int listener = -1;
static int use_poll;

/* Answers every notification with CONTINUE. Runs until the main thread exits the process. */
static void *answer(void *unused) {
    (void)unused;
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    for (;;) {
        if (use_poll) {
            struct pollfd p = {.fd = listener, .events = POLLIN};
            if (poll(&p, 1, -1) < 0) {
                if (errno == EINTR)
                    continue;
                die("poll(listener)");
            }
            if (!(p.revents & POLLIN)) {
                if (p.revents & (POLLHUP | POLLERR))
                    return NULL; /* no task uses the filter any more */
                continue;
            }
        }
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
            if (errno == EINTR || errno == ENOENT)
                continue;
            die("SECCOMP_IOCTL_NOTIF_RECV");
        }
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        /* ENOENT: the task went away (e.g. killed) before the answer; nothing to do. */
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
            die("SECCOMP_IOCTL_NOTIF_SEND");
    }
}

int main(int argc, char **argv) {
    int sync_wake = 0;
    int opt;
    while ((opt = getopt(argc, argv, "+ps")) != -1) {
        switch (opt) {
        case 'p': use_poll = 1; break;
        case 's': sync_wake = 1; break;
        default:
            fprintf(stderr, "usage: notify_floor [-p] [-s] CMD [ARGS...]\n");
            return 125;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: notify_floor [-p] [-s] CMD [ARGS...]\n");
        return 125;
    }
    build_filter();

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(sv[0]);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            die("prctl(NO_NEW_PRIVS)");
        int fd = install_filter();
        send_fd(sv[1], fd);
        close(fd);
        close(sv[1]);
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            die("dropping to uid/gid 65534");
        execvp(argv[optind], argv + optind);
        die(argv[optind]);
    }
    close(sv[1]);
    listener = recv_fd(sv[0]);
    close(sv[0]);
    if (sync_wake && ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                           (unsigned long long)SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) < 0)
        die("SECCOMP_IOCTL_NOTIF_SET_FLAGS(SYNC_WAKE_UP)");

    pthread_t t;
    if ((errno = pthread_create(&t, NULL, answer, NULL)) != 0)
        die("pthread_create");
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
    }
    /* exit(), not return: ends the answering thread blocked in RECV */
    if (WIFEXITED(status))
        _exit(WEXITSTATUS(status));
    _exit(128 + WTERMSIG(status));
}
