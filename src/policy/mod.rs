//! Rego policy: builds the policy input, evaluates it (regorus, compiled once per policy version,
//! one evaluator per worker) and returns `Allow` or `Deny { reason }`.
//!
//! SKELETON: being written.
