// Flips a path buffer between a harmless and a protected path while another thread unlinks
// through it, for a given number of seconds. Recreates the harmless file as it goes.
// usage: race_unlink HARMLESS PROTECTED SECONDS
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buf[4096];
static const char *harmless, *protected_path;
static volatile int stop;

static void *flipper(void *arg) {
    (void)arg;
    size_t n = strlen(harmless) > strlen(protected_path) ? strlen(harmless) : strlen(protected_path);
    while (!stop) {
        memcpy(buf, protected_path, strlen(protected_path) + 1);
        memcpy(buf, harmless, strlen(harmless) + 1);
        (void)n;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    harmless = argv[1];
    protected_path = argv[2];
    int secs = atoi(argv[3]);
    strcpy(buf, harmless);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    time_t end = time(NULL) + secs;
    long tries = 0, ok = 0;
    while (time(NULL) < end) {
        int fd = open(harmless, O_CREAT | O_WRONLY, 0644);
        if (fd >= 0) close(fd);
        if (unlink(buf) == 0) ok++;
        tries++;
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("tries=%ld unlinked=%ld\n", tries, ok);
    return 0;
}
