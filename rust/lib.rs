//! lottery-ticket's Rust core: exact global magnitude selection (as masks, or as a threshold to
//! stream a checkpoint through), mask application and rewinding over raw float bits, and watched
//! file maps that read zeros instead of dying by SIGBUS when their file is cut short (`fault`).
//! Everything but `python` (feature "python") is pure Rust, tested by
//! `cargo test --no-default-features` without libpython.

pub mod chunk;
pub mod error;
pub mod fault;
pub mod magnitude;
pub mod mask;
mod nontemporal;
mod prefetch;
pub mod pruned_state;
pub mod radix;
pub mod rewind;
pub mod select;
#[cfg(test)]
mod select_props;
pub mod threshold;

#[cfg(feature = "python")]
mod python;

/// The extension module `lottery_ticket._core`.
#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::register(m)
}
