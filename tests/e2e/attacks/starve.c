/* Tries to starve the worker (pid 1 of the CGI's PID namespace, same uid): no processes
 * (RLIMIT_NPROC 0: it could start no CGI any more), the lowest priority, the idle scheduling
 * and I/O classes, one CPU; and every process of the uid at once (PRIO_USER). Then the same
 * calls on itself (pid 0), which a CGI may make: `prlimit_self`, `renice_self` and the others.
 * The controls come last, so a limit it sets on itself cannot change what the attacks see. */
#include "report.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define IOPRIO_CLASS_SHIFT 13
#define IOPRIO_CLASS_IDLE 3
#define IOPRIO_WHO_PROCESS 1

static long ioprio_idle(pid_t pid) {
    return syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, (int)pid,
                   IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT);
}

static long one_cpu(pid_t pid) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    return sched_setaffinity(pid, sizeof set, &set);
}

static long idle_class(pid_t pid) {
    struct sched_param param = {.sched_priority = 0};
    return sched_setscheduler(pid, SCHED_IDLE, &param);
}

static long no_processes(pid_t pid) {
    struct rlimit zero = {0, 0};
    return prlimit(pid, RLIMIT_NPROC, &zero, NULL);
}

int main(void) {
    cgi_header();
    report("prlimit_worker", no_processes(1));
    report("renice_worker", setpriority(PRIO_PROCESS, 1, 19));
    report("idle_worker", idle_class(1));
    report("renice_user", setpriority(PRIO_USER, 0, 19));
    report("ioprio_worker", ioprio_idle(1));
    report("affinity_worker", one_cpu(1));

    report("prlimit_self", no_processes(0));
    report("renice_self", setpriority(PRIO_PROCESS, 0, 19));
    report("idle_self", idle_class(0));
    report("ioprio_self", ioprio_idle(0));
    report("affinity_self", one_cpu(0));
    printf("done\n");
    return 0;
}
