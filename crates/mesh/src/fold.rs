//! The fold guard (SPEC M4): one task's memory writes may fan out to at
//! most 8 linked writes, to a depth of at most 4, and all tasks together
//! may make at most 256 writes per window; beyond that the breaker trips,
//! the write is refused, and the trip is counted (the mesh records it in
//! the ledger and the metrics).
//!
//! A task's first write takes a [`Fold`] at depth 0 from
//! [`FoldGuard::root`]; each write it causes is [`Fold::link`]ed from the
//! write that caused it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FoldLimits {
    pub max_fanout: u32,
    pub max_depth: u32,
    pub max_per_window: u32,
    pub window: Duration,
}

impl Default for FoldLimits {
    fn default() -> Self {
        FoldLimits {
            max_fanout: 8,
            max_depth: 4,
            max_per_window: 256,
            window: Duration::from_secs(1),
        }
    }
}

/// Why the breaker tripped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trip {
    /// `fanout`, `depth` or `window`.
    pub limit: &'static str,
    pub reason: String,
}

struct Window {
    started: Instant,
    writes: u32,
}

pub struct FoldGuard {
    limits: FoldLimits,
    window: Mutex<Window>,
    trips: AtomicU64,
}

/// One admitted write, from which linked writes are taken.
pub struct Fold {
    guard: Arc<FoldGuard>,
    depth: u32,
    children: AtomicU32,
}

impl FoldGuard {
    pub fn new(limits: FoldLimits) -> Arc<FoldGuard> {
        Arc::new(FoldGuard {
            limits,
            window: Mutex::new(Window {
                started: Instant::now(),
                writes: 0,
            }),
            trips: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> FoldLimits {
        self.limits
    }

    /// Trips so far.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    fn trip(&self, limit: &'static str, reason: String) -> Trip {
        self.trips.fetch_add(1, Ordering::Relaxed);
        Trip { limit, reason }
    }

    /// Count one write against the window.
    fn admit(&self) -> Result<(), Trip> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() >= self.limits.window {
            w.started = Instant::now();
            w.writes = 0;
        }
        if w.writes >= self.limits.max_per_window {
            drop(w);
            return Err(self.trip(
                "window",
                format!(
                    "{} memory writes in this {:?} window already",
                    self.limits.max_per_window, self.limits.window
                ),
            ));
        }
        w.writes += 1;
        Ok(())
    }

    /// A task's first write.
    pub fn root(self: &Arc<Self>) -> Result<Fold, Trip> {
        self.admit()?;
        Ok(Fold {
            guard: self.clone(),
            depth: 0,
            children: AtomicU32::new(0),
        })
    }
}

impl Fold {
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// A write caused by this one.
    pub fn link(&self) -> Result<Fold, Trip> {
        let g = &self.guard;
        if self.depth + 1 > g.limits.max_depth {
            return Err(g.trip(
                "depth",
                format!(
                    "a linked write at depth {} exceeds the limit of {}",
                    self.depth + 1,
                    g.limits.max_depth
                ),
            ));
        }
        let n = self.children.fetch_add(1, Ordering::Relaxed) + 1;
        if n > g.limits.max_fanout {
            return Err(g.trip(
                "fanout",
                format!(
                    "linked write {n} of one write exceeds the fan-out limit of {}",
                    g.limits.max_fanout
                ),
            ));
        }
        g.admit()?;
        Ok(Fold {
            guard: g.clone(),
            depth: self.depth + 1,
            children: AtomicU32::new(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_beyond_eight_trips() {
        let g = FoldGuard::new(FoldLimits::default());
        let root = g.root().unwrap();
        for _ in 0..8 {
            root.link().unwrap();
        }
        assert_eq!(root.link().err().unwrap().limit, "fanout");
        assert_eq!(g.trips(), 1);
    }

    #[test]
    fn depth_beyond_four_trips() {
        let g = FoldGuard::new(FoldLimits::default());
        let mut f = g.root().unwrap();
        for d in 1..=4 {
            f = f.link().unwrap();
            assert_eq!(f.depth(), d);
        }
        assert_eq!(f.link().err().unwrap().limit, "depth");
        assert_eq!(g.trips(), 1);
    }

    #[test]
    fn the_window_admits_256_writes_then_trips_then_resets() {
        let g = FoldGuard::new(FoldLimits {
            window: Duration::from_millis(200),
            ..FoldLimits::default()
        });
        for _ in 0..256 {
            g.root().unwrap();
        }
        assert_eq!(g.root().err().unwrap().limit, "window");
        assert_eq!(g.trips(), 1);
        std::thread::sleep(Duration::from_millis(220));
        assert!(g.root().is_ok());
    }
}
