//! `audit` on real jails built by `init`, with one problem planted at a time.

use super::tests::{default_jail, nobody, profile_options};
use super::*;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::os::unix::net::UnixListener;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tempfile::TempDir;

const CGI_UID: u32 = 65534;
const CGI_GID: u32 = 65534;

fn audit_jail(jail: &Path) -> Vec<Finding> {
    audit(&AuditOptions::new(jail, nobody())).expect("audit")
}

/// A fresh minimal jail (sh and its libraries: quick to build).
fn minimal_jail() -> TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    init(&profile_options(tmp.path(), Profile::Minimal, &[])).expect("init");
    tmp
}

fn finding(path: &str, problem: Problem) -> Finding {
    Finding {
        path: PathBuf::from(path),
        problem,
    }
}

/// `jail` joined with absolute jail path `path`.
fn host(jail: &Path, path: &str) -> PathBuf {
    jail.join(path.trim_start_matches('/'))
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A copy of the host's `true` at jail path `path`, with `mode`.
fn plant_program(jail: &Path, path: &str, mode: u32) -> PathBuf {
    let planted = host(jail, path);
    fs::copy("/usr/bin/true", &planted).expect("copy");
    chmod(&planted, mode);
    planted
}

fn mkdir(jail: &Path, path: &str, mode: u32) -> PathBuf {
    let planted = host(jail, path);
    fs::create_dir(&planted).expect("mkdir");
    chmod(&planted, mode);
    planted
}

fn device(jail: &Path, path: &str, kind: SFlag, major: u64, minor: u64) {
    mknod(
        &host(jail, path),
        kind,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )
    .expect("mknod");
}

/// A version-2 `security.capability` value granting CAP_NET_BIND_SERVICE, effective
/// (struct vfs_cap_data, linux/capability.h), as `setcap cap_net_bind_service+ep` writes.
fn set_capability(path: &Path) {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;
    const CAP_NET_BIND_SERVICE: u32 = 10;
    let mut blob = Vec::new();
    for word in [
        VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
        1 << CAP_NET_BIND_SERVICE, // permitted, low word
        0,                         // inheritable, low word
        0,                         // permitted, high word
        0,                         // inheritable, high word
    ] {
        blob.extend_from_slice(&word.to_le_bytes());
    }
    let cpath = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: both strings are NUL-terminated and `blob` holds `blob.len()` bytes, all
    // alive for the call, which only reads them.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            c"security.capability".as_ptr(),
            blob.as_ptr().cast(),
            blob.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "lsetxattr: {}", io::Error::last_os_error());
}

/// Unmounts on drop, so that a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

#[test]
fn clean_jails_have_no_findings() {
    let (classic, _) = default_jail();
    assert_eq!(audit_jail(classic.path()), Vec::new());
    let minimal = minimal_jail();
    assert_eq!(audit_jail(minimal.path()), Vec::new());
    let busybox = tempfile::tempdir().expect("tempdir");
    init(&profile_options(busybox.path(), Profile::Busybox, &[])).expect("busybox init");
    assert_eq!(audit_jail(busybox.path()), Vec::new());
}

/// Each case: a description, what to plant in a fresh minimal jail, and exactly what the
/// audit must then find.
#[test]
fn each_planted_problem_is_found_and_nothing_else() {
    type Plant = fn(&Path);
    let cases: Vec<(&str, Plant, Vec<Finding>)> = vec![
        (
            "setuid copy of a binary",
            |jail| {
                plant_program(jail, "/usr/bin/su", 0o4755);
            },
            vec![finding("/usr/bin/su", Problem::Setuid)],
        ),
        (
            "setgid copy of a binary",
            |jail| {
                plant_program(jail, "/usr/bin/wall", 0o2755);
            },
            vec![finding("/usr/bin/wall", Problem::Setgid)],
        ),
        (
            "file capability",
            |jail| set_capability(&plant_program(jail, "/usr/bin/ping", 0o755)),
            vec![finding("/usr/bin/ping", Problem::FileCapabilities)],
        ),
        (
            "block device",
            |jail| device(jail, "/dev/sda", SFlag::S_IFBLK, 8, 0),
            vec![finding(
                "/dev/sda",
                Problem::DeviceNode {
                    kind: DeviceKind::Block,
                    major: 8,
                    minor: 0,
                },
            )],
        ),
        (
            "/dev/mem",
            |jail| device(jail, "/dev/mem", SFlag::S_IFCHR, 1, 1),
            vec![finding(
                "/dev/mem",
                Problem::DeviceNode {
                    kind: DeviceKind::Char,
                    major: 1,
                    minor: 1,
                },
            )],
        ),
        (
            "a tty",
            |jail| device(jail, "/dev/tty", SFlag::S_IFCHR, 5, 0),
            vec![finding(
                "/dev/tty",
                Problem::DeviceNode {
                    kind: DeviceKind::Char,
                    major: 5,
                    minor: 0,
                },
            )],
        ),
        (
            "null's numbers outside /dev, and /dev/zero with urandom's",
            |jail| {
                device(jail, "/etc/null", SFlag::S_IFCHR, 1, 3);
                fs::remove_file(host(jail, "/dev/zero")).expect("rm");
                device(jail, "/dev/zero", SFlag::S_IFCHR, 1, 9);
            },
            vec![
                finding(
                    "/dev/zero",
                    Problem::DeviceNode {
                        kind: DeviceKind::Char,
                        major: 1,
                        minor: 9,
                    },
                ),
                finding(
                    "/etc/null",
                    Problem::DeviceNode {
                        kind: DeviceKind::Char,
                        major: 1,
                        minor: 3,
                    },
                ),
            ],
        ),
        (
            "world-writable directory without the sticky bit",
            |jail| {
                mkdir(jail, "/spool", 0o777);
            },
            vec![finding("/spool", Problem::WorldWritableWithoutSticky)],
        ),
        (
            "world-writable sticky directory and file outside the writable places",
            |jail| {
                mkdir(jail, "/shared", 0o1777);
                chmod(&host(jail, "/etc/passwd"), 0o666);
            },
            vec![
                finding("/etc/passwd", Problem::WorldWritable),
                finding("/shared", Problem::WorldWritable),
            ],
        ),
        (
            "a file in /bin owned by the CGI user",
            |jail| {
                let planted = plant_program(jail, "/usr/bin/mine", 0o755);
                chown(&planted, Some(CGI_UID), Some(0)).expect("chown");
            },
            vec![finding("/usr/bin/mine", Problem::OwnedByCgiUser)],
        ),
        (
            "a symlink owned by the CGI user",
            |jail| {
                let planted = host(jail, "/usr/bin/link");
                symlink("sh", &planted).expect("symlink");
                lchown(&planted, Some(CGI_UID), Some(0)).expect("lchown");
            },
            vec![finding("/usr/bin/link", Problem::OwnedByCgiUser)],
        ),
        (
            "g+w with the CGI user's group",
            |jail| {
                let planted = host(jail, "/etc/group");
                chown(&planted, Some(0), Some(CGI_GID)).expect("chown");
                chmod(&planted, 0o664);
            },
            vec![finding("/etc/group", Problem::WritableByCgiUser)],
        ),
        (
            "a program another local user owns",
            |jail| {
                let planted = plant_program(jail, "/cgi-bin/theirs", 0o755);
                chown(&planted, Some(4321), Some(0)).expect("chown");
            },
            vec![finding(
                "/cgi-bin/theirs",
                Problem::NotRootOwned { uid: 4321 },
            )],
        ),
        (
            "/etc writable by another group",
            |jail| {
                let planted = host(jail, "/etc");
                chown(&planted, Some(0), Some(4321)).expect("chown");
                chmod(&planted, 0o775);
            },
            vec![finding("/etc", Problem::WritableByGroup { gid: 4321 })],
        ),
        (
            "/cgi-bin writable by the CGI user's group",
            |jail| {
                let planted = host(jail, "/cgi-bin");
                chown(&planted, Some(0), Some(CGI_GID)).expect("chown");
                chmod(&planted, 0o775);
            },
            vec![finding("/cgi-bin", Problem::WritableByCgiUser)],
        ),
        (
            "Unix socket",
            |jail| {
                // Kept bound only while planting: the socket file stays.
                UnixListener::bind(host(jail, "/etc/agent.sock")).expect("bind");
            },
            vec![finding("/etc/agent.sock", Problem::Socket)],
        ),
        (
            "Unix socket in /tmp",
            |jail| {
                UnixListener::bind(host(jail, "/tmp/.s")).expect("bind");
            },
            vec![finding("/tmp/.s", Problem::Socket)],
        ),
        (
            "FIFO",
            |jail| {
                nix::unistd::mkfifo(&host(jail, "/etc/fifo"), Mode::from_bits_truncate(0o600))
                    .expect("mkfifo");
            },
            vec![finding("/etc/fifo", Problem::Fifo)],
        ),
        (
            "something in /proc, and a sys symlink",
            |jail| {
                mkdir(jail, "/proc/1", 0o555);
                symlink("/proc", host(jail, "/sys")).expect("symlink");
            },
            vec![
                finding("/proc/1", Problem::ProcOrSys),
                finding("/sys", Problem::ProcOrSys),
            ],
        ),
        (
            "a /proc that its group may write: no mount point of ours",
            |jail| chmod(&host(jail, "/proc"), 0o575),
            vec![finding("/proc", Problem::ProcOrSys)],
        ),
        (
            "a file of an id CGIs run as",
            |jail| {
                let planted = plant_program(jail, "/usr/bin/mine", 0o755);
                nix::unistd::chown(
                    &planted,
                    Some(nix::unistd::Uid::from_raw(0x7000_0005)),
                    None,
                )
                .expect("chown");
            },
            vec![finding("/usr/bin/mine", Problem::OwnedByCgiId)],
        ),
        (
            "proc below the top is just a name",
            |jail| {
                mkdir(jail, "/etc/proc", 0o755);
            },
            vec![],
        ),
        (
            "jail root not owned by root",
            |jail| chown(jail, Some(1000), Some(0)).expect("chown"),
            vec![finding(
                "/",
                Problem::UnsafeJailRoot {
                    uid: 1000,
                    mode: 0o755,
                },
            )],
        ),
        (
            "jail root group-writable",
            |jail| chmod(jail, 0o775),
            vec![finding(
                "/",
                Problem::UnsafeJailRoot {
                    uid: 0,
                    mode: 0o775,
                },
            )],
        ),
        (
            "/tmp without its sticky bit",
            |jail| chmod(&host(jail, "/tmp"), 0o777),
            vec![finding("/tmp", Problem::WorldWritableWithoutSticky)],
        ),
        (
            "what the CGI user writes in /tmp",
            |jail| {
                let file = host(jail, "/tmp/out.txt");
                fs::write(&file, b"data").expect("write");
                chown(&file, Some(CGI_UID), Some(CGI_GID)).expect("chown");
                chmod(&file, 0o666);
                let dir = mkdir(jail, "/tmp/work", 0o777);
                chown(&dir, Some(CGI_UID), Some(CGI_GID)).expect("chown");
            },
            vec![],
        ),
        (
            "a setuid file in /tmp is still one",
            |jail| {
                plant_program(jail, "/tmp/su", 0o4755);
            },
            vec![finding("/tmp/su", Problem::Setuid)],
        ),
        (
            "hard links inside the jail only",
            |jail| {
                fs::write(host(jail, "/etc/a"), b"a").expect("write");
                fs::hard_link(host(jail, "/etc/a"), host(jail, "/etc/b")).expect("link");
            },
            vec![],
        ),
    ];
    for (what, plant, expected) in cases {
        let jail = minimal_jail();
        plant(jail.path());
        assert_eq!(audit_jail(jail.path()), expected, "{what}");
    }
}

#[test]
fn hard_link_to_a_host_file_is_found() {
    let jail = minimal_jail();
    let outside = tempfile::tempdir().expect("tempdir");
    let host_file = outside.path().join("secret");
    fs::write(&host_file, b"host data").expect("write");
    // Both temporary directories are on the same file system (the link would fail if not).
    fs::hard_link(&host_file, host(jail.path(), "/etc/secret")).expect("hard link");
    fs::hard_link(&host_file, host(jail.path(), "/usr/secret2")).expect("hard link");
    assert_eq!(
        audit_jail(jail.path()),
        vec![
            finding("/etc/secret", Problem::HardLinkOutside { links: 3 }),
            finding("/usr/secret2", Problem::HardLinkOutside { links: 3 }),
        ]
    );
}

#[test]
fn every_problem_at_once_is_reported_sorted() {
    let (tmp, _) = default_jail();
    let jail = tmp.path();
    plant_program(jail, "/usr/bin/su", 0o4755);
    device(jail, "/dev/mem", SFlag::S_IFCHR, 1, 1);
    mkdir(jail, "/proc/self", 0o555);
    nix::unistd::mkfifo(
        &host(jail, "/cgi-bin/fifo"),
        Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let findings = audit_jail(jail);
    assert_eq!(
        findings,
        vec![
            finding("/cgi-bin/fifo", Problem::Fifo),
            finding(
                "/dev/mem",
                Problem::DeviceNode {
                    kind: DeviceKind::Char,
                    major: 1,
                    minor: 1
                }
            ),
            finding("/proc/self", Problem::ProcOrSys),
            finding("/usr/bin/su", Problem::Setuid),
        ]
    );
}

#[test]
fn mount_points_are_findings_and_not_descended() {
    let jail = minimal_jail();
    let tmpfs = mkdir(jail.path(), "/mnt", 0o755);
    mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k,mode=0755"),
    )
    .expect("mount tmpfs");
    let _tmpfs = Unmount(tmpfs.clone());
    // Inside the mount: would be a finding if the walk went in.
    fs::write(tmpfs.join("inside"), b"x").expect("write");
    chmod(&tmpfs.join("inside"), 0o4755);

    // A bind mount of the same file system: same device, told by STATX_ATTR_MOUNT_ROOT.
    let bound = mkdir(jail.path(), "/bound", 0o755);
    mount(
        Some(&host(jail.path(), "/etc")),
        &bound,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind mount");
    let _bound = Unmount(bound);

    assert_eq!(
        audit_jail(jail.path()),
        vec![
            finding("/bound", Problem::MountPoint),
            finding("/mnt", Problem::MountPoint),
        ]
    );
}

#[test]
fn jail_symlinks_are_not_followed() {
    let jail = minimal_jail();
    // Followed, these would lead the audit to the host's setuid programs and devices.
    symlink("/usr/bin", host(jail.path(), "/hostbin")).expect("symlink");
    symlink("/dev", host(jail.path(), "/etc/hostdev")).expect("symlink");
    assert_eq!(audit_jail(jail.path()), Vec::new());
}

#[test]
fn writable_places_are_configurable() {
    let jail = minimal_jail();
    let data = mkdir(jail.path(), "/data", 0o1777);
    chown(&data, Some(CGI_UID), Some(CGI_GID)).expect("chown");
    let found = audit_jail(jail.path());
    assert_eq!(
        found,
        vec![
            finding("/data", Problem::WorldWritable),
            finding("/data", Problem::OwnedByCgiUser),
        ]
    );
    let mut opts = AuditOptions::new(jail.path(), nobody());
    opts.writable.push(PathBuf::from("/data"));
    assert_eq!(audit(&opts).expect("audit"), Vec::new());
}

/// The data folder's contents are the CGIs' (mounted nosuid, nodev and noexec): what a CGI
/// leaves there is not a finding, and a tree deeper than the walk goes is no error, so no
/// request can stop the next start. The folder itself is still audited.
#[test]
fn the_data_folders_contents_are_not_walked() {
    let jail = minimal_jail();
    let data = mkdir(jail.path(), "/data", 0o2770);
    plant_program(jail.path(), "/data/su", 0o4755);
    nix::unistd::mkfifo(&data.join("fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut deep = data.clone();
    for _ in 0..=audit::MAX_AUDIT_DEPTH {
        deep.push("d");
        fs::create_dir(&deep).expect("mkdir");
    }
    let mut opts = AuditOptions::new(jail.path(), nobody());
    opts.data = Some(PathBuf::from("/data"));
    assert_eq!(audit(&opts).expect("audit"), Vec::new());

    chmod(&data, 0o777);
    assert_eq!(
        audit(&opts).expect("audit"),
        vec![finding("/data", Problem::WorldWritableWithoutSticky)]
    );
}

#[test]
fn audit_errors_are_not_findings() {
    let missing = AuditOptions::new("/nonexistent/jailfs-audit", nobody());
    assert!(matches!(audit(&missing), Err(AuditError::Io { .. })));
    let file = AuditOptions::new("/etc/passwd", nobody());
    assert!(matches!(
        audit(&file),
        Err(AuditError::NotADirectory { .. })
    ));
    // No /cgi-bin: no jail, however clean (`/etc` would otherwise pass).
    let bare = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        audit(&AuditOptions::new(bare.path(), nobody())),
        Err(AuditError::NotAJail { .. })
    ));
    assert!(matches!(
        audit(&AuditOptions::new("/", nobody())),
        Err(AuditError::NotAJail { .. })
    ));
    // A /cgi-bin that is a symlink, even to a folder of the jail: no CGI would ever run (the
    // worker runs only what lies in the CGI folder itself), so the jail is refused whole.
    let linked = minimal_jail();
    fs::rename(linked.path().join("cgi-bin"), linked.path().join("srv")).expect("move");
    std::os::unix::fs::symlink("srv", linked.path().join("cgi-bin")).expect("symlink");
    let refused = audit(&AuditOptions::new(linked.path(), nobody())).expect_err("refused");
    assert!(
        matches!(&refused, AuditError::NotAJail { why, .. } if why.contains("is a symlink")),
        "{refused}"
    );
    let jail = minimal_jail();
    for bad in ["tmp", "/", "/tmp/../etc"] {
        let mut opts = AuditOptions::new(jail.path(), nobody());
        opts.writable = vec![PathBuf::from(bad)];
        assert!(
            matches!(audit(&opts), Err(AuditError::InvalidWritable { .. })),
            "{bad}"
        );
    }
}

#[test]
fn findings_print_as_one_line_each() {
    let su = finding("/bin/su", Problem::Setuid);
    assert_eq!(
        su.to_string(),
        "/bin/su: setuid file (the classic way back to root)"
    );
    let forged = finding("/tmp/x\n/bin/ok: fine\\", Problem::Fifo);
    let shown = forged.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    assert!(
        shown.starts_with("/tmp/x\\x0a/bin/ok: fine\\\\: FIFO"),
        "{shown}"
    );
    let bytes = Finding {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(b"/caf\xc3\xa9/\xff")),
        problem: Problem::Socket,
    };
    assert!(bytes.to_string().starts_with("/café/\\xff: "));
}

/// A jail in a folder that someone other than root may write (its owner, or anyone where it is
/// writable without the sticky bit) can be swapped for another tree after the audit; a folder
/// like `/tmp` (root's, sticky) cannot have root's jail taken out of it.
#[test]
fn a_jail_in_a_folder_others_may_write_is_found() {
    let holder = tempfile::tempdir().expect("tempdir");
    let jail = holder.path().join("jail");
    init(&profile_options(&jail, Profile::Minimal, &[])).expect("init");
    chmod(holder.path(), 0o755);
    assert_eq!(audit_jail(&jail), vec![]);
    let unsafe_parent = |uid, mode| {
        let folder = holder.path().to_path_buf();
        vec![finding(
            "/",
            Problem::UnsafeJailParent { folder, uid, mode },
        )]
    };
    chown(holder.path(), Some(1000), None).expect("chown");
    assert_eq!(audit_jail(&jail), unsafe_parent(1000, 0o755));
    chown(holder.path(), Some(0), None).expect("chown");
    chmod(holder.path(), 0o777);
    assert_eq!(audit_jail(&jail), unsafe_parent(0, 0o777));
    chmod(holder.path(), 0o1777);
    assert_eq!(audit_jail(&jail), vec![]);
}
