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
