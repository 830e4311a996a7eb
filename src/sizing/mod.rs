// SPDX-License-Identifier: LGPL-2.1-or-later
//! Caches that size themselves (docs/sizing.md): each auto cache's miss
//! curve at every size ([`curve`]) and the size it wants from it
//! ([`auto`]). Like the core, this knows nothing of C, of the environment
//! or of stderr.

pub mod auto;
pub mod curve;
