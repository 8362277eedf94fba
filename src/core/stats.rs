//! A job's typed statistics (libvirt's job stats): named values a job declares
//! before it starts, its worker or owner sets as cheaply as progress, and any
//! thread reads all at once.
//!
//! Declaring is configuration: names, units and types are fixed before the
//! job starts, in a table made on the first declaration (a job without
//! statistics carries two words). Values are one atomic word each (a double
//! as its bits, a signed value as its two's complement); strings are behind a
//! mutex. All values share one sequence lock, the same protocol as
//! [`super::progress`]: a writer makes the sequence odd, stores, and makes it
//! even again; a reader retries until it read between two equal even
//! sequences. So a setter of a number is a compare-and-swap and two stores, no
//! lock, and a batch of values set together ([`Stats::set_many`]) is never seen
//! half applied. A string setter takes the strings' mutex (and so does a
//! reader, inside its retry loop).

use super::atomic::{AtomicU8, AtomicU64, Ordering, backoff, fence, seq_write_begin};
use super::error::Error;
use std::sync::{Arc, Mutex, OnceLock};

/// Most statistics one job may declare.
pub const MAX_STATS: usize = 64;
/// Longest name, in bytes (a C reader's array holds it with its NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Longest unit, in bytes.
pub const MAX_UNIT_LEN: usize = 15;

/// A statistic's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatType {
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// A double.
    Double,
    /// A string (copied).
    String,
}

impl StatType {
    const ALL: [StatType; 4] = [
        StatType::U64,
        StatType::I64,
        StatType::Double,
        StatType::String,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> StatType {
        Self::ALL[usize::from(c)]
    }
}

/// A statistic's value.
#[derive(Clone, Debug, PartialEq)]
pub enum StatValue {
    /// For [`StatType::U64`].
    U64(u64),
    /// For [`StatType::I64`].
    I64(i64),
    /// For [`StatType::Double`].
    Double(f64),
    /// For [`StatType::String`].
    String(Arc<str>),
}

impl StatValue {
    /// The type this value is for.
    pub fn stat_type(&self) -> StatType {
        match self {
            StatValue::U64(_) => StatType::U64,
            StatValue::I64(_) => StatType::I64,
            StatValue::Double(_) => StatType::Double,
            StatValue::String(_) => StatType::String,
        }
    }

    fn word(&self) -> u64 {
        match self {
            StatValue::U64(v) => *v,
            StatValue::I64(v) => *v as u64,
            StatValue::Double(v) => v.to_bits(),
            StatValue::String(_) => 0,
        }
    }

    fn from_word(t: StatType, w: u64) -> StatValue {
        match t {
            StatType::U64 => StatValue::U64(w),
            StatType::I64 => StatValue::I64(w as i64),
            StatType::Double => StatValue::Double(f64::from_bits(w)),
            StatType::String => StatValue::String(Arc::from("")),
        }
    }
}

/// One statistic as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Stat {
    /// Its name.
    pub name: Arc<str>,
    /// Its unit ("" for none).
    pub unit: Arc<str>,
    /// Its value (0, or "" for a string, until set).
    pub value: StatValue,
}

struct Decl {
    name: Arc<str>,
    unit: Arc<str>,
}

struct Table {
    /// Declarations, append-only; `count` publishes how many are complete.
    decls: Mutex<Vec<Decl>>,
    count: AtomicU64,
    types: Box<[AtomicU8]>,
    words: Box<[AtomicU64]>,
    texts: Mutex<Vec<Arc<str>>>,
}

/// A job's statistics. See the module docs.
#[derive(Default)]
pub(crate) struct Stats {
    seq: AtomicU64,
    table: OnceLock<Box<Table>>,
}

impl Stats {
    fn table(&self) -> &Table {
        self.table.get_or_init(|| {
            Box::new(Table {
                decls: Mutex::new(Vec::new()),
                count: AtomicU64::new(0),
                types: (0..MAX_STATS).map(|_| AtomicU8::new(0)).collect(),
                words: (0..MAX_STATS).map(|_| AtomicU64::new(0)).collect(),
                texts: Mutex::new(vec![Arc::from(""); MAX_STATS]),
            })
        })
    }

    /// Declares a statistic; its index is its place in declaration order. The
    /// caller checks the job's state. Refused: an empty or too long name or
    /// unit, a name already declared, more than [`MAX_STATS`].
    pub fn declare(&self, name: &str, t: StatType, unit: &str) -> Result<u32, Error> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(Error::InvalidArgument("a stat name is 1 to 63 bytes"));
        }
        if unit.len() > MAX_UNIT_LEN {
            return Err(Error::InvalidArgument("a stat unit is at most 15 bytes"));
        }
        let table = self.table();
        let mut decls = table.decls.lock().unwrap_or_else(|e| e.into_inner());
        if decls.iter().any(|d| &*d.name == name) {
            return Err(Error::InvalidArgument("a stat of that name exists"));
        }
        if decls.len() >= MAX_STATS {
            return Err(Error::InvalidArgument("too many stats (64 at most)"));
        }
        let i = decls.len();
        table.types[i].store(t.code(), Ordering::Relaxed);
        decls.push(Decl {
            name: Arc::from(name),
            unit: Arc::from(unit),
        });
        // Publishes the type (and the declaration) to setters that see the count.
        table.count.store(i as u64 + 1, Ordering::Release);
        Ok(i as u32)
    }

    /// Checks an index and the type of a value for it.
    fn check(&self, index: u32, t: StatType) -> Result<&Table, Error> {
        let table = self
            .table
            .get()
            .ok_or(Error::InvalidArgument("no such stat"))?;
        if u64::from(index) >= table.count.load(Ordering::Acquire) {
            return Err(Error::InvalidArgument("no such stat"));
        }
        if table.types[index as usize].load(Ordering::Relaxed) != t.code() {
            return Err(Error::InvalidArgument("the value's type is not the stat's"));
        }
        Ok(table)
    }

    /// Makes the sequence odd (excluding other writers), runs `f`, makes it
    /// even again.
    fn write(&self, f: impl FnOnce()) {
        let seq = seq_write_begin(&self.seq);
        f();
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// Sets one number: a compare-and-swap and two stores, no lock.
    pub fn set_number(&self, index: u32, v: &StatValue) -> Result<(), Error> {
        if matches!(v, StatValue::String(_)) {
            return self.set_many(&[(index, v.clone())]);
        }
        let table = self.check(index, v.stat_type())?;
        let word = v.word();
        self.write(|| table.words[index as usize].store(word, Ordering::Relaxed));
        Ok(())
    }

    /// Sets several values as one update: a reader sees all of them or none.
    /// Every index and type is checked first; on an error nothing is set.
    /// Takes the strings' mutex only when one of the values is a string.
    pub fn set_many(&self, values: &[(u32, StatValue)]) -> Result<(), Error> {
        let mut table = None;
        for (i, v) in values {
            table = Some(self.check(*i, v.stat_type())?);
        }
        let Some(table) = table else {
            return Ok(());
        };
        let has_text = values
            .iter()
            .any(|(_, v)| matches!(v, StatValue::String(_)));
        // Taken before the sequence, so a writer never waits for the mutex
        // while readers spin on its odd sequence.
        let mut texts = has_text.then(|| table.texts.lock().unwrap_or_else(|e| e.into_inner()));
        self.write(|| {
            for (i, v) in values {
                match (v, texts.as_mut()) {
                    (StatValue::String(s), Some(texts)) => texts[*i as usize] = s.clone(),
                    _ => table.words[*i as usize].store(v.word(), Ordering::Relaxed),
                }
            }
        });
        Ok(())
    }

    /// The declared type of statistic `index`, if there is one.
    pub fn stat_type(&self, index: u32) -> Option<StatType> {
        let t = self.table.get()?;
        (u64::from(index) < t.count.load(Ordering::Acquire))
            .then(|| StatType::from_code(t.types[index as usize].load(Ordering::Relaxed)))
    }

    /// Waits out a writer mid-update and returns the (even) sequence.
    pub fn version(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            let s = self.seq.load(Ordering::Acquire);
            if s & 1 == 0 {
                return s;
            }
            backoff(&mut spins);
        }
    }

    /// Every statistic, in declaration order, as one published set (no batch
    /// seen half applied), with the sequence it was read at.
    pub fn read(&self) -> (Vec<Stat>, u64) {
        let Some(table) = self.table.get() else {
            return (Vec::new(), self.version());
        };
        let n = table.count.load(Ordering::Acquire) as usize;
        let (names, units): (Vec<Arc<str>>, Vec<Arc<str>>) = {
            let decls = table.decls.lock().unwrap_or_else(|e| e.into_inner());
            decls[..n]
                .iter()
                .map(|d| (d.name.clone(), d.unit.clone()))
                .unzip()
        };
        let types: Vec<StatType> = table.types[..n]
            .iter()
            .map(|t| StatType::from_code(t.load(Ordering::Relaxed)))
            .collect();
        let has_text = types.contains(&StatType::String);
        let mut spins = 0u32;
        loop {
            let s1 = self.version();
            let words: Vec<u64> = table.words[..n]
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect();
            let texts: Option<Vec<Arc<str>>> = has_text
                .then(|| table.texts.lock().unwrap_or_else(|e| e.into_inner())[..n].to_vec());
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != s1 {
                backoff(&mut spins);
                continue;
            }
            let stats = (0..n)
                .map(|i| Stat {
                    name: names[i].clone(),
                    unit: units[i].clone(),
                    value: match (types[i], &texts) {
                        (StatType::String, Some(t)) => StatValue::String(t[i].clone()),
                        (t, _) => StatValue::from_word(t, words[i]),
                    },
                })
                .collect();
            return (stats, s1);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn declare_rules() {
        let s = Stats::default();
        assert_eq!(s.declare("a", StatType::U64, "bytes"), Ok(0));
        assert_eq!(s.declare("b", StatType::String, ""), Ok(1));
        assert!(s.declare("a", StatType::I64, "").is_err(), "duplicate");
        assert!(s.declare("", StatType::I64, "").is_err(), "empty");
        assert!(s.declare(&"x".repeat(64), StatType::I64, "").is_err());
        assert!(s.declare("u", StatType::I64, &"x".repeat(16)).is_err());
        for i in 2..MAX_STATS {
            s.declare(&format!("s{i}"), StatType::Double, "").unwrap();
        }
        assert!(s.declare("one-more", StatType::U64, "").is_err());
        assert_eq!(s.read().0.len(), MAX_STATS);
    }

    #[test]
    fn every_type_round_trips_and_a_wrong_type_is_refused() {
        let s = Stats::default();
        let u = s.declare("u", StatType::U64, "B").unwrap();
        let i = s.declare("i", StatType::I64, "").unwrap();
        let d = s.declare("d", StatType::Double, "").unwrap();
        let t = s.declare("t", StatType::String, "").unwrap();
        s.set_number(u, &StatValue::U64(u64::MAX)).unwrap();
        s.set_number(i, &StatValue::I64(-5)).unwrap();
        s.set_number(d, &StatValue::Double(0.25)).unwrap();
        s.set_number(t, &StatValue::String(Arc::from("hi")))
            .unwrap();
        assert!(s.set_number(u, &StatValue::I64(1)).is_err());
        assert!(s.set_number(9, &StatValue::U64(1)).is_err());
        // A batch with one bad member sets nothing.
        assert!(
            s.set_many(&[(u, StatValue::U64(1)), (i, StatValue::U64(1))])
                .is_err()
        );
        let v: Vec<StatValue> = s.read().0.into_iter().map(|x| x.value).collect();
        assert_eq!(
            v,
            vec![
                StatValue::U64(u64::MAX),
                StatValue::I64(-5),
                StatValue::Double(0.25),
                StatValue::String(Arc::from("hi")),
            ]
        );
    }

    #[test]
    fn a_batch_is_never_seen_half_applied() {
        let s = Arc::new(Stats::default());
        let a = s.declare("a", StatType::U64, "").unwrap();
        let b = s.declare("b", StatType::I64, "").unwrap();
        let t = s.declare("t", StatType::String, "").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = {
            let (s, stop, reads) = (s.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v = s.read().0;
                    let (StatValue::U64(x), StatValue::I64(y), StatValue::String(z)) =
                        (&v[0].value, &v[1].value, &v[2].value)
                    else {
                        panic!("types changed");
                    };
                    assert_eq!(*y, -(*x as i64), "torn batch");
                    if *x > 0 {
                        assert_eq!(z.parse::<u64>().ok(), Some(*x), "torn batch (string)");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut i = 0u64;
        while i < 20_000 || reads.load(Ordering::Relaxed) < 5_000 {
            i += 1;
            let batch = [
                (a, StatValue::U64(i)),
                (b, StatValue::I64(-(i as i64))),
                (t, StatValue::String(Arc::from(i.to_string().as_str()))),
            ];
            s.set_many(&batch).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}

/// `make loom`: the statistics seqlock under every interleaving and reordering
/// loom explores. As in the progress models, readers run on spawned threads
/// and a writer on the model's main thread (see `progress::loom_tests`).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::core::testing::explore;
    use loom::sync::Arc;
    use loom::thread;

    fn two_numbers() -> Arc<Stats> {
        let s = Arc::new(Stats::default());
        assert_eq!(s.declare("a", StatType::U64, "").unwrap(), 0);
        assert_eq!(s.declare("b", StatType::U64, "").unwrap(), 1);
        s
    }

    fn batch(s: &Stats, v: u64) {
        s.set_many(&[(0, StatValue::U64(v)), (1, StatValue::U64(v))])
            .unwrap();
    }

    fn values(s: &Stats) -> (u64, u64) {
        let (stats, _) = s.read();
        match (&stats[0].value, &stats[1].value) {
            (StatValue::U64(a), StatValue::U64(b)) => (*a, *b),
            other => panic!("wrong types read: {other:?}"),
        }
    }

    /// A reader sees a batch whole or not at all, and never a value no batch
    /// published.
    #[test]
    fn batch_is_never_seen_half_applied() {
        explore("stats: batch vs reader", || {
            let s = two_numbers();
            batch(&s, 1);
            let reader = {
                let s = s.clone();
                thread::spawn(move || {
                    let (a, b) = values(&s);
                    assert_eq!(a, b, "half a batch seen: {a} {b}");
                    assert!((1..=2).contains(&a), "never published: {a}");
                })
            };
            batch(&s, 2);
            reader.join().unwrap();
            assert_eq!(values(&s), (2, 2));
        });
    }

    /// Two writers exclude each other: their batches never interleave, so the
    /// end is one batch's values, not a mix.
    #[test]
    fn batches_from_two_writers_never_mix() {
        explore("stats: two writers", || {
            let s = two_numbers();
            let other = {
                let s = s.clone();
                thread::spawn(move || batch(&s, 7))
            };
            batch(&s, 9);
            other.join().unwrap();
            let (a, b) = values(&s);
            assert_eq!(a, b, "two batches mixed: {a} {b}");
        });
    }
}
