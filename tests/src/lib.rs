//! sparkcap test support.
