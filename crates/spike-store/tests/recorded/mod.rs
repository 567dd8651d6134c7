//! Reading what the `metrics` facade recorded, through metrics-util's debugging recorder.

#![allow(dead_code)] // each test binary uses what it needs

use metrics_util::debugging::{DebugValue, Snapshotter};

/// A metric's name, labels and value.
type Sample = (String, Vec<(String, String)>, DebugValue);

/// One snapshot of a debugging recorder.
pub struct Recorded(Vec<Sample>);

impl Recorded {
    /// Takes a snapshot.
    pub fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| {
                    let k = key.key();
                    let labels = k
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    (k.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    /// A counter's value, or the number of samples of a histogram, for the metric `name` with
    /// exactly these labels; `None` when it was never recorded.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.0.iter().find_map(|(n, ls, value)| {
            let same = n == name
                && ls.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v));
            match (same, value) {
                (true, DebugValue::Counter(c)) => Some(*c),
                (true, DebugValue::Histogram(h)) => Some(h.len() as u64),
                _ => None,
            }
        })
    }
}
