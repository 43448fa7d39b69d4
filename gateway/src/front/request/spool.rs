//! Where request bodies wait for their CGI, under one byte budget for all requests together
//! (`--spool-budget`): a body of unknown length in a memory file (memfd) of the front's own,
//! which becomes the CGI's stdin; what a slow CGI has not read yet of a streamed body in the
//! front's memory (`body.rs`).
//!
//! A memfd has no name in any folder: nothing another user or a CGI could open or fill, nothing
//! left behind by a killed gateway, and its pages go back the moment its last descriptor
//! closes. The price is that spooled bodies take memory (or swap) instead of disk, which the
//! budget bounds: past it a request gets 503 instead of taking more.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::error::RequestError;

/// The bytes of request bodies held by the front for all requests together.
#[derive(Debug, Default)]
pub struct SpoolBudget {
    used: AtomicU64,
    /// Requests refused because the budget was spent, for `/metrics`.
    refusals: AtomicU64,
}

impl SpoolBudget {
    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests refused so far for want of budget.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Counts one refusal; the error the request gets (503).
    pub fn refused(&self) -> RequestError {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        RequestError::SpoolFull
    }

    /// An empty reservation, to grow as a body arrives.
    pub fn reservation(self: &Arc<Self>, limit: u64) -> Reservation {
        Reservation {
            budget: self.clone(),
            limit,
            bytes: 0,
        }
    }
}

/// Bytes one body holds of the budget, given back when it is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<SpoolBudget>,
    /// `--spool-budget` when the request started.
    limit: u64,
    bytes: u64,
}

/// The budget is spent: the request gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent;

impl Reservation {
    /// Takes `more` bytes, unless all bodies together would then hold more than the limit.
    pub fn grow(&mut self, more: u64) -> Result<(), BudgetSpent> {
        self.budget
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(more).filter(|total| *total <= self.limit)
            })
            .map_err(|_| BudgetSpent)?;
        self.bytes += more;
        Ok(())
    }

    /// Gives back `less` bytes (at most what is held): the CGI has taken them.
    pub fn shrink(&mut self, less: u64) {
        let less = less.min(self.bytes);
        self.budget.used.fetch_sub(less, Ordering::Relaxed);
        self.bytes -= less;
    }

    /// Gives back everything held.
    pub fn release(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// A new, empty memory file, closed on exec, that can be sealed.
pub fn memory_file(name: &str) -> std::io::Result<File> {
    let fd: OwnedFd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    Ok(File::from(fd))
}

/// Seals `file` against any change: every write, through any descriptor, fails from now on
/// (EPERM), so the CGI that gets it as stdin can only read it.
pub fn seal(file: &File) -> std::io::Result<()> {
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn the_budget_holds_across_reservations_and_comes_back() {
        let budget = Arc::new(SpoolBudget::default());
        let mut first = budget.reservation(100);
        let mut second = budget.reservation(100);
        first.grow(60).expect("within the budget");
        assert_eq!(second.grow(41), Err(BudgetSpent));
        second.grow(40).expect("exactly the budget");
        assert_eq!(budget.used(), 100);
        first.release();
        assert_eq!(budget.used(), 40);
        first.grow(60).expect("room again");
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_sealed_memory_file_reads_and_refuses_writes() {
        let mut file = memory_file("test").expect("memfd");
        file.write_all(b"body").expect("write");
        seal(&file).expect("seal");
        file.seek(SeekFrom::Start(0)).expect("seek");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read");
        assert_eq!(text, "body");
        let refused = file.write_all(b"more").expect_err("a write after the seal");
        assert_eq!(refused.raw_os_error(), Some(libc::EPERM));
    }
}
