// Tries to set up io_uring (to unlink through it). Prints the errno of io_uring_setup.
#include <errno.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(SYS_io_uring_setup, 4, &p);
    if (fd < 0) {
        printf("io_uring_setup: errno=%d (%s)\n", errno, strerror(errno));
        return errno == EPERM ? 0 : 1;
    }
    printf("io_uring_setup: succeeded\n");
    return 1;
}
