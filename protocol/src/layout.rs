//! What both sides of the jail must agree on about its tree: `gateway jail init` builds it,
//! `gateway jail check` audits it, the worker mounts it, and the front routes URLs into it.

/// The folder inside the jail that `/cgi-bin/` URLs map to; only programs under it run.
pub const CGI_DIR: &str = "/cgi-bin";

/// Folders, relative to the jail's root, where programs live: the worker mounts them read-only
/// with exec allowed (where they are real folders; on a merged-/usr jail `/bin` and friends
/// are symlinks into `/usr`). Everything else in the jail is `noexec`.
pub const EXEC_AREAS: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "cgi-bin"];

/// Folders, relative to the jail's root, that get a private writable tmpfs (`noexec`) where
/// the jail has them; the audit lets files of the CGI user live only there.
pub const WRITABLE_AREAS: &[&str] = &["tmp", "var/tmp", "usr/tmp"];

/// The device nodes CGIs get, and the only ones the audit allows: (name in `/dev`, major,
/// minor). They give access to nothing (mem(4): null, zero, urandom).
pub const DEVICES: &[(&str, u32, u32)] = &[("null", 1, 3), ("zero", 1, 5), ("urandom", 1, 9)];

/// The mount point in the jail (an empty directory `jail init` makes) where each worker mounts
/// a `/proc` of its own PID namespace for its CGIs, `hidepid=invisible,subset=pid`: a CGI sees
/// only its own processes (each CGI has a uid of its own).
pub const PROC_DIR: &str = "proc";

/// Symlinks in the worker's `/dev`, for scripts that name `/dev/stdin` and friends (bash's
/// process substitution uses `/dev/fd/N`): (name in `/dev`, target). Made where the jail has
/// [`PROC_DIR`].
pub const STD_DEVICE_LINKS: &[(&str, &str)] = &[
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("fd", "/proc/self/fd"),
];

/// The ids CGIs run as by default (`--cgi-ids`), a uid and gid each: 1879048192–1880096767
/// (0x70000000 and the 2^20 − 1 after it), above the ranges Debian and systemd give accounts,
/// dynamic users and containers (systemd's UIDS-GIDS.md: containers end at 1879048191), and
/// far below 2^31, which some tools take for negative. 2^20 ids: a block of twice
/// `--max-cgis-per-worker` (1,024 by default) for every worker of two pools (a reload), up to
/// 512 workers.
pub const DEFAULT_CGI_IDS: crate::IdRange = crate::IdRange {
    first: 0x7000_0000,
    count: 0x10_0000,
};

/// The uid and gid the workers run as by default (`--user`): 1879048191, the id just below
/// [`DEFAULT_CGI_IDS`]. An id of Jailgate's own, as systemd's `DynamicUser=` gives a service:
/// no account needs to hold it (nothing to create on install or remove after), and no other
/// service runs under it, as one would under `nobody`: a worker taken over could otherwise
/// signal or trace every process of that account, and they it. It is the last id of
/// systemd's container range (UIDS-GIDS.md), so a container may map onto it: the start warns
/// of any process running as it, and refuses it if an account or group holds it.
pub const DEFAULT_WORKER_ID: u32 = DEFAULT_CGI_IDS.first - 1;

/// The uid and gid the front runs as by default (`--gateway-user`): 1879048190, the id below
/// [`DEFAULT_WORKER_ID`], for the same reasons; never the workers' (a CGI that took its worker
/// over could then signal or trace the front, which parses every request).
pub const DEFAULT_FRONT_ID: u32 = DEFAULT_WORKER_ID - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ids_are_the_two_below_the_cgi_range() {
        assert_eq!(
            (DEFAULT_FRONT_ID, DEFAULT_WORKER_ID),
            (1_879_048_190, 1_879_048_191)
        );
        for id in [DEFAULT_FRONT_ID, DEFAULT_WORKER_ID] {
            assert!(!DEFAULT_CGI_IDS.contains(id), "{id}");
        }
    }
}
