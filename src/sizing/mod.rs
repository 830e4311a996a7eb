// SPDX-License-Identifier: LGPL-2.1-or-later
//! Sizing auto caches (docs/sizing.md): pure arithmetic on miss curves,
//! with no cache, lock, environment or C in sight, so that every rule can
//! be tested on curves written down in a test, and a replay of the same
//! counts gives the same sizes.
//!
//! - `budget`: how the auto caches of a process share one memory budget.

pub mod budget;
