//! The jail builder's fixed values, each with the reason for it.

/// Where bare program names are looked up. Fixed rather than taken from `PATH`, so that
/// what lands in the jail does not depend on the shell that ran `jail init` (root's `PATH`
/// under sudo, a `~/bin` first, ...).
pub const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Upper bound on the host's `/etc/localtime`. TZif files are a few KiB; the cap keeps a
/// host symlink to something odd (a huge file) from being slurped into memory.
pub(super) const MAX_LOCALTIME_BYTES: u64 = 1 << 20;

/// How many `#!` interpreters may be stacked (a script run by a script...). Linux itself
/// gives up after a handful with `ELOOP`; four is as deep as any real setup goes.
pub(super) const MAX_INTERPRETER_DEPTH: usize = 4;

/// How deep an added tree may go. Deeper than any real tree; the limit keeps a pathological
/// one from exhausting the stack of the recursive plan.
pub(super) const MAX_ADD_DEPTH: usize = 64;
