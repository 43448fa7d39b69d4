//! The worker's command line, typed on both sides: the supervisor builds it with
//! [`WorkerArgs::to_args`], `jailgate-worker` reads it back with [`WorkerArgs::parse`].
//!
//! `jailgate-worker --jail DIR --uid UID --gid GID --cgi-ids FIRST:COUNT --tmp-size BYTES
//! [--no-network]`, with the channel to the front as descriptor 3.

use std::ffi::OsString;
use std::path::PathBuf;

/// A block of ids, `first` to `first + count - 1`: each CGI of a worker runs as a uid and gid
/// of its own from the worker's block, the same number for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

impl IdRange {
    /// The last id, or `None` for an empty range or one past `u32::MAX - 1` (4294967295 is
    /// "no id" to the kernel).
    pub fn last(&self) -> Option<u32> {
        let last = self.first.checked_add(self.count.checked_sub(1)?)?;
        (last < u32::MAX).then_some(last)
    }

    pub fn contains(&self, id: u32) -> bool {
        self.last()
            .is_some_and(|last| (self.first..=last).contains(&id))
    }
}

/// A folder of the jail that CGIs may write (`--data-dir`), shared through a group of its own
/// (`--data-group`): mounted read-write (never executable) where everything else is read-only,
/// and every CGI gets the group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataDir {
    /// Its path inside the jail, absolute.
    pub path: PathBuf,
    pub gid: u32,
}

/// What a worker needs to enter its jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgs {
    /// The jail's root on the host.
    pub jail: PathBuf,
    /// The worker's own uid and gid on the host (`--user`): never 0, never a CGI's.
    pub uid: u32,
    pub gid: u32,
    /// The ids its CGIs run as: a block of the gateway's `--cgi-ids`, this worker's alone.
    pub cgi_ids: IdRange,
    /// Size of each writable tmpfs (`/tmp` and friends), bytes.
    pub tmp_size: u64,
    /// The shared data folder, if any.
    pub data: Option<DataDir>,
    /// CGIs get an empty network namespace: no interface but a down loopback.
    pub no_network: bool,
}

impl WorkerArgs {
    /// The command line, without the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--jail".into(),
            self.jail.clone().into(),
            "--uid".into(),
            self.uid.to_string().into(),
            "--gid".into(),
            self.gid.to_string().into(),
            "--cgi-ids".into(),
            format!("{}:{}", self.cgi_ids.first, self.cgi_ids.count).into(),
            "--tmp-size".into(),
            self.tmp_size.to_string().into(),
        ];
        if let Some(data) = &self.data {
            args.extend([
                "--data-dir".into(),
                data.path.clone().into(),
                "--data-gid".into(),
                data.gid.to_string().into(),
            ]);
        }
        if self.no_network {
            args.push("--no-network".into());
        }
        args
    }

    /// Reads the command line (without the program name). Uid or gid 0 is refused: a root
    /// process can break out of a chroot, so nothing in the jail may run as root.
    pub fn parse(mut args: impl Iterator<Item = OsString>) -> Result<WorkerArgs, String> {
        let (mut jail, mut uid, mut gid, mut tmp_size, mut no_network) =
            (None, None, None, None, false);
        let mut cgi_ids = None;
        let (mut data_dir, mut data_gid) = (None, None);
        let number = |flag: &str, value: Option<OsString>| -> Result<u64, String> {
            let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
            value
                .to_str()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| format!("bad {flag} {}", value.to_string_lossy()))
        };
        while let Some(flag) = args.next() {
            match flag.to_str() {
                Some("--jail") => {
                    jail = Some(PathBuf::from(args.next().ok_or("--jail needs a value")?))
                }
                Some("--uid") => uid = Some(number("--uid", args.next())?),
                Some("--gid") => gid = Some(number("--gid", args.next())?),
                Some("--tmp-size") => tmp_size = Some(number("--tmp-size", args.next())?),
                Some("--cgi-ids") => {
                    let value = args.next().ok_or("--cgi-ids needs a value")?;
                    let parsed = value.to_str().and_then(|text| {
                        let (first, count) = text.split_once(':')?;
                        Some(IdRange {
                            first: first.parse().ok()?,
                            count: count.parse().ok()?,
                        })
                    });
                    cgi_ids = Some(
                        parsed
                            .ok_or_else(|| format!("bad --cgi-ids {}", value.to_string_lossy()))?,
                    );
                }
                Some("--no-network") => no_network = true,
                Some("--data-dir") => {
                    data_dir = Some(PathBuf::from(
                        args.next().ok_or("--data-dir needs a value")?,
                    ))
                }
                Some("--data-gid") => data_gid = Some(number("--data-gid", args.next())?),
                _ => return Err(format!("unknown flag {}", flag.to_string_lossy())),
            }
        }
        let id = |value: Option<u64>, flag: &str| -> Result<u32, String> {
            let value = value.ok_or_else(|| format!("{flag} is required"))?;
            u32::try_from(value).map_err(|_| format!("{flag} out of range"))
        };
        let parsed = WorkerArgs {
            jail: jail.ok_or("--jail is required")?,
            uid: id(uid, "--uid")?,
            gid: id(gid, "--gid")?,
            cgi_ids: cgi_ids.ok_or("--cgi-ids is required")?,
            tmp_size: tmp_size.ok_or("--tmp-size is required")?,
            data: match (data_dir, data_gid) {
                (Some(path), Some(gid)) if path.is_absolute() => Some(DataDir {
                    path,
                    gid: id(Some(gid), "--data-gid")?,
                }),
                (None, None) => None,
                _ => return Err("--data-dir (absolute) and --data-gid go together".into()),
            },
            no_network,
        };
        if parsed.uid == 0 || parsed.gid == 0 {
            return Err("refusing to run a worker as root (uid or gid 0)".into());
        }
        let ids = parsed.cgi_ids;
        if ids.last().is_none() || ids.contains(0) {
            return Err(format!(
                "--cgi-ids {}:{} is empty, too large or holds 0",
                ids.first, ids.count
            ));
        }
        if ids.contains(parsed.uid) || ids.contains(parsed.gid) {
            return Err("--cgi-ids holds the worker's own uid or gid".into());
        }
        if let Some(data) = &parsed.data {
            if data.gid == 0 || data.gid == parsed.gid || ids.contains(data.gid) {
                return Err("--data-gid is 0, the worker's own gid, or one of --cgi-ids".into());
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<WorkerArgs, String> {
        WorkerArgs::parse(args.split_whitespace().map(OsString::from))
    }

    #[test]
    fn the_command_line_round_trips() {
        for no_network in [false, true] {
            let args = WorkerArgs {
                jail: PathBuf::from("/srv/jail"),
                uid: 65534,
                gid: 65533,
                cgi_ids: IdRange {
                    first: 1_879_048_192,
                    count: 256,
                },
                tmp_size: 1024,
                data: no_network.then(|| DataDir {
                    path: PathBuf::from("/data"),
                    gid: 4242,
                }),
                no_network,
            };
            assert_eq!(WorkerArgs::parse(args.to_args().into_iter()), Ok(args));
        }
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            "--jail /j --uid 0 --gid 1 --cgi-ids 100:10 --tmp-size 1",
            "--jail /j --uid 1 --gid 0 --cgi-ids 100:10 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 100:10",
            "--jail /j --uid x --gid 1 --cgi-ids 100:10 --tmp-size 1",
            "--jail /j --uid 4294967296 --gid 1 --cgi-ids 100:10 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 100:10 --tmp-size 1 --extra",
            "--jail /j --uid 1 --gid 1 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 0:10 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 100:0 --tmp-size 1",
            "--jail /j --uid 105 --gid 1 --cgi-ids 100:10 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 4294967295:1 --tmp-size 1",
            "--jail /j --uid 1 --gid 1 --cgi-ids 100 --tmp-size 1",
            "--uid 1 --gid 1 --cgi-ids 100:10 --tmp-size 1",
            "--jail",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
