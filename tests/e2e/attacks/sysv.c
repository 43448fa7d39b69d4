/* SysV IPC and POSIX message queues: objects of the worker's IPC namespace, not of a request.
 * `?op=create` makes a shared memory segment, a semaphore set and a message queue under the
 * key 0x4a47, and the POSIX message queue /jailgate; `?op=find` (another request) looks for
 * them without creating anything. Reports `shm`, `sem`, `msg`, `mq`, and `op`. Nothing is
 * removed: what a request leaves is what the next one must not find. */
#include "report.h"

#include <fcntl.h>
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define KEY 0x4a47

int main(void) {
    cgi_header();
    const char *query = getenv("QUERY_STRING");
    int create = query && strstr(query, "op=create") != NULL;
    printf("op=%s\n", create ? "create" : "find");
    int ipc = create ? IPC_CREAT | 0666 : 0;
    report("shm", shmget(KEY, create ? 4096 : 0, ipc));
    report("sem", semget(KEY, create ? 1 : 0, ipc));
    report("msg", msgget(KEY, ipc));
    mqd_t mq = create ? mq_open("/jailgate", O_CREAT | O_RDWR, 0666, NULL)
                      : mq_open("/jailgate", O_RDWR);
    report("mq", (long)mq);
    if (mq != (mqd_t)-1) {
        mq_close(mq);
    }
    printf("done\n");
    return 0;
}
