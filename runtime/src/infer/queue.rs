//! The pending requests and how a batch is cut from them: whole requests in arrival order up to
//! the row and token budgets of one round, requests whose caller is gone or whose deadline
//! passed taken out first; then the round's rows ordered by length and cut into forward passes
//! that pad little (`plan`). Pure data: no model, no threads.

use std::collections::VecDeque;
use std::time::Instant;

use super::{InferError, Request, Result};

/// Why a request left the queue without being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unserved {
    /// The caller went away.
    Cancelled,
    /// Its deadline passed.
    Expired,
}

/// Requests waiting for the worker.
#[derive(Debug)]
pub(super) struct Queue {
    entries: VecDeque<Request>,
    capacity: usize,
    closed: bool,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            closed: false,
        }
    }

    /// Adds a request. Full (or closed): `Overloaded`, and the request is dropped, which closes
    /// its reply. Callers prune first, so that callers who left never hold a place.
    pub(super) fn push(&mut self, request: Request) -> Result<()> {
        if self.entries.len() >= self.capacity || self.closed {
            return Err(InferError::Overloaded {
                capacity: self.capacity,
            });
        }
        self.entries.push_back(request);
        Ok(())
    }

    /// Stops accepting requests; the worker ends once the queue is empty.
    pub(super) fn close(&mut self) {
        self.closed = true;
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Rows and tokens waiting.
    pub(super) fn load(&self) -> (usize, usize) {
        self.entries.iter().fold((0, 0), |(rows, tokens), r| {
            (
                rows + r.rows.len(),
                tokens + r.rows.iter().map(super::Row::len).sum::<usize>(),
            )
        })
    }

    /// Takes out the requests whose caller is gone or whose deadline passed.
    pub(super) fn prune(&mut self, now: Instant) -> Vec<(Request, Unserved)> {
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for request in self.entries.drain(..) {
            if request.is_cancelled() {
                gone.push((request, Unserved::Cancelled));
            } else if request.deadline.is_some_and(|d| d <= now) {
                gone.push((request, Unserved::Expired));
            } else {
                kept.push_back(request);
            }
        }
        self.entries = kept;
        gone
    }

    /// Whole requests in arrival order while their rows fit `max_rows` and their tokens
    /// `max_tokens`; the first request is always taken, whatever its size (the worker cuts it
    /// into several passes).
    pub(super) fn next_batch(&mut self, max_rows: usize, max_tokens: usize) -> Vec<Request> {
        let mut batch = Vec::new();
        let (mut rows, mut tokens) = (0, 0);
        while let Some(next) = self.entries.front() {
            let r = next.rows.len();
            let t: usize = next.rows.iter().map(super::Row::len).sum();
            if !batch.is_empty() && (rows + r > max_rows || tokens + t > max_tokens) {
                break;
            }
            rows += r;
            tokens += t;
            if let Some(request) = self.entries.pop_front() {
                batch.push(request);
            }
        }
        batch
    }
}

/// One row of a round: which request, which of its rows, how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RowRef {
    pub(super) request: usize,
    pub(super) row: usize,
    pub(super) len: usize,
}

/// Cuts a round's rows into forward passes: ordered by length (stable, so equal lengths keep
/// arrival order), each pass at most `max_rows` rows and `max_tokens` padded tokens (rows ×
/// longest), a row longer than `max_tokens` alone.
pub(super) fn plan(mut rows: Vec<RowRef>, max_rows: usize, max_tokens: usize) -> Vec<Vec<RowRef>> {
    rows.sort_by_key(|r| r.len);
    let mut passes: Vec<Vec<RowRef>> = Vec::new();
    let mut current: Vec<RowRef> = Vec::new();
    for row in rows {
        // Sorted ascending, so `row.len` is the longest of the pass if added.
        let padded = (current.len() + 1) * row.len;
        if !current.is_empty() && (current.len() + 1 > max_rows.max(1) || padded > max_tokens) {
            passes.push(std::mem::take(&mut current));
        }
        current.push(row);
    }
    if !current.is_empty() {
        passes.push(current);
    }
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(request: usize, row: usize, len: usize) -> RowRef {
        RowRef { request, row, len }
    }

    #[test]
    fn passes_are_sorted_by_length_and_bounded() {
        let rows = vec![r(0, 0, 10), r(0, 1, 3), r(1, 0, 7), r(2, 0, 3), r(2, 1, 40)];
        let passes = plan(rows, 2, 1000);
        let lens: Vec<Vec<usize>> = passes
            .iter()
            .map(|p| p.iter().map(|r| r.len).collect())
            .collect();
        assert_eq!(lens, [vec![3, 3], vec![7, 10], vec![40]]);
        // Equal lengths keep arrival order.
        assert_eq!((passes[0][0].request, passes[0][1].request), (0, 2));
        // Padded tokens: 3 rows of 10 would be 30 > 25.
        let passes = plan(vec![r(0, 0, 10), r(0, 1, 10), r(0, 2, 10)], 8, 25);
        assert_eq!(passes.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        // A row longer than the budget runs alone.
        let passes = plan(vec![r(0, 0, 5), r(1, 0, 500)], 8, 100);
        assert_eq!(passes.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }
}
