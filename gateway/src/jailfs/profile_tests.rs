//! Profiles, `--with` on top of them, and `--add`, built for real and used in a chroot.

use super::tests::{profile_options, resolve_in_jail, run_in_jail, snapshot, walk};
use super::*;

use std::collections::BTreeSet;
use std::os::unix::fs::{chown, symlink, MetadataExt};
use std::process::Command;

fn build(profile: Profile, programs: &[&str], adds: &[&str]) -> (tempfile::TempDir, InitReport) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut opts = profile_options(tmp.path(), profile, programs);
    opts.adds = adds
        .iter()
        .map(|spec| spec.parse().expect("add spec"))
        .collect();
    let report = init(&opts).expect("init");
    (tmp, report)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// stdout of a successful run, stderr empty.
fn stdout_of(jail: &Path, program: &str, args: &[&str]) -> String {
    let output = run_in_jail(jail, program, args);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "stderr");
    assert!(output.status.success(), "{:?}", output.status);
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Every host path the host's `/bin/sh` needs, canonical: itself, loader, libraries.
fn host_sh_closure() -> BTreeSet<PathBuf> {
    let mut needed = Vec::new();
    elf::collect(Path::new("/usr/bin/sh"), &mut needed, &[]).expect("collect");
    needed
        .iter()
        .map(|path| fs::canonicalize(path).expect("canonical"))
        .collect()
}

#[test]
fn busybox_jail_has_no_loader_and_no_library() {
    let (tmp, report) = build(Profile::Busybox, &[], &[]);
    let jail = tmp.path();
    assert_eq!(
        report.files_copied,
        1 + usize::from(fs::metadata("/etc/localtime").is_ok())
    );
    assert_eq!(report.programs.len(), BUSYBOX_APPLETS.len());
    for (path, _) in walk(jail) {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(!name.starts_with("ld-linux"), "{}", path.display());
        assert!(!name.contains(".so"), "{}", path.display());
    }
    let bin = fs::symlink_metadata(jail.join("bin")).expect("/bin");
    assert!(bin.is_dir(), "/bin is a real directory");
    let busybox = fs::symlink_metadata(jail.join("bin/busybox")).expect("busybox");
    assert!(busybox.is_file());
    assert_eq!((busybox.uid(), busybox.mode() & 0o7777), (0, 0o755));
    for applet in BUSYBOX_APPLETS {
        let link = jail.join("bin").join(applet);
        assert_eq!(fs::read_link(&link).expect(applet), Path::new("busybox"));
    }
    assert_eq!(
        fs::read_link(jail.join("usr/bin/env")).expect("env"),
        Path::new("/bin/busybox")
    );
    for merged in ["lib", "lib64", "sbin"] {
        assert!(fs::symlink_metadata(jail.join(merged)).is_err(), "{merged}");
    }
}

#[test]
fn busybox_shell_runs_a_pipeline_in_the_chroot() {
    let (tmp, _) = build(Profile::Busybox, &[], &[]);
    let jail = tmp.path();
    let out = stdout_of(jail, "/bin/sh", &["-c", "echo a | tr a b; ls /; id -u"]);
    assert_eq!(out, "b\nbin\ncgi-bin\ndev\netc\nproc\ntmp\nusr\n0\n");

    // The classic applets work, and `#!/usr/bin/env sh` finds the shell.
    let script = jail.join("cgi-bin/env.sh");
    fs::write(
        &script,
        "#!/usr/bin/env sh\necho 3 1 2 | tr ' ' '\\n' | sort | head -n 1 | sed s/1/one/\n\
         printf 'x\\n' | gzip | zcat | wc -l\nexpr 2 + 3\n[ -d / ] && test -e /bin/sh && echo ok\n",
    )
    .expect("script");
    chmod(&script, 0o755);
    let out = stdout_of(jail, "/cgi-bin/env.sh", &[]);
    assert_eq!(out, "one\n1\n5\nok\n");
}

#[test]
fn busybox_applet_list_matches_debian_busybox_static() {
    // The test may ask busybox; init never does.
    let output = Command::new(BUSYBOX_HOST_PATH)
        .arg("--list")
        .output()
        .expect("busybox --list (apt-get install busybox-static)");
    let list = String::from_utf8(output.stdout).expect("utf-8");
    let applets: BTreeSet<&str> = list.lines().collect();
    for applet in BUSYBOX_APPLETS {
        assert!(applets.contains(applet), "busybox has no {applet}");
    }
    assert!(elf::is_static_elf(Path::new(BUSYBOX_HOST_PATH)).expect("read"));
    assert!(!elf::is_static_elf(Path::new("/usr/bin/true")).expect("read"));
    assert!(!elf::is_static_elf(Path::new("/etc/passwd")).expect("read"));
}

#[test]
fn busybox_with_host_programs() {
    let host = tempfile::tempdir().expect("tempdir");
    let script = host.path().join("hello");
    fs::write(&script, "#!/bin/sh\necho \"hello $1\" | tr a-z A-Z\n").expect("script");
    chmod(&script, 0o755);
    let script_name = script.to_str().expect("utf-8");
    let (tmp, report) = build(Profile::Busybox, &["/bin/gzip", script_name], &[]);
    let jail = tmp.path();
    // /bin/gzip is provided by busybox: not copied from the host. The script's /bin/sh
    // is busybox's: no dash, and nothing else from the host but the script.
    assert_eq!(report.programs.len(), BUSYBOX_APPLETS.len() + 1);
    assert!(report.programs.contains(&script));
    assert_eq!(
        report.files_copied,
        2 + usize::from(fs::metadata("/etc/localtime").is_ok())
    );
    assert_eq!(stdout_of(jail, script_name, &["jail"]), "HELLO JAIL\n");

    // A dynamically linked host program brings its loader and libraries; named through
    // the host's /bin symlink, it lands in /usr/bin with a /bin link to it.
    let (tmp, _) = build(Profile::Busybox, &["/bin/sha1sum", "base32"], &[]);
    let jail = tmp.path();
    assert!(fs::symlink_metadata(jail.join("bin"))
        .expect("bin")
        .is_dir());
    assert_eq!(
        fs::read_link(jail.join("bin/sha1sum")).expect("link"),
        Path::new("/usr/bin/sha1sum")
    );
    let out = stdout_of(
        jail,
        "/bin/sh",
        &["-c", "echo -n a | sha1sum; echo a | base32"],
    );
    assert_eq!(
        out,
        "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8  -\nMEFA====\n"
    );
}

#[test]
fn minimal_jail_has_only_sh() {
    let (tmp, report) = build(Profile::Minimal, &[], &[]);
    let jail = tmp.path();
    assert_eq!(report.programs, vec![PathBuf::from("/usr/bin/sh")]);
    let closure = host_sh_closure();
    let mut copied = BTreeSet::new();
    for (path, meta) in walk(jail) {
        if meta.is_file() && !path.starts_with("etc") {
            let host = fs::canonicalize(Path::new("/").join(&path)).expect("on the host");
            assert!(closure.contains(&host), "unexpected {}", path.display());
            copied.insert(host);
        }
    }
    assert_eq!(copied, closure, "sh, its loader and its libraries");
    assert!(resolve_in_jail(jail, Path::new("/usr/bin/tr")).is_none());
    // The merged-/usr links, as for every profile built from host programs.
    assert_eq!(
        fs::read_link(jail.join("bin")).ok(),
        fs::read_link("/bin").ok()
    );
    let out = stdout_of(
        jail,
        "/bin/sh",
        &["-c", "echo ok | while read x; do echo \"$x$x\"; done"],
    );
    assert_eq!(out, "okok\n");
}

#[test]
fn with_adds_to_the_profile() {
    let (tmp, report) = build(Profile::Minimal, &["tr", "sh"], &[]);
    assert_eq!(
        report.programs,
        vec![PathBuf::from("/usr/bin/sh"), PathBuf::from("/usr/bin/tr")]
    );
    let out = stdout_of(tmp.path(), "/bin/sh", &["-c", "echo abc | tr a-c A-C"]);
    assert_eq!(out, "ABC\n");

    let (_tmp, report) = build(Profile::Classic, &["env", "tr"], &[]);
    assert_eq!(report.programs.len(), DEFAULT_PROGRAMS.len() + 1);
    assert_eq!(report.programs.last(), Some(&PathBuf::from("/usr/bin/env")));
}

#[test]
fn add_copies_a_tree_with_symlinks_and_elf_libraries() {
    let host = tempfile::tempdir().expect("tempdir");
    let app = host.path().join("app");
    for dir in ["bin", "share/private"] {
        fs::create_dir_all(app.join(dir)).expect("mkdir");
    }
    // `ls` needs libraries `sh` does not (libselinux): the add must bring them.
    fs::copy("/usr/bin/ls", app.join("bin/myls")).expect("copy ls");
    chmod(&app.join("bin/myls"), 0o750);
    fs::write(app.join("share/data.txt"), b"data\n").expect("data");
    chmod(&app.join("share/data.txt"), 0o664);
    chmod(&app.join("share/private"), 0o700);
    chown(app.join("share/data.txt"), Some(12345), Some(12345)).expect("chown");
    symlink("bin/myls", app.join("list")).expect("relative symlink");
    symlink("/etc/passwd", app.join("share/passwd")).expect("absolute symlink");
    let conf = host.path().join("tool.conf");
    fs::write(&conf, b"key=value\n").expect("conf");

    let app_spec = format!("{}:/opt/app", app.display());
    let conf_spec = format!("{}:/etc/tool/tool.conf", conf.display());
    // A file to /bin on a merged-/usr jail lands in /usr/bin, through the jail's link.
    let tool_spec = format!("{}:/bin/mytool", app.join("bin/myls").display());
    let (tmp, _) = build(Profile::Minimal, &[], &[&app_spec, &conf_spec, &tool_spec]);
    let jail = tmp.path();

    let meta = |path: &str| fs::symlink_metadata(jail.join(path)).expect(path);
    let myls = meta("opt/app/bin/myls");
    assert!(myls.is_file());
    assert_eq!(
        (myls.uid(), myls.gid(), myls.mode() & 0o7777),
        (0, 0, 0o750)
    );
    let data = meta("opt/app/share/data.txt");
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (0, 0, 0o644)
    );
    for dir in ["opt", "opt/app", "opt/app/share", "opt/app/share/private"] {
        let dir_meta = meta(dir);
        assert!(dir_meta.is_dir(), "{dir}");
        assert_eq!(
            (dir_meta.uid(), dir_meta.mode() & 0o7777),
            (0, 0o755),
            "{dir}"
        );
    }
    assert_eq!(
        fs::read_link(jail.join("opt/app/list")).expect("link"),
        Path::new("bin/myls")
    );
    assert_eq!(
        fs::read_link(jail.join("opt/app/share/passwd")).expect("link"),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read(jail.join("etc/tool/tool.conf")).expect("conf"),
        b"key=value\n"
    );
    assert!(meta("bin").file_type().is_symlink(), "/bin is still a link");
    assert!(meta("usr/bin/mytool").is_file());

    let out = stdout_of(jail, "/opt/app/list", &["/opt/app/share"]);
    assert_eq!(out, "data.txt\npasswd\nprivate\n");
    let out = stdout_of(jail, "/bin/mytool", &["-d", "/etc/tool"]);
    assert_eq!(out, "/etc/tool\n");
    assert_eq!(
        audit(&AuditOptions::new(jail, super::tests::nobody())).expect("audit"),
        vec![]
    );
}

#[test]
fn add_refuses_setuid_files_and_special_files() {
    let host = tempfile::tempdir().expect("tempdir");
    let tree = host.path().join("tree");
    fs::create_dir(&tree).expect("mkdir");
    fs::write(tree.join("ok"), b"fine").expect("write");
    let suid = tree.join("zz-su");
    fs::copy("/usr/bin/true", &suid).expect("copy");
    chmod(&suid, 0o4755);

    let jail = tempfile::tempdir().expect("tempdir");
    let mut opts = profile_options(jail.path(), Profile::Minimal, &[]);
    opts.adds = vec![format!("{}:/opt/tree", tree.display())
        .parse()
        .expect("spec")];
    let err = init(&opts).expect_err("setuid in the tree");
    assert!(
        matches!(&err, JailInitError::SetuidRefused { path } if *path == suid),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(jail.path()).expect("jail").count(),
        0,
        "refused before anything was written"
    );
    // A setuid file named directly, too.
    opts.adds = vec![format!("{}:/bin/su", suid.display()).parse().expect("spec")];
    assert!(matches!(
        init(&opts),
        Err(JailInitError::SetuidRefused { .. })
    ));

    fs::remove_file(&suid).expect("rm");
    nix::unistd::mkfifo(
        &tree.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    opts.adds = vec![format!("{}:/opt/tree", tree.display())
        .parse()
        .expect("spec")];
    assert!(matches!(
        init(&opts),
        Err(JailInitError::UnsupportedFileType { path }) if path == tree.join("fifo")
    ));

    // A value built without parsing is checked all the same.
    opts.adds = vec![AddSpec {
        host: tree.join("ok"),
        jail: PathBuf::from("/tmp/ok"),
    }];
    assert!(matches!(init(&opts), Err(JailInitError::InvalidAdd(_))));
}

#[test]
fn init_makes_no_std_device_links() {
    let (tmp, _) = build(Profile::Minimal, &[], &[]);
    for (name, target) in STD_DEVICE_LINKS {
        assert!(target.starts_with("/proc/self/fd"));
        assert!(fs::symlink_metadata(tmp.path().join("dev").join(name)).is_err());
    }
}

#[test]
fn busybox_reinit_is_idempotent_and_profiles_do_not_mix() {
    let (tmp, first) = build(Profile::Busybox, &[], &[]);
    let jail = tmp.path();
    let before = snapshot(jail);
    let again = init(&profile_options(jail, Profile::Busybox, &[])).expect("re-init");
    assert_eq!(again, first);
    assert_eq!(snapshot(jail), before);

    // A classic init over a busybox jail (real /bin) and the reverse (/bin -> usr/bin)
    // stop at /bin rather than delete anything.
    let err =
        init(&profile_options(jail, Profile::Minimal, &[])).expect_err("classic over busybox");
    assert!(matches!(err, JailInitError::Conflict { .. }), "{err}");
    let (tmp, _) = build(Profile::Minimal, &[], &[]);
    let err = init(&profile_options(tmp.path(), Profile::Busybox, &[]))
        .expect_err("busybox over classic");
    assert!(
        matches!(&err, JailInitError::Conflict { path, .. } if path.ends_with("bin")),
        "{err}"
    );
}

/// Interpreter library trees hold modules with `#!` lines that are not for running: Perl's
/// `Getopt/Long.pm` starts `#!perl`, Python's executable `cgi.py` names /usr/local/bin/python.
/// Regression: `--add` refused whole trees over them.
#[test]
fn add_takes_library_trees_whose_modules_carry_odd_shebangs() {
    let host = tempfile::tempdir().expect("tempdir");
    let lib = host.path().join("lib");
    fs::create_dir_all(lib.join("Getopt")).expect("mkdir");
    fs::write(
        lib.join("Getopt/Long.pm"),
        b"#!perl\npackage Getopt::Long;\n1;\n",
    )
    .expect("module");
    chmod(&lib.join("Getopt/Long.pm"), 0o644);
    fs::write(lib.join("cgi.py"), b"#! /nonexistent/python\nprint('hi')\n").expect("script");
    chmod(&lib.join("cgi.py"), 0o755);
    let spec = format!("{}:/usr/lib/odd", lib.display());
    let (tmp, _) = build(Profile::Minimal, &[], &[&spec]);
    for copied in ["usr/lib/odd/Getopt/Long.pm", "usr/lib/odd/cgi.py"] {
        assert!(tmp.path().join(copied).is_file(), "{copied} copied");
    }
    assert!(
        !tmp.path().join("nonexistent").exists(),
        "no interpreter invented"
    );
}
