// SPDX-License-Identifier: LGPL-2.1-or-later
//! Caches that size themselves (docs/sizing.md). Like the core, this knows
//! nothing of C, of the environment or of stderr, so every rule can be
//! tested on lookups or curves written down in a test, and a replay of the
//! same lookups gives the same sizes.
//!
//! - `curve`: an auto cache's miss curve at every size, from the reuse
//!   times of its lookups, over a window;
//! - `auto`: the observer that feeds it, and the size a cache wants on its
//!   own;
//! - `budget`: how the auto caches of a process share one memory budget.

pub mod auto;
pub mod budget;
pub mod curve;
