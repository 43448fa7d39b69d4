/* System calls by their x32 numbers (bit 30 set) on x86-64: a denylist by number does not
 * see them, so the worker's filter refuses the whole x32 range (EPERM). Without it they would
 * run where the kernel has x32 built in (Debian's), and fail with ENOSYS where it has not.
 * The control, the same call by its ordinary number, works. */
#include "report.h"

#include <sys/syscall.h>

#define X32_SYSCALL_BIT 0x40000000L

int main(void) {
    cgi_header();
    report("getpid", syscall(SYS_getpid));
    report("x32_getpid", syscall(X32_SYSCALL_BIT | SYS_getpid));
    /* unshare is denied by number; by its x32 number it must be denied too. */
    report("x32_unshare", syscall(X32_SYSCALL_BIT | SYS_unshare, 0));
    printf("done\n");
    return 0;
}
