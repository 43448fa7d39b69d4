//! A seccomp denylist the worker installs on itself once, after dropping privileges; every CGI
//! inherits it (it survives fork and exec, and no-new-privs keeps it from being lifted).
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
    // Mounts, roots and namespaces.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
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
];

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

/// Installs the filters on the calling thread (the worker is single-threaded at this point).
pub fn install() -> Result<(), FilterError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| FilterError(format!("{e:?}")))?;
    let error = |e: seccompiler::BackendError| FilterError(e.to_string());

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
        .map_err(error)?;
    denied.insert(libc::SYS_clone, namespace_rules);
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(error)?;

    // clone3 passes its flags in memory, out of a filter's reach: "not implemented" makes the C
    // library fall back to clone, where the rule above applies.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(error)?;

    for filter in [deny, clone3] {
        let program: BpfProgram = filter.try_into().map_err(error)?;
        seccompiler::apply_filter(&program).map_err(|e| FilterError(e.to_string()))?;
    }
    Ok(())
}
