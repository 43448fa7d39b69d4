//! Reading the host's `/proc`: who is whose child, who runs what, as which user.
//!
//! Everything here is a snapshot and can race with processes starting and exiting, so every
//! reader returns `Option` and callers poll with a deadline instead of trusting one look.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A process's resident memory (`VmRSS`), in KiB. Panics if it is gone.
pub fn resident_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Polls `pid`'s resident memory every half second until it is at most `kib`, for up to 30
/// s: `Ok` with the last reading once it is, `Err` with it if it never was.
pub async fn resident_falls_to(pid: i32, kib: u64) -> Result<u64, u64> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = resident_kib(pid);
        if now <= kib {
            return Ok(now);
        }
        if std::time::Instant::now() >= end {
            return Err(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The fields of `/proc/PID/stat` (proc(5)) that the tests need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// Field 2, without the parentheses: the executable's (or script's) base name, 15 bytes max.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    /// Field 4, as seen from the host's PID namespace.
    pub ppid: i32,
    /// Field 22, in clock ticks since boot: with the pid it names one process for good, so a
    /// reused pid cannot pass for a process that is gone.
    pub starttime: u64,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// `/proc/PID/stat` of one process, `None` if it is gone.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// The fields of a `stat` text after comm: field N is at index N - 3.
fn fields_after_comm(text: &str) -> Option<Vec<&str>> {
    // comm may hold spaces and parentheses: it ends at the LAST ')'.
    let close = text.rfind(')')?;
    Some(text.get(close + 1..)?.split_whitespace().collect())
}

fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    // comm runs from the first '(' to the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest = fields_after_comm(text)?;
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let starttime = rest.get(19)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        starttime,
    })
}

/// The scheduling policy of thread `tid` of process `pid` (field 41 of its `stat`), `None` if
/// it is gone.
pub fn policy(pid: i32, tid: i32) -> Option<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    fields_after_comm(&text)?.get(41 - 3)?.parse().ok()
}

/// How many descriptors process `pid` holds (0 if it is gone).
pub fn descriptors(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// How many of `pid`'s descriptors are mount namespaces (`mnt:[...]`).
pub fn mount_namespaces_held(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| {
        entries
            .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("mnt:["))
            .count()
    })
}

/// Every process visible in `/proc` right now.
pub fn snapshot() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Direct children of `pid` in a snapshot.
pub fn children(all: &[ProcStat], pid: i32) -> Vec<ProcStat> {
    all.iter().filter(|p| p.ppid == pid).cloned().collect()
}

/// All descendants of `pid` in a snapshot (children, their children, ...), not `pid` itself.
pub fn descendants(all: &[ProcStat], pid: i32) -> Vec<ProcStat> {
    let mut by_parent: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for p in all {
        by_parent.entry(p.ppid).or_default().push(p);
    }
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in by_parent.get(&parent).into_iter().flatten() {
            if seen.insert(child.pid) {
                found.push((*child).clone());
                queue.push(child.pid);
            }
        }
    }
    found
}

/// Whether the process recorded as `(pid, starttime)` still exists (zombies included).
pub fn still_exists(recorded: &ProcStat) -> Option<ProcStat> {
    stat(recorded.pid).filter(|now| now.starttime == recorded.starttime)
}

/// The `Uid:` and `Gid:` lines of `/proc/PID/status`: real, effective, saved, filesystem.
pub fn uids_gids(pid: i32) -> Option<(Vec<u32>, Vec<u32>)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = |key: &str| -> Option<Vec<u32>> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect()
    };
    Some((ids("Uid:")?, ids("Gid:")?))
}

/// The live (not zombie) processes with any uid (real, effective, saved, filesystem) for which
/// `ours` holds: every process of a gateway's accounts and CGI ids, whoever its parent is now.
pub fn running_as(ours: impl Fn(u32) -> bool) -> Vec<ProcStat> {
    snapshot()
        .into_iter()
        .filter(|process| !process.is_zombie())
        .filter(|process| {
            uids_gids(process.pid).is_some_and(|(uids, _)| uids.iter().any(|&uid| ours(uid)))
        })
        .collect()
}

/// The `NSpid:` line of `/proc/PID/status`: the pid in each nested PID namespace, host first.
pub fn ns_pids(pid: i32) -> Option<Vec<i32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line["NSpid:".len()..]
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect()
}

/// `VmHWM` (peak resident set size) of a process, in KiB.
pub fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `readlink /proc/PID/root`.
pub fn root_link(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/root")).ok()
}

/// Whether `/proc/PID/exe` is the same file (device and inode) as `binary`. Comparing the
/// files, not the link text, works whatever mount namespace the process lives in.
pub fn exe_is(pid: i32, binary: &Path) -> bool {
    let (Ok(exe), Ok(want)) = (
        fs::metadata(format!("/proc/{pid}/exe")),
        fs::metadata(binary),
    ) else {
        return false;
    };
    exe.dev() == want.dev() && exe.ino() == want.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_comm_with_spaces_and_parentheses() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1 2";
        let st = parse_stat(42, line).expect("parses");
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 7);
        assert_eq!(st.starttime, 123456);
    }

    #[test]
    fn own_process_is_found() {
        let me = i32::try_from(std::process::id()).expect("pid fits i32");
        let st = stat(me).expect("own stat");
        assert_eq!(st.pid, me);
        assert!(st.starttime > 0);
    }
}
