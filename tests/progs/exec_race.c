// exec_race PROG N: N times, a child execs PROG with argv[1] "plan" while a second thread of
// that child keeps rewriting the argument to "destroy" and back (the check-then-exec race of a
// seccomp CONTINUE). Prints how many execs failed; the program run records what it got.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char arg[16] = "plan";
static char *prog;

static void *flip(void *unused)
{
	(void)unused;
	for (;;) {
		memcpy(arg, "destroy", 8);
		memcpy(arg, "plan\0\0\0", 8);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	prog = argv[1];
	int n = atoi(argv[2]), failed = 0;
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p == 0) {
			pthread_t t;
			pthread_create(&t, NULL, flip, NULL);
			char *av[] = {"terraform", arg, NULL};
			execv(prog, av);
			_exit(127);
		}
		int st = 0;
		waitpid(p, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	printf("failed=%d\n", failed);
	return 0;
}
