// A multi-threaded victim: 3 spinning threads, then the main thread unlinks PATH.
// Prints "pid=N" first so a test can inspect /proc/N/task/*.
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

static volatile unsigned long counter;

static void *spin(void *arg) {
    (void)arg;
    for (;;) counter++;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, spin, NULL);
    printf("pid=%d\n", getpid());
    fflush(stdout);
    sleep(1);
    if (unlink(argv[1]) != 0) { printf("unlink: %s\n", strerror(errno)); return 1; }
    printf("unlinked\n");
    return 0;
}
