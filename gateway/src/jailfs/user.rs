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

/// The name given to a numeric uid that has no account on the host.
const UNNAMED_USER: &str = "cgi";

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
/// The group name is the gid's group on the host, or the gid written as a number. Uid 0
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
        .map_or_else(|| gid.to_string(), |group| group.name);
    Ok(CgiUser {
        name,
        uid,
        gid,
        group_name,
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
                group_name: "3999998".into()
            }
        );
        let user = parse_user("3999999").expect("uid");
        assert_eq!((user.uid, user.gid), (3999999, 3999999));
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
