// Unlinks PATH through io_uring (IORING_OP_UNLINKAT) and prints the completion's result.
// Exit 0 when the result is -EPERM (the guard refused it), 1 otherwise, 3 without a ring.
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    struct io_uring ring;
    int r = io_uring_queue_init(4, &ring, 0);
    if (r < 0) { printf("io_uring_queue_init: %s\n", strerror(-r)); return 3; }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_unlinkat(sqe, AT_FDCWD, argv[1], 0);
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    io_uring_wait_cqe(&ring, &cqe);
    printf("io_uring unlinkat: %d (%s)\n", cqe->res, cqe->res < 0 ? strerror(-cqe->res) : "ok");
    return cqe->res == -EPERM ? 0 : 1;
}
