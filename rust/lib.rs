//! lottery-ticket's Rust core: exact global magnitude selection, mask application and rewinding
//! over raw float bits. Everything but `python` is pure Rust, tested by `cargo test`.

pub mod chunk;
pub mod error;
pub mod magnitude;
pub mod mask;
pub mod radix;
pub mod rewind;
pub mod select;
#[cfg(test)]
mod select_props;

mod python;

use pyo3::prelude::*;

/// The extension module `lottery_ticket._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(m)
}
