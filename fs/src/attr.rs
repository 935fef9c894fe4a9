//! File attributes as the union logic sees them: a plain copy of `struct stat`, so that the pure
//! union code and its in-memory test double need neither libc nor a real file.

/// A timestamp as the kernel stores it (seconds may be negative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

/// The type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl FileKind {
    /// The kind encoded in the `S_IFMT` bits of a mode, if any.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFREG => FileKind::File,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            _ => return None,
        })
    }

    /// The kind announced by `getdents` (`DT_UNKNOWN` gives `None`: the caller must stat).
    pub fn from_dtype(d_type: u8) -> Option<FileKind> {
        Some(match d_type {
            libc::DT_DIR => FileKind::Dir,
            libc::DT_REG => FileKind::File,
            libc::DT_LNK => FileKind::Symlink,
            libc::DT_FIFO => FileKind::Fifo,
            libc::DT_SOCK => FileKind::Socket,
            libc::DT_CHR => FileKind::CharDev,
            libc::DT_BLK => FileKind::BlockDev,
            _ => return None,
        })
    }
}

/// What `fstatat` reports about one entry of one branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl Stat {
    pub fn kind(&self) -> Option<FileKind> {
        FileKind::from_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// An overlayfs whiteout: a character device with device number 0/0.
    pub fn is_overlay_whiteout(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR && self.rdev == 0
    }

    /// Permission bits, including set-id and sticky bits.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

impl From<libc::stat> for Stat {
    fn from(st: libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: u64::try_from(st.st_size).unwrap_or(0),
            blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            blksize: u64::try_from(st.st_blksize).unwrap_or(4096),
            atime: Timespec {
                sec: st.st_atime,
                nsec: st.st_atime_nsec,
            },
            mtime: Timespec {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec,
            },
            ctime: Timespec {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec,
            },
        }
    }
}
