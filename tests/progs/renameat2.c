// renameat2(AT_FDCWD, A, AT_FDCWD, B, FLAGS): FLAGS is "exchange", "noreplace" or "0".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/fs.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    unsigned flags = 0;
    if (!strcmp(argv[3], "exchange")) flags = RENAME_EXCHANGE;
    if (!strcmp(argv[3], "noreplace")) flags = RENAME_NOREPLACE;
    long r = syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], flags);
    if (r != 0) { printf("renameat2: %s\n", strerror(errno)); return 1; }
    return 0;
}
