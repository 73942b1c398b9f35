//! The one error type every builder returns for bad configuration.

use std::fmt;

/// A configuration value was rejected by a builder.
///
/// Names the field and the value, and says why. Opaque on purpose: new causes can be
/// added without breaking callers, who read it through the accessors.
///
/// # Example
///
/// ```
/// use corral::ConfigError;
///
/// fn check_workers(n: usize) -> Result<usize, ConfigError> {
///     // Builders do this for you; shown here with the public accessors.
///     # if n == 0 { return Err(ConfigError::new("workers", n, "must be at least 1")); }
///     Ok(n)
/// }
/// let err = check_workers(0).unwrap_err();
/// assert_eq!(err.field(), "workers");
/// assert_eq!(err.value(), "0");
/// assert_eq!(err.to_string(), "invalid workers = 0: must be at least 1");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: &'static str,
}

impl ConfigError {
    /// A rejection of `field = value` because of `reason` (lowercase, no period).
    pub fn new(field: &'static str, value: impl fmt::Debug, reason: &'static str) -> Self {
        ConfigError {
            field,
            value: format!("{value:?}"),
            reason,
        }
    }

    /// The name of the rejected field, as the builder method spells it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, formatted with `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigError({self})")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} = {}: {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// Checks a user-supplied name that becomes part of a thread name: a NUL byte is
/// refused (std would panic on it).
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.contains('\0') {
        return Err(ConfigError::new(field, name, "must not contain a NUL byte"));
    }
    Ok(())
}
