//! `gateway jail init`: the tree it builds has what the contract names.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::harness::{gateway_bin, jail_root_entries, require_root, run_bounded, Jail, Opts};
use crate::http::client;

fn assert_same_char_device(jail: &Path, name: &str) {
    let in_jail = jail.join("dev").join(name);
    let meta =
        fs::symlink_metadata(&in_jail).unwrap_or_else(|e| panic!("{}: {e}", in_jail.display()));
    assert!(
        meta.file_type().is_char_device(),
        "{} is a character device",
        in_jail.display()
    );
    let host = fs::metadata(Path::new("/dev").join(name)).expect("host device");
    assert_eq!(
        meta.rdev(),
        host.rdev(),
        "{} is the host's /dev/{name}",
        in_jail.display()
    );
}

fn assert_dir_mode(jail: &Path, name: &str, mode: u32) {
    let path = jail.join(name);
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(meta.is_dir(), "{} is a directory", path.display());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "mode of {}",
        path.display()
    );
    assert_eq!(meta.uid(), 0, "{} is root-owned", path.display());
}

/// `/bin` is what the host has: on this Debian a symlink to `usr/bin`.
fn assert_bin_like_host(jail: &Path) {
    let host = fs::symlink_metadata("/bin").expect("host /bin");
    let in_jail = jail.join("bin");
    let meta = fs::symlink_metadata(&in_jail)
        .unwrap_or_else(|e| panic!("the jail has no /bin ({}): {e}", in_jail.display()));
    if host.file_type().is_symlink() {
        assert!(
            meta.file_type().is_symlink(),
            "/bin in the jail is a symlink like the host's"
        );
        assert_eq!(
            fs::read_link(&in_jail).expect("readlink jail /bin"),
            fs::read_link("/bin").expect("readlink host /bin"),
        );
    } else {
        assert!(
            meta.is_dir(),
            "/bin in the jail is a directory like the host's"
        );
    }
    assert!(
        jail.join("bin/sh").is_file(),
        "/bin/sh resolves to a file in the jail"
    );
}

#[test]
fn init_builds_the_contract_layout() {
    require_root!();
    let jail = Jail::new();
    let root = jail.root();
    assert_bin_like_host(root);
    for dev in ["null", "zero", "urandom"] {
        assert_same_char_device(root, dev);
    }
    for file in ["passwd", "group", "localtime"] {
        let path = root.join("etc").join(file);
        assert!(path.is_file(), "{} is a file", path.display());
    }
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("jail passwd");
    assert_eq!(
        passwd, "cgi:x:1879048191:1879048191:CGI user:/nonexistent:/bin/false\n",
        "the jail's passwd names the workers' default id, and nothing else"
    );
    let group = fs::read_to_string(root.join("etc/group")).expect("jail group");
    assert_eq!(group, "cgi:x:1879048191:\n", "the jail's group");
    assert_dir_mode(root, "tmp", 0o1777);
    assert_dir_mode(root, "cgi-bin", 0o755);
    for prog in ["ls", "id", "env", "sleep", "cat", "head"] {
        assert!(
            root.join("usr/bin").join(prog).exists() || root.join("bin").join(prog).exists(),
            "{prog} is in the jail"
        );
    }
}

/// `gateway jail init` into a folder that holds something but is no jail (a mistyped `/etc`)
/// fails with one line and leaves the folder as it was. (`jail init /` is refused the same
/// way; a unit test checks that without running it.)
#[test]
fn init_into_a_folder_that_is_no_jail_changes_nothing() {
    require_root!();
    let folder = tempfile::tempdir().expect("tempdir");
    fs::create_dir(folder.path().join("etc")).expect("etc");
    fs::write(
        folder.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n",
    )
    .expect("passwd");
    let done = run_bounded(
        std::process::Command::new(gateway_bin())
            .args(["jail", "init"])
            .arg(folder.path()),
        Duration::from_secs(30),
    );
    assert_eq!(done.status.code(), Some(1), "stderr:\n{}", done.stderr);
    let lines: Vec<&str> = done.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{}", done.stderr);
    assert!(
        lines[0].contains("no place for a jail: it is neither empty nor a jail"),
        "{}",
        lines[0]
    );
    assert_eq!(
        jail_root_entries(folder.path()),
        [".", "..", "etc"].map(String::from).into(),
        "nothing added to the folder"
    );
    assert_eq!(
        fs::read_to_string(folder.path().join("etc/passwd")).expect("passwd"),
        "root:x:0:0::/root:/bin/sh\n"
    );
}

/// With `--with sh` alone the jail still has `/bin`, so `#!/bin/sh` CGIs run.
#[tokio::test(flavor = "multi_thread")]
async fn minimal_jail_runs_bin_sh_cgis() {
    require_root!();
    let jail = Jail::with_programs(&["sh"]);
    assert_bin_like_host(jail.root());
    jail.cgi("hello", r"printf 'Content-Type: text/plain\n\nhello\n'");
    let gw = jail.serve(Opts {
        workers: 1,
        timeout_secs: None,
    });
    let response = client(Duration::from_secs(15))
        .get(gw.url("/cgi-bin/hello"))
        .send()
        .await
        .expect("GET /cgi-bin/hello");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(&response.bytes().await.expect("body")[..], b"hello\n");
}
