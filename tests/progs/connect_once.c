// Connects once to 127.0.0.1:PORT with a blocking TCP socket and says how it went:
// "connected PORT" or "error PORT ERRNO".
// usage: connect_once PORT
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int port = atoi(argv[1]);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return 1;
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
        printf("connected %d\n", port);
    } else {
        printf("error %d %d\n", port, errno);
    }
    fflush(stdout);
    close(s);
    return 0;
}
