// Connects to 127.0.0.1 again and again through one sockaddr whose port another thread flips
// between a free port and a held one, for a given number of seconds. Prints how many connects
// ended up connected to the held port (getpeername), which the guard must keep at 0.
// usage: race_connect FREE_PORT HELD_PORT SECONDS
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in sa;
static volatile int stop;
static unsigned short free_port, held_port;

static void *flipper(void *arg) {
    (void)arg;
    volatile unsigned short *p = (volatile unsigned short *)&sa.sin_port;
    while (!stop) {
        *p = htons(held_port);
        *p = htons(free_port);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    free_port = (unsigned short)atoi(argv[1]);
    held_port = (unsigned short)atoi(argv[2]);
    int secs = atoi(argv[3]);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(free_port);
    pthread_t t;
    pthread_create(&t, NULL, flipper, NULL);
    time_t end = time(NULL) + secs;
    long tries = 0, held = 0, freed = 0;
    while (time(NULL) < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return 1;
        tries++;
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            if (getpeername(s, (struct sockaddr *)&peer, &len) == 0) {
                if (ntohs(peer.sin_port) == held_port) held++;
                else freed++;
            }
        }
        close(s);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("tries %ld free_connected %ld held_connected %ld\n", tries, freed, held);
    return 0;
}
