// Opens PATH for writing (without O_TRUNC) and ftruncate(2)s it to 0.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) { printf("open: %s\n", strerror(errno)); return 1; }
    if (ftruncate(fd, 0) != 0) { printf("ftruncate: %s\n", strerror(errno)); return 1; }
    return 0;
}
