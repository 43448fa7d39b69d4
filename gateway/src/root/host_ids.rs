//! Who on the host already uses the ids this gateway is to run as. Looked at once, at start, as
//! root and before the fork: nothing of this gateway runs yet, so whatever is found belongs to
//! someone else. The accounts and groups of `/etc/passwd` and `/etc/group`, and every running
//! process, each `/proc/PID/status` read once:
//!
//! - `--cgi-ids` that an account, a group or a process (any of its uids or gids) has stop the
//!   start: a CGI would share its identity, its files and its processes.
//! - A process whose real, effective or saved uid is the front's or the workers' is warned
//!   about, one line per account: it and our processes of that uid could signal and trace each
//!   other (kill(2) and ptrace(2) compare exactly these ids). A warning, not a refusal: the
//!   administrator may have chosen to share that account; the likely case is a second gateway
//!   started with the same ids.
//!
//! The default accounts (`DEFAULT_FRONT_ID`, `DEFAULT_WORKER_ID`) are checked against the
//! account files when the configuration is read (`config::account_or_default`).

use std::io::Read;

use crate::config::{Config, FrontUser, IdRange};
use crate::jailfs;

/// Most processes the scan reads: the kernel's largest `pid_max` (PID_MAX_LIMIT on 64-bit),
/// more than `/proc` ever lists, so the start cannot run away however the host looks.
const MAX_PROCESSES: usize = 1 << 22;

/// How much of each `/proc/PID/status` is read. `Name`, `Uid` and `Gid` are among its first
/// lines (proc_pid_status(5)), before `Groups`, which may list 65,536 groups.
const STATUS_HEAD_BYTES: u64 = 4096;

/// A process's command name and ids, from its `/proc/PID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIds {
    pub pid: u32,
    /// `Name:`, the command name (at most 15 bytes, escaped by the kernel).
    pub name: String,
    /// Real, effective, saved and file-system uid.
    pub uids: [u32; 4],
    /// Real, effective, saved and file-system gid.
    pub gids: [u32; 4],
}

impl ProcessIds {
    /// The uids that decide who may signal or trace it (kill(2), ptrace(2)).
    fn real_effective_saved_uids(&self) -> &[u32] {
        &self.uids[..3]
    }
}

/// Refuses `--cgi-ids` that the host uses, and warns of every account of ours (the front's,
/// the workers') a running process has. `Err` is the refusal's message.
pub fn check(config: &Config, front: &FrontUser) -> Result<(), String> {
    let ids = config.cgi_ids;
    let range = format!(
        "--cgi-ids {}-{}",
        ids.first,
        ids.first.saturating_add(ids.count.saturating_sub(1))
    );
    if let Some(holder) = jailfs::host_account_holding(|id| ids.contains(id)) {
        return Err(format!(
            "{range}: {} has `{}` with id {}; choose a range no account uses",
            holder.file, holder.name, holder.id
        ));
    }
    for (file, whose_ids) in [("/etc/subuid", "uid"), ("/etc/subgid", "gid")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let ours: [(u64, u64, &str); 3] = match whose_ids {
            "uid" => [
                (front.uid.into(), 1, "the front's (--gateway-user)"),
                (config.user.uid.into(), 1, "the workers' (--user)"),
                (ids.first.into(), ids.count.into(), "--cgi-ids"),
            ],
            _ => [
                (front.gid.into(), 1, "the front's (--gateway-user)"),
                (config.user.gid.into(), 1, "the workers' (--user)"),
                (ids.first.into(), ids.count.into(), "--cgi-ids"),
            ],
        };
        if let Some(message) = delegated_to_someone(file, &text, &ours) {
            return Err(message);
        }
    }
    let processes = running_processes();
    if let Some(process) = using_cgi_ids(ids, &processes) {
        return Err(format!(
            "{range}: process {} ({}) runs with one of these ids; stop it or choose another range",
            process.pid, process.name
        ));
    }
    let ours = [
        (front.uid, "the front's (--gateway-user)"),
        (config.user.uid, "the workers' (--user)"),
    ];
    for warning in shared_account_warnings(&ours, &processes) {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Whether a range of `file` (`/etc/subuid` or `/etc/subgid`, text `text`: `OWNER:FIRST:COUNT`
/// a line) holds one of `ours` (first, count, whose): its owner may then run processes as
/// those ids in a user namespace of its own (`newuidmap`), and signal ours as if they were its
/// own (kill(2) compares the ids). The message, if so.
fn delegated_to_someone(file: &str, text: &str, ours: &[(u64, u64, &str)]) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().splitn(3, ':');
        let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
        let (first, count) = (first.parse::<u64>().ok()?, count.parse::<u64>().ok()?);
        let (ours_first, ours_count, whose) = ours.iter().find(|(ours_first, ours_count, _)| {
            first < ours_first.saturating_add(*ours_count)
                && *ours_first < first.saturating_add(count)
        })?;
        Some(format!(
            "{file} gives `{owner}` the ids {first}-{}, which hold {whose} {}: that user could \
             run processes as them and signal this gateway's; choose ids outside every range \
             there",
            first.saturating_add(count.saturating_sub(1)),
            match ours_count {
                1 => ours_first.to_string(),
                n => format!("{ours_first}-{}", ours_first + n - 1),
            }
        ))
    })
}

/// The first process with a uid or gid among `ids`.
fn using_cgi_ids(ids: IdRange, processes: &[ProcessIds]) -> Option<&ProcessIds> {
    processes.iter().find(|process| {
        process
            .uids
            .iter()
            .chain(&process.gids)
            .any(|&id| ids.contains(id))
    })
}

/// One line per account of `ours` (uid, whose) that a process in `processes` has as its real,
/// effective or saved uid: the first such process, and how many more there are.
fn shared_account_warnings(ours: &[(u32, &str)], processes: &[ProcessIds]) -> Vec<String> {
    ours.iter()
        .filter_map(|&(uid, whose)| {
            let mut sharing = processes
                .iter()
                .filter(|process| process.real_effective_saved_uids().contains(&uid));
            let first = sharing.next()?;
            let more = match sharing.count() {
                0 => String::new(),
                n => format!(" (and {n} more)"),
            };
            Some(format!(
                "process {} ({}){more} runs as uid {uid}, {whose} account: it and this gateway \
                 can signal and trace each other. Another gateway with the same ids? Give each \
                 gateway its own --user, --gateway-user and --cgi-ids",
                first.pid, first.name
            ))
        })
        .collect()
}

/// Every process `/proc` lists now, at most [`MAX_PROCESSES`]; one that exits meanwhile, or
/// has exited (see [`has_exited`]), is left out.
fn running_processes() -> Vec<ProcessIds> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .take(MAX_PROCESSES)
        .filter_map(|pid| {
            let file = std::fs::File::open(format!("/proc/{pid}/status")).ok()?;
            let mut head = Vec::new();
            file.take(STATUS_HEAD_BYTES).read_to_end(&mut head).ok()?;
            let status = String::from_utf8_lossy(&head);
            if has_exited(&status) {
                return None;
            }
            parse_status(pid, &status)
        })
        .collect()
}

/// Whether a `/proc/PID/status` text is a process that has exited and waits to be reaped
/// (`State:` Z, zombie, or X, dead): it keeps its ids in `/proc` but can no longer signal,
/// trace or own anything. Such are the front and the worker holders of a gateway killed with
/// SIGKILL, orphans until PID 1 reaps them (a container's PID 1 may take long, or never):
/// counting them warned a restart of that very gateway of "another gateway with the same ids".
fn has_exited(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .is_some_and(|state| matches!(state.trim_start().chars().next(), Some('Z' | 'X')))
}

/// `Name:`, `Uid:` and `Gid:` of a `/proc/PID/status` text; `None` without all three.
pub fn parse_status(pid: u32, text: &str) -> Option<ProcessIds> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    let ids = |key: &str| -> Option<[u32; 4]> {
        let mut values = field(key)?.split_whitespace().map(|id| id.parse().ok());
        let ids = [
            values.next()??,
            values.next()??,
            values.next()??,
            values.next()??,
        ];
        values.next().is_none().then_some(ids)
    };
    Some(ProcessIds {
        pid,
        name: field("Name:")?.to_owned(),
        uids: ids("Uid:")?,
        gids: ids("Gid:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of /etc/subuid (or subgid) that holds one of the gateway's ids is found and
    /// named; ranges beside them, comments and malformed lines are not.
    #[test]
    fn a_subordinate_range_holding_our_ids_is_found() {
        let ours = [
            (1_879_048_190, 1, "the front's (--gateway-user)"),
            (1_879_048_191, 1, "the workers' (--user)"),
            (1_879_048_192, 1_048_576, "--cgi-ids"),
        ];
        let clean = "alice:100000:65536\n# a comment\nbob:x:y\nroot:1879048189:1\n";
        assert_eq!(delegated_to_someone("/etc/subuid", clean, &ours), None);
        let front = format!("{clean}mallory:1879048000:200\n");
        assert_eq!(
            delegated_to_someone("/etc/subuid", &front, &ours).as_deref(),
            Some(
                "/etc/subuid gives `mallory` the ids 1879048000-1879048199, which hold the \
                 front's (--gateway-user) 1879048190: that user could run processes as them \
                 and signal this gateway's; choose ids outside every range there"
            )
        );
        let cgi = "eve:1879999999:10\n";
        let found = delegated_to_someone("/etc/subgid", cgi, &ours).expect("found");
        assert!(found.contains("--cgi-ids 1879048192-1880096767"), "{found}");
    }

    const STATUS: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
                          Ngid:\t0\nPid:\t4242\nPPid:\t1\nTracerPid:\t0\n\
                          Uid:\t1879048190\t1000\t1879048191\t1000\n\
                          Gid:\t33\t33\t33\t33\nFDSize:\t64\nGroups:\t33 1879048192\n";

    fn process(pid: u32, name: &str, uids: [u32; 4], gids: [u32; 4]) -> ProcessIds {
        ProcessIds {
            pid,
            name: name.into(),
            uids,
            gids,
        }
    }

    #[test]
    fn a_status_gives_name_and_ids() {
        assert_eq!(
            parse_status(4242, STATUS),
            Some(process(
                4242,
                "sleep",
                [1879048190, 1000, 1879048191, 1000],
                [33; 4]
            ))
        );
        // Cut short, or a field missing or malformed: nothing, never a guess.
        for bad in [
            &STATUS[..40],
            "Name:\tx\nUid:\t1 2 3\nGid:\t1 1 1 1\n",
            "Name:\tx\nUid:\t1 2 3 4 5\nGid:\t1 1 1 1\n",
            "Name:\tx\nUid:\t1 2 3 x\nGid:\t1 1 1 1\n",
            "Uid:\t1 1 1 1\nGid:\t1 1 1 1\n",
            "",
        ] {
            assert_eq!(parse_status(1, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_zombie_has_exited_a_sleeper_has_not() {
        assert!(!has_exited(STATUS));
        for state in ["Z (zombie)", "X (dead)"] {
            let exited = STATUS.replace("S (sleeping)", state);
            assert!(has_exited(&exited), "{exited}");
        }
        // No State line: taken as running, so its ids still count.
        assert!(!has_exited("Name:\tx\nUid:\t1 1 1 1\nGid:\t1 1 1 1\n"));
    }

    #[test]
    fn the_cgi_ids_are_refused_on_any_uid_or_gid_of_a_process() {
        let ids = IdRange {
            first: 1879048192,
            count: 0x1_0000,
        };
        let clean = process(1, "init", [0; 4], [0; 4]);
        assert_eq!(using_cgi_ids(ids, std::slice::from_ref(&clean)), None);
        for (uids, gids) in [
            ([1879048192, 0, 0, 0], [0; 4]),
            ([0, 0, 0, 1879113727], [0; 4]),
            ([0; 4], [0, 0, 1879100000, 0]),
        ] {
            let user = process(7, "user", uids, gids);
            let all = [clean.clone(), user.clone()];
            assert_eq!(using_cgi_ids(ids, &all), Some(&user), "{uids:?} {gids:?}");
        }
    }

    #[test]
    fn one_warning_per_shared_account_names_the_first_process() {
        let ours = [(1879048190, "the front's"), (1879048191, "the workers'")];
        let processes = [
            process(10, "init", [0; 4], [0; 4]),
            // The real, effective or saved uid: each lets it signal us, or us it.
            process(11, "sleep", [1879048190, 0, 0, 0], [0; 4]),
            process(12, "su", [0, 1879048190, 0, 0], [0; 4]),
            process(13, "daemon", [0, 0, 1879048191, 0], [0; 4]),
            // The file-system uid and the gids alone do not.
            process(14, "nfsd", [0, 0, 0, 1879048191], [1879048190; 4]),
        ];
        let warnings = shared_account_warnings(&ours, &processes);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "process 11 (sleep) (and 1 more) runs as uid 1879048190, the front's account"
            ),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[1]
                .starts_with("process 13 (daemon) runs as uid 1879048191, the workers' account"),
            "{}",
            warnings[1]
        );
        assert!(warnings[1].contains("its own --user, --gateway-user and --cgi-ids"));
        assert_eq!(
            shared_account_warnings(&ours, &processes[..1]),
            Vec::<String>::new()
        );
    }
}
