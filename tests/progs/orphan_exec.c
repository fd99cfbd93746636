// orphan_exec DIR REAPER PROG [ARG...]: makes the process group of a program it execs orphaned
// while that program may still be stopped at its exec (tests/commands.rs).
//
// It becomes a session leader and forks a child, which moves into a process group of its own,
// ignores SIGHUP, waits for DIR/go and execs PROG. The parent writes DIR/ready, waits for
// DIR/go, sleeps 0.5 s, writes DIR/orphaned and exits: the child's group becomes orphaned, and
// the kernel sends it SIGHUP and SIGCONT if it is stopped.
//
// REAPER 1: first it makes itself a child subreaper that ignores SIGCHLD and forks; the
// subreaper waits for DIR/done while its child does the above, so the orphan's new parent
// ignores SIGCHLD. (Files are opened with O_APPEND: nothing the calls do is held.)
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

static const char *dir;

static void path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

static void touch(const char *name)
{
	char p[4096];
	path(p, sizeof(p), name);
	int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd < 0) {
		perror(p);
		exit(1);
	}
	close(fd);
}

static void wait_for(const char *name)
{
	char p[4096];
	path(p, sizeof(p), name);
	while (access(p, F_OK) != 0)
		usleep(10000);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: orphan_exec DIR REAPER PROG [ARG...]\n");
		return 2;
	}
	dir = argv[1];
	if (atoi(argv[2])) {
		if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
			perror("PR_SET_CHILD_SUBREAPER");
			return 1;
		}
		signal(SIGCHLD, SIG_IGN);
		pid_t p = fork();
		if (p < 0)
			return 1;
		if (p > 0) {
			wait_for("done");
			return 0;
		}
	}
	if (setsid() < 0) {
		perror("setsid");
		return 1;
	}
	pid_t c = fork();
	if (c < 0)
		return 1;
	if (c == 0) {
		setpgid(0, 0);
		signal(SIGHUP, SIG_IGN);
		wait_for("go");
		execvp(argv[3], argv + 3);
		perror(argv[3]);
		_exit(127);
	}
	touch("ready");
	wait_for("go");
	usleep(500000);
	touch("orphaned");
	return 0;
}
