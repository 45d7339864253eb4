//! Audit events and their sinks.
//!
//! SKELETON: being written.
