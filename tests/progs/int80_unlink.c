// Calls unlink(2) through the 32-bit int 0x80 entry (i386 syscall 10) from a 64-bit process.
// usage: int80_unlink PATH    (the path must live below 4 GiB: it is copied to a static buffer)
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char *low = mmap((void *)0x100000, 4096, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (low == MAP_FAILED) { perror("mmap"); return 2; }
    strncpy(low, argv[1], 4095);
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(10), "b"(low) : "memory");
    printf("int80 unlink: %ld\n", ret);
    return ret == 0 ? 1 : 0;
}
