// A library for LD_PRELOAD that marks every process loading it: at load it creates
// "MARK_DIR/EUID-COMM" (MARK_DIR fixed at compile time with -DMARK_DIR=..., so a cleared
// environment does not hide the load). tests/daemon.rs uses it to show that the variable reaches
// the sandboxed command and no root process of the guard. In lib/: not one of the programs the
// test VM gets (those are executables).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor)) static void mark(void)
{
	char comm[32] = "", path[4096];
	int fd = open("/proc/self/comm", O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, comm, sizeof comm - 1);
		if (n > 0)
			comm[n - 1] = 0;
		close(fd);
	}
	snprintf(path, sizeof path, "%s/%d-%s", MARK_DIR, (int)geteuid(), comm);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
	if (fd >= 0)
		close(fd);
}
