//! Which existing objects a process may attach to (PROTOCOL.md §3.4), and which names it may
//! use.
//!
//! Another user can create a segment under a well-known name (`/dmxp_alloc`) before its real
//! creator runs, or plant a symbolic link at a file segment's path. A client that attaches
//! silently then shares its messages with that user. The backends therefore `fstat` every
//! object they open but did not just create, and hand what they found to
//! [`AttachPolicy::check`]. The rule is pure (no system calls), so every backend and every
//! client applies the same one:
//!
//! * **type**: a regular file;
//! * **owner**: this process's effective uid, an owner the caller trusts explicitly, or, when
//!   the caller chose group access, an object of that group;
//! * **mode**: no permission bit outside the mode the caller asked for (`0o600` by default).
//!
//! ```
//! use dmxp_nostd::trust::{AttachPolicy, ObjectStat, Untrusted};
//!
//! let me = 1000;
//! let policy = AttachPolicy::new(me, 0o600);
//! let mine = ObjectStat { uid: me, gid: me, mode: 0o600, regular: true };
//! assert_eq!(policy.check(&mine, &[]), Ok(()));
//!
//! // Squatted by uid 65534 with mode 0666: refused, then accepted once trusted explicitly.
//! let squatted = ObjectStat { uid: 65534, gid: 65534, mode: 0o666, regular: true };
//! assert!(matches!(policy.check(&squatted, &[]), Err(Untrusted::Owner { .. })));
//! let trusting = policy.trust_owner(65534).unwrap().with_mode(0o666);
//! assert_eq!(trusting.check(&squatted, &[]), Ok(()));
//! ```

use core::fmt;

/// How many other owners one policy can trust.
pub const MAX_TRUSTED_OWNERS: usize = 4;

/// The longest POSIX shm name after its leading `/` (NAME_MAX on Linux).
pub const MAX_SHM_NAME_LEN: usize = 254;

/// What `fstat` said of an opened object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// Owner (`st_uid`).
    pub uid: u32,
    /// Group (`st_gid`).
    pub gid: u32,
    /// Permission bits, `st_mode & 0o7777` (any other bits are ignored).
    pub mode: u32,
    /// `S_ISREG(st_mode)`.
    pub regular: bool,
}

/// The group an attaching caller accepts an object of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAccess {
    /// Only owners count (the default).
    None,
    /// Any group this process belongs to (its effective group or a supplementary one).
    OwnGroups,
    /// Exactly this group.
    Group(u32),
}

/// The rule an attach applies to an object it did not create (PROTOCOL.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachPolicy {
    euid: u32,
    mode: u32,
    group: GroupAccess,
    trusted: [u32; MAX_TRUSTED_OWNERS],
    trusted_len: usize,
}

impl AttachPolicy {
    /// Objects owned by `euid` (this process's effective uid) that grant nothing outside
    /// `mode` (the mode the caller would create with; bits outside `0o7777` are ignored).
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, ObjectStat};
    /// let policy = AttachPolicy::new(0, 0o600);
    /// let group_readable = ObjectStat { uid: 0, gid: 0, mode: 0o640, regular: true };
    /// assert!(policy.check(&group_readable, &[]).is_err());
    /// ```
    #[must_use]
    pub const fn new(euid: u32, mode: u32) -> Self {
        Self {
            euid,
            mode: mode & 0o7777,
            group: GroupAccess::None,
            trusted: [0; MAX_TRUSTED_OWNERS],
            trusted_len: 0,
        }
    }

    /// The same policy accepting objects of `group` whatever their owner.
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, GroupAccess, ObjectStat};
    /// let policy = AttachPolicy::new(1000, 0o660).with_group(GroupAccess::Group(50));
    /// let shared = ObjectStat { uid: 1001, gid: 50, mode: 0o660, regular: true };
    /// assert_eq!(policy.check(&shared, &[]), Ok(()));
    /// ```
    #[must_use]
    pub const fn with_group(mut self, group: GroupAccess) -> Self {
        self.group = group;
        self
    }

    /// The same policy with `mode` as the widest mode accepted.
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, ObjectStat};
    /// let policy = AttachPolicy::new(7, 0o600).with_mode(0o660);
    /// let shared = ObjectStat { uid: 7, gid: 7, mode: 0o660, regular: true };
    /// assert_eq!(policy.check(&shared, &[]), Ok(()));
    /// ```
    #[must_use]
    pub const fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o7777;
        self
    }

    /// The same policy also trusting objects owned by `uid`. `None` when
    /// [`MAX_TRUSTED_OWNERS`] owners are trusted already. Trusting an owner does not widen
    /// the mode: pair it with [`Self::with_mode`] to accept a wider one.
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, ObjectStat};
    /// let policy = AttachPolicy::new(0, 0o600).trust_owner(42).unwrap();
    /// let theirs = ObjectStat { uid: 42, gid: 42, mode: 0o600, regular: true };
    /// assert_eq!(policy.check(&theirs, &[]), Ok(()));
    /// ```
    #[must_use]
    pub const fn trust_owner(mut self, uid: u32) -> Option<Self> {
        if self.trusted_len == MAX_TRUSTED_OWNERS {
            return None;
        }
        self.trusted[self.trusted_len] = uid;
        self.trusted_len += 1;
        Some(self)
    }

    /// The effective uid the policy was made for.
    ///
    /// ```
    /// assert_eq!(dmxp_nostd::trust::AttachPolicy::new(5, 0o600).euid(), 5);
    /// ```
    #[must_use]
    pub const fn euid(&self) -> u32 {
        self.euid
    }

    /// Which group's objects are accepted whatever their owner.
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, GroupAccess};
    /// assert_eq!(AttachPolicy::new(5, 0o600).group(), GroupAccess::None);
    /// ```
    #[must_use]
    pub const fn group(&self) -> GroupAccess {
        self.group
    }

    /// The widest mode accepted.
    ///
    /// ```
    /// assert_eq!(dmxp_nostd::trust::AttachPolicy::new(5, 0o660).mode(), 0o660);
    /// ```
    #[must_use]
    pub const fn mode(&self) -> u32 {
        self.mode
    }

    /// The other owners trusted explicitly.
    ///
    /// ```
    /// let policy = dmxp_nostd::trust::AttachPolicy::new(0, 0o600).trust_owner(9).unwrap();
    /// assert_eq!(policy.trusted_owners(), &[9]);
    /// ```
    #[must_use]
    pub fn trusted_owners(&self) -> &[u32] {
        &self.trusted[..self.trusted_len]
    }

    /// Whether `stat` may be attached to. `own_groups` lists the groups this process belongs
    /// to (effective and supplementary); it matters only with [`GroupAccess::OwnGroups`].
    ///
    /// The checks run in the order of PROTOCOL.md §3.4 (type, owner, mode); the first that
    /// fails is reported.
    ///
    /// ```
    /// use dmxp_nostd::trust::{AttachPolicy, GroupAccess, ObjectStat, Untrusted};
    /// let policy = AttachPolicy::new(1000, 0o660).with_group(GroupAccess::OwnGroups);
    /// let theirs = ObjectStat { uid: 1001, gid: 20, mode: 0o660, regular: true };
    /// assert_eq!(policy.check(&theirs, &[20, 27]), Ok(()));
    /// assert!(matches!(policy.check(&theirs, &[27]), Err(Untrusted::Owner { .. })));
    /// ```
    pub fn check(&self, stat: &ObjectStat, own_groups: &[u32]) -> Result<(), Untrusted> {
        if !stat.regular {
            return Err(Untrusted::NotRegular);
        }
        let mode = stat.mode & 0o7777;
        let owner_ok = stat.uid == self.euid
            || self.trusted_owners().contains(&stat.uid)
            || match self.group {
                GroupAccess::None => false,
                GroupAccess::OwnGroups => own_groups.contains(&stat.gid),
                GroupAccess::Group(gid) => stat.gid == gid,
            };
        if !owner_ok {
            return Err(Untrusted::Owner {
                uid: stat.uid,
                gid: stat.gid,
                mode,
                expected_uid: self.euid,
                allowed_mode: self.mode,
            });
        }
        if mode & !self.mode != 0 {
            return Err(Untrusted::Mode {
                uid: stat.uid,
                mode,
                allowed_mode: self.mode,
            });
        }
        Ok(())
    }
}

/// Why an object was refused (PROTOCOL.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Not a regular file (a directory, a device, a FIFO...).
    NotRegular,
    /// The path's last component is a symbolic link.
    Symlink,
    /// A directory on the path is writable by anyone and not sticky: another user could
    /// replace the object in it.
    OpenDirectory {
        /// The directory's permission bits.
        mode: u32,
    },
    /// Owned by a user this process does not trust (and not of an accepted group).
    Owner {
        /// The object's owner.
        uid: u32,
        /// The object's group.
        gid: u32,
        /// The object's permission bits.
        mode: u32,
        /// The owner expected (this process's effective uid).
        expected_uid: u32,
        /// The widest mode accepted.
        allowed_mode: u32,
    },
    /// Grants permissions outside the mode the caller asked for.
    Mode {
        /// The object's owner.
        uid: u32,
        /// The object's permission bits.
        mode: u32,
        /// The widest mode accepted.
        allowed_mode: u32,
    },
}

impl Untrusted {
    /// The object's owner, when the refusal is about an owner or a mode.
    ///
    /// ```
    /// use dmxp_nostd::trust::Untrusted;
    /// assert_eq!(Untrusted::Mode { uid: 3, mode: 0o666, allowed_mode: 0o600 }.owner(), Some(3));
    /// ```
    #[must_use]
    pub const fn owner(&self) -> Option<u32> {
        match *self {
            Untrusted::Owner { uid, .. } | Untrusted::Mode { uid, .. } => Some(uid),
            _ => None,
        }
    }

    /// The object's (or directory's) permission bits, when known.
    ///
    /// ```
    /// use dmxp_nostd::trust::Untrusted;
    /// assert_eq!(Untrusted::OpenDirectory { mode: 0o777 }.mode(), Some(0o777));
    /// ```
    #[must_use]
    pub const fn mode(&self) -> Option<u32> {
        match *self {
            Untrusted::Owner { mode, .. }
            | Untrusted::Mode { mode, .. }
            | Untrusted::OpenDirectory { mode } => Some(mode),
            _ => None,
        }
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Untrusted::NotRegular => f.write_str("not a regular file"),
            Untrusted::Symlink => {
                f.write_str("is a symbolic link (refused: it could point anywhere)")
            }
            Untrusted::OpenDirectory { mode } => write!(
                f,
                "its directory has mode {mode:04o}: writable by anyone and not sticky, so \
                 another user could replace the segment"
            ),
            Untrusted::Owner {
                uid,
                mode,
                expected_uid,
                allowed_mode,
                ..
            } => write!(
                f,
                "owned by uid {uid} with mode {mode:04o}; expected owner uid {expected_uid} \
                 and a mode within {allowed_mode:04o} (trust it explicitly with \
                 with_trust_owner({uid}) and with_mode(0o{mode:o}), or --trust-owner {uid} \
                 --mode {mode:04o})"
            ),
            Untrusted::Mode {
                uid,
                mode,
                allowed_mode,
            } => write!(
                f,
                "owned by uid {uid} with mode {mode:04o}, which grants more than the \
                 {allowed_mode:04o} asked for (accept it explicitly with with_mode(0o{mode:o}) \
                 or --mode {mode:04o})"
            ),
        }
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// A shm name must start with `/`.
    NoLeadingSlash,
    /// Nothing after the `/`.
    Empty,
    /// More than [`MAX_SHM_NAME_LEN`] bytes after the `/`.
    TooLong {
        /// Bytes after the `/`.
        len: usize,
    },
    /// A `/` after the first byte.
    Slash,
    /// A NUL or control byte (below 0x20, or 0x7F) at this byte offset.
    ControlCharacter {
        /// Byte offset in the name.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadName::NoLeadingSlash => f.write_str("a shm name must start with '/'"),
            BadName::Empty => f.write_str("a shm name needs at least one byte after '/'"),
            BadName::TooLong { len } => write!(
                f,
                "a shm name has at most {MAX_SHM_NAME_LEN} bytes after '/', this one {len}"
            ),
            BadName::Slash => f.write_str("a shm name has no '/' after the first byte"),
            BadName::ControlCharacter { at, byte } => {
                write!(f, "control character {byte:#04x} at byte {at}")
            }
        }
    }
}

/// Checks a POSIX shm name: `/` and 1 to [`MAX_SHM_NAME_LEN`] bytes, none `/`, NUL or a
/// control character.
///
/// ```
/// use dmxp_nostd::trust::{check_shm_name, BadName};
/// assert_eq!(check_shm_name("/dmxp_alloc"), Ok(()));
/// assert_eq!(check_shm_name("/a\nb"), Err(BadName::ControlCharacter { at: 2, byte: b'\n' }));
/// assert_eq!(check_shm_name("/a/b"), Err(BadName::Slash));
/// ```
pub fn check_shm_name(name: &str) -> Result<(), BadName> {
    let rest = name.strip_prefix('/').ok_or(BadName::NoLeadingSlash)?;
    check_control_characters(name.as_bytes())?;
    if rest.is_empty() {
        return Err(BadName::Empty);
    }
    if rest.len() > MAX_SHM_NAME_LEN {
        return Err(BadName::TooLong { len: rest.len() });
    }
    if rest.contains('/') {
        return Err(BadName::Slash);
    }
    Ok(())
}

/// Checks that a name or path holds no NUL or control byte (below 0x20, or 0x7F).
///
/// ```
/// use dmxp_nostd::trust::{check_control_characters, BadName};
/// assert_eq!(check_control_characters(b"/tmp/segment"), Ok(()));
/// assert!(matches!(check_control_characters(b"/tmp/\x7f"), Err(BadName::ControlCharacter { .. })));
/// ```
pub fn check_control_characters(bytes: &[u8]) -> Result<(), BadName> {
    match bytes.iter().position(|&b| b < 0x20 || b == 0x7f) {
        Some(at) => Err(BadName::ControlCharacter {
            at,
            byte: bytes[at],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn stat(uid: u32, gid: u32, mode: u32) -> ObjectStat {
        ObjectStat {
            uid,
            gid,
            mode,
            regular: true,
        }
    }

    #[test]
    fn own_objects_within_the_mode_pass() {
        let policy = AttachPolicy::new(ME, 0o600);
        assert_eq!(policy.check(&stat(ME, 1, 0o600), &[]), Ok(()));
        assert_eq!(policy.check(&stat(ME, 1, 0o400), &[]), Ok(()));
    }

    #[test]
    fn a_wider_mode_is_refused_even_for_own_objects() {
        let policy = AttachPolicy::new(ME, 0o600);
        for mode in [0o660, 0o606, 0o666, 0o4600, 0o1600, 0o700] {
            assert_eq!(
                policy.check(&stat(ME, 1, mode), &[]),
                Err(Untrusted::Mode {
                    uid: ME,
                    mode,
                    allowed_mode: 0o600
                }),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn another_owner_is_refused_unless_trusted() {
        let policy = AttachPolicy::new(ME, 0o666);
        let theirs = stat(65534, 65534, 0o666);
        assert!(matches!(
            policy.check(&theirs, &[]),
            Err(Untrusted::Owner { uid: 65534, .. })
        ));
        let trusting = policy.trust_owner(65534).unwrap();
        assert_eq!(trusting.check(&theirs, &[]), Ok(()));
        // Trust does not widen the mode.
        let narrow = AttachPolicy::new(ME, 0o600).trust_owner(65534).unwrap();
        assert!(matches!(
            narrow.check(&theirs, &[]),
            Err(Untrusted::Mode { .. })
        ));
    }

    #[test]
    fn group_access_accepts_only_the_chosen_group() {
        let theirs = stat(2000, 50, 0o660);
        let none = AttachPolicy::new(ME, 0o660);
        assert!(none.check(&theirs, &[50]).is_err());
        let named = none.with_group(GroupAccess::Group(50));
        assert_eq!(named.check(&theirs, &[]), Ok(()));
        assert!(named.check(&stat(2000, 51, 0o660), &[51]).is_err());
        let own = none.with_group(GroupAccess::OwnGroups);
        assert_eq!(own.check(&theirs, &[7, 50]), Ok(()));
        assert!(own.check(&theirs, &[7]).is_err());
    }

    #[test]
    fn non_regular_objects_are_refused_first() {
        let policy = AttachPolicy::new(ME, 0o600);
        let dir = ObjectStat {
            regular: false,
            ..stat(ME, 1, 0o600)
        };
        assert_eq!(policy.check(&dir, &[]), Err(Untrusted::NotRegular));
    }

    #[test]
    fn the_trusted_list_is_bounded() {
        let mut policy = AttachPolicy::new(ME, 0o600);
        for uid in 0..MAX_TRUSTED_OWNERS as u32 {
            policy = policy.trust_owner(uid).unwrap();
        }
        assert!(policy.trust_owner(99).is_none());
    }

    #[test]
    fn shm_names() {
        assert_eq!(check_shm_name("/x"), Ok(()));
        assert_eq!(check_shm_name("x"), Err(BadName::NoLeadingSlash));
        assert_eq!(check_shm_name("/"), Err(BadName::Empty));
        assert_eq!(check_shm_name("/a/b"), Err(BadName::Slash));
        let long = std::format!("/{}", "a".repeat(255));
        assert_eq!(check_shm_name(&long), Err(BadName::TooLong { len: 255 }));
        assert_eq!(check_shm_name(&long[..255]), Ok(()));
        for (name, at, byte) in [("/a\nb", 2, b'\n'), ("/\x7f", 1, 0x7f), ("/a\0", 2, 0)] {
            assert_eq!(
                check_shm_name(name),
                Err(BadName::ControlCharacter { at, byte })
            );
        }
    }

    #[test]
    fn messages_name_owner_and_mode() {
        use std::string::ToString;
        let policy = AttachPolicy::new(0, 0o600);
        let message = policy
            .check(&stat(65534, 65534, 0o666), &[])
            .unwrap_err()
            .to_string();
        assert!(message.contains("uid 65534"), "{message}");
        assert!(message.contains("0666"), "{message}");
        assert!(message.contains("0600"), "{message}");
    }
}
