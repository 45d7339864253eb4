//! The transparent deep-inspection proxy: listeners on the divert ports, the original destination,
//! and one session per connection and protocol.
//!
//! SKELETON: being written.
