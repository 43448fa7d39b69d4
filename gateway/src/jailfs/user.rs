//! `--user NAME|UID[:GID]`: the account CGIs run as.

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// The unprivileged account CGIs run as (resolved by the caller from --user).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgiUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub group_name: String,
}

/// The name given to a numeric uid that has no account on the host, and to a gid that has no
/// group (the jail's `/etc/passwd` and `/etc/group` need a name for them).
pub const UNNAMED_USER: &str = "cgi";

/// Why a `--user` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserSpecError {
    #[error("malformed --user {spec:?}: expected NAME, UID, NAME:GID or UID:GID")]
    Malformed { spec: String },
    #[error("invalid id {text:?} in --user {spec:?}: {reason}")]
    InvalidId {
        spec: String,
        text: String,
        reason: &'static str,
    },
    #[error("unknown user {name:?} in --user")]
    UnknownUser { name: String },
    #[error("refusing to run CGIs as root (--user {spec:?} gives uid {uid}, gid {gid})")]
    Root { spec: String, uid: u32, gid: u32 },
    #[error("looking up user {user:?}: {source}")]
    Lookup {
        user: String,
        #[source]
        source: Errno,
    },
}

/// Resolve a `--user` value.
///
/// - `NAME`: the account's uid and primary gid.
/// - `UID` (all digits, so a purely numeric name is read as a uid, as `chown` users
///   expect): the account's name and primary gid if the uid has an account, else name
///   `cgi` and gid = uid.
/// - `UID:GID` or `NAME:GID` (GID numeric): the given gid instead of the primary one.
///
/// The group name is the gid's group on the host, or `cgi` if it has none. Uid 0
/// and gid 0 are refused, and so is 4294967295, which setresuid(2) reads as "unchanged".
pub fn parse_user(spec: &str) -> Result<CgiUser, UserSpecError> {
    let malformed = || UserSpecError::Malformed {
        spec: spec.to_string(),
    };
    let (user_part, gid_part) = match spec.split_once(':') {
        Some((user, gid)) => (user, Some(gid)),
        None => (spec, None),
    };
    if user_part.is_empty() || gid_part.is_some_and(|gid| gid.is_empty() || gid.contains(':')) {
        return Err(malformed());
    }

    let (name, uid, primary_gid) = if is_number(user_part) {
        let uid = parse_id(spec, user_part)?;
        match User::from_uid(Uid::from_raw(uid)).map_err(|source| UserSpecError::Lookup {
            user: user_part.to_string(),
            source,
        })? {
            Some(user) => (user.name, uid, Some(user.gid.as_raw())),
            None => (UNNAMED_USER.to_string(), uid, None),
        }
    } else {
        let user = User::from_name(user_part)
            .map_err(|source| UserSpecError::Lookup {
                user: user_part.to_string(),
                source,
            })?
            .ok_or_else(|| UserSpecError::UnknownUser {
                name: user_part.to_string(),
            })?;
        (user.name, user.uid.as_raw(), Some(user.gid.as_raw()))
    };
    let gid = match gid_part {
        Some(text) if is_number(text) => parse_id(spec, text)?,
        Some(text) => {
            return Err(UserSpecError::InvalidId {
                spec: spec.to_string(),
                text: text.to_string(),
                reason: "GID must be a number",
            })
        }
        None => primary_gid.unwrap_or(uid),
    };
    if uid == 0 || gid == 0 {
        return Err(UserSpecError::Root {
            spec: spec.to_string(),
            uid,
            gid,
        });
    }
    // A failed group lookup only costs the name, which is cosmetic.
    let group_name = Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| UNNAMED_USER.to_string(), |group| group.name);
    Ok(CgiUser {
        name,
        uid,
        gid,
        group_name,
    })
}

/// The host's account files, read by the checks that ids are nobody's.
pub const ACCOUNT_FILES: [&str; 2] = ["/etc/passwd", "/etc/group"];

/// An entry of the host's `/etc/passwd` or `/etc/group` that holds an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAccount {
    /// The file it is in.
    pub file: &'static str,
    /// The account's or group's name.
    pub name: String,
    /// The id it holds.
    pub id: u32,
}

/// The first account of `/etc/passwd` (by its uid or its primary gid) or group of `/etc/group`
/// holding an id `wanted` picks; files that cannot be read are skipped. Read from the files
/// rather than asked of NSS one id at a time, so that a range of 65,536 ids costs two reads.
pub fn host_account_holding(wanted: impl Fn(u32) -> bool) -> Option<HostAccount> {
    ACCOUNT_FILES.into_iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        account_holding(file, &text, &wanted)
    })
}

/// [`host_account_holding`] on the text of one file: `name:password:ID:...` lines, where a
/// passwd line's fourth field is its primary gid. Malformed lines hold nothing.
fn account_holding(
    file: &'static str,
    text: &str,
    wanted: &impl Fn(u32) -> bool,
) -> Option<HostAccount> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let ids = fields
            .skip(1)
            .take(if file.ends_with("passwd") { 2 } else { 1 });
        let id = ids
            .filter_map(|id| id.parse::<u32>().ok())
            .find(|&id| wanted(id))?;
        Some(HostAccount {
            file,
            name: name.to_string(),
            id,
        })
    })
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_id(spec: &str, text: &str) -> Result<u32, UserSpecError> {
    let invalid = |reason| UserSpecError::InvalidId {
        spec: spec.to_string(),
        text: text.to_string(),
        reason,
    };
    let id: u32 = text.parse().map_err(|_| invalid("out of range"))?;
    if id == u32::MAX {
        return Err(invalid(
            "4294967295 means \"unchanged\" to setresuid/setresgid",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_refused_in_every_form() {
        for spec in ["root", "0", "0:65534", "65534:0", "nobody:0"] {
            let err = parse_user(spec).expect_err(spec);
            assert!(matches!(err, UserSpecError::Root { .. }), "{spec}: {err}");
            assert!(
                err.to_string().contains("refusing to run CGIs as root"),
                "{err}"
            );
        }
    }

    #[test]
    fn name_gives_uid_gid_and_group() {
        // Debian's nobody:x:65534:65534, group nogroup.
        let user = parse_user("nobody").expect("nobody");
        assert_eq!(
            user,
            CgiUser {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                group_name: "nogroup".into()
            }
        );
        assert_eq!(parse_user("65534").expect("uid"), user);
    }

    #[test]
    fn numeric_ids_without_accounts() {
        let user = parse_user("3999999:3999998").expect("uid:gid");
        assert_eq!(
            user,
            CgiUser {
                name: "cgi".into(),
                uid: 3999999,
                gid: 3999998,
                group_name: "cgi".into()
            }
        );
        let user = parse_user("3999999").expect("uid");
        assert_eq!((user.uid, user.gid), (3999999, 3999999));
    }

    #[test]
    fn an_account_holding_an_id_is_found_by_uid_primary_gid_or_group() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      broken line\n\
                      www:x:33:1879048191:www:/var/www:/usr/sbin/nologin\n\
                      jg:x:1879048190:100::/:/bin/false\n";
        let wanted = |id| id == 1879048190 || id == 1879048191;
        assert_eq!(
            account_holding("/etc/passwd", passwd, &wanted),
            Some(HostAccount {
                file: "/etc/passwd",
                name: "www".into(),
                id: 1879048191
            })
        );
        let group = "root:x:0:\nstaff:x:1879048191:www\n";
        assert_eq!(
            account_holding("/etc/group", group, &|id| id == 1879048191).map(|a| a.name),
            Some("staff".into())
        );
        // A group's member list and a passwd line's fifth field are no ids.
        assert_eq!(
            account_holding("/etc/group", "g:x:5:1879048191\n", &wanted),
            None
        );
        assert_eq!(
            account_holding("/etc/passwd", "u:x:5:5:1879048191:/:/bin/sh\n", &wanted),
            None
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(matches!(
            parse_user("no-such-user-jailfs"),
            Err(UserSpecError::UnknownUser { name }) if name == "no-such-user-jailfs"
        ));
        for spec in ["", ":", "1000:", ":1000", "1:2:3"] {
            assert!(
                matches!(parse_user(spec), Err(UserSpecError::Malformed { .. })),
                "{spec:?}"
            );
        }
        for spec in ["1000:staff", "4294967295", "1000:4294967295", "99999999999"] {
            assert!(
                matches!(parse_user(spec), Err(UserSpecError::InvalidId { .. })),
                "{spec:?}"
            );
        }
    }
}
