/*
 * hold_victim: unlinks protected files inside `sandbox run --protect DIR`, for the hold
 * workloads of `cargo xtask bench` (xtask/src/holdbench.rs), which decides the holds from outside
 * through the session's control socket.
 *
 * Usage: hold_victim seq DIR N
 *          Unlinks DIR/f0000 .. DIR/f<N-1> one after another. For each prints a line
 *          "I START END RET ERRNO": CLOCK_MONOTONIC in nanoseconds just before unlink() and just
 *          after it returned, its return value and errno (0 when it succeeded).
 *        hold_victim threads DIR N
 *          Starts N threads (64 KiB stacks), each unlinking its own DIR/f<I>, waits for them all
 *          and prints "allowed A denied D failed F" (D: EPERM, F: any other error).
 *        hold_victim each DIR N
 *          As threads, but first prints one line "I ERRNO" per thread (0 when its unlink
 *          succeeded), for checking that each hold was decided as it should have been.
 * Exit status 0 unless the program itself failed (bad usage, no threads).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *dir;

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void path_of(char *buf, size_t len, long i) {
	snprintf(buf, len, "%s/f%04ld", dir, i);
}

static int seq(long n) {
	/* printed at the end, so output does not run between the timed calls */
	long long *t = calloc((size_t)n * 2, sizeof *t);
	int *res = calloc((size_t)n * 2, sizeof *res);
	char p[4096];
	if (!t || !res) {
		fprintf(stderr, "hold_victim: out of memory\n");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		path_of(p, sizeof p, i);
		t[2 * i] = now_ns();
		int r = unlink(p);
		int e = r == 0 ? 0 : errno;
		t[2 * i + 1] = now_ns();
		res[2 * i] = r;
		res[2 * i + 1] = e;
	}
	for (long i = 0; i < n; i++)
		printf("%ld %lld %lld %d %d\n", i, t[2 * i], t[2 * i + 1], res[2 * i], res[2 * i + 1]);
	free(t);
	free(res);
	return 0;
}

static int *errnos; /* per thread, for `each` */

static void *one(void *arg) {
	char p[4096];
	long i = (long)(size_t)arg;
	path_of(p, sizeof p, i);
	int r = unlink(p);
	int e = r == 0 ? 0 : errno;
	if (errnos)
		errnos[i] = e;
	if (r == 0)
		return (void *)0;
	return (void *)(size_t)(e == EPERM ? 1 : 2);
}

static int threads(long n, int each) {
	pthread_t *t = calloc((size_t)n, sizeof *t);
	pthread_attr_t a;
	if (!t || pthread_attr_init(&a) || pthread_attr_setstacksize(&a, 64 * 1024)) {
		fprintf(stderr, "hold_victim: out of memory\n");
		return 1;
	}
	if (each && !(errnos = calloc((size_t)n, sizeof *errnos))) {
		fprintf(stderr, "hold_victim: out of memory\n");
		return 1;
	}
	long started = 0;
	for (; started < n; started++) {
		int e = pthread_create(&t[started], &a, one, (void *)(size_t)started);
		if (e) {
			fprintf(stderr, "hold_victim: thread %ld: %s\n", started, strerror(e));
			break;
		}
	}
	long count[3] = {0, 0, 0};
	for (long i = 0; i < started; i++) {
		void *r;
		pthread_join(t[i], &r);
		count[(size_t)r]++;
	}
	for (long i = 0; each && i < started; i++)
		printf("%ld %d\n", i, errnos[i]);
	printf("allowed %ld denied %ld failed %ld\n", count[0], count[1], count[2]);
	free(t);
	return started == n ? 0 : 1;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: hold_victim seq|threads|each DIR N\n");
		return 2;
	}
	dir = argv[2];
	long n = strtol(argv[3], NULL, 10);
	if (n <= 0 || n > 10000) {
		fprintf(stderr, "hold_victim: N must be 1..10000\n");
		return 2;
	}
	if (strcmp(argv[1], "seq") == 0)
		return seq(n);
	if (strcmp(argv[1], "threads") == 0)
		return threads(n, 0);
	if (strcmp(argv[1], "each") == 0)
		return threads(n, 1);
	fprintf(stderr, "hold_victim: unknown mode %s\n", argv[1]);
	return 2;
}
