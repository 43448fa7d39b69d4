//! `jail init` on the real host, as root: the tree is checked from outside and then used
//! from inside (chroot).

use super::*;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Component;
use std::process::{Command, Output};

use tempfile::TempDir;

pub(super) fn nobody() -> CgiUser {
    CgiUser {
        name: "nobody".into(),
        uid: 65534,
        gid: 65534,
        group_name: "nogroup".into(),
    }
}

/// `profile` plus `programs` (--with) at `dir`, for [`nobody`].
pub(super) fn profile_options(dir: &Path, profile: Profile, programs: &[&str]) -> InitOptions {
    InitOptions {
        profile,
        programs: programs.iter().map(|p| p.to_string()).collect(),
        ..InitOptions::new(dir, nobody())
    }
}

/// The classic profile plus `programs` (--with) at `dir`.
fn options(dir: &Path, programs: &[&str]) -> InitOptions {
    profile_options(dir, Profile::Classic, programs)
}

/// The minimal profile (sh only) plus `programs` (--with) at `dir`.
fn minimal(dir: &Path, programs: &[&str]) -> InitOptions {
    profile_options(dir, Profile::Minimal, programs)
}

/// A jail with the default program set in a fresh temporary directory.
pub(super) fn default_jail() -> (TempDir, InitReport) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = init(&options(tmp.path(), &[])).expect("init");
    (tmp, report)
}

/// Resolve absolute `path` as the kernel would after `chroot(jail)`: symlinks are followed
/// inside the jail, absolute targets from the jail's root. `None` if it does not resolve.
pub(super) fn resolve_in_jail(jail: &Path, path: &Path) -> Option<PathBuf> {
    fn steps_reversed(path: &Path) -> Vec<OsString> {
        path.components()
            .rev()
            .filter_map(|component| match component {
                Component::Normal(name) => Some(name.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    }
    let mut pending = steps_reversed(path);
    let mut current = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let on_host = jail.join(next.strip_prefix("/").ok()?);
        if fs::symlink_metadata(&on_host)
            .ok()?
            .file_type()
            .is_symlink()
        {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(&on_host).ok()?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            pending.extend(steps_reversed(&target));
        } else {
            current = next;
        }
    }
    Some(jail.join(current.strip_prefix("/").ok()?))
}

/// Run `program` with `args` chrooted into `jail`, with a minimal environment.
pub(super) fn run_in_jail(jail: &Path, program: &str, args: &[&str]) -> Output {
    let root = CString::new(jail.as_os_str().as_bytes()).expect("no NUL in path");
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/");
    let enter_jail = move || {
        // SAFETY: `root` is a valid NUL-terminated string that lives as long as the
        // closure; chroot(2) only reads it.
        if unsafe { libc::chroot(root.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a static NUL-terminated string; chdir(2) only reads it.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and makes only two
    // async-signal-safe system calls on memory prepared before the fork; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(enter_jail);
    }
    command.output().expect("run in jail")
}

/// Every entry under `dir`: (relative path, metadata), not following symlinks.
pub(super) fn walk(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((
                path.strip_prefix(dir).expect("under dir").to_path_buf(),
                meta,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A comparable snapshot of the tree: path, type, mode, owner, size, symlink target.
pub(super) fn snapshot(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .map(|(path, meta)| {
            let target = fs::read_link(dir.join(&path)).unwrap_or_default();
            let size = if meta.is_dir() { 0 } else { meta.size() };
            format!(
                "{} {:o} {}:{} {} {} {}",
                path.display(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                size,
                meta.rdev(),
                target.display()
            )
        })
        .collect()
}

#[test]
fn shell_pipeline_runs_in_the_chroot() {
    let (tmp, _) = default_jail();
    let output = run_in_jail(
        tmp.path(),
        "/bin/sh",
        &[
            "-c",
            r#"echo ok | tr a-z A-Z; awk "BEGIN{print 1+1}"; zcat --help >/dev/null && echo z"#,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "stderr of the jailed shell"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\n2\nz\n");
    assert!(output.status.success(), "{:?}", output.status);
}

#[test]
fn the_loader_finds_libraries_through_the_jails_cache() {
    let (tmp, _) = default_jail();
    let conf = fs::read_to_string(tmp.path().join("etc/ld.so.conf")).expect("ld.so.conf");
    let libc = every_library_path(tmp.path())
        .into_iter()
        .find(|path| path.contains("libc.so"))
        .expect("libc in the jail");
    let libc_folder = Path::new(&libc).parent().expect("folder");
    assert!(
        conf.lines().any(|line| Path::new(line) == libc_folder),
        "{libc_folder:?} in {conf:?}"
    );
    let cache = fs::read(tmp.path().join("etc/ld.so.cache")).expect("ld.so.cache");
    let needle = libc.rsplit('/').next().expect("name").as_bytes();
    assert!(
        cache.windows(needle.len()).any(|window| window == needle),
        "the cache names {libc}"
    );
}

/// Jail paths of the shared libraries copied into `jail`.
fn every_library_path(jail: &Path) -> Vec<String> {
    walk(jail)
        .into_iter()
        .filter(|(path, meta)| meta.is_file() && path.to_string_lossy().contains(".so"))
        .map(|(path, _)| format!("/{}", path.strip_prefix(jail).unwrap_or(&path).display()))
        .collect()
}

#[test]
fn merged_usr_layout_is_reproduced() {
    let (tmp, report) = default_jail();
    let jail = tmp.path();
    for link in [
        "bin",
        "lib",
        "lib64",
        "usr/bin/sh",
        "usr/bin/awk",
        "etc/alternatives/awk",
    ] {
        let host = Path::new("/").join(link);
        if let Ok(target) = fs::read_link(&host) {
            assert_eq!(
                fs::read_link(jail.join(link)).expect(link),
                target,
                "{link} must be the host's symlink"
            );
        }
    }
    let sh = resolve_in_jail(jail, Path::new("/bin/sh")).expect("/bin/sh resolves in the jail");
    assert!(sh.starts_with(jail) && sh.is_file(), "{}", sh.display());
    assert!(report.programs.contains(&PathBuf::from("/usr/bin/sh")));
    assert_eq!(report.programs.len(), DEFAULT_PROGRAMS.len());

    // The loader (PT_INTERP of sh) and libc, where the kernel and ld.so will look.
    let tree = lddtree::DependencyAnalyzer::new("/".into())
        .analyze(fs::canonicalize("/bin/sh").expect("host sh"))
        .expect("lddtree");
    let interpreter = tree.interpreter.expect("sh is dynamically linked");
    let loader = resolve_in_jail(jail, Path::new(&interpreter)).expect("loader in the jail");
    assert!(loader.is_file());
    let libc = &tree.libraries["libc.so.6"];
    assert!(resolve_in_jail(jail, &libc.path).is_some_and(|p| p.is_file()));
}

#[test]
fn every_library_lddtree_lists_is_in_the_jail() {
    let (tmp, _) = default_jail();
    for name in DEFAULT_PROGRAMS {
        let program = locate_program(name).expect("located");
        let real = fs::canonicalize(&program).expect("realpath");
        let Ok(tree) = lddtree::DependencyAnalyzer::new("/".into()).analyze(&real) else {
            // Not ELF: a #! script; its interpreter is checked below.
            let head = fs::read(&real).expect("read script");
            assert!(head.starts_with(b"#!"), "{name} is neither ELF nor script");
            continue;
        };
        for library in tree.libraries.values() {
            let in_jail = resolve_in_jail(tmp.path(), &library.path)
                .unwrap_or_else(|| panic!("{name}: {} missing", library.path.display()));
            let host_size = fs::metadata(&library.path).expect("host lib").len();
            assert_eq!(fs::metadata(&in_jail).expect("jail lib").len(), host_size);
        }
    }
    for script in ["egrep", "fgrep", "zcat", "gunzip"] {
        let program = locate_program(script).expect("located");
        let jailed = resolve_in_jail(tmp.path(), &program).expect("script in the jail");
        assert_eq!(
            fs::read(jailed).expect("jail"),
            fs::read(&program).expect("host")
        );
    }
}

#[test]
fn fixed_entries_have_the_right_modes() {
    let (tmp, _) = default_jail();
    let jail = tmp.path();
    let tmp_meta = fs::symlink_metadata(jail.join("tmp")).expect("/tmp");
    assert!(tmp_meta.is_dir());
    assert_eq!(tmp_meta.mode() & 0o7777, 0o1777);

    for (name, minor) in [("null", 3), ("zero", 5), ("urandom", 9)] {
        let meta = fs::symlink_metadata(jail.join("dev").join(name)).expect(name);
        assert!(meta.file_type().is_char_device(), "{name}");
        assert_eq!(meta.rdev(), libc::makedev(1, minor), "{name}");
        assert_eq!(meta.mode() & 0o7777, 0o666, "{name}");
    }
    let dev_entries = fs::read_dir(jail.join("dev")).expect("/dev").count();
    assert_eq!(dev_entries, 3);

    let passwd = fs::read_to_string(jail.join("etc/passwd")).expect("passwd");
    assert_eq!(
        passwd,
        "nobody:x:65534:65534:CGI user:/nonexistent:/bin/false\n"
    );
    assert_eq!(passwd.lines().count(), 1);
    let group = fs::read_to_string(jail.join("etc/group")).expect("group");
    assert_eq!(group, "nogroup:x:65534:\n");

    let localtime = fs::symlink_metadata(jail.join("etc/localtime"));
    match fs::read("/etc/localtime") {
        Ok(host) => {
            let meta = localtime.expect("localtime copied");
            assert!(meta.is_file(), "a regular file, not a symlink");
            assert_eq!(meta.mode() & 0o7777, 0o644);
            assert_eq!(fs::read(jail.join("etc/localtime")).expect("read"), host);
        }
        Err(_) => assert!(localtime.is_err()),
    }

    let cgi_bin = fs::symlink_metadata(jail.join("cgi-bin")).expect("/cgi-bin");
    assert!(cgi_bin.is_dir());
    assert_eq!(cgi_bin.mode() & 0o7777, 0o755);
    let root = fs::metadata(jail).expect("root");
    assert_eq!(root.mode() & 0o7777, 0o755, "tempdir's 0700 is fixed");
}

#[test]
fn everything_is_root_owned_and_only_tmp_is_writable() {
    let (tmp, _) = default_jail();
    for (path, meta) in walk(tmp.path()) {
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
        let mode = meta.mode() & 0o7777;
        assert_eq!(mode & 0o6000, 0, "setuid/setgid: {}", path.display());
        let writable_by_others = mode & 0o022 != 0;
        let allowed = meta.file_type().is_symlink()
            || meta.file_type().is_char_device()
            || path == Path::new("tmp");
        assert!(
            !writable_by_others || allowed,
            "{} is {mode:o}",
            path.display()
        );
    }
}

#[test]
fn reinit_is_idempotent_and_keeps_cgi_bin() {
    let (tmp, first) = default_jail();
    let jail = tmp.path();
    fs::write(jail.join("cgi-bin/hello"), b"#!/bin/sh\necho hi\n").expect("script");
    let before = snapshot(jail);
    let second = init(&options(jail, &[])).expect("second init");
    assert_eq!(first, second);
    assert_eq!(snapshot(jail), before);
    assert!(jail.join("cgi-bin/hello").is_file());
}

#[test]
fn setuid_and_setgid_files_are_refused() {
    let host = tempfile::tempdir().expect("tempdir");
    for (name, mode) in [("suid-true", 0o4755), ("sgid-true", 0o2755)] {
        let program = host.path().join(name);
        fs::copy("/usr/bin/true", &program).expect("copy");
        fs::set_permissions(&program, fs::Permissions::from_mode(mode)).expect("chmod");
        let jail = tempfile::tempdir().expect("tempdir");
        let err = init(&minimal(jail.path(), &[program.to_str().expect("utf-8")]))
            .expect_err("setuid must be refused");
        match &err {
            JailInitError::SetuidRefused { path } => assert_eq!(path, &program),
            other => panic!("wrong error: {other}"),
        }
        assert!(err.to_string().contains(name));
        assert!(
            resolve_in_jail(jail.path(), &program).is_none(),
            "nothing was copied"
        );
    }
}

#[test]
fn unknown_and_invalid_programs_are_named() {
    let jail = tempfile::tempdir().expect("tempdir");
    let err = init(&minimal(jail.path(), &["no-such-program-jailfs"])).expect_err("unknown");
    assert!(
        matches!(&err, JailInitError::ProgramNotFound { name } if name == "no-such-program-jailfs")
    );
    assert!(err.to_string().contains("no-such-program-jailfs"));
    let err = init(&minimal(jail.path(), &["/no/such/program"])).expect_err("unknown path");
    assert!(matches!(&err, JailInitError::ProgramNotFound { name } if name == "/no/such/program"));
    let err = init(&minimal(jail.path(), &["bin/sh"])).expect_err("relative path");
    assert!(matches!(err, JailInitError::InvalidProgramName { .. }));
    // Phase 1 failed: DIR was not even populated.
    assert_eq!(fs::read_dir(jail.path()).expect("dir").count(), 0);
}

#[test]
fn script_interpreter_is_installed() {
    let host = tempfile::tempdir().expect("tempdir");
    let script = host.path().join("hello");
    fs::write(&script, b"#!/bin/sh\necho \"hello $1\"\n").expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let jail = tempfile::tempdir().expect("tempdir");
    let script_name = script.to_str().expect("utf-8");
    let report = init(&minimal(jail.path(), &[script_name])).expect("init");
    assert_eq!(
        report.programs,
        vec![PathBuf::from("/usr/bin/sh"), script.clone()]
    );
    // The script, /bin/sh (through /bin -> usr/bin and sh -> dash) and its libraries.
    assert!(resolve_in_jail(jail.path(), Path::new("/bin/sh")).is_some_and(|p| p.is_file()));
    let output = run_in_jail(jail.path(), script_name, &["jail"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello jail\n");
    assert!(output.status.success());
}

#[test]
fn jail_symlinks_are_never_followed() {
    // An attacker-made (or stale) jail symlink pointing at a host directory must not be
    // written through.
    let victim = tempfile::tempdir().expect("tempdir");
    let jail = tempfile::tempdir().expect("tempdir");
    // A jail (it has its /cgi-bin), so that init refreshes it rather than refuse the folder.
    fs::create_dir(jail.path().join("cgi-bin")).expect("cgi-bin");
    std::os::unix::fs::symlink(victim.path(), jail.path().join("usr")).expect("symlink");
    let err = init(&minimal(jail.path(), &["true"])).expect_err("conflict");
    assert!(matches!(err, JailInitError::Conflict { .. }), "{err}");
    assert_eq!(fs::read_dir(victim.path()).expect("victim").count(), 0);

    // A stale file symlink is replaced, not written through.
    let jail = tempfile::tempdir().expect("tempdir");
    init(&minimal(jail.path(), &["true"])).expect("init");
    let victim_file = victim.path().join("passwd");
    fs::write(&victim_file, b"untouched").expect("victim file");
    let passwd = jail.path().join("etc/passwd");
    fs::remove_file(&passwd).expect("rm");
    std::os::unix::fs::symlink(&victim_file, &passwd).expect("symlink");
    init(&minimal(jail.path(), &["true"])).expect("re-init");
    assert_eq!(fs::read(&victim_file).expect("victim"), b"untouched");
    assert!(fs::symlink_metadata(&passwd).expect("passwd").is_file());
}

/// Every entry under `dir` (the folder itself first) with its mode, in order.
fn listing(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = vec![(dir.to_path_buf(), mode_of(dir))];
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if fs::symlink_metadata(&path).expect("lstat").is_dir() {
            found.extend(listing(&path));
        } else {
            found.push((path.clone(), mode_of(&path)));
        }
    }
    found
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("lstat").mode()
}

/// `jail init` into a folder that holds something but is no jail (a mistyped `/etc` or `/tmp`)
/// changes nothing in it: before this check it wrote the jail's `/etc/passwd` over the
/// folder's own, filled it with `bin`, `dev`, `usr`..., and set its mode to 0755.
#[test]
fn a_folder_neither_empty_nor_a_jail_is_refused_and_left_as_it_was() {
    let folder = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(folder.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::create_dir(folder.path().join("etc")).expect("etc");
    fs::write(
        folder.path().join("etc/passwd"),
        b"root:x:0:0::/root:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(folder.path().join("notes"), b"mine").expect("notes");
    let before = listing(folder.path());
    let err = init(&minimal(folder.path(), &["true"])).expect_err("refused");
    assert!(matches!(err, JailInitError::NotAJail { .. }), "{err}");
    assert!(
        err.to_string().contains("neither empty nor a jail"),
        "{err}"
    );
    assert_eq!(listing(folder.path()), before);
    assert_eq!(
        fs::read(folder.path().join("etc/passwd")).expect("passwd"),
        b"root:x:0:0::/root:/bin/sh\n"
    );
}

/// The host's root is refused whatever it holds. Only the check is called here, never `init`
/// itself: were the check broken, `init` would write over this machine's own `/etc`.
#[test]
fn the_hosts_root_is_refused() {
    let links = tempfile::tempdir().expect("tempdir");
    let link = links.path().join("root");
    std::os::unix::fs::symlink("/", &link).expect("symlink");
    for root in [Path::new("/"), Path::new("/."), Path::new("/usr/.."), &link] {
        let err = Target::open(root).err().expect("refused");
        assert!(
            matches!(err, JailInitError::NotAJail { .. }),
            "{root:?}: {err}"
        );
    }
}

/// A folder that does not exist yet, an empty one and a jail to refresh are all accepted.
#[test]
fn new_empty_and_jail_folders_are_accepted() {
    let parent = tempfile::tempdir().expect("tempdir");
    let new = Target::open(&parent.path().join("new")).expect("a new folder");
    assert!(new.created && parent.path().join("new").is_dir());
    fs::remove_dir(parent.path().join("new")).expect("rmdir new");
    Target::open(parent.path()).expect("an empty folder");
    fs::create_dir(parent.path().join("cgi-bin")).expect("cgi-bin");
    fs::write(parent.path().join("cgi-bin/hello"), b"#!/bin/sh\n").expect("script");
    Target::open(parent.path()).expect("a jail");
}

/// A failed init leaves nothing: neither the folder it made for the jail nor the folders above
/// it that it made (a program that is nowhere fails after those are made).
#[test]
fn a_failed_init_leaves_nothing_behind() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("a/b/jail");
    let err = init(&minimal(&dir, &["no-such-program-anywhere"])).expect_err("refused");
    assert!(
        err.to_string().contains("no-such-program-anywhere"),
        "{err}"
    );
    assert_eq!(fs::read_dir(parent.path()).expect("read_dir").count(), 0);
}

/// What another local user could swap for a link to the host's root while the jail is built
/// (root would then write the jail over the host): a folder above that is not root's, a link
/// in the jail's place, a folder someone else made there. Each is refused, and nothing is
/// made or changed.
#[test]
fn a_place_another_user_controls_is_refused() {
    let parent = tempfile::tempdir().expect("tempdir");
    let theirs = parent.path().join("theirs");
    fs::create_dir(&theirs).expect("mkdir");
    std::os::unix::fs::chown(&theirs, Some(4321), Some(4321)).expect("chown");
    let err = Target::open(&theirs.join("jail")).err().expect("refused");
    assert!(err.to_string().contains("is not root's"), "{err}");
    assert!(!theirs.join("jail").exists());

    let link = parent.path().join("link");
    let elsewhere = parent.path().join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    // Root's own link is followed; another user's is not.
    Target::open(&link).expect("root's link to an empty folder");
    std::os::unix::fs::lchown(&link, Some(4321), Some(4321)).expect("lchown");
    let err = Target::open(&link).err().expect("refused");
    assert!(
        err.to_string().contains("symbolic link uid 4321 made"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&elsewhere).expect("read_dir").count(), 0);

    std::os::unix::fs::chown(&elsewhere, Some(4321), Some(4321)).expect("chown");
    let err = Target::open(&elsewhere).err().expect("refused");
    assert!(err.to_string().contains("uid 4321"), "{err}");
}

#[test]
fn root_cgi_user_is_refused() {
    let jail = tempfile::tempdir().expect("tempdir");
    let mut opts = minimal(jail.path(), &["true"]);
    opts.user.uid = 0;
    assert!(matches!(init(&opts), Err(JailInitError::RootUser { .. })));
    let mut opts = minimal(jail.path(), &["true"]);
    opts.user.name = "evil:0:0::/:/bin/sh\nx".into();
    assert!(matches!(
        init(&opts),
        Err(JailInitError::InvalidUser { .. })
    ));
}
