// The escape suite's attacks that a shell cannot make, so that tests/escape.rs needs no Python
// and runs inside the test VM (busybox only) as well as on the host.
//
// Usage: escape_ops opath DIR FILE
//          O_PATH and O_RDONLY fds reaching DIR/f (FILE): unlink and rename through
//          /proc/self/fd/N/f of an O_PATH directory fd, reopening /proc/self/fd/N of an O_PATH
//          and of an O_RDONLY fd of the file with O_WRONLY|O_TRUNC, truncate() of the fd link.
//          Prints "NAME=ok" or "NAME=ERRNO" for each.
//        escape_ops rename SRC DST
//          One rename(2); exit status 1 (and "rename=ERRNO") when it fails.
//        escape_ops ptrace PID
//          PTRACE_ATTACH to PID and opening /proc/PID/mem: "ptrace=ERRNO|0", "mem=ERRNO|ok".
//        escape_ops chattr FILE
//          FS_IOC_SETFLAGS on FILE toggling its append-only and immutable flags (what chattr
//          does; needs CAP_LINUX_IMMUTABLE): "chattr=ok" or "chattr=ERRNO".
//        escape_ops bomb SECS FILE
//          Starts a fork bomb that does not burn out (every process forks for ever, and retries
//          after 20 ms when fork fails: the shell's 'b(){ b|b& }; b' can die out at a tight pids
//          limit when all its processes fail at once and exit), waits SECS seconds,
//          prints "procs=N" (processes it can see), then unlinks FILE without forking:
//          "unlink=ok" or "unlink=ERRNO". Then it kills the bomb (its own process group) until
//          none of it is left and prints "bomb_gone=1" (0 if that took more than 60 s).
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, int r) {
	if (r < 0)
		printf("%s=%d\n", name, errno);
	else
		printf("%s=ok\n", name);
	fflush(stdout);
}

static int opath(const char *dir, const char *file) {
	char a[4200], b[4200];
	int d = open(dir, O_PATH | O_DIRECTORY);
	if (d < 0) {
		perror("open dir");
		return 2;
	}
	snprintf(a, sizeof a, "/proc/self/fd/%d/f", d);
	report("unlink_opath", unlink(a));
	snprintf(b, sizeof b, "/proc/self/fd/%d/g", d);
	report("rename_opath", rename(a, b));
	int fp = open(file, O_PATH);
	int fr = open(file, O_RDONLY);
	if (fp < 0 || fr < 0) {
		perror("open file");
		return 2;
	}
	snprintf(a, sizeof a, "/proc/self/fd/%d", fp);
	report("trunc_opath", open(a, O_WRONLY | O_TRUNC));
	snprintf(a, sizeof a, "/proc/self/fd/%d", fr);
	report("trunc_rdonly", open(a, O_WRONLY | O_TRUNC));
	report("truncate_fdpath", truncate(a, 0));
	return 0;
}

static int count_procs(void) {
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (isdigit((unsigned char)e->d_name[0]))
			n++;
	closedir(d);
	return n;
}

static int bomb(int secs, const char *file) {
	pid_t p = fork();
	if (p < 0) {
		perror("fork");
		return 2;
	}
	if (p == 0) {
		/* Its own process group, which every process of the bomb inherits. */
		setpgid(0, 0);
		for (;;)
			if (fork() < 0)
				usleep(20000);
	}
	sleep((unsigned)secs);
	printf("procs=%d\n", count_procs());
	fflush(stdout);
	report("unlink", unlink(file));
	/* A bomb left running would slow the end of the session down (badly so in an emulated
	 * VM); the session's own teardown is tested by every other case. Processes forked while
	 * the group is being killed may be missed: repeat until the group is empty. */
	time_t t0 = time(NULL);
	int gone = 0;
	while (time(NULL) - t0 < 60) {
		if (kill(-p, SIGKILL) < 0 && errno == ESRCH) {
			gone = 1;
			break;
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		usleep(1000);
	}
	printf("bomb_gone=%d\n", gone);
	return 0;
}

static int chattr(const char *file) {
	int fd = open(file, O_RDONLY);
	int flags = 0;
	if (fd < 0 || ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) {
		report("chattr", -1);
		return 0;
	}
	flags ^= FS_APPEND_FL | FS_IMMUTABLE_FL;
	report("chattr", ioctl(fd, FS_IOC_SETFLAGS, &flags));
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 4 && strcmp(argv[1], "opath") == 0)
		return opath(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "rename") == 0) {
		if (rename(argv[2], argv[3]) == 0)
			return 0;
		printf("rename=%d\n", errno);
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "ptrace") == 0) {
		pid_t pid = (pid_t)atoi(argv[2]);
		long r = ptrace(PTRACE_ATTACH, pid, 0, 0);
		printf("ptrace=%d\n", r < 0 ? errno : 0);
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/mem", pid);
		/* Opening it at all needs ptrace access to PID. */
		report("mem", open(path, O_RDONLY));
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "chattr") == 0)
		return chattr(argv[2]);
	if (argc == 4 && strcmp(argv[1], "bomb") == 0)
		return bomb(atoi(argv[2]), argv[3]);
	fprintf(stderr, "usage: escape_ops opath DIR FILE | rename SRC DST | ptrace PID | chattr FILE | bomb SECS FILE\n");
	return 2;
}
