//! A job's statistics ([`crate::core::stats`]): declaring them while the job
//! is `Created`, setting them (an update, like progress), reading them with
//! the snapshot; and the operation name and owner tag given at create.

use super::*;
use crate::core::stats::{Stat, StatType, StatValue};

/// Attempts at reading the snapshot and the statistics with no stat set in
/// between, before the statistics are read once more on their own.
const CONSISTENT_TRIES: usize = 16;

impl Job {
    /// The operation name given at create ("mirror", "save"; "" if none).
    pub fn operation(&self) -> &str {
        &self.0.operation
    }

    /// The owner tag given at create ("domain vm1"; "" if none).
    pub fn owner(&self) -> &str {
        &self.0.owner
    }

    /// Declares a statistic and returns its index (0, 1, … in declaration
    /// order). Only while the job is `Created` (else `NotAllowed`, as for
    /// start); names are unique per job, 1 to 63 bytes, the unit at most 15,
    /// at most [`crate::core::stats::MAX_STATS`] per job (else
    /// `InvalidArgument`).
    pub fn add_stat(&self, name: &str, t: StatType, unit: &str) -> Result<u32, Error> {
        // Held across the declaration, so a start cannot slip in between the
        // check and the table change.
        let st = self.0.lock();
        st.check(Verb::Start)?;
        let i = self.0.stats.declare(name, t, unit)?;
        drop(st);
        log::debug(format_args!(
            "job {} stat {i} '{name}' ({t:?}) declared",
            self.0.id
        ));
        Ok(i)
    }

    /// Sets one statistic: an update (refused once the job has ended, like
    /// progress), with no lock for a number. The value's type must be the
    /// statistic's.
    pub fn set_stat(&self, index: u32, value: &StatValue) -> Result<(), Error> {
        if self.0.attention.load(Ordering::Acquire) != 0 {
            self.check_update()?;
        }
        self.0.stats.set_number(index, value)
    }

    /// Sets several statistics as one update: a reader sees all or none of
    /// them. Checked whole first: on an error nothing is set.
    pub fn set_stats(&self, values: &[(u32, StatValue)]) -> Result<(), Error> {
        if self.0.attention.load(Ordering::Acquire) != 0 {
            self.check_update()?;
        }
        self.0.stats.set_many(values)
    }

    /// The declared type of statistic `index`, if the job has one.
    pub fn stat_type(&self, index: u32) -> Option<StatType> {
        self.0.stats.stat_type(index)
    }

    /// Every statistic in declaration order, as one published set. Readable
    /// in every state, until the last reference goes.
    pub fn stats(&self) -> Vec<Stat> {
        self.0.stats.read().0
    }

    /// The snapshot and the statistics together: the statistics are one
    /// published set, and no statistic was set between the start of the
    /// snapshot and the statistics' read — both describe the same moment as
    /// far as statistics go. Under a stream of stat updates so fast that
    /// [`CONSISTENT_TRIES`] attempts all overlap one, the statistics are read
    /// just after the snapshot instead (still one published set).
    pub fn info_and_stats(&self) -> (Info, Vec<Stat>) {
        for _ in 0..CONSISTENT_TRIES {
            let before = self.0.stats.version();
            let info = self.info();
            let (stats, at) = self.0.stats.read();
            if at == before {
                return (info, stats);
            }
        }
        let info = self.info();
        (info, self.stats())
    }
}

impl Worker<'_> {
    /// See [`Job::set_stat`]; follows the after-update rule of progress calls.
    pub fn set_stat(&self, index: u32, value: &StatValue) -> Result<(), Error> {
        self.job.set_stat(index, value)?;
        self.job.after_update();
        Ok(())
    }

    /// See [`Job::set_stats`]; follows the after-update rule of progress calls.
    pub fn set_stats(&self, values: &[(u32, StatValue)]) -> Result<(), Error> {
        self.job.set_stats(values)?;
        self.job.after_update();
        Ok(())
    }
}
