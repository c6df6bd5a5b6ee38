//! The one error type of the kernels. The binding maps it to Python exceptions in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A list argument was empty where at least one tensor is required.
    Empty { arg: &'static str },
    /// Two list arguments disagree in length (e.g. 3 weights but 2 masks).
    ListLength {
        arg: &'static str,
        expected: usize,
        got: usize,
    },
    /// A buffer's element count differs from its weight tensor's.
    Length {
        arg: &'static str,
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A snapshot's element width differs from its weight tensor's.
    Width { arg: &'static str, index: usize },
    /// NaN among the alive weights of tensor `index`: its rank is undefined.
    Nan { index: usize },
    /// Any other argument with a value the kernel cannot use.
    Argument { arg: &'static str, message: String },
    /// `amount` is outside [0, 1] (fraction) or [0, alive] (count); `tensor` is set when one
    /// tensor of a layer-wise selection is at fault.
    Amount {
        message: String,
        tensor: Option<usize>,
    },
    /// Two reads of the same weights disagreed: another thread wrote them while the kernel ran
    /// (the GIL is released), so no mask with the promised count can be vouched for.
    WeightsChanged,
}

/// The Python exception class an [`Error`] maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Type,
    Value,
    Runtime,
}

impl Error {
    /// The message, naming tensors by `names[index]` where the caller supplied names.
    pub fn message(&self, names: &[String]) -> String {
        let at = |arg: &str, index: usize| match names.get(index) {
            // Names arrive already quoted by the caller (Python's repr), like its own messages.
            Some(name) => format!("{arg}[{name}]"),
            None => format!("{arg}[{index}]"),
        };
        match self {
            Error::Empty { arg } => format!("{arg}: expected at least one tensor, got none"),
            Error::ListLength { arg, expected, got } => {
                format!("{arg}: expected {expected} entries (one per weight), got {got}")
            }
            Error::Length {
                arg,
                index,
                expected,
                got,
            } => format!(
                "{}: expected {expected} elements (the weight's size), got {got}",
                at(arg, *index)
            ),
            Error::Width { arg, index } => {
                format!("{}: dtype differs from the weight's dtype", at(arg, *index))
            }
            Error::Nan { index } => format!(
                "{}: contains NaN among alive weights; NaN magnitudes cannot be ranked",
                at("weights", *index)
            ),
            Error::Argument { arg, message } => format!("{arg}: {message}"),
            Error::Amount {
                message,
                tensor: None,
            } => format!("amount: {message}"),
            Error::Amount {
                message,
                tensor: Some(index),
            } => format!("amount: {message} in {}", at("weights", *index)),
            Error::WeightsChanged => {
                "weights: changed during the call (another thread wrote them while \
                 the kernels ran); weights must not change during a call"
                    .to_string()
            }
        }
    }

    /// The Python exception class: `TypeError` for a value's type, `RuntimeError` for a racing
    /// writer (the input was valid), `ValueError` otherwise.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Width { .. } => Kind::Type,
            Error::WeightsChanged => Kind::Runtime,
            _ => Kind::Value,
        }
    }

    /// Whether the error is about a value's type (Python `TypeError`) rather than its value.
    pub fn is_type_error(&self) -> bool {
        self.kind() == Kind::Type
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(&[]))
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Check that `lens` has one entry per weight tensor (`sizes`), each of the weight's size.
pub fn check_lengths(
    arg: &'static str,
    sizes: &[usize],
    lens: impl ExactSizeIterator<Item = usize>,
) -> Result<()> {
    if lens.len() != sizes.len() {
        return Err(Error::ListLength {
            arg,
            expected: sizes.len(),
            got: lens.len(),
        });
    }
    for (index, (&expected, got)) in sizes.iter().zip(lens).enumerate() {
        if expected != got {
            return Err(Error::Length {
                arg,
                index,
                expected,
                got,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_argument_and_tensor() {
        let e = Error::Nan { index: 1 };
        assert!(e.to_string().starts_with("weights[1]: contains NaN"));
        let names = ["'fc1.weight'".to_string(), "'fc2.weight'".to_string()];
        assert!(e.message(&names).starts_with("weights['fc2.weight']"));
        let layer = Error::Amount {
            message: "cannot prune 4 weights: only 3 are alive".into(),
            tensor: Some(0),
        };
        assert!(layer
            .message(&names)
            .ends_with("alive in weights['fc1.weight']"));
        assert!(!e.is_type_error());
        assert!(Error::Width {
            arg: "snapshots",
            index: 0
        }
        .is_type_error());
        assert_eq!(Error::WeightsChanged.kind(), Kind::Runtime);
        assert!(Error::WeightsChanged
            .to_string()
            .contains("weights must not change during a call"));
    }
}
