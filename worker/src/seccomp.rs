//! A seccomp denylist the worker installs on itself once, after dropping privileges; every CGI
//! inherits it (it survives fork and exec, and no-new-privs keeps it from being lifted). A CGI
//! gets no filter of its own: what the worker needs and a CGI must not do (`mount`, `unshare`
//! and `setns` of a mount namespace) needs capabilities a CGI does not have, and a CGI's end
//! reaches its processes among the worker's children, wherever they went (`kill.rs`).
//!
//! A denylist, not an allowlist: shell CGIs run arbitrary programs, so the set of system calls
//! they need is open-ended. What is denied is what a CGI never needs and an attacker wants:
//! reaching into other processes of the same uid (other CGIs: their memory holds other
//! clients' cookies), the kernel interfaces behind most local privilege escalations, and
//! anything that rearranges mounts or namespaces.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Denied with EPERM.
const DENIED: &[i64] = &[
    // Other processes of the same uid: other CGIs.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    // Mounts, roots and namespaces (`mount`, and `unshare` and `setns` of a mount namespace,
    // only for the worker, which gives each CGI its private `/tmp` with them, see
    // argument_rules; a CGI has no capability to use them).
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // A session of its own is a scheduler autogroup of its own, and where no cgroup shares
    // the CPU, autogroups share it by session: a CGI could claim a share per process it starts.
    libc::SYS_setsid,
    // Kernel attack surface no CGI uses.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_vhangup,
    // Another process's memory placement (`pid` names any process of the uid).
    libc::SYS_move_pages,
    libc::SYS_migrate_pages,
    libc::SYS_process_madvise,
    libc::SYS_process_mrelease,
    // SysV IPC and POSIX message queues: objects of the worker's IPC namespace, so one would
    // outlive its request and be seen by the next, and none counts against a CGI's limits.
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    // Watches on files, whose instances and marks the kernel counts once more for the owner
    // of the worker's user namespace (the workers' account), up to the host's per-user limit
    // (`fs.inotify.max_user_instances`, 128 by default): one pool for every CGI of every
    // worker, which one CGI could empty. A CGI lives for one request; `tail -f` falls back to
    // polling.
    libc::SYS_inotify_init1,
    libc::SYS_fanotify_init,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_inotify_init,
    // The x86 local descriptor table: old exploits' favourite, no CGI's need.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_modify_ldt,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// Address families a CGI may open sockets of: local, IPv4, IPv6. The others (netlink,
/// packet, the kernel's crypto API, vsock, Bluetooth, ...) are kernel surface a CGI never
/// needs; `getaddrinfo`'s netlink probe falls back when refused.
const SOCKET_FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
];

/// `personality(2)` flags refused: executable data (`READ_IMPLIES_EXEC`) would undo W^X in
/// memory, and no address randomization would help an exploit. The query (0xffffffff) stays.
const PERSONALITY_REFUSED: &[u64] = &[0x0040_0000, 0x0004_0000];
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
/// `MFD_EXEC`: a memfd that may be executed (the worker's PID namespace refuses it too).
const MFD_EXEC: u64 = 0x0010;

/// `clone` flags that make a new namespace.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct FilterError(String);

fn target_arch() -> Result<seccompiler::TargetArch, FilterError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| FilterError(format!("{e:?}")))
}

fn backend_error(error: seccompiler::BackendError) -> FilterError {
    FilterError(error.to_string())
}

/// Installs the filters on the calling thread (the worker is single-threaded at this point).
pub fn install() -> Result<(), FilterError> {
    let arch = target_arch()?;

    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .map(|&syscall| (syscall, Vec::new()))
        .collect();
    // clone(2) is how fork works, so only its namespace flags are refused; clone's flags are
    // its first argument on x86-64 and arm64 alike.
    let namespace_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?;
            SeccompRule::new(vec![condition])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(backend_error)?;
    denied.insert(libc::SYS_clone, namespace_rules);
    for (syscall, rules) in argument_rules().map_err(backend_error)? {
        denied.insert(syscall, rules);
    }
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(backend_error)?;

    // clone3 passes its flags in memory, out of a filter's reach: "not implemented" makes the C
    // library fall back to clone, where the rule above applies.
    let clone3 = deny_exactly(&[libc::SYS_clone3], libc::ENOSYS);

    let deny: BpfProgram = deny.try_into().map_err(backend_error)?;
    for program in [deny, clone3] {
        seccompiler::apply_filter(&program).map_err(|e| FilterError(e.to_string()))?;
    }
    #[cfg(target_arch = "x86_64")]
    seccompiler::apply_filter(&no_x32()).map_err(|e| FilterError(e.to_string()))?;
    Ok(())
}

/// One condition on argument `index` (32 bits wide, as every argument checked here is).
fn arg(
    index: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
}

/// Calls denied for some arguments only: each rule is one way to be denied.
fn argument_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, seccompiler::BackendError> {
    use SeccompCmpOp::{Eq, Ge, Gt, Lt, MaskedEq, Ne};
    let rule = |conditions| SeccompRule::new(conditions);
    // Another process's limits, priority or scheduling: only pid 0 (the caller) is allowed,
    // so no CGI can starve its worker or another request (`prlimit(1, RLIMIT_NPROC, 0)`,
    // `renice` of pid 1, SCHED_IDLE). PRIO_USER and IOPRIO_WHO_USER reach every process of
    // the uid, so they are refused whatever the id.
    let only_self = |pid_arg| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        Ok(vec![rule(vec![arg(pid_arg, Ne, 0)?])?])
    };
    const PRIO_USER: u64 = 2;
    const IOPRIO_WHO_USER: u64 = 3;
    // Families outside SOCKET_FAMILIES: below the first, between, above the last.
    let mut families = Vec::new();
    let mut allowed = SOCKET_FAMILIES.to_vec();
    allowed.sort_unstable();
    let mut below = 0;
    for &family in &allowed {
        if family > below {
            families.push(rule(vec![arg(0, Ge, below)?, arg(0, Lt, family)?])?);
        }
        below = family + 1;
    }
    families.push(rule(vec![arg(0, Gt, below - 1)?])?);
    Ok(vec![
        // The worker may make a mount namespace (each CGI's), nothing else; and enter one, for
        // a CGI's process, which it can only do for namespaces of its own user namespace (the
        // namespaces it made: entering one needs CAP_SYS_ADMIN over it).
        (
            libc::SYS_unshare,
            vec![rule(vec![arg(0, Ne, libc::CLONE_NEWNS as u64)?])?],
        ),
        (
            libc::SYS_setns,
            vec![rule(vec![arg(1, Ne, libc::CLONE_NEWNS as u64)?])?],
        ),
        (libc::SYS_prlimit64, only_self(0)?),
        (libc::SYS_sched_setscheduler, only_self(0)?),
        (libc::SYS_sched_setparam, only_self(0)?),
        (libc::SYS_sched_setattr, only_self(0)?),
        (libc::SYS_sched_setaffinity, only_self(0)?),
        (
            libc::SYS_setpriority,
            vec![
                rule(vec![arg(0, Eq, PRIO_USER)?])?,
                rule(vec![arg(1, Ne, 0)?])?,
            ],
        ),
        (
            libc::SYS_ioprio_set,
            vec![
                rule(vec![arg(0, Eq, IOPRIO_WHO_USER)?])?,
                rule(vec![arg(1, Ne, 0)?])?,
            ],
        ),
        (libc::SYS_socket, families.clone()),
        (libc::SYS_socketpair, families),
        // Code from memory: no executable memfd, no exec of a descriptor (`fexecve`).
        (
            libc::SYS_memfd_create,
            vec![rule(vec![arg(1, MaskedEq(MFD_EXEC), MFD_EXEC)?])?],
        ),
        (
            libc::SYS_execveat,
            vec![rule(vec![arg(
                4,
                MaskedEq(libc::AT_EMPTY_PATH as u64),
                libc::AT_EMPTY_PATH as u64,
            )?])?],
        ),
        (
            libc::SYS_personality,
            PERSONALITY_REFUSED
                .iter()
                .map(|&flag| {
                    rule(vec![
                        arg(0, Ne, PERSONALITY_QUERY)?,
                        arg(0, MaskedEq(flag), flag)?,
                    ])
                })
                .collect::<Result<_, _>>()?,
        ),
    ])
}

/// On x86-64 the same arch also carries x32 system calls: the numbers above with bit 30 set,
/// which no denylist by number would catch (Debian's kernels have x32 built in). No CGI of
/// ours is an x32 program, so every x32 call fails.
#[cfg(target_arch = "x86_64")]
fn no_x32() -> BpfProgram {
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, SECCOMP_DATA_NR),
        // nr & X32_SYSCALL_BIT ? deny : allow
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Offsets in `struct seccomp_data` of the system call's number and architecture.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// This architecture's `AUDIT_ARCH_*` (<linux/audit.h>), as `seccomp_data.arch` gives it.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xc000_00f3;

fn statement(code: u32, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A program that answers each call in `syscalls` with `errno`, allows every other call of
/// this architecture and kills the process that makes a call of another (as seccompiler's
/// programs do): load the architecture and check it, load the number, then one comparison a
/// call, whose match jumps over the comparisons after it and the allow, to the denial.
fn deny_exactly(syscalls: &[i64], errno: i32) -> BpfProgram {
    let count = syscalls.len();
    assert!(
        count < usize::from(u8::MAX),
        "a jump reaches 255 instructions"
    );
    let mut program = vec![
        statement(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            SECCOMP_DATA_ARCH,
        ),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH,
            1,
            0,
        ),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, SECCOMP_DATA_NR),
    ];
    for (index, &syscall) in syscalls.iter().enumerate() {
        let to_denial = (count - index) as u8;
        program.push(jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            syscall as u32,
            to_denial,
            0,
        ));
    }
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ALLOW,
    ));
    program.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | errno as u32,
    ));
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes system call `number` with all-zero arguments and returns its errno (0: success).
    fn errno_of(number: i64) -> i32 {
        // SAFETY: every call made here takes integer arguments only (zeros: no pointer is
        // dereferenced), and is made in a child that exits right after.
        let result = unsafe { libc::syscall(number, 0, 0, 0, 0, 0, 0) };
        if result == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    #[test]
    fn a_program_of_deny_exactly_refuses_exactly_its_calls() {
        const REFUSED: &[i64] = &[libc::SYS_getppid, libc::SYS_getuid];
        let program = deny_exactly(REFUSED, libc::EPERM);
        // A filter is for good: it goes on in a child, which makes system calls only (no
        // allocation, no lock) and reports by its exit code which check failed.
        // SAFETY: see above; the child ends with `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                let code = (|| {
                    if seccompiler::apply_filter(&program).is_err() {
                        return 10;
                    }
                    for (index, &call) in REFUSED.iter().enumerate() {
                        if errno_of(call) != libc::EPERM {
                            return 20 + index as i32;
                        }
                    }
                    // Numbers next to and between the refused ones are let through.
                    for call in [libc::SYS_getpid, libc::SYS_getgid, libc::SYS_geteuid] {
                        if errno_of(call) != 0 {
                            return 30;
                        }
                    }
                    0
                })();
                // SAFETY: ends the child without running anything of the parent's.
                unsafe { libc::_exit(code) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                let waited = unsafe { libc::waitpid(child, &mut status, 0) };
                assert_eq!(waited, child);
                assert!(libc::WIFEXITED(status), "the child died: {status:#x}");
                assert_eq!(libc::WEXITSTATUS(status), 0, "check failed (see the codes)");
            }
        }
    }
}
