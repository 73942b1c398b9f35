//! What both rate limiters count: calls admitted and refused (per-thread stripes, so
//! `check` pays no shared write for them), with the limiter's name, its metrics and
//! its refusal events.

use std::sync::Arc;

use crate::observe::event;
use crate::striped::Counters;

const ADMITTED: usize = 0;
const REFUSED: usize = 1;

/// A limiter's name and call counts.
pub(super) struct Tally {
    kind: &'static str,
    name: Option<Arc<str>>,
    calls: Counters<2>,
    admitted_metric: event::Counter,
    refused_metric: event::Counter,
}

impl Tally {
    pub(super) fn new(kind: &'static str, name: Option<Arc<str>>) -> Self {
        Tally {
            kind,
            admitted_metric: event::Counter::new(
                "corral_rate_admitted_total",
                kind,
                name.as_deref(),
            ),
            refused_metric: event::Counter::new("corral_rate_refused_total", kind, name.as_deref()),
            name,
            calls: Counters::new(),
        }
    }

    /// The limiter's name, if it has one.
    pub(super) fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    /// Counts one call either way.
    #[inline]
    pub(super) fn count(&self, admitted: bool) {
        self.calls.add(if admitted { ADMITTED } else { REFUSED });
        if admitted {
            self.admitted_metric.add(1);
        } else {
            self.refused_metric.add(1);
            event::rate_refused(self.kind, self.name.as_deref());
        }
    }

    /// Calls admitted so far.
    pub(super) fn admitted(&self) -> u64 {
        self.calls.sum(ADMITTED)
    }

    /// Calls refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.calls.sum(REFUSED)
    }
}
